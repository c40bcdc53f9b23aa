//! The sync lock: an exclusive `flock` on `<store>.lock`, so a one-shot
//! `carat-catalogd sync` and a running daemon never sync the same store at
//! once. The holder writes who it is into the file; a refused caller reads it
//! back for its error message. The kernel drops the lock when the holder
//! dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the store {store} is {}", held_how(holder))]
    Held { store: PathBuf, holder: String },
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a running daemon writes into the lock file (it holds the lock for
/// its whole life).
pub const DAEMON: &str = "carat-catalogd run (daemon)";

fn held_how(holder: &str) -> String {
    if holder.starts_with(DAEMON) {
        format!("held by the running daemon ({holder}); ask it to sync with `carat-catalogd resync`")
    } else {
        format!("being synced by another process ({holder}); try again when it is done")
    }
}

/// Held while it lives.
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
    path: PathBuf,
}

impl SyncLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_path(store: &Path) -> PathBuf {
    let mut s = store.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Takes the lock without waiting. `who` describes this process
/// (e.g. `carat-catalogd run`).
pub fn acquire(store: &Path, who: &str) -> Result<SyncLock, LockError> {
    let path = lock_path(store);
    let io = |source: std::io::Error| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(&path)
        .map_err(io)?;
    if let Err(errno) = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        if errno == rustix::io::Errno::WOULDBLOCK {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "unknown process".to_owned(),
                who => who.to_owned(),
            };
            return Err(LockError::Held {
                store: store.to_owned(),
                holder,
            });
        }
        return Err(io(errno.into()));
    }
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = write!(file, "{who}, pid {}", std::process::id());
    let _ = file.flush();
    Ok(SyncLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("catalog.db");
        let first = acquire(&db, "carat-catalogd run").unwrap();
        let err = acquire(&db, "carat-catalogd sync").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("carat-catalogd run"), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(first);
        acquire(&db, "carat-catalogd sync").expect("free again once the holder is gone");
    }
}
