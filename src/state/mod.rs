//! Durable state files.
//!
//! Every state file is written the same way (promise 3 in docs/architecture.md): to a temp file in the same
//! folder, fsynced, renamed over the old one, and the folder fsynced, so a crash at any instant
//! leaves either the old or the new content, never a mix. Each file carries the SHA-256 of its
//! body, so a torn or hand-damaged file is detected on load and not trusted.
//!
//! Architecture invariant: this is the only module that writes files under `<data_dir>/state/`.
//!
//! [`store`] is the one trait for the state an import touches (import history, inbox, the
//! JPD id), with the data folder's files as one store and the shared database as the other.

pub mod store;

pub use store::{Fence, ImportCommit, ImportConflict, ImportState, ScheduleChange, ScheduleDocs};
pub(crate) use store::{FileStore, StateStore};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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
    /// The path is not a regular file (a FIFO, a device, a folder): someone put it there, so it
    /// is neither read nor set aside.
    #[error("cannot read state file {path}: {source}")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        #[source]
        source: crate::secret::FileError,
    },
    /// The file exists but its content is damaged (torn write, hand edit, wrong format).
    #[error("state file {path} is damaged ({reason}); it was not trusted")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The shared store (the JPD's database) failed or refused, in its own sentence.
    #[error("{reason}")]
    Shared {
        /// The sentence.
        reason: String,
        /// True when the database is away (try again later), not refusing.
        unavailable: bool,
    },
    /// A leaseholder's write refused because its lease moved on (the sentence says to whom).
    #[error("{0}")]
    Fenced(String),
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, fsync folder.
/// Creates the folder when missing.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(folder_of(path))?;
    write_durably(path, &mut &*bytes, Durably::default())
        .map(|_| ())
        .map_err(|e| e.source)
}

/// How [`write_durably`] places a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Durably {
    /// Permission bits of the new file (Unix); `None` keeps the temp file's owner-only 0600.
    pub mode: Option<u32>,
    /// Fsync the folder after the rename. `false` only for a caller that places many files in
    /// one folder and fsyncs it once at the end ([`sync_dir`]) before it reports success.
    pub sync_folder: bool,
    /// Refuse (`AlreadyExists`) instead of replacing a file already at the destination.
    pub keep_existing: bool,
}

impl Default for Durably {
    fn default() -> Self {
        Durably {
            mode: None,
            sync_folder: true,
            keep_existing: false,
        }
    }
}

/// A step of a durable write that failed, with the file it concerned.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {}: {source}", path.display())]
pub(crate) struct DurableError {
    /// What was being done ("read", "write", "fsync", "rename into place", ...).
    pub step: &'static str,
    /// The file or folder it was done to.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

/// Writes what `from` yields to `dest` atomically and durably: into a temp file in `dest`'s
/// folder, fsynced, renamed over `dest`, then (with `how.sync_folder`) the folder fsynced. At
/// every instant, and after any failure (the temp file is removed), `dest` is either what it
/// was (absent or the old content) or the whole new content. Answers the bytes written.
pub(crate) fn write_durably(
    dest: &Path,
    from: &mut dyn Read,
    how: Durably,
) -> Result<u64, DurableError> {
    let dir = folder_of(dest);
    let fail = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| DurableError { step, path, source }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail("create a temp file in", dir))?;
    let n = io::copy(from, tmp.as_file_mut()).map_err(fail("write", dest))?;
    #[cfg(unix)]
    if let Some(mode) = how.mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fail("set permissions of", dest))?;
    }
    tmp.as_file().sync_all().map_err(fail("fsync", dest))?;
    if how.keep_existing {
        tmp.persist_noclobber(dest)
            .map_err(|e| fail("rename into place", dest)(e.error))?;
    } else {
        tmp.persist(dest)
            .map_err(|e| fail("rename into place", dest)(e.error))?;
    }
    if how.sync_folder {
        sync_dir(dir).map_err(fail("fsync", dir))?;
    }
    Ok(n)
}

/// Copies the file `src` to `dest` with [`write_durably`].
pub(crate) fn copy_durably(src: &Path, dest: &Path, how: Durably) -> Result<u64, DurableError> {
    let mut from = File::open(src).map_err(|source| DurableError {
        step: "read",
        path: src.to_path_buf(),
        source,
    })?;
    write_durably(dest, &mut from, how)
}

/// Writes a file that only the owner may read (mode 0600), atomically and durably.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, bytes)?;
    set_private(path)
}

/// Restricts `path` to its owner (mode 0600 on Unix).
pub(crate) fn set_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Fsyncs a folder so that a rename or delete inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
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

/// Largest state file read. The biggest, the entitlements, is a few KiB per product.
pub(crate) const MAX_STATE_FILE: u64 = 16 * 1024 * 1024;

/// Reads a state file through [`crate::secret::read_limited`]: `Ok(None)` when absent; a
/// FIFO, device, folder or oversized file is `Corrupt`, never a hang or an unbounded read.
fn read_state_bytes(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, StateError> {
    use crate::secret::FileError;
    match crate::secret::read_limited(path, cap) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(FileError::Io(source)) => Err(StateError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
        Err(e @ FileError::TooLarge(_)) => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(source) => Err(StateError::NotRegular {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Loads a state file written by [`save`]. `Ok(None)` when it does not exist; `Corrupt` when
/// it is torn, edited, of another format or not a regular file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_state_bytes(path, MAX_STATE_FILE)? else {
        return Ok(None);
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
pub(crate) fn load_or_set_aside<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
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

/// The grammar of a JPD id: 1 to 128 of letters, digits and `- _ . :`, starting with a letter
/// or digit (what JES accepts, and a subset of what a bundle manifest may carry).
pub(crate) fn valid_jpd_id(id: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(ok)
}

/// Name of the JPD id file in the data folder: one line an operator can read.
pub(crate) const JPD_ID_FILE: &str = "jpd_id";

/// Name of its checksum, beside it, in `sha256sum` form (`sha256sum -c jpd_id.sha256`).
pub(crate) const JPD_ID_SUM_FILE: &str = "jpd_id.sha256";

/// Reads `<data_dir>/jpd_id` without writing anything: `Ok(None)` when neither it nor its
/// checksum exists. The id must be one line of the id grammar and match `jpd_id.sha256` (an id
/// from before checksums, with none beside it, is accepted). Anything else is `Corrupt`,
/// naming the file: a damaged id must never be used as a new one.
pub(crate) fn read_jpd_id(data_dir: &Path) -> Result<Option<String>, StateError> {
    Ok(check_jpd_id(data_dir)?.map(|(id, _)| id))
}

/// The JPD id for a starting service: read and checked as [`read_jpd_id`] does, its checksum
/// written when missing, or a new id from `make` with its checksum on first start.
pub(crate) fn open_jpd_id(
    data_dir: &Path,
    make: impl FnOnce() -> String,
) -> Result<String, StateError> {
    match check_jpd_id(data_dir)? {
        Some((id, true)) => Ok(id),
        Some((_, false)) => {
            let path = data_dir.join(JPD_ID_FILE);
            let bytes = read_state_bytes(&path, 4096)?.unwrap_or_default();
            let sum_path = data_dir.join(JPD_ID_SUM_FILE);
            write_atomic(&sum_path, jpd_id_sum_line(&bytes).as_bytes()).map_err(|source| {
                StateError::Io {
                    action: "write",
                    path: sum_path,
                    source,
                }
            })?;
            read_jpd_id(data_dir)?.ok_or_else(|| StateError::Corrupt {
                path,
                reason: "it disappeared while its checksum was written".into(),
            })
        }
        None => {
            let id = make();
            write_jpd_id(data_dir, &id)?;
            Ok(id)
        }
    }
}

/// The checked id, and whether a checksum stands beside it.
fn check_jpd_id(data_dir: &Path) -> Result<Option<(String, bool)>, StateError> {
    let path = data_dir.join(JPD_ID_FILE);
    let sum_path = data_dir.join(JPD_ID_SUM_FILE);
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.clone(),
        reason,
    };
    let Some(bytes) = read_state_bytes(&path, 4096)? else {
        if read_state_bytes(&sum_path, 4096)?.is_some() {
            return Err(corrupt(format!(
                "it is missing while its checksum {} exists; restore it from a backup \
                 (JES knows this JPD by that id)",
                sum_path.display()
            )));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes)
        .ok()
        .map(|t| t.strip_suffix('\n').unwrap_or(t))
        .filter(|t| valid_jpd_id(t))
        .ok_or_else(|| {
            corrupt(
                "it is not one line holding a JPD id (letters, digits, - _ . : up to 128)".into(),
            )
        })?;
    let expected = jpd_id_sum_line(&bytes);
    let checked = match read_state_bytes(&sum_path, 4096)? {
        None => false,
        Some(sum) if sum == expected.as_bytes() => true,
        Some(_) => {
            return Err(corrupt(format!(
                "it does not match its checksum {}; restore it from a backup (JES knows this \
                 JPD by the original id), or remove both files to start as a new JPD",
                sum_path.display()
            )))
        }
    };
    Ok(Some((text.to_string(), checked)))
}

/// Replaces `<data_dir>/jpd_id` and its checksum with `id`, which another source of truth
/// holds (the JPD's shared database in database mode). An id outside the grammar is refused.
pub(crate) fn adopt_jpd_id(data_dir: &Path, id: &str) -> Result<(), StateError> {
    if !valid_jpd_id(id) {
        return Err(StateError::Corrupt {
            path: data_dir.join(JPD_ID_FILE),
            reason: format!("the id to adopt, {id:?}, is not a JPD id"),
        });
    }
    write_jpd_id(data_dir, id)
}

/// Writes a new `<data_dir>/jpd_id` and its checksum (checksum last: an id without one is
/// adopted on the next read, a checksum without an id is refused).
fn write_jpd_id(data_dir: &Path, id: &str) -> Result<(), StateError> {
    write_jpd_id_until(data_dir, id, &mut |_| true)
}

/// [`write_jpd_id`], asking `go_on(step)` before each of its durable steps (0: drop the old
/// checksum, 1: the id, 2: its checksum); a test answers false to stop there, as a kill would.
fn write_jpd_id_until(
    data_dir: &Path,
    id: &str,
    go_on: &mut dyn FnMut(usize) -> bool,
) -> Result<(), StateError> {
    let io = |action: &'static str, path: PathBuf| {
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    };
    let path = data_dir.join(JPD_ID_FILE);
    let sum_path = data_dir.join(JPD_ID_SUM_FILE);
    let line = format!("{id}\n");
    let sum = jpd_id_sum_line(line.as_bytes());
    if read_state_bytes(&sum_path, 4096)?.as_deref() == Some(sum.as_bytes())
        && read_state_bytes(&path, 4096)?.as_deref() == Some(line.as_bytes())
    {
        return Ok(());
    }
    // The old checksum goes first: a kill between the two writes then leaves an id without a
    // checksum (adopted on the next read), never the new id beside the old id's checksum.
    if !go_on(0) {
        return Ok(());
    }
    match std::fs::remove_file(&sum_path) {
        Ok(()) => sync_dir(data_dir).map_err(io("sync", data_dir.to_path_buf()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", sum_path)(e)),
    }
    if !go_on(1) {
        return Ok(());
    }
    write_atomic(&path, line.as_bytes()).map_err(io("write", path))?;
    if !go_on(2) {
        return Ok(());
    }
    write_atomic(&sum_path, sum.as_bytes()).map_err(io("write", sum_path))
}

/// The `sha256sum` line for the jpd_id file's exact bytes.
fn jpd_id_sum_line(bytes: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(bytes));
    format!("{digest}  {JPD_ID_FILE}\n")
}

/// An exclusive lock on a file, held until dropped; keeps two runs of one job apart.
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

impl LockFile {
    /// Takes the lock at `path` or fails at once if another process holds it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<LockFile>> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {
                // The holder's PID, so a refused caller can say who holds it.
                file.set_len(0)?;
                (&file).write_all(std::process::id().to_string().as_bytes())?;
                Ok(Some(LockFile { _file: file }))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The PID recorded by the process holding the lock at `path` (best effort: `None` when the
    /// file is missing or holds no number).
    pub fn holder(path: &Path) -> Option<u32> {
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// The open lock file (to record who holds it).
    pub fn file(&self) -> &File {
        &self._file
    }
}

/// How often a lock that another holder keeps is tried again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// How many tries a wait of `wait` makes, one every [`LOCK_POLL`] (zero: one try).
fn lock_tries(wait: std::time::Duration) -> u128 {
    (wait.as_millis() / LOCK_POLL.as_millis()).max(1)
}

/// Takes the lock at `path`, trying again every 50 ms for up to `wait` (zero: one try);
/// `Ok(None)` when another holder kept it the whole time. The one lock wait of async code: each
/// try runs on the blocking pool and the pauses are timer sleeps, so a waiting task never
/// holds up an async worker (a current-thread runtime keeps serving its other tasks).
pub(crate) async fn wait_for_lock(
    path: &Path,
    wait: std::time::Duration,
) -> io::Result<Option<LockFile>> {
    let tries = lock_tries(wait);
    for attempt in 0..tries {
        let p = path.to_path_buf();
        let got = tokio::task::spawn_blocking(move || LockFile::try_acquire(&p))
            .await
            .map_err(io::Error::other)??;
        if got.is_some() {
            return Ok(got);
        }
        if attempt + 1 < tries {
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
    Ok(None)
}

/// [`wait_for_lock`] for code that already runs on a blocking thread (inside
/// `spawn_blocking`, or with no runtime): it sleeps the thread between tries, so it must never
/// be called on an async worker.
pub(crate) fn wait_for_lock_blocking(
    path: &Path,
    wait: std::time::Duration,
) -> io::Result<Option<LockFile>> {
    let tries = lock_tries(wait);
    for attempt in 0..tries {
        if let Some(l) = LockFile::try_acquire(path)? {
            return Ok(Some(l));
        }
        if attempt + 1 < tries {
            std::thread::sleep(LOCK_POLL);
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

    /// Yields `good` bytes, then fails: a copy cut short (a read error, a full disk).
    struct CutShort {
        good: usize,
    }

    impl Read for CutShort {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("cut short"));
            }
            let n = buf.len().min(self.good).min(4096);
            buf[..n].fill(b'n');
            self.good -= n;
            Ok(n)
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_durable_write_cut_short_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("bundle.jfbundle");
        fs::write(&dest, b"old content").unwrap();
        let err =
            write_durably(&dest, &mut CutShort { good: 100_000 }, Durably::default()).unwrap_err();
        assert_eq!(err.step, "write");
        assert_eq!(err.path, dest);
        assert_eq!(fs::read(&dest).unwrap(), b"old content");
        assert_eq!(names_in(dir.path()), ["bundle.jfbundle"]);
        // And absent stays absent.
        let fresh = dir.path().join("fresh");
        assert!(write_durably(&fresh, &mut CutShort { good: 10 }, Durably::default()).is_err());
        assert!(!fresh.exists());
        assert_eq!(names_in(dir.path()), ["bundle.jfbundle"]);
    }

    #[test]
    fn a_durable_copy_replaces_the_old_file_whole_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dest = dir.path().join("dest");
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &content).unwrap();
        fs::write(&dest, b"old content").unwrap();
        let how = Durably {
            mode: Some(0o644),
            ..Durably::default()
        };
        assert_eq!(
            copy_durably(&src, &dest, how).unwrap(),
            content.len() as u64
        );
        assert_eq!(fs::read(&dest).unwrap(), content);
        assert_eq!(names_in(dir.path()), ["dest", "src"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dest).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let err = copy_durably(&dir.path().join("nope"), &dest, how).unwrap_err();
        assert_eq!(err.step, "read");
        assert_eq!(fs::read(&dest).unwrap(), content);
    }

    #[test]
    fn second_lock_is_refused_while_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.lock");
        let first = LockFile::try_acquire(&p).unwrap();
        assert!(first.is_some());
        assert!(LockFile::try_acquire(&p).unwrap().is_none());
        assert_eq!(LockFile::holder(&p), Some(std::process::id()));
        drop(first);
        assert!(LockFile::try_acquire(&p).unwrap().is_some());
    }

    /// A task waiting for a held lock leaves a current-thread runtime free: a 10 ms timer
    /// keeps ticking, and the wait ends with the lock once the holder lets go.
    #[test]
    fn waiting_for_a_lock_does_not_block_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.lock");
        let held = LockFile::try_acquire(&p).unwrap().unwrap();
        let other = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = ticks.clone();
        let got = rt.block_on(async move {
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            let got = wait_for_lock(&p, std::time::Duration::from_secs(10)).await;
            ticker.abort();
            got
        });
        other.join().unwrap();
        assert!(got.unwrap().is_some(), "the lock was let go after 300 ms");
        let n = ticks.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n >= 10, "the timer ticked {n} times in 300 ms of waiting");
    }

    #[test]
    fn a_lock_wait_gives_up_after_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.lock");
        let _held = LockFile::try_acquire(&p).unwrap().unwrap();
        let started = std::time::Instant::now();
        assert!(
            wait_for_lock_blocking(&p, std::time::Duration::from_millis(200))
                .unwrap()
                .is_none()
        );
        assert!(wait_for_lock_blocking(&p, std::time::Duration::ZERO)
            .unwrap()
            .is_none());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// A kill at any step of replacing the id (database mode adopts the JPD's) leaves a data
    /// folder that starts, holding the old id or the new one. Failed before the old checksum
    /// was dropped first: the new id beside the old checksum was refused as corrupt at every
    /// later start.
    #[test]
    fn replacing_the_jpd_id_killed_at_any_step_leaves_a_folder_that_starts() {
        for stop in 0..=3 {
            let dir = tempfile::tempdir().unwrap();
            open_jpd_id(dir.path(), || "jpd-local-1".into()).unwrap();
            write_jpd_id_until(dir.path(), "jpd-shared-2", &mut |step| step < stop).unwrap();
            let id = open_jpd_id(dir.path(), || unreachable!("made again"))
                .unwrap_or_else(|e| panic!("killed before step {stop}: {e}"));
            assert!(
                ["jpd-local-1", "jpd-shared-2"].contains(&id.as_str()),
                "{stop}: {id}"
            );
            adopt_jpd_id(dir.path(), "jpd-shared-2").unwrap();
            assert_eq!(read_jpd_id(dir.path()).unwrap().unwrap(), "jpd-shared-2");
            assert!(
                check_jpd_id(dir.path()).unwrap().unwrap().1,
                "checksum back"
            );
        }
    }

    #[test]
    fn jpd_id_is_made_once_adopted_with_a_checksum_and_refused_when_edited() {
        let dir = tempfile::tempdir().unwrap();
        let id = open_jpd_id(dir.path(), || "jpd-made-1".into()).unwrap();
        assert_eq!(id, "jpd-made-1");
        assert_eq!(
            open_jpd_id(dir.path(), || unreachable!("made twice")).unwrap(),
            id
        );
        // An id from before checksums: read as it is, adopted by open_jpd_id.
        fs::remove_file(dir.path().join(JPD_ID_SUM_FILE)).unwrap();
        fs::write(dir.path().join(JPD_ID_FILE), "jpd-old-2").unwrap();
        assert_eq!(read_jpd_id(dir.path()).unwrap().unwrap(), "jpd-old-2");
        assert!(!dir.path().join(JPD_ID_SUM_FILE).exists());
        assert_eq!(
            open_jpd_id(dir.path(), || unreachable!()).unwrap(),
            "jpd-old-2"
        );
        assert!(dir.path().join(JPD_ID_SUM_FILE).exists());
        fs::write(dir.path().join(JPD_ID_FILE), "jpd-old-3").unwrap();
        assert!(matches!(
            read_jpd_id(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }
}
