//! One writer per run folder: `OUT/.lock`, an advisory lock (`flock`, through `fs4`) held for the whole
//! life of `attnas train`, taken before anything in OUT is read, replaced or removed (`--overwrite`
//! included). The file holds the holder's pid, host, start time and command line as text, so a second
//! `train` on the same folder is refused with a message naming them (exit code 2).
//!
//! The kernel drops an `flock` when its process dies, however it dies. A lock file with text in it that
//! nobody holds is therefore stale (a crash, SIGKILL, a lost node) and is taken over with a notice. A
//! clean exit empties the file. The file itself is never removed: a process that opened it just before
//! an unlink would lock a name no one else sees, and two runs would write at once.
//!
//! Only the leader rank writes the run folder, so only the leader takes the lock ([`RunLock::acquire_for`]).
//! NFS: Linux maps `flock` to NFS byte-range locks (lockd / NFSv4), so the lock holds across nodes;
//! Lustre needs the `flock` mount option (without it locking fails and the error says so).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs4::{FileExt, TryLockError};

use crate::dist::RankContext;
use crate::error::{Error, Result};

/// The lock's file name inside the run folder.
pub const LOCK_FILE: &str = ".lock";

/// A held run lock; dropping it empties the file and releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The text of a stale lock this one replaced, if any.
    taken_over: Option<String>,
}

impl RunLock {
    /// Takes `out/.lock` on the leader rank (`None` on the others, which never write `out`).
    pub fn acquire_for<R: RankContext + ?Sized>(out: &Path, ranks: &R) -> Result<Option<RunLock>> {
        if ranks.is_leader() {
            RunLock::acquire(out).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Takes `out/.lock` (creating `out`), or refuses naming the process that holds it. A stale lock is
    /// taken over with a notice on stderr.
    pub fn acquire(out: &Path) -> Result<RunLock> {
        fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let path = out.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's text must survive our open
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // Called through the trait: std's inherent `File::try_lock` needs Rust 1.89 (MSRV is 1.85).
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let text = read_all(&mut file, &path)?;
                let pid = field(&text, "pid").unwrap_or("<pid>");
                return Err(Error::usage(format!(
                    "{} is in use: {} holds its lock {}. Wait for that run to finish, stop it (kill -TERM {pid} on \
                     its host: it checkpoints and exits), or choose another --out",
                    out.display(),
                    holder_text(&text),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::Other(format!(
                    "{}: cannot lock the run folder: {e}. The file system may not support file locks (Lustre: \
                     mount with -o flock; NFS: the lock daemon must run); or choose an --out on a local disk",
                    path.display()
                )))
            }
        }
        let previous = read_all(&mut file, &path)?;
        let taken_over = (!previous.trim().is_empty()).then_some(previous);
        if let Some(text) = &taken_over {
            eprintln!(
                "note: {}: taking over the stale lock of {}: that process no longer holds it (it crashed, was \
                 killed or lost its node)",
                path.display(),
                holder_text(text)
            );
        }
        let me = format!(
            "pid: {}\nhost: {}\nstarted: {}\ncommand: {}\n",
            std::process::id(),
            this_host(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let io = |e| Error::io(&path, e);
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(RunLock { file, path, taken_over })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text of the stale lock this one took over.
    pub fn taken_over(&self) -> Option<&str> {
        self.taken_over.as_deref()
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file marks a clean release; the kernel drops the lock when the file closes.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
    }
}

fn read_all(file: &mut File, path: &Path) -> Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    file.read_to_string(&mut text).map_err(|e| Error::io(path, e))?;
    Ok(text)
}

/// "attnas (pid 12 on host n1, started 2026-01-01T00:00:00Z)" from a lock file's text.
fn holder_text(text: &str) -> String {
    match (field(text, "pid"), field(text, "host")) {
        (Some(pid), Some(host)) => {
            let started = field(text, "started").map_or(String::new(), |t| format!(", started {t}"));
            format!("pid {pid} on host {host}{started}")
        }
        _ => "another process (it has not written its pid yet)".to_string(),
    }
}

/// The value of a `key: value` line of a lock file's text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')).map(str::trim))
}

/// This machine's host name (the kernel's node name), for the lock text.
pub fn this_host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_holder_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = RunLock::acquire(&out).unwrap();
        assert!(first.taken_over().is_none());
        let text = fs::read_to_string(out.join(LOCK_FILE)).unwrap();
        assert!(text.contains(&format!("pid: {}", std::process::id())), "{text}");
        // flock belongs to the open file, so a second open in this same process is refused too.
        let e = RunLock::acquire(&out).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains(&this_host()), "{msg}");
        assert!(msg.contains(".lock") && msg.contains("another --out"), "{msg}");
        assert!(msg.contains(&format!("kill -TERM {}", std::process::id())), "{msg}");
        // A clean release empties the file; the next holder takes it without a notice.
        drop(first);
        assert_eq!(fs::read_to_string(out.join(LOCK_FILE)).unwrap(), "");
        let again = RunLock::acquire(&out).unwrap();
        assert!(again.taken_over().is_none());
    }

    #[test]
    fn an_unheld_lock_with_a_holder_in_it_is_stale_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let stale = "pid: 4194999\nhost: gone-node\nstarted: 2026-01-01T00:00:00Z\ncommand: attnas train\n";
        fs::write(dir.path().join(LOCK_FILE), stale).unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.taken_over(), Some(stale));
        let text = fs::read_to_string(lock.path()).unwrap();
        assert!(text.starts_with(&format!("pid: {}\n", std::process::id())), "replaced: {text}");
        assert!(!text.contains("gone-node"), "{text}");
    }

    #[test]
    fn only_the_leader_takes_the_lock() {
        struct Follower;
        impl RankContext for Follower {
            fn rank(&self) -> usize {
                1
            }
            fn world_size(&self) -> usize {
                2
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never-created");
        assert!(RunLock::acquire_for(&out, &Follower).unwrap().is_none());
        assert!(!out.exists(), "a non-leader rank writes nothing in --out");
        assert!(RunLock::acquire_for(&out, &crate::dist::SingleRank).unwrap().is_some());
    }

    #[test]
    fn holder_text_reads_the_fields() {
        assert_eq!(
            holder_text("pid: 7\nhost: n1\nstarted: 2026-01-01T00:00:00Z\n"),
            "pid 7 on host n1, started 2026-01-01T00:00:00Z"
        );
        assert!(holder_text("").contains("not written its pid"));
    }
}
