//! Shared by the run-survival tests: a size-limited tmpfs (a full disk on demand) and bit flips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size mounted at a directory, unmounted on drop (also when a test panics).
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size` tmpfs (e.g. "2600k") at `dir`; `None` after one `skipped:` line when this machine
    /// does not let the test mount one (not root, or a container without CAP_SYS_ADMIN).
    pub fn mount(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        let _ = Command::new("umount").arg(dir).output(); // a mount left by a killed earlier run
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("create the mount point");
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: dir.to_path_buf() }),
            Ok(o) => {
                println!("skipped: {test}: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                println!("skipped: {test}: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

/// Flips the lowest bit of the byte `from_end` bytes before the end of `path` (inside the last
/// tensor's data for a safetensors file, whose header comes first).
pub fn flip_bit_near_end(path: &Path, from_end: usize) {
    let mut bytes = std::fs::read(path).expect("read the file to damage");
    let at = bytes.len() - from_end;
    bytes[at] ^= 1;
    std::fs::write(path, bytes).expect("write the damaged file");
}
