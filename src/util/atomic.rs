//! Atomic file replacement: write to a temporary file in the destination's directory
//! (`.NAME.tmp-<pid>`), flush, fsync, rename over the destination, then fsync the directory (best
//! effort). A reader sees either the old file or the complete new one, never a partial write, and a
//! crash leaves at most a stray temporary file. On any error the temporary file is removed and the
//! destination is untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary file used while writing `path`: `.NAME.tmp-<pid>` next to it.
pub fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{}: cannot write a file at a path with no file name", path.display())))?;
    Ok(path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id())))
}

/// Replaces `path` atomically with what `fill` writes. `fill` gets a buffered writer; its errors and
/// I/O errors abort the write, remove the temporary file and leave `path` as it was.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let tmp = temp_path_for(path)?;
    let guard = TempGuard(Some(tmp.clone()));
    let io = |e| Error::io(&tmp, e);
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io)?;
    let mut writer = BufWriter::new(file);
    fill(&mut writer)?;
    let file = writer.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    guard.disarm();
    sync_parent_dir(path);
    Ok(())
}

/// [`write_atomic`] for a byte buffer already in memory.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Makes a rename or removal in `path`'s directory durable. Best effort: not every filesystem lets a
/// directory be opened and synced, and the data itself is already synced when this is called.
pub fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// Removes the temporary file on every early return (errors and panics alike) unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}
