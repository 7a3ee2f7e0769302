//! The single node's set of uploaded files: an append-only log over a sorted index, in
//! `<data_dir>/usage/ledger/`.
//!
//! - `uploaded.log` holds one record per line, readable by hand: `+<sha256>` (acknowledged)
//!   and `-<sha256>` (archived, forgotten). A batch of marks is one write and one
//!   `fdatasync`, and [`UploadedSet::mark`] returns only after it: the claim never precedes
//!   the acknowledgement and is never lost once relied on. Forgetting appends `-` lines
//!   without an fsync: an entry that comes back after a crash names content that was
//!   uploaded, which is true.
//! - `uploaded.idx` is a sorted array of 32-byte SHA-256s after a 64-byte header (magic,
//!   version, count, SHA-256 of the entries). A lookup reads one 4 KiB window at the place
//!   the key's value predicts (SHA-256 is uniform), so memory stays flat whatever the number
//!   of files. The whole index is checked (order and checksum) at open; a damaged one is
//!   refused.
//! - In memory: only the log's effect since the last compaction, at most [`COMPACT_AT`]
//!   records. At that size the index and the effect are merged into a new index (temp,
//!   fsync, rename, fsync folder), then the log is replaced by an empty one (same steps). A
//!   crash between the two re-applies the log over the new index, which changes nothing: the
//!   log is applied in order and the last record of a SHA-256 wins.
//!
//! At open, a torn last line of the log (a crash in the middle of an append, never fsynced
//! so never relied on) is cut off and the log fsynced; a bad line anywhere else is refused
//! with an error naming the file. A folder of the first format (one empty marker file
//! `uploaded/<sha256>` per file) is imported into the log, fsynced, and then the markers and
//! their folder are removed; a crash in the middle imports again, which changes nothing.
//!
//! The caller holds the pipeline lock: one process at a time writes these files.

use super::failpoint::Failpoints;
use super::PipelineError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The log of marks and forgets since the last compaction.
pub(crate) const LOG: &str = "uploaded.log";
/// The sorted index of what was uploaded as of the last compaction.
pub(crate) const INDEX: &str = "uploaded.idx";
/// The first format's folder of one empty marker file per uploaded file.
const OLD_MARKERS: &str = "uploaded";

/// Log records between compactions. It bounds memory — the log's effect is held in a map of
/// at most this many 33-byte entries, about 2.2 MiB at its peak with the map's own overhead —
/// and sets how often the index is rewritten: at a million files (a 32 MiB index) about 30
/// rewrites per million marks or forgets, a few seconds of sequential I/O in a run of minutes.
pub(crate) const COMPACT_AT: usize = 32_768;

const MAGIC: &[u8; 8] = b"JFCLEDGR";
const VERSION: u32 = 1;
/// Header: magic (8), version (4, LE), reserved (4), count (8, LE), SHA-256 of the entries
/// (32), reserved (8).
const HEADER: u64 = 64;
/// Entries read per lookup step: one 4 KiB page.
const WINDOW: u64 = 128;
/// One log record: sign, 64 hex digits, newline.
const RECORD: usize = 66;

/// A SHA-256, binary.
pub(crate) type Sha = [u8; 32];

/// The binary form of a SHA-256 written as 64 lower-case hex digits; `None` for anything
/// else (such an id never reaches the ledger).
pub(crate) fn parse_sha(s: &str) -> Option<Sha> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A log line (with its newline) as a SHA-256 and whether it marks (true) or forgets.
fn parse_record(line: &[u8]) -> Option<(Sha, bool)> {
    if line.len() != RECORD || line[RECORD - 1] != b'\n' {
        return None;
    }
    let up = match line[0] {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    let hex = std::str::from_utf8(&line[1..RECORD - 1]).ok()?;
    Some((parse_sha(hex)?, up))
}

/// The sorted index file, checked at open.
#[derive(Debug)]
struct Index {
    file: Option<File>,
    count: u64,
}

impl Index {
    fn none() -> Self {
        Index {
            file: None,
            count: 0,
        }
    }

    /// Opens and checks the index at `path` (none yet: an empty one).
    fn open(path: &Path) -> Result<Index, PipelineError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::none()),
            Err(e) => return Err(PipelineError::io("read", path, e)),
        };
        let damaged = |reason: String| PipelineError::BadLedger {
            path: path.to_path_buf(),
            reason,
        };
        let read_err = |e| PipelineError::io("read", path, e);
        let len = file.metadata().map_err(read_err)?.len();
        let mut r = BufReader::with_capacity(1 << 16, &file);
        let mut head = [0u8; HEADER as usize];
        if len < HEADER {
            return Err(damaged(format!(
                "it holds {len} bytes, less than its {HEADER}-byte header"
            )));
        }
        r.read_exact(&mut head).map_err(read_err)?;
        if &head[..8] != MAGIC {
            return Err(damaged(
                "it does not start with the ledger index's magic".into(),
            ));
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version != VERSION {
            return Err(damaged(format!(
                "its format version is {version}, this jfconnect reads {VERSION}"
            )));
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&head[16..24]);
        let count = u64::from_le_bytes(c);
        if count.checked_mul(32).and_then(|b| b.checked_add(HEADER)) != Some(len) {
            return Err(damaged(format!(
                "it holds {len} bytes where its header announces {count} entries"
            )));
        }
        let mut hasher = Sha256::new();
        let (mut prev, mut cur) = ([0u8; 32], [0u8; 32]);
        for i in 0..count {
            r.read_exact(&mut cur).map_err(read_err)?;
            if i > 0 && cur <= prev {
                return Err(damaged(format!("its entry {i} is out of order")));
            }
            hasher.update(cur);
            prev = cur;
        }
        if hasher.finalize().as_slice() != &head[24..56] {
            return Err(damaged("its entries do not match its checksum".into()));
        }
        drop(r);
        Ok(Index {
            file: Some(file),
            count,
        })
    }

    /// True when `key` is in the index: interpolation search, one 4 KiB `pread` per step
    /// (about one step for uniform keys), bisection after a few steps whatever the keys.
    fn contains(&self, key: &Sha) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let prefix = |k: &[u8]| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[..8]);
            u64::from_be_bytes(b)
        };
        let k = prefix(key);
        let (mut lo, mut hi) = (0u64, self.count);
        let (mut lo_key, mut hi_key) = (0u64, u64::MAX);
        let mut buf = [0u8; (WINDOW * 32) as usize];
        let mut step = 0;
        while lo < hi {
            let n = hi - lo;
            let take = n.min(WINDOW);
            let guess = if step < 4 && hi_key > lo_key {
                let span = u128::from(hi_key - lo_key) + 1;
                let at = u128::from(k.saturating_sub(lo_key)) * u128::from(n) / span;
                lo + (at as u64).saturating_sub(take / 2)
            } else {
                lo + (n - take) / 2
            };
            let start = guess.min(hi - take);
            step += 1;
            let window = &mut buf[..(take * 32) as usize];
            file.read_exact_at(window, HEADER + start * 32)?;
            let first = &window[..32];
            let last = &window[window.len() - 32..];
            if key.as_slice() < first {
                hi = start;
                hi_key = prefix(first);
            } else if key.as_slice() > last {
                lo = start + take;
                lo_key = prefix(last);
            } else {
                let (mut a, mut b) = (0usize, take as usize);
                while a < b {
                    let m = (a + b) / 2;
                    match window[m * 32..m * 32 + 32].cmp(key.as_slice()) {
                        std::cmp::Ordering::Less => a = m + 1,
                        std::cmp::Ordering::Greater => b = m,
                        std::cmp::Ordering::Equal => return Ok(true),
                    }
                }
                return Ok(false);
            }
        }
        Ok(false)
    }
}

/// The log file being appended to.
#[derive(Debug)]
struct Log {
    file: File,
    /// Records in it (each `+` or `-` line).
    records: usize,
    /// Its length: the end of its last whole line.
    len: u64,
    /// Set when an append failed and could not be undone: no more appends in this process
    /// (the next open cuts the torn tail).
    broken: bool,
}

/// What lookups read: the index and the log's effect since it was written.
#[derive(Debug)]
struct View {
    effect: HashMap<Sha, bool>,
    index: Index,
}

/// The set of uploaded SHA-256s (see the module documentation).
#[derive(Debug)]
pub(crate) struct UploadedSet {
    dir: PathBuf,
    log: Mutex<Log>,
    view: RwLock<View>,
    compact_at: usize,
    failpoint: Failpoints,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn sync_dir(dir: &Path) -> Result<(), PipelineError> {
    crate::state::sync_dir(dir).map_err(|e| PipelineError::fsync(dir, e))
}

impl UploadedSet {
    /// Opens the set in `dir` (created durably when missing), compacting every
    /// `compact_at` log records; `failpoint` may stop a compaction half-way.
    pub(crate) fn open(
        dir: &Path,
        compact_at: usize,
        failpoint: Failpoints,
    ) -> Result<Self, PipelineError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| PipelineError::io("create", dir, e))?;
            for d in dir.ancestors().skip(1).take(2) {
                sync_dir(d)?;
            }
        }
        let index = Index::open(&dir.join(INDEX))?;
        let (log, effect) = replay(&dir.join(LOG))?;
        let set = UploadedSet {
            dir: dir.to_path_buf(),
            log: Mutex::new(log),
            view: RwLock::new(View { effect, index }),
            compact_at: compact_at.max(1),
            failpoint,
        };
        set.import_markers()?;
        set.maybe_compact(&mut lock(&set.log))?;
        Ok(set)
    }

    /// The ledger folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when `sha256` was marked and not forgotten since. A failed read of the index
    /// answers false (the file is then uploaded again, or not archived yet: both safe).
    pub(crate) fn contains(&self, sha256: &str) -> bool {
        let Some(key) = parse_sha(sha256) else {
            return false;
        };
        let v = read(&self.view);
        if let Some(up) = v.effect.get(&key) {
            return *up;
        }
        v.index.contains(&key).unwrap_or_else(|e| {
            tracing::warn!(index = %self.dir.join(INDEX).display(), error = %e, "cannot read the usage ledger's index; the file is treated as not uploaded");
            false
        })
    }

    /// Records durably (one append, one `fdatasync`) that these files were acknowledged.
    /// Ids that are not SHA-256s are skipped.
    pub(crate) fn mark<'a>(
        &self,
        shas: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PipelineError> {
        self.append(b'+', shas)
    }

    /// Records (without an fsync) that these files were archived.
    pub(crate) fn forget<'a>(
        &self,
        shas: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PipelineError> {
        self.append(b'-', shas)
    }

    fn append<'a>(
        &self,
        sign: u8,
        shas: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PipelineError> {
        let mut buf = Vec::new();
        let mut keys = Vec::new();
        for s in shas {
            if let Some(k) = parse_sha(s) {
                buf.push(sign);
                buf.extend_from_slice(s.as_bytes());
                buf.push(b'\n');
                keys.push(k);
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(LOG);
        let mut log = lock(&self.log);
        if log.broken {
            return Err(PipelineError::io(
                "append to",
                &path,
                io::Error::other("an earlier append failed in this run"),
            ));
        }
        if let Err(e) = (&log.file).write_all(&buf) {
            // Undo a partial line so later appends stay whole lines; if even that fails, no
            // more appends (the next open cuts the torn tail).
            let len = log.len;
            log.broken = log.file.set_len(len).is_err();
            return Err(PipelineError::io("append to", &path, e));
        }
        if sign == b'+' {
            if let Err(e) = log.file.sync_data() {
                log.broken = true;
                return Err(PipelineError::fsync(&path, e));
            }
        }
        log.len += buf.len() as u64;
        log.records += keys.len();
        {
            let mut v = write(&self.view);
            for k in keys {
                v.effect.insert(k, sign == b'+');
            }
        }
        self.maybe_compact(&mut log)
    }

    fn maybe_compact(&self, log: &mut Log) -> Result<(), PipelineError> {
        if log.records < self.compact_at {
            return Ok(());
        }
        self.compact(log, &mut |_| true)
    }

    /// Merges the index and the log's effect into a new index, then empties the log. Asks
    /// `go_on(step)` before each durable step (0: write the new index's temp file, 1: rename
    /// it into place, 2: replace the log by an empty one); a test answers false to stop
    /// there, as a kill would.
    fn compact(
        &self,
        log: &mut Log,
        go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<(), PipelineError> {
        let index_path = self.dir.join(INDEX);
        let tmp = self.dir.join("uploaded.idx.tmp");
        if !go_on(0) {
            return Ok(());
        }
        let count = {
            let v = read(&self.view);
            write_index(&tmp, &index_path, &v.index, &v.effect)?
        };
        if !go_on(1) {
            return Ok(());
        }
        fs::rename(&tmp, &index_path)
            .map_err(|e| PipelineError::io("rename into place", &index_path, e))?;
        sync_dir(&self.dir)?;
        self.failpoint.hit("ledger-after-index")?;
        if !go_on(2) {
            return Ok(());
        }
        let log_path = self.dir.join(LOG);
        let log_tmp = self.dir.join("uploaded.log.tmp");
        File::create(&log_tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| PipelineError::io("write", &log_tmp, e))?;
        fs::rename(&log_tmp, &log_path)
            .map_err(|e| PipelineError::io("rename into place", &log_path, e))?;
        sync_dir(&self.dir)?;
        let file = open_log(&log_path)?;
        let index =
            File::open(&index_path).map_err(|e| PipelineError::io("read", &index_path, e))?;
        let mut v = write(&self.view);
        v.index = Index {
            file: Some(index),
            count,
        };
        v.effect = HashMap::new();
        *log = Log {
            file,
            records: 0,
            len: 0,
            broken: false,
        };
        Ok(())
    }

    /// Imports a folder of the first format's markers (see the module documentation).
    fn import_markers(&self) -> Result<(), PipelineError> {
        let old = self.dir.join(OLD_MARKERS);
        let entries = match fs::read_dir(&old) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(PipelineError::io("list", &old, e)),
        };
        let mut chunk: Vec<String> = Vec::new();
        let mut imported = 0u64;
        for e in entries {
            let e = e.map_err(|e| PipelineError::io("list", &old, e))?;
            if let Some(name) = e.file_name().to_str() {
                if parse_sha(name).is_some() {
                    chunk.push(name.to_string());
                }
            }
            if chunk.len() >= 8192 {
                imported += chunk.len() as u64;
                self.mark(chunk.iter().map(String::as_str))?;
                chunk.clear();
            }
        }
        imported += chunk.len() as u64;
        self.mark(chunk.iter().map(String::as_str))?;
        retire_markers(&old)?;
        sync_dir(&self.dir)?;
        tracing::info!(
            markers = imported,
            folder = %old.display(),
            "imported the usage ledger's marker files into its log"
        );
        Ok(())
    }

    /// Files in the set (marked and not forgotten): the index's count corrected by the log.
    pub(crate) fn count(&self) -> u64 {
        let v = read(&self.view);
        let mut n = v.index.count;
        for (k, up) in &v.effect {
            let indexed = v.index.contains(k).unwrap_or(false);
            match (up, indexed) {
                (true, false) => n += 1,
                (false, true) => n -= 1,
                _ => {}
            }
        }
        n
    }
}

/// Removes the first format's marker files and their folder, once their content is in the
/// log (durably). A folder holding anything else is left, with a warning.
fn retire_markers(old: &Path) -> Result<(), PipelineError> {
    let entries = fs::read_dir(old).map_err(|e| PipelineError::io("list", old, e))?;
    for e in entries {
        let e = e.map_err(|e| PipelineError::io("list", old, e))?;
        let is_marker = e.file_name().to_str().and_then(parse_sha).is_some();
        if !is_marker {
            continue;
        }
        match fs::remove_file(e.path()) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(PipelineError::io("remove", &e.path(), err)),
        }
    }
    if let Err(e) = fs::remove_dir(old) {
        tracing::warn!(folder = %old.display(), error = %e, "the usage ledger's old marker folder holds other files; left in place");
    }
    Ok(())
}

fn open_log(path: &Path) -> Result<File, PipelineError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| PipelineError::io("open", path, e))
}

/// Reads the log at `path` (created when missing) into its effect, cutting a torn last line.
fn replay(path: &Path) -> Result<(Log, HashMap<Sha, bool>), PipelineError> {
    let file = open_log(path)?;
    let read_err = |e| PipelineError::io("read", path, e);
    let mut effect = HashMap::new();
    let (mut records, mut good) = (0usize, 0u64);
    let mut r = BufReader::with_capacity(1 << 16, &file);
    let mut line = Vec::with_capacity(RECORD + 1);
    let mut n = 0u64;
    loop {
        line.clear();
        // At most one byte more than a record: a longer line is bad whatever follows.
        let got = r
            .by_ref()
            .take(RECORD as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(read_err)?;
        if got == 0 {
            break;
        }
        n += 1;
        if let Some((sha, up)) = parse_record(&line) {
            effect.insert(sha, up);
            records += 1;
            good += got as u64;
            continue;
        }
        // Only the last line may be bad: a write cut by a crash, never fsynced.
        let last = if line.last() == Some(&b'\n') {
            r.fill_buf().map_err(read_err)?.is_empty()
        } else if line.len() > RECORD {
            rest_is_one_line(&mut r).map_err(read_err)?
        } else {
            true
        };
        if !last {
            return Err(PipelineError::BadLedger {
                path: path.to_path_buf(),
                reason: format!("its line {n} is not a ledger record"),
            });
        }
        // The last line is torn (a crash in the middle of an append that was never
        // fsynced, so never relied on): cut it off.
        drop(r);
        file.set_len(good)
            .map_err(|e| PipelineError::io("truncate", path, e))?;
        file.sync_all().map_err(|e| PipelineError::fsync(path, e))?;
        tracing::warn!(log = %path.display(), line = n, "cut off the usage ledger's torn last line (a crash in the middle of a write)");
        break;
    }
    let log = Log {
        file,
        records,
        len: good,
        broken: false,
    };
    Ok((log, effect))
}

/// Reads on to the end of the current line; true when nothing follows it.
fn rest_is_one_line(r: &mut impl BufRead) -> io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            r.consume(i + 1);
            return Ok(r.fill_buf()?.is_empty());
        }
        let len = buf.len();
        r.consume(len);
    }
}

/// Writes the merge of `index` (at `index_path`) and `effect` to `tmp` and fsyncs it; answers its count.
fn write_index(
    tmp: &Path,
    index_path: &Path,
    index: &Index,
    effect: &HashMap<Sha, bool>,
) -> Result<u64, PipelineError> {
    let rerr = |e| PipelineError::io("read", index_path, e);
    let werr = |e| PipelineError::io("write", tmp, e);
    let mut changes: Vec<(Sha, bool)> = effect.iter().map(|(k, v)| (*k, *v)).collect();
    changes.sort_unstable();
    let out = File::create(tmp).map_err(werr)?;
    let mut w = BufWriter::with_capacity(1 << 16, &out);
    w.write_all(&[0u8; HEADER as usize]).map_err(werr)?;
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let mut emit = |w: &mut BufWriter<&File>, k: &Sha| -> io::Result<()> {
        hasher.update(k);
        count += 1;
        w.write_all(k)
    };
    let mut old = OldEntries::new(index);
    let mut next_old = old.next().map_err(rerr)?;
    let mut changes = changes.into_iter().peekable();
    loop {
        match (next_old, changes.peek()) {
            (None, None) => break,
            (Some(o), Some((c, _))) if o < *c => {
                emit(&mut w, &o).map_err(werr)?;
                next_old = old.next().map_err(rerr)?;
            }
            (Some(o), None) => {
                emit(&mut w, &o).map_err(werr)?;
                next_old = old.next().map_err(rerr)?;
            }
            (o, Some(&(c, up))) => {
                if up {
                    emit(&mut w, &c).map_err(werr)?;
                }
                if o == Some(c) {
                    next_old = old.next().map_err(rerr)?;
                }
                changes.next();
            }
        }
    }
    let sum = hasher.finalize();
    w.flush().map_err(werr)?;
    drop(w);
    let mut head = [0u8; HEADER as usize];
    head[..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    head[16..24].copy_from_slice(&count.to_le_bytes());
    head[24..56].copy_from_slice(&sum);
    out.write_all_at(&head, 0).map_err(werr)?;
    out.sync_all().map_err(|e| PipelineError::fsync(tmp, e))?;
    Ok(count)
}

/// The entries of an index, read in order in 64 KiB blocks.
struct OldEntries<'a> {
    index: &'a Index,
    at: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> OldEntries<'a> {
    fn new(index: &'a Index) -> Self {
        OldEntries {
            index,
            at: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn next(&mut self) -> io::Result<Option<Sha>> {
        let Some(file) = &self.index.file else {
            return Ok(None);
        };
        if self.pos == self.buf.len() {
            let left = self.index.count - self.at;
            if left == 0 {
                return Ok(None);
            }
            let n = left.min(2048);
            self.buf.resize((n * 32) as usize, 0);
            file.read_exact_at(&mut self.buf, HEADER + self.at * 32)?;
            self.at += n;
            self.pos = 0;
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&self.buf[self.pos..self.pos + 32]);
        self.pos += 32;
        Ok(Some(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(i: u64) -> String {
        crate::protocol::sha256_hex(&i.to_le_bytes())
    }

    fn open(dir: &Path, at: usize) -> UploadedSet {
        UploadedSet::open(dir, at, Failpoints::off()).unwrap()
    }

    fn log_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(LOG)).unwrap().len()
    }

    /// 1,000 files marked, 300 of them forgotten, with a compaction every 100 records: each
    /// is answered right, before and after reopening, and from the index alone once the log
    /// is empty.
    #[test]
    fn lookups_are_right_across_compactions() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 100);
        let all: Vec<String> = (0..1000).map(sha).collect();
        for c in all.chunks(37) {
            s.mark(c.iter().map(String::as_str)).unwrap();
        }
        s.forget(all[..300].iter().map(String::as_str)).unwrap();
        s.mark(all[..10].iter().map(String::as_str)).unwrap();
        let expect = |i: usize| !(10..300).contains(&i);
        let check = |s: &UploadedSet| {
            for (i, h) in all.iter().enumerate() {
                assert_eq!(s.contains(h), expect(i), "file {i}");
            }
            assert!(!s.contains(&sha(5000)));
            assert_eq!(s.count(), 710);
        };
        check(&s);
        assert!(read(&s.view).effect.len() < 100, "the effect stays bounded");
        drop(s);
        let s = open(dir.path(), 100);
        check(&s);
        s.compact(&mut lock(&s.log), &mut |_| true).unwrap();
        assert_eq!(log_len(dir.path()), 0);
        assert!(read(&s.view).effect.is_empty());
        check(&s);
    }

    /// A crash in the middle of an append leaves a torn last line: it is cut off at open
    /// (and the files it named are not uploaded), the lines before it are kept.
    #[test]
    fn a_torn_last_line_is_cut_off() {
        for tail in [&b"+abc"[..], &[0u8; 700][..], &b"-zz\n"[..]] {
            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path(), 1000);
            s.mark([sha(1).as_str()]).unwrap();
            drop(s);
            let whole = log_len(dir.path());
            let mut f = OpenOptions::new()
                .append(true)
                .open(dir.path().join(LOG))
                .unwrap();
            f.write_all(tail).unwrap();
            drop(f);
            let s = open(dir.path(), 1000);
            assert_eq!(log_len(dir.path()), whole);
            assert!(s.contains(&sha(1)));
            s.mark([sha(2).as_str()]).unwrap();
            drop(s);
            let s = open(dir.path(), 1000);
            assert!(s.contains(&sha(1)) && s.contains(&sha(2)));
        }
    }

    /// A bad line followed by good ones is no torn write: refused, naming the file.
    #[test]
    fn a_bad_line_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1000);
        s.mark([sha(1).as_str()]).unwrap();
        drop(s);
        let mut text = fs::read(dir.path().join(LOG)).unwrap();
        text.extend_from_slice(b"garbage\n");
        text.extend_from_slice(format!("+{}\n", sha(2)).as_bytes());
        fs::write(dir.path().join(LOG), &text).unwrap();
        let e = UploadedSet::open(dir.path(), 1000, Failpoints::off()).unwrap_err();
        let log = dir.path().join(LOG);
        assert_eq!(
            e.to_string(),
            format!(
                "the usage ledger {} is damaged (its line 2 is not a ledger record); move it aside \
                 and the next run goes on: the files it records as uploaded are sent once more \
                 (JCS counts them as duplicates) — no usage file was deleted",
                log.display()
            )
        );
        assert_eq!(fs::read(&log).unwrap(), text, "the log is left as it was");
    }

    /// A changed byte, a cut or a wrong header in the index is refused at open.
    #[test]
    fn a_damaged_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 10);
        let all: Vec<String> = (0..25).map(sha).collect();
        s.mark(all.iter().map(String::as_str)).unwrap();
        drop(s);
        let idx = dir.path().join(INDEX);
        let good = fs::read(&idx).unwrap();
        assert_eq!(good.len(), 64 + 25 * 32);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                {
                    let mut b = good.clone();
                    let last = b.len() - 1;
                    b[last] ^= 1;
                    b
                },
                "its entries do not match its checksum",
            ),
            (
                good[..good.len() - 32].to_vec(),
                "it holds 832 bytes where its header announces 25 entries",
            ),
            (
                good[..10].to_vec(),
                "it holds 10 bytes, less than its 64-byte header",
            ),
            (
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                "it does not start with the ledger index's magic",
            ),
            (
                {
                    let mut b = good.clone();
                    b[64..128].rotate_left(32);
                    b
                },
                "its entry 1 is out of order",
            ),
        ];
        for (bytes, reason) in cases {
            fs::write(&idx, &bytes).unwrap();
            let e = UploadedSet::open(dir.path(), 10, Failpoints::off()).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("{} is damaged ({reason})", idx.display())),
                "{e}"
            );
        }
    }

    /// A compaction killed before each of its durable steps (and after the last) leaves a
    /// folder that opens with the same set.
    #[test]
    fn a_compaction_killed_at_each_step_keeps_the_set() {
        for stop in 0..=3 {
            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path(), 50);
            let all: Vec<String> = (0..120).map(sha).collect();
            s.mark(all[..60].iter().map(String::as_str)).unwrap();
            // The log holds 40 records past the first compaction: 30 marks, 10 forgets.
            s.mark(all[60..90].iter().map(String::as_str)).unwrap();
            s.forget(all[..10].iter().map(String::as_str)).unwrap();
            s.compact(&mut lock(&s.log), &mut |step| step < stop)
                .unwrap();
            drop(s);
            let s = open(dir.path(), 50);
            for (i, h) in all.iter().enumerate() {
                assert_eq!(
                    s.contains(h),
                    (10..90).contains(&i),
                    "stop {stop}, file {i}"
                );
            }
            assert_eq!(s.count(), 80, "stop {stop}");
        }
    }

    /// A folder of the first format (one marker file per upload) is imported at open and its
    /// markers removed; a crash before the removal imports the same set again.
    #[test]
    fn old_markers_are_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(OLD_MARKERS);
        fs::create_dir_all(&old).unwrap();
        for i in 0..20 {
            fs::write(old.join(sha(i)), b"").unwrap();
        }
        fs::write(old.join("not-a-sha"), b"").unwrap();
        // An import whose removal did not happen: the log already holds some of them.
        fs::write(dir.path().join(LOG), format!("+{}\n+{}\n", sha(0), sha(1))).unwrap();
        let s = open(dir.path(), 1000);
        for i in 0..20 {
            assert!(s.contains(&sha(i)));
        }
        assert_eq!(s.count(), 20);
        assert!(old.join("not-a-sha").exists() && !old.join(sha(3)).exists());
        fs::remove_file(old.join("not-a-sha")).unwrap();
        drop(s);
        let s = open(dir.path(), 1000);
        assert_eq!(s.count(), 20);
        assert!(!old.exists(), "the marker folder is gone once empty");
    }

    /// 200,000 entries: every lookup right, through the index (pread), with no growth of
    /// memory beyond the log's bounded effect.
    #[test]
    fn two_hundred_thousand_entries_are_found_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), COMPACT_AT);
        let all: Vec<String> = (0..200_000).map(sha).collect();
        for c in all.chunks(5000) {
            s.mark(c.iter().map(String::as_str)).unwrap();
        }
        assert!(read(&s.view).effect.len() <= COMPACT_AT);
        drop(s);
        let s = open(dir.path(), COMPACT_AT);
        s.compact(&mut lock(&s.log), &mut |_| true).unwrap();
        assert!(read(&s.view).effect.is_empty());
        assert_eq!(read(&s.view).index.count, 200_000);
        for (i, h) in all.iter().enumerate().step_by(7) {
            assert!(s.contains(h), "file {i}");
        }
        for i in 200_000..201_000 {
            assert!(!s.contains(&sha(i)));
        }
        assert!(!s.contains(&"0".repeat(64)) && !s.contains(&"f".repeat(64)));
    }

    #[test]
    fn only_lower_case_sha256s_are_records() {
        assert!(parse_sha(&"ab".repeat(32)).is_some());
        assert!(parse_sha(&"AB".repeat(32)).is_none());
        assert!(parse_sha("../../etc/passwd").is_none());
        assert!(parse_record(format!("+{}\n", "0".repeat(64)).as_bytes()).is_some());
        assert!(parse_record(format!("*{}\n", "0".repeat(64)).as_bytes()).is_none());
        assert!(parse_record(format!("+{}", "0".repeat(64)).as_bytes()).is_none());
    }
}
