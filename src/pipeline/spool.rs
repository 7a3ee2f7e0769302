//! The spool: which files are finished usage files, which are still being written, and which
//! are not usage files at all.
//!
//! **Handshake.** A writer should create a file under a temporary name (a dotfile, `*.tmp` or
//! `*.part`) and rename it to its final name when complete; those names are never picked up. For
//! writers that write in place, every file (a renamed one too: a rename keeps the mtime, so the
//! two cannot be told apart) is taken only once its mtime is older than the settle window, and its size and mtime are checked again after it was read: if either changed, the
//! file is still being written and is left for the next run (never quarantined).
//!
//! **Validation** (pure, [`validate`]): one JSON object with `product` (a non-empty string) and
//! `timestamp` (RFC 3339); every other field is kept byte for byte because the file's bytes are
//! never rewritten. Anything else is moved to `<data_dir>/quarantine/` with a `.reason` sidecar.
//!
//! Listing streams: the folder is read with one `read_dir` iterator, in bounded batches of
//! names, so a million files never sit in memory at once.

use super::failpoint::Failpoints;
use super::PipelineError;
use crate::bundle::{deflate_threads, Ordered};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What identifies one spool file on disk: device, inode, size, mtime and ctime, taken with
/// `fstat` on an open descriptor. Checked again, on a fresh descriptor, right before the file
/// is deleted. The ctime catches a file rewritten in place with its mtime set back, which no
/// one can set back by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number (0 in plans written before it was recorded).
    #[serde(default)]
    pub dev: u64,
    /// Status-change time, nanoseconds since the epoch (0 in plans written before it was
    /// recorded).
    #[serde(default)]
    pub ctime_ns: i64,
}

impl Identity {
    /// The identity of a file from its metadata.
    #[cfg(unix)]
    pub fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Identity {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The identity of `name` in the folder open as `dir`, without following a symlink and
    /// without opening it (one `statx`); `Ok(None)` when it is not a regular file. Equal to
    /// [`Identity::of`] the same file's metadata.
    #[cfg(target_os = "linux")]
    pub(crate) fn at(
        dir: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
    ) -> io::Result<Option<Identity>> {
        use rustix::fs::{AtFlags, StatxFlags};
        let s = rustix::fs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )?;
        if u32::from(s.stx_mode) & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        let ns = |t: rustix::fs::StatxTimestamp| {
            t.tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.tv_nsec))
        };
        Ok(Some(Identity {
            size: s.stx_size,
            mtime_ns: ns(s.stx_mtime),
            ino: s.stx_ino,
            dev: rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor),
            ctime_ns: ns(s.stx_ctime),
        }))
    }

    /// True when `now` is the file this identity was taken of, unchanged. Fields a plan of an
    /// older version did not record (0) are not compared.
    pub(crate) fn same_file(&self, now: &Identity) -> bool {
        self.size == now.size
            && self.mtime_ns == now.mtime_ns
            && self.ino == now.ino
            && (self.dev == 0 || self.dev == now.dev)
            && (self.ctime_ns == 0 || self.ctime_ns == now.ctime_ns)
    }
}

/// Opens a spool file for reading without ever blocking and without following a symlink
/// (`O_NONBLOCK | O_NOFOLLOW | O_NOCTTY`), then checks with `fstat` on the open descriptor that
/// it is a regular file. `Ok(Err(reason))` for anything else (FIFO, socket, device, symlink,
/// folder): such a file is never read. Opening a FIFO this way returns at once, where a plain
/// `open` would wait for a writer forever.
#[cfg(unix)]
pub(crate) fn open_regular(path: &Path) -> io::Result<Result<(fs::File, fs::Metadata), String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path);
    checked_regular(opened)
}

/// [`open_regular`] of `name` in the folder open as `dir` (`openat`: no path walk per file).
#[cfg(unix)]
pub(crate) fn open_regular_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<Result<(fs::File, fs::Metadata), String>> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY;
    let opened = rustix::fs::openat(dir, name, flags | OFlags::CLOEXEC, Mode::empty())
        .map(fs::File::from)
        .map_err(io::Error::from);
    checked_regular(opened)
}

#[cfg(unix)]
fn checked_regular(
    opened: io::Result<fs::File>,
) -> io::Result<Result<(fs::File, fs::Metadata), String>> {
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Err("it is a symbolic link".into()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(Err(
                "it is a socket or a device with nothing behind it".into()
            ))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let t = meta.file_type();
    if t.is_file() {
        return Ok(Ok((file, meta)));
    }
    Ok(Err(format!(
        "it is {}, not a regular file",
        crate::secret::kind_of(&t)
    )))
}

/// The two fields jfconnect reads from a usage file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageHead {
    /// The product that wrote it.
    pub product: String,
    /// When it was written (its UTC date chooses the archive folder).
    pub timestamp: DateTime<Utc>,
}

/// A finished, valid usage file.
#[derive(Debug, Clone)]
pub(crate) struct UsageFile {
    /// Its name in the spool.
    pub name: String,
    /// Lower-case hex SHA-256 of its bytes: its identity everywhere.
    pub sha256: String,
    /// Product and timestamp.
    pub head: UsageHead,
    /// Size, mtime and inode when it was read.
    pub ident: Identity,
    /// Its bytes (empty when the caller did not ask to keep them).
    pub content: Vec<u8>,
}

/// What looking at one spool entry found.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// A finished, valid usage file.
    Ready(UsageFile),
    /// Still being written (too young, or changed while read): left for a later run.
    NotSettled,
    /// Gone, or not a regular file: ignored.
    Skipped,
    /// Not a usage file: to be quarantined with this reason.
    Invalid {
        /// The file's name.
        name: OsString,
        /// Why, in one sentence.
        reason: String,
    },
}

/// True for names that may be finished usage files: not dotfiles, not `*.tmp`, not `*.part`.
pub(crate) fn is_candidate_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    let lower = bytes.to_ascii_lowercase();
    !(bytes.is_empty()
        || bytes[0] == b'.'
        || lower.ends_with(b".tmp")
        || lower.ends_with(b".part")
        || lower.ends_with(b".reason"))
}

/// The two fields validation reads, borrowed from the file's bytes; every other field is
/// skipped without being built (serde's `IgnoredAny`).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    product: Field<'a>,
    #[serde(default, borrow)]
    timestamp: Field<'a>,
}

/// A field's value as far as validation cares: absent, a string (borrowed unless it has
/// escapes), or anything else (skipped, not built).
#[derive(Default)]
enum Field<'a> {
    #[default]
    Missing,
    Text(std::borrow::Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        use std::borrow::Cow;
        struct Any<'a>(std::marker::PhantomData<Field<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Any<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
                Ok(Field::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Field<'a>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Field<'a>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(Any(std::marker::PhantomData))
    }
}

/// Checks that `bytes` is one JSON object with a `product` string and an RFC 3339 `timestamp`:
/// the one parse of a usage file, shared by the upload, the export and the archive plan.
pub(crate) fn validate(bytes: &[u8]) -> Result<UsageHead, String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err("it is not a JSON object".into());
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not valid JSON ({e})"))?;
    let product = match head.product {
        Field::Text(s) if !s.trim().is_empty() => s.into_owned(),
        Field::Text(_) => return Err("its `product` is empty".into()),
        Field::Other => return Err("its `product` is not a string".into()),
        Field::Missing => return Err("it has no `product` field".into()),
    };
    let timestamp = match head.timestamp {
        Field::Text(s) => DateTime::parse_from_rfc3339(&s)
            .map_err(|e| format!("its `timestamp` {s:?} is not RFC 3339 ({e})"))?
            .with_timezone(&Utc),
        Field::Other => return Err("its `timestamp` is not a string".into()),
        Field::Missing => return Err("it has no `timestamp` field".into()),
    };
    Ok(UsageHead { product, timestamp })
}

/// Opens `dir` as a descriptor for the `*at` calls (`openat`, `statx`, `unlinkat`).
pub(crate) fn open_dir(dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

/// A streaming listing of the spool, in bounded batches of candidate names; its files are
/// opened relative to the folder's own descriptor.
pub(crate) struct SpoolScan {
    iter: fs::ReadDir,
    dir: PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl SpoolScan {
    /// Opens the spool folder (creating it when missing).
    pub fn open(dir: &Path) -> Result<Self, PipelineError> {
        fs::create_dir_all(dir).map_err(|e| PipelineError::io("create", dir, e))?;
        let iter = fs::read_dir(dir).map_err(|e| PipelineError::io("list", dir, e))?;
        let fd = open_dir(dir).map_err(|e| PipelineError::io("list", dir, e))?;
        Ok(SpoolScan {
            iter,
            dir: dir.to_path_buf(),
            fd,
        })
    }

    /// Up to `n` more candidate names; empty at the end.
    pub(crate) fn next_names(&mut self, n: usize) -> Result<Vec<OsString>, PipelineError> {
        list_names(&mut self.iter, &self.dir, n)
    }
}

/// Up to `n` more candidate names of the listing `iter` of `dir`; empty at the end.
fn list_names(
    iter: &mut fs::ReadDir,
    dir: &Path,
    n: usize,
) -> Result<Vec<OsString>, PipelineError> {
    let mut out = Vec::with_capacity(n.min(4096));
    for entry in iter.by_ref() {
        let entry = entry.map_err(|e| PipelineError::io("list", dir, e))?;
        let name = entry.file_name();
        if !is_candidate_name(&name) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_file() => out.push(name),
            _ => continue,
        }
        if out.len() >= n {
            break;
        }
    }
    Ok(out)
}

/// Counts candidate names in `dir` without reading any file (for progress totals).
pub(crate) fn count_candidates(dir: &Path) -> u64 {
    match fs::read_dir(dir) {
        Ok(it) => it
            .filter_map(Result::ok)
            .filter(|e| is_candidate_name(&e.file_name()))
            .count() as u64,
        Err(_) => 0,
    }
}

/// Looks at one spool entry, opened with [`open_regular_at`]: settled (by `now`)? valid? its
/// SHA-256. Keeps the bytes when `keep`.
fn examine(
    opened: io::Result<Result<(fs::File, fs::Metadata), String>>,
    name: &OsStr,
    (settle, now): (Duration, SystemTime),
    max: u64,
    keep: bool,
) -> Scanned {
    let Some(text_name) = name.to_str() else {
        return Scanned::Invalid {
            name: name.to_owned(),
            reason: "its file name is not valid UTF-8".into(),
        };
    };
    let invalid = |reason: String| Scanned::Invalid {
        name: name.to_owned(),
        reason,
    };
    let (file, meta) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(reason)) => {
            tracing::warn!(file = %text_name, %reason, "spool entry skipped");
            return Scanned::Skipped;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Scanned::Skipped,
        Err(e) => return invalid(format!("it cannot be opened ({e})")),
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok());
    if age.is_some_and(|a| a < settle) {
        return Scanned::NotSettled;
    }
    let too_large = |size: u64| {
        format!("it is {size} bytes, larger than jfconnect.usage.max_file_bytes ({max} bytes)")
    };
    if meta.len() > max {
        return invalid(too_large(meta.len()));
    }
    let (content, after) = match read_known(&file, meta.len()) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Scanned::Skipped,
        Err(e) => return invalid(format!("it cannot be read ({e})")),
    };
    let before = Identity::of(&meta);
    let now = Identity::of(&after);
    if before != now || content.len() as u64 != now.size {
        return Scanned::NotSettled;
    }
    if content.len() as u64 > max {
        return invalid(too_large(content.len() as u64));
    }
    match validate(&content) {
        Ok(head) => Scanned::Ready(UsageFile {
            name: text_name.to_string(),
            sha256: hex::encode(Sha256::digest(&content)),
            head,
            ident: now,
            content: if keep { content } else { Vec::new() },
        }),
        Err(reason) => invalid(reason),
    }
}

/// Reads the `size` bytes `fstat` gave (one `read` for a usage file), then `fstat`s again. No
/// read looks for the end: a file that grew, shrank or was rewritten meanwhile shows another
/// size, mtime or ctime in the second `fstat`, and is left for the next run.
fn read_known(mut f: &fs::File, size: u64) -> io::Result<(Vec<u8>, fs::Metadata)> {
    let want = usize::try_from(size).map_err(io::Error::other)?;
    let mut content = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match f.read(&mut content[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    content.truncate(filled);
    // fstat of what was read: a file written to meanwhile shows another size, mtime or ctime.
    let meta = f.metadata()?;
    Ok((content, meta))
}

/// What a scan saw besides the files it handed on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanCounts {
    /// Names looked at.
    pub examined: u64,
    /// Files moved to quarantine.
    pub quarantined: u64,
    /// Files still being written (left for a later run).
    pub not_settled: u64,
}

/// The rules of one scan: how settled a file must be, how large it may be, where refused
/// files go.
#[derive(Clone)]
pub(crate) struct ScanRules {
    /// The quarantine folder.
    pub quarantine: PathBuf,
    /// Settle window.
    pub settle: Duration,
    /// `usage.max_file_bytes`.
    pub max: u64,
    /// The run's failpoints.
    pub failpoint: Failpoints,
    /// The run's clock (read once per batch).
    pub clock: crate::clock::SharedClock,
}

/// One examined name: handed on, or anything else.
enum Examined<R> {
    Ready(R),
    Other(Scanned),
}

impl SpoolScan {
    /// The one scan-and-quarantine step of the pipeline: the next batch of up to `n` names is
    /// examined on every core, each ready file handed to `ready` on its worker thread (with a
    /// per-thread state from `init`), invalid files quarantined here, the rest counted in
    /// `counts`. Answers the ready files' results in listing order; `None` at the end.
    pub(crate) fn next_batch<S, R: Send>(
        &mut self,
        n: usize,
        rules: &ScanRules,
        counts: &mut ScanCounts,
        init: impl Fn() -> S + Sync,
        ready: impl Fn(&mut S, UsageFile) -> R + Sync,
    ) -> Result<Option<Vec<R>>, PipelineError> {
        let names = self.next_names(n)?;
        if names.is_empty() {
            return Ok(None);
        }
        let now: SystemTime = rules.clock.now().into();
        let fd = std::os::fd::AsFd::as_fd(&self.fd);
        let scanned = par_map(
            &names,
            init,
            |state, name| look(fd, rules, now, name, state, &ready),
            || Examined::Other(Scanned::NotSettled),
        );
        settle(&self.dir, rules, counts, scanned).map(Some)
    }

    /// The same step over the whole spool as one pipeline ([`Ordered`]): names are listed in
    /// chunks of `n` on one thread, examined and handed to `ready` on every core, and each
    /// chunk's ready results handed to `sink` in listing order on this thread, with the counts
    /// so far (invalid files quarantined first), while the next chunks are being examined.
    pub(crate) fn stream<S, R: Send>(
        &mut self,
        n: usize,
        rules: &ScanRules,
        counts: &mut ScanCounts,
        init: impl Fn() -> S + Sync,
        ready: impl Fn(&mut S, UsageFile) -> R + Sync,
        mut sink: impl FnMut(&ScanCounts, Vec<R>) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        let SpoolScan { iter, dir, fd } = self;
        let (dir, fd) = (&*dir, std::os::fd::AsFd::as_fd(&*fd));
        Ordered {
            next: || {
                let names = list_names(iter, dir, n)?;
                if names.is_empty() {
                    return Ok(None);
                }
                let now: SystemTime = rules.clock.now().into();
                Ok(Some(names.into_iter().map(|name| (name, now)).collect()))
            },
            init,
            work: |state: &mut S, (name, now): (OsString, SystemTime)| {
                look(fd, rules, now, &name, state, &ready)
            },
            on_panic: || Examined::Other(Scanned::NotSettled),
        }
        .run(
            deflate_threads(),
            |scanned| {
                let out = settle(dir, rules, counts, scanned)?;
                sink(counts, out)
            },
            || PipelineError::io("scan", dir, io::Error::other("a worker thread stopped")),
        )
    }
}

/// Examines spool entry `name` (relative to the spool's descriptor `fd`) as of `now`, handing
/// a ready file to `ready`.
fn look<S, R>(
    fd: std::os::fd::BorrowedFd<'_>,
    rules: &ScanRules,
    now: SystemTime,
    name: &OsStr,
    state: &mut S,
    ready: &impl Fn(&mut S, UsageFile) -> R,
) -> Examined<R> {
    match examine(
        open_regular_at(fd, name),
        name,
        (rules.settle, now),
        rules.max,
        true,
    ) {
        Scanned::Ready(f) => Examined::Ready(ready(state, f)),
        other => Examined::Other(other),
    }
}

/// Counts and quarantines what a chunk examined, in listing order; answers the ready results.
fn settle<R>(
    dir: &Path,
    rules: &ScanRules,
    counts: &mut ScanCounts,
    scanned: Vec<Examined<R>>,
) -> Result<Vec<R>, PipelineError> {
    let mut out = Vec::with_capacity(scanned.len());
    counts.examined += scanned.len() as u64;
    for s in scanned {
        match s {
            Examined::Ready(r) => out.push(r),
            Examined::Other(Scanned::Ready(_) | Scanned::Skipped) => {}
            Examined::Other(Scanned::NotSettled) => counts.not_settled += 1,
            Examined::Other(Scanned::Invalid { name, reason }) => {
                quarantine(dir, &rules.quarantine, &name, &reason, &rules.failpoint)?;
                counts.quarantined += 1;
            }
        }
    }
    Ok(out)
}

/// Maps `items` on every core, each worker thread with its own `state` (made by `init`);
/// answers in the items' order. Items of a worker that panicked (there should be none) map to
/// `on_panic()`, so they are left for the next run.
pub(crate) fn par_map<T: Sync, S, R: Send>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
    on_panic: impl Fn() -> R,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 8 {
        let mut state = init();
        return items.iter().map(|i| f(&mut state, i)).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let (init, f) = (&init, &f);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut state = init();
                    part.iter().map(|i| f(&mut state, i)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(items.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join()
                    .unwrap_or_else(|_| part.iter().map(|_| on_panic()).collect())
            })
            .collect()
    })
}

/// Moves `name` from the spool to `quarantine` with a `<name>.reason` sidecar, durably: the
/// reason is written first, then the file is renamed (copied and fsynced across file systems),
/// then both folders are fsynced. Never deletes a file that was not copied.
pub fn quarantine(
    spool: &Path,
    quarantine: &Path,
    name: &OsStr,
    reason: &str,
    failpoint: &Failpoints,
) -> Result<PathBuf, PipelineError> {
    fs::create_dir_all(quarantine).map_err(|e| PipelineError::io("create", quarantine, e))?;
    let dest = free_name(quarantine, name);
    let mut sidecar = dest.clone().into_os_string();
    sidecar.push(".reason");
    let sidecar = PathBuf::from(sidecar);
    let text = format!("{}: {reason}\n", name.to_string_lossy());
    crate::state::write_atomic(&sidecar, text.as_bytes())
        .map_err(|e| PipelineError::io("write", &sidecar, e))?;
    failpoint.hit("quarantine-after-reason")?;
    let src = spool.join(name);
    match fs::rename(&src, &dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => copy_then_remove(&src, &dest)?,
        Err(e) => return Err(PipelineError::io("quarantine", &src, e)),
    }
    crate::state::sync_dir(quarantine).map_err(|e| PipelineError::fsync(quarantine, e))?;
    crate::state::sync_dir(spool).map_err(|e| PipelineError::fsync(spool, e))?;
    tracing::warn!(file = %name.to_string_lossy(), %reason, to = %dest.display(), "usage file quarantined");
    Ok(dest)
}

fn free_name(dir: &Path, name: &OsStr) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|i| {
            let mut n = name.to_os_string();
            n.push(format!(".{i}"));
            dir.join(n)
        })
        .find(|p| !p.exists())
        .unwrap_or(first)
}

fn copy_then_remove(src: &Path, dest: &Path) -> Result<(), PipelineError> {
    crate::state::copy_durably(src, dest, crate::state::Durably::default()).map_err(|e| match e
        .step
    {
        "fsync" => PipelineError::fsync(&e.path, e.source),
        step => PipelineError::io(step, &e.path, e.source),
    })?;
    fs::remove_file(src).map_err(|e| PipelineError::io("remove", src, e))
}

/// How many files are in quarantine (sidecars not counted).
pub(crate) fn count_quarantined(dir: &Path) -> u64 {
    match fs::read_dir(dir) {
        Ok(it) => it
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let b = n.as_encoded_bytes();
                !b.ends_with(b".reason") && !b.starts_with(b".")
            })
            .count() as u64,
        Err(_) => 0,
    }
}

/// One file in quarantine, as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quarantined {
    /// Its name (not UTF-8 bytes replaced).
    pub name: String,
    /// Why it was quarantined (from its `.reason` sidecar, at most 4 KiB).
    pub reason: String,
    /// Its size.
    pub size: u64,
    /// When it was last modified.
    pub modified: Option<chrono::DateTime<Utc>>,
}

/// Entries of the quarantine folder looked at, at most, by [`list_quarantined`].
const QUARANTINE_SCAN: usize = 10_000;

/// The newest `max` files in quarantine with their reasons, newest first. Reads only; looks at
/// no more than 10,000 entries, so a huge quarantine costs a bounded time.
pub(crate) fn list_quarantined(dir: &Path, max: usize) -> Vec<Quarantined> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Quarantined> = entries
        .filter_map(Result::ok)
        .take(QUARANTINE_SCAN)
        .filter(|e| {
            let n = e.file_name();
            let b = n.as_encoded_bytes();
            !b.ends_with(b".reason") && !b.starts_with(b".")
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let mut sidecar = e.path().into_os_string();
            sidecar.push(".reason");
            let name = e.file_name().to_string_lossy().into_owned();
            let reason = match open_regular(Path::new(&sidecar)) {
                Ok(Ok((f, _))) => {
                    let mut text = String::new();
                    let _ = io::Read::read_to_string(&mut io::Read::take(f, 4096), &mut text);
                    let text = text.trim_end();
                    text.strip_prefix(&format!("{name}: "))
                        .unwrap_or(text)
                        .to_string()
                }
                _ => "(no reason recorded)".to_string(),
            };
            Some(Quarantined {
                name,
                reason,
                size: meta.len(),
                modified: meta.modified().ok().map(chrono::DateTime::<Utc>::from),
            })
        })
        .collect();
    found.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.name.cmp(&b.name)));
    found.truncate(max);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_never_candidates() {
        for n in [".x.json", "a.tmp", "a.TMP", "b.part", ".", "c.reason"] {
            assert!(!is_candidate_name(OsStr::new(n)), "{n}");
        }
        for n in ["a.json", "usage-1", "x.tmp.json"] {
            assert!(is_candidate_name(OsStr::new(n)), "{n}");
        }
    }

    #[test]
    fn a_usage_file_needs_product_and_rfc3339_timestamp() {
        let ok = validate(br#"{"product":"xray","timestamp":"2024-03-01T23:30:00-02:00","n":1}"#)
            .unwrap();
        assert_eq!(ok.product, "xray");
        let escaped = validate(
            br#"{"x":{"product":1},"product":"x\u0072ay","timestamp":"2024-03-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(escaped.product, "xray");
        assert_eq!(ok.timestamp.to_rfc3339(), "2024-03-02T01:30:00+00:00");
        let cases: &[(&[u8], &str)] = &[
            (b"", "not a JSON object"),
            (b"[1,2]", "not a JSON object"),
            (br#"["p","2024-01-01T00:00:00Z"]"#, "not a JSON object"),
            (b"{", "not valid JSON"),
            (
                br#"{"product":"a","timestamp":"2024-01-01T00:00:00Z"} {}"#,
                "not valid JSON",
            ),
            (br#"{"timestamp":"2024-01-01T00:00:00Z"}"#, "no `product`"),
            (
                br#"{"product":7,"timestamp":"2024-01-01T00:00:00Z"}"#,
                "not a string",
            ),
            (
                br#"{"product":" ","timestamp":"2024-01-01T00:00:00Z"}"#,
                "empty",
            ),
            (br#"{"product":"a"}"#, "no `timestamp`"),
            (
                br#"{"product":"a","timestamp":"yesterday"}"#,
                "not RFC 3339",
            ),
            (
                br#"{"product":"a","product":"b","timestamp":"2024-01-01T00:00:00Z"}"#,
                "duplicate",
            ),
            (b"\xff\xfe{}", "not a JSON object"),
            (
                br#"{"product":null,"timestamp":"2024-01-01T00:00:00Z"}"#,
                "not a string",
            ),
            (
                br#"{"product":{"a":[1]},"timestamp":"2024-01-01T00:00:00Z"}"#,
                "not a string",
            ),
            (br#"{"product":"a","timestamp":["x"]}"#, "not a string"),
        ];
        for (bytes, want) in cases {
            let err = validate(bytes).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
