//! Durable state files.
//!
//! Every state file is written the same way (promise 3 in docs/architecture.md): to a temp file in the same
//! folder, fsynced, renamed over the old one, and the folder fsynced, so a crash at any instant
//! leaves either the old or the new content, never a mix. Each file carries the SHA-256 of its
//! body, so a torn or hand-damaged file is detected on load and not trusted.
//!
//! Architecture invariant: this is the only module that writes files under `<data_dir>/state/`.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Errors reading or writing a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The disk refused a read or write.
    #[error("cannot {action} state file {path}: {source}")]
    Io {
        /// What was being done ("read", "write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file exists but its content is damaged (torn write, hand edit, wrong format).
    #[error("state file {path} is damaged ({reason}); it was not trusted")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Writes a file that only the owner may read (mode 0600), atomically and durably.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, bytes)?;
    set_private(path)
}

/// Restricts `path` to its owner (mode 0600 on Unix).
pub fn set_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Fsyncs a folder so that a rename or delete inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    format: u32,
    sha256: String,
    body: T,
}

const FORMAT: u32 = 1;

/// Saves `value` as a checksummed JSON state file.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let body = serde_json::to_value(value).map_err(|e| io_err(io::Error::other(e)))?;
    let canonical = serde_json::to_vec(&body).map_err(|e| io_err(io::Error::other(e)))?;
    let envelope = Envelope {
        format: FORMAT,
        sha256: hex::encode(Sha256::digest(&canonical)),
        body,
    };
    let bytes = serde_json::to_vec_pretty(&envelope).map_err(|e| io_err(io::Error::other(e)))?;
    write_atomic(path, &bytes).map_err(io_err)
}

/// Loads a state file written by [`save`]. `Ok(None)` when it does not exist; `Corrupt` when
/// it is torn, edited or of another format.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    if envelope.format != FORMAT {
        return Err(corrupt(format!("unknown format {}", envelope.format)));
    }
    let canonical = serde_json::to_vec(&envelope.body).map_err(|e| corrupt(e.to_string()))?;
    if hex::encode(Sha256::digest(&canonical)) != envelope.sha256 {
        return Err(corrupt("checksum does not match its content".into()));
    }
    serde_json::from_value(envelope.body)
        .map(Some)
        .map_err(|e| corrupt(format!("unexpected content: {e}")))
}

/// Loads a state file; a damaged one is moved aside to `<name>.corrupt` (kept for a person to
/// look at) and treated as absent, with a warning. Used where starting afresh is safe.
pub fn load_or_set_aside<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match load(path) {
        Err(StateError::Corrupt { path: p, reason }) => {
            let aside = p.with_extension("corrupt");
            tracing::warn!(file = %p.display(), %reason, aside = %aside.display(),
                "state file is damaged; set aside and starting afresh");
            fs::rename(&p, &aside).map_err(|source| StateError::Io {
                action: "set aside",
                path: p.clone(),
                source,
            })?;
            Ok(None)
        }
        other => other,
    }
}

/// An exclusive lock on a file, held until dropped; keeps two runs of one job apart.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock at `path` or fails at once if another process holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<LockFile>> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockFile {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open lock file (to record who holds it).
    pub fn file(&self) -> &File {
        &self._file
    }
}

/// Takes the lock at `path`, trying again every 50 ms for up to `wait` (zero: one try), without
/// blocking an async worker; `Ok(None)` when another holder kept it the whole time.
pub async fn wait_for_lock(path: &Path, wait: std::time::Duration) -> io::Result<Option<LockFile>> {
    let tries = (wait.as_millis() / 50).max(1);
    for attempt in 0..tries {
        if let Some(l) = LockFile::try_acquire(path)? {
            return Ok(Some(l));
        }
        if attempt + 1 < tries {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Sample {
        n: u32,
        s: String,
    }

    #[test]
    fn saved_state_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let v = Sample {
            n: 7,
            s: "x".into(),
        };
        save(&p, &v).unwrap();
        assert_eq!(load::<Sample>(&p).unwrap(), Some(v));
    }

    #[test]
    fn missing_state_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load::<Sample>(&dir.path().join("nope")).unwrap(), None);
    }

    #[test]
    fn torn_state_file_is_detected_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        save(
            &p,
            &Sample {
                n: 7,
                s: "x".into(),
            },
        )
        .unwrap();
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            load::<Sample>(&p),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn edited_state_file_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        save(
            &p,
            &Sample {
                n: 7,
                s: "x".into(),
            },
        )
        .unwrap();
        let text = fs::read_to_string(&p)
            .unwrap()
            .replace("\"n\": 7", "\"n\": 8");
        fs::write(&p, text).unwrap();
        let err = load::<Sample>(&p).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn damaged_state_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        fs::write(&p, b"{garbage").unwrap();
        assert_eq!(load_or_set_aside::<Sample>(&p).unwrap(), None);
        assert!(!p.exists());
        assert!(dir.path().join("s.corrupt").exists());
    }

    #[test]
    fn second_lock_is_refused_while_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.lock");
        let first = LockFile::try_acquire(&p).unwrap();
        assert!(first.is_some());
        assert!(LockFile::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(LockFile::try_acquire(&p).unwrap().is_some());
    }
}
