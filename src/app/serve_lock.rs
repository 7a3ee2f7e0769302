//! One `serve` per data folder: `<data_dir>/serve.lock`, locked while the service runs and
//! holding its PID, so a second process is refused with a sentence naming the holder.

use crate::state::LockFile;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the data folder could not be claimed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeLockError {
    /// Another process serves the folder.
    #[error("another jfconnect{} is already serving the data folder {data_dir}; stop it, or give this one its own jfconnect.data_dir", .pid.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    Held {
        /// The folder.
        data_dir: PathBuf,
        /// The holder's PID, when its lock file says.
        pid: Option<u32>,
    },
    /// The lock file could not be used.
    #[error("cannot lock the data folder {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Held while this process serves the data folder; released when dropped (or the process ends).
#[derive(Debug)]
pub(crate) struct ServeLock {
    _lock: LockFile,
}

impl ServeLock {
    /// The lock file's path under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("serve.lock")
    }

    /// Claims `data_dir` for this process and writes its PID into the lock file.
    pub(crate) fn acquire(data_dir: &Path) -> Result<ServeLock, ServeLockError> {
        let path = ServeLock::path(data_dir);
        let io = |source| ServeLockError::Io {
            path: path.clone(),
            source,
        };
        match LockFile::try_acquire(&path).map_err(io)? {
            Some(lock) => {
                let mut f = lock.file();
                f.set_len(0).map_err(io)?;
                f.rewind().map_err(io)?;
                writeln!(f, "{}", std::process::id()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(ServeLock { _lock: lock })
            }
            None => Err(ServeLockError::Held {
                data_dir: data_dir.to_path_buf(),
                pid: holder(&path),
            }),
        }
    }
}

/// The PID written in the lock file, if it can be read.
fn holder(path: &Path) -> Option<u32> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_names_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServeLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(ServeLock::path(dir.path())).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let err = ServeLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("(PID {}) is already serving", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(ServeLock::acquire(dir.path()).is_ok());
    }
}
