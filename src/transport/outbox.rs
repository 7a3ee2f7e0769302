//! Writing signed bundles into the outbox, each with the next number of a durable per-kind
//! sequence.
//!
//! The vendor refuses a sequence it has seen, so the counter must never go back: it is bumped
//! and saved durably (`<data_dir>/state/bundle-sequence-<kind>.json`) *before* the bundle is
//! written. A crash in between leaves a gap, which is harmless; the reverse order could reuse a
//! number. Writers in one process are kept apart by a mutex and across processes (`serve` and
//! a `jfconnect bundle export`) by a lock file. The bundle is written under a temp name,
//! fsynced and renamed (`crate::bundle::write_bundle`): a bundle under its final name is whole,
//! which is why it can count as the receipt of the usage it holds.
//!
//! In database mode every node writes bundles into its own outbox, but the sequences are the
//! JPD's: the number comes from one counter per kind that all nodes share ([`SharedSequence`]),
//! taken above this node's own last number, and the node's file keeps the number it got.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;

use super::airgap_error::AirgapError;
use super::payload::REGISTRATION_PATH;
use super::payload::{bundle_file_name, parse_bundle_file_name, usage_path, RegistrationRecord};
use crate::bundle::{
    load_or_generate, new_bundle_id, write_bundle, BundleSpec, BundleWriter, Kind, PayloadEntry,
    PayloadSource, PreparedEntry, SecretKey,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::transport::{TransportError, UsageUpload};

/// How long an outgoing bundle stays importable at the vendor.
pub(crate) const OUTGOING_VALIDITY: chrono::Duration = chrono::Duration::days(365);

/// How long a writer waits for another process's outbox lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Keeps writers of this process apart (the lock file keeps processes apart). An owned guard,
/// so a streamed usage bundle can hold it across the steps of the usage job.
static WRITERS: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Default::default);

/// The newest bundles this process wrote and made durable, with their size then: listing them
/// (`written_since`, what `bundle export` copies out) takes them as written instead of
/// reading a 100,000-file bundle back whole; any other bundle of the outbox is verified with
/// the JPD's key before its manifest is read.
static WROTE: LazyLock<std::sync::Mutex<std::collections::VecDeque<(WrittenBundle, u64)>>> =
    LazyLock::new(Default::default);

/// Bundles remembered in [`WROTE`].
const WROTE_KEPT: usize = 64;

fn remember(b: &WrittenBundle) {
    let Ok(size) = std::fs::metadata(&b.path).map(|m| m.len()) else {
        return;
    };
    let mut wrote = WROTE.lock().unwrap_or_else(|e| e.into_inner());
    if wrote.len() >= WROTE_KEPT {
        wrote.pop_front();
    }
    wrote.push_back((b.clone(), size));
}

/// The bundle at `path` as this process wrote it, if it did and the file still has its size.
fn wrote_here(path: &Path) -> Option<WrittenBundle> {
    let size = std::fs::metadata(path).ok()?.len();
    let wrote = WROTE.lock().unwrap_or_else(|e| e.into_inner());
    wrote
        .iter()
        .find(|(b, s)| b.path == path && *s == size)
        .map(|(b, _)| b.clone())
}

/// Waits for the other writers of this process (called on blocking threads only).
fn writers() -> tokio::sync::OwnedMutexGuard<()> {
    WRITERS.clone().blocking_lock_owned()
}

/// A bundle this JPD wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrittenBundle {
    /// Where it is.
    pub path: PathBuf,
    /// What it carries.
    pub kind: Kind,
    /// Its sequence.
    pub sequence: u64,
    /// Its bundle id.
    pub bundle_id: String,
    /// Usage files inside (0 for a registration bundle).
    pub usage_files: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SequenceFile {
    last: u64,
}

/// One counter per bundle kind shared by the nodes of a JPD (database mode). Called with the
/// outbox lock held, on a blocking thread.
pub trait SharedSequence: Send + Sync {
    /// The next number of `kind`: above the shared counter and above `local_last`, this node's
    /// last number (so a node moved into database mode never goes back). Saved before it is
    /// answered; the error is one sentence.
    fn next(&self, kind: Kind, local_last: u64) -> Result<u64, String>;
}

impl std::fmt::Debug for dyn SharedSequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSequence")
    }
}

/// `state/outbox-usage-last.json`: the usage bundle being written or last written, saved
/// before it is written. A usage job killed after the bundle was renamed into place but before
/// the pipeline recorded its files offers them again; those in this bundle, if it exists, are
/// acknowledged without a second bundle.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LastUsage {
    sequence: u64,
    bundle_id: String,
    file_name: String,
    files: Vec<String>,
    /// How many times its files were acknowledged: 1 when written, one more each time a
    /// killed run's files were offered again and answered from it.
    #[serde(default)]
    handed: u64,
    /// A streamed bundle lists its files in this file of the state folder instead (one SHA-256
    /// a line, fsynced before this record is saved), so no run holds them in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files_list: Option<String>,
    /// True once every file of the bundle is recorded in the ledger: a later run skips them by
    /// the ledger, and the list is not read again.
    #[serde(default)]
    marked: bool,
}

impl LastUsage {
    /// Its files: the inline list, or the lines of its list file.
    fn all_files(&self, state_dir: &Path) -> Result<Vec<String>, AirgapError> {
        let mut files = self.files.clone();
        if let Some(name) = &self.files_list {
            let p = state_dir.join(name);
            let text = std::fs::read_to_string(&p).map_err(|e| AirgapError::io("read", &p, e))?;
            files.extend(text.lines().map(str::to_string));
        }
        Ok(files)
    }
}

/// The list file of usage bundle `sequence` (see `LastUsage::files_list`).
fn files_list_name(sequence: u64) -> String {
    format!("outbox-usage-{sequence}.files")
}

/// The outbox of one JPD: where its bundles go and the key they are signed with.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    /// `airgap.outbox_dir`.
    pub dir: PathBuf,
    /// `<data_dir>/state`.
    pub state_dir: PathBuf,
    /// `<data_dir>/keys/jpd` (`.pub` and `.key`).
    pub key_prefix: PathBuf,
    /// This JPD's id.
    pub jpd_id: String,
    /// `airgap.max_bundle_bytes`: a streamed usage bundle is split before it would pass this.
    pub max_bundle_bytes: u64,
    /// The JPD's shared sequence counters in database mode (`None`: the state folder's).
    pub shared: Option<Arc<dyn SharedSequence>>,
}

/// The JPD's signing key prefix under `data_dir`.
pub(crate) fn jpd_key_prefix(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("jpd")
}

impl Outbox {
    /// The outbox `config` names, for the JPD `jpd_id`.
    pub fn from_config(config: &Config, jpd_id: &str) -> Self {
        Outbox {
            dir: config.airgap.outbox_dir.clone(),
            state_dir: config.state_dir(),
            key_prefix: jpd_key_prefix(&config.data_dir),
            jpd_id: jpd_id.to_string(),
            max_bundle_bytes: config.airgap.max_bundle_bytes,
            shared: None,
        }
    }

    /// The same outbox numbering its bundles from `shared` (database mode).
    pub fn with_shared_sequence(mut self, shared: Option<Arc<dyn SharedSequence>>) -> Self {
        self.shared = shared;
        self
    }

    /// The JPD's key pair, made on first need (secret key mode 0600).
    pub(crate) fn signing_key(&self) -> Result<SecretKey, AirgapError> {
        Ok(load_or_generate(&self.key_prefix)?)
    }

    /// Writes a registration bundle for the license with `license_fingerprint`.
    pub(crate) fn write_registration(
        &self,
        license_fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<WrittenBundle, AirgapError> {
        self.write(Kind::Registration, license_fingerprint, &[], now)
    }

    /// Writes a usage bundle holding `files` (each once, by SHA-256) and the registration
    /// record, so the vendor can answer it like a registration.
    pub fn write_usage(
        &self,
        license_fingerprint: &str,
        files: &[UsageUpload],
        now: DateTime<Utc>,
    ) -> Result<WrittenBundle, AirgapError> {
        self.write(Kind::Usage, license_fingerprint, files, now)
    }

    fn write(
        &self,
        kind: Kind,
        license_fingerprint: &str,
        files: &[UsageUpload],
        now: DateTime<Utc>,
    ) -> Result<WrittenBundle, AirgapError> {
        let _in_process = writers();
        let _lock = self.lock()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| AirgapError::io("create", &self.dir, e))?;
        let key = self.signing_key()?;
        let last = match kind {
            Kind::Usage => self.last_usage()?,
            _ => None,
        };
        let last_files = match &last {
            Some(l) => l.all_files(&self.state_dir)?,
            None => Vec::new(),
        };
        let bundled: std::collections::HashSet<&str> =
            last_files.iter().map(String::as_str).collect();
        let mut seen = std::collections::HashSet::new();
        // Two spool files with the same bytes are one usage file (identified by SHA-256); a
        // file already in the last usage bundle is not written again.
        let fresh: Vec<&UsageUpload> = files
            .iter()
            .filter(|f| !bundled.contains(f.sha256.as_str()) && seen.insert(f.sha256.as_str()))
            .collect();
        if fresh.is_empty() && !files.is_empty() {
            if let Some(mut last) = last {
                last.handed += 1;
                crate::state::save(&self.last_usage_file(), &last)?;
                return Ok(WrittenBundle {
                    path: self.dir.join(&last.file_name),
                    kind,
                    sequence: last.sequence,
                    bundle_id: last.bundle_id,
                    usage_files: last_files.len(),
                });
            }
        }
        let sequence = self.bump(kind)?;
        let spec = BundleSpec {
            kind,
            bundle_id: new_bundle_id(),
            jpd_id: self.jpd_id.clone(),
            created: now,
            expires: now + OUTGOING_VALIDITY,
            sequence,
        };
        let file_name = bundle_file_name(kind, now, sequence);
        if kind == Kind::Usage {
            let intent = LastUsage {
                sequence,
                bundle_id: spec.bundle_id.clone(),
                file_name: file_name.clone(),
                files: fresh.iter().map(|f| f.sha256.clone()).collect(),
                handed: 1,
                files_list: None,
                marked: false,
            };
            crate::state::save(&self.last_usage_file(), &intent)?;
        }
        let record = RegistrationRecord::new(&self.jpd_id, license_fingerprint, &key.public(), now);
        let mut payload = vec![PayloadEntry {
            path: REGISTRATION_PATH.into(),
            source: PayloadSource::Bytes(record.to_bytes()),
        }];
        for f in &fresh {
            payload.push(PayloadEntry {
                path: usage_path(&f.sha256),
                source: PayloadSource::Reader(Box::new(std::io::Cursor::new(f.content.clone()))),
            });
        }
        let path = self.dir.join(file_name);
        write_bundle(&path, &spec, payload, &key)?;
        let written = WrittenBundle {
            path,
            kind,
            sequence,
            bundle_id: spec.bundle_id,
            usage_files: fresh.len(),
        };
        remember(&written);
        Ok(written)
    }

    fn last_usage_file(&self) -> PathBuf {
        self.state_dir.join("outbox-usage-last.json")
    }

    /// The last usage bundle, when it is whole in the outbox (a bundle under its final name
    /// is whole); `None` when none was written or the writer stopped before its rename.
    fn last_usage(&self) -> Result<Option<LastUsage>, AirgapError> {
        let last: Option<LastUsage> = crate::state::load(&self.last_usage_file())?;
        Ok(last.filter(|l| self.dir.join(&l.file_name).is_file()))
    }

    /// The last usage bundle's sequence and how many times its files were acknowledged (see
    /// `LastUsage`); an export compares it before and after its usage run to hand out a bundle
    /// a killed run wrote and this run answered from.
    pub(crate) fn last_usage_handed(&self) -> Result<Option<(u64, u64)>, AirgapError> {
        Ok(self.last_usage()?.map(|l| (l.sequence, l.handed)))
    }

    /// The last sequence given to a bundle of `kind` (0 before the first).
    pub fn last_sequence(&self, kind: Kind) -> Result<u64, AirgapError> {
        let current: SequenceFile =
            crate::state::load(&self.sequence_file(kind))?.unwrap_or_default();
        Ok(current.last)
    }

    /// The JPD's public key file, which checks every bundle of this outbox.
    pub(crate) fn public_key_file(&self) -> PathBuf {
        let mut p = self.key_prefix.clone().into_os_string();
        p.push(".pub");
        p.into()
    }

    /// The bundles of `kind` in the outbox with a sequence above `after`, oldest first, each
    /// checked with the JPD's public key before its manifest is read (those this process
    /// wrote, unchanged in size, are taken as written).
    pub(crate) fn written_since(
        &self,
        kind: Kind,
        after: u64,
    ) -> Result<Vec<WrittenBundle>, AirgapError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AirgapError::io("list", &self.dir, e)),
        };
        let mut found: Vec<(u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                match parse_bundle_file_name(&name) {
                    Some((k, seq)) if k == kind && seq > after => Some((seq, e.path())),
                    _ => None,
                }
            })
            .collect();
        found.sort();
        let key = self.public_key_file();
        found
            .into_iter()
            .map(|(sequence, path)| {
                if let Some(b) = wrote_here(&path).filter(|b| b.kind == kind) {
                    return Ok(b);
                }
                let m = crate::bundle::verify_file_with_pubkey(&path, &key)?;
                let usage_files = m
                    .entries
                    .iter()
                    .filter(|e| e.path != REGISTRATION_PATH)
                    .count();
                Ok(WrittenBundle {
                    path,
                    kind,
                    sequence,
                    bundle_id: m.bundle_id,
                    usage_files,
                })
            })
            .collect()
    }

    /// The newest bundle of `kind` in the outbox (by sequence), if any.
    pub fn newest(&self, kind: Kind) -> Option<PathBuf> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                match parse_bundle_file_name(&name) {
                    Some((k, seq)) if k == kind => Some((seq, e.path())),
                    _ => None,
                }
            })
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, p)| p)
    }

    fn sequence_file(&self, kind: Kind) -> PathBuf {
        self.state_dir.join(format!("bundle-sequence-{kind}.json"))
    }

    /// Bumps and saves the counter of `kind`; answers the new number.
    fn bump(&self, kind: Kind) -> Result<u64, AirgapError> {
        let path = self.sequence_file(kind);
        let current: SequenceFile = crate::state::load(&path)?.unwrap_or_default();
        let last = match &self.shared {
            Some(shared) => shared
                .next(kind, current.last)
                .map_err(AirgapError::Sequence)?,
            None => current.last + 1,
        };
        let next = SequenceFile { last };
        crate::state::save(&path, &next)?;
        Ok(next.last)
    }

    /// Takes the outbox lock (bounded wait). Writers run on a blocking thread
    /// (`spawn_blocking`), so the blocking form of the one lock wait is the right one here.
    fn lock(&self) -> Result<crate::state::LockFile, AirgapError> {
        let path = self.state_dir.join("bundle-outbox.lock");
        crate::state::wait_for_lock_blocking(&path, LOCK_WAIT)
            .map_err(|e| AirgapError::io("lock", &path, e))?
            .ok_or(AirgapError::Busy(path))
    }
}

/// Air-gapped usage, streamed: usage files go one at a time into usage bundles of at most
/// `airgap.max_bundle_bytes` (and within every cap a reader applies), each signed and made
/// durable like any bundle of the outbox. The usage job takes it from the transport instead of
/// handing files to `upload_usage` in batches, so an export holds no file's bytes beyond the
/// batch being deflated.
#[derive(Clone)]
pub struct UsageOutbox {
    outbox: Outbox,
    fingerprint: Result<String, TransportError>,
    clock: SharedClock,
}

/// One usage bundle being written; it holds the outbox locks until it is finished or dropped
/// (dropped unfinished, it leaves nothing but a gap in the sequence).
pub(crate) struct UsageBundle {
    writer: BundleWriter,
    key: SecretKey,
    path: PathBuf,
    sequence: u64,
    bundle_id: String,
    max_bytes: u64,
    /// Usage files in it.
    files: u64,
    /// Their SHA-256, one a line, spilled beside the state files (see `LastUsage::files_list`).
    list: std::io::BufWriter<tempfile::NamedTempFile>,
    outbox: Outbox,
    file_name: String,
    _in_process: tokio::sync::OwnedMutexGuard<()>,
    _lock: crate::state::LockFile,
}

impl UsageOutbox {
    /// Usage of the license with `license_fingerprint` into `outbox`, dated by `clock`; the
    /// error (not registered yet) is answered by [`UsageOutbox::open`], so a run with nothing
    /// to write does not fail.
    pub(crate) fn new(
        outbox: Outbox,
        license_fingerprint: Result<String, TransportError>,
        clock: SharedClock,
    ) -> Self {
        UsageOutbox {
            outbox,
            fingerprint: license_fingerprint,
            clock,
        }
    }

    /// The SHA-256 of the files in the last usage bundle, when it is whole in the outbox: a
    /// run killed after it was renamed into place, before the files were recorded, offers them
    /// again, and they are acknowledged from it (see [`UsageOutbox::answered`]).
    pub(crate) fn last_bundled(&self) -> Result<HashSet<String>, TransportError> {
        let local = |e: AirgapError| TransportError::local(e.to_string());
        match self.outbox.last_usage().map_err(local)? {
            Some(l) if !l.marked => Ok(l
                .all_files(&self.outbox.state_dir)
                .map_err(local)?
                .into_iter()
                .collect()),
            _ => Ok(HashSet::new()),
        }
    }

    /// Records that every file of the last usage bundle, `sequence`, is in the ledger
    /// (see `LastUsage::marked`).
    pub(crate) fn marked(&self, sequence: u64) -> Result<(), TransportError> {
        let local = |e: AirgapError| TransportError::local(e.to_string());
        let _in_process = writers();
        let _lock = self.outbox.lock().map_err(local)?;
        if let Some(mut last) = self.outbox.last_usage().map_err(local)? {
            if last.sequence == sequence && !last.marked {
                last.marked = true;
                crate::state::save(&self.outbox.last_usage_file(), &last)
                    .map_err(|e| local(e.into()))?;
            }
        }
        Ok(())
    }

    /// Records that files of the last usage bundle were acknowledged again (an export then
    /// hands that bundle out when it wrote none).
    pub(crate) fn answered(&self) -> Result<(), TransportError> {
        let local = |e: AirgapError| TransportError::local(e.to_string());
        let _in_process = writers();
        let _lock = self.outbox.lock().map_err(local)?;
        if let Some(mut last) = self.outbox.last_usage().map_err(local)? {
            last.handed += 1;
            crate::state::save(&self.outbox.last_usage_file(), &last)
                .map_err(|e| local(e.into()))?;
        }
        Ok(())
    }

    /// Starts the next usage bundle (the next sequence number), with the registration record.
    pub(crate) fn open(&self) -> Result<UsageBundle, TransportError> {
        let fingerprint = self.fingerprint.clone()?;
        self.open_for(&fingerprint)
            .map_err(|e| TransportError::local(e.to_string()))
    }

    fn open_for(&self, fingerprint: &str) -> Result<UsageBundle, AirgapError> {
        let o = &self.outbox;
        let in_process = writers();
        let lock = o.lock()?;
        std::fs::create_dir_all(&o.dir).map_err(|e| AirgapError::io("create", &o.dir, e))?;
        let key = o.signing_key()?;
        let sequence = o.bump(Kind::Usage)?;
        let now = self.clock.now();
        let record = RegistrationRecord::new(&o.jpd_id, fingerprint, &key.public(), now);
        let spec = BundleSpec {
            kind: Kind::Usage,
            bundle_id: new_bundle_id(),
            jpd_id: o.jpd_id.clone(),
            created: now,
            expires: now + OUTGOING_VALIDITY,
            sequence,
        };
        let file_name = bundle_file_name(Kind::Usage, now, sequence);
        let path = o.dir.join(&file_name);
        let bundle_id = spec.bundle_id.clone();
        let mut writer = BundleWriter::create(&path, spec, &key)?;
        writer.add_source(REGISTRATION_PATH, PayloadSource::Bytes(record.to_bytes()))?;
        std::fs::create_dir_all(&o.state_dir)
            .map_err(|e| AirgapError::io("create", &o.state_dir, e))?;
        let list = tempfile::Builder::new()
            .prefix(".tmp-usage-files-")
            .tempfile_in(&o.state_dir)
            .map_err(|e| AirgapError::io("create a temp file in", &o.state_dir, e))?;
        Ok(UsageBundle {
            writer,
            key,
            path,
            sequence,
            bundle_id,
            max_bytes: o.max_bundle_bytes,
            files: 0,
            list: std::io::BufWriter::new(list),
            outbox: o.clone(),
            file_name,
            _in_process: in_process,
            _lock: lock,
        })
    }
}

impl UsageBundle {
    /// False when `entry` would take this bundle past its size or a reader's caps: finish it
    /// and open the next. A bundle with no usage file yet takes any one.
    pub(crate) fn fits(&self, entry: &PreparedEntry) -> bool {
        self.files == 0
            || self
                .writer
                .fits(&entry.path, entry.data.len() as u64, self.max_bytes)
    }

    /// Usage files in it.
    pub(crate) fn files(&self) -> u64 {
        self.files
    }

    /// Adds one usage file, deflated into `entry` at `usage_path(sha256)`; identical bytes
    /// already in this bundle are one usage file (identified by SHA-256), kept once.
    pub(crate) fn add(&mut self, entry: &PreparedEntry, sha256: &str) -> Result<(), AirgapError> {
        if self.writer.add_prepared_once(entry, sha256)? {
            self.files += 1;
            let list = self.list.get_ref().path().to_path_buf();
            writeln!(self.list, "{sha256}").map_err(|e| AirgapError::io("write", &list, e))?;
        }
        Ok(())
    }

    /// Signs the bundle and makes it durable under its final name: from here on it is the
    /// receipt of every file added, which [`UsageFiles`] lists.
    /// Its files are saved as the last usage bundle's (`LastUsage`) before its rename, as
    /// `write` saves them before it writes: a run killed after the rename, before the
    /// pipeline's ledger records, finds them there and writes no second bundle of them.
    pub(crate) fn finish(self) -> Result<(WrittenBundle, UsageFiles), AirgapError> {
        let state_dir = self.outbox.state_dir.clone();
        let name = files_list_name(self.sequence);
        let list_path = state_dir.join(&name);
        let werr = |e: std::io::Error| AirgapError::io("write", &list_path, e);
        let list = self.list.into_inner().map_err(|e| werr(e.into_error()))?;
        list.as_file().sync_all().map_err(werr)?;
        list.persist(&list_path).map_err(|e| werr(e.error))?;
        crate::state::sync_dir(&state_dir).map_err(|e| AirgapError::io("fsync", &state_dir, e))?;
        let intent = LastUsage {
            sequence: self.sequence,
            bundle_id: self.bundle_id.clone(),
            file_name: self.file_name.clone(),
            files: Vec::new(),
            handed: 1,
            files_list: Some(name.clone()),
            marked: false,
        };
        crate::state::save(&self.outbox.last_usage_file(), &intent)?;
        remove_old_lists(&state_dir, &name);
        self.writer.finish(&self.key)?;
        let written = WrittenBundle {
            path: self.path,
            kind: Kind::Usage,
            sequence: self.sequence,
            bundle_id: self.bundle_id,
            usage_files: self.files as usize,
        };
        remember(&written);
        Ok((written, UsageFiles(list_path)))
    }
}

/// The SHA-256 of the usage files of a finished streamed bundle, read from its list file.
pub(crate) struct UsageFiles(PathBuf);

impl UsageFiles {
    /// Hands the SHA-256 to `each` in chunks of at most `n`.
    pub(crate) fn chunks<E: From<TransportError>>(
        &self,
        n: usize,
        mut each: impl FnMut(&[String]) -> Result<(), E>,
    ) -> Result<(), E> {
        let p = &self.0;
        let read = |e| TransportError::local(AirgapError::io("read", p, e).to_string());
        let f = std::fs::File::open(p).map_err(read)?;
        let mut chunk = Vec::with_capacity(n.min(8192));
        for line in std::io::BufRead::lines(std::io::BufReader::new(f)) {
            chunk.push(line.map_err(read)?);
            if chunk.len() >= n {
                each(&chunk)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            each(&chunk)?;
        }
        Ok(())
    }
}

/// Removes the list files of usage bundles other than `keep` (best effort: a list left
/// behind is only a small file).
fn remove_old_lists(state_dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name != keep && name.starts_with("outbox-usage-") && name.ends_with(".files") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{read_public_key, verify_file_with_pubkey};

    fn outbox(dir: &Path) -> Outbox {
        Outbox {
            dir: dir.join("outbox"),
            state_dir: dir.join("state"),
            key_prefix: dir.join("keys/jpd"),
            jpd_id: "jpd-unit-1".into(),
            max_bundle_bytes: 1 << 30,
            shared: None,
        }
    }

    /// A shared counter in memory, as the database keeps it.
    #[derive(Default)]
    struct Counter(std::sync::Mutex<std::collections::HashMap<String, u64>>);

    impl SharedSequence for Counter {
        fn next(&self, kind: Kind, local_last: u64) -> Result<u64, String> {
            let mut m = self.0.lock().unwrap();
            let v = m.entry(kind.to_string()).or_default();
            *v = (*v).max(local_last) + 1;
            Ok(*v)
        }
    }

    #[test]
    fn outboxes_of_two_nodes_share_one_sequence_per_kind_and_never_go_back() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let shared: Arc<dyn SharedSequence> = Arc::new(Counter::default());
        // node-b wrote 5 registration bundles as a single node before it joined.
        let single = outbox(b.path());
        for _ in 0..5 {
            single.write_registration("00112233", Utc::now()).unwrap();
        }
        let oa = outbox(a.path()).with_shared_sequence(Some(shared.clone()));
        let ob = outbox(b.path()).with_shared_sequence(Some(shared));
        let now = Utc::now();
        let seqs: Vec<u64> = [&oa, &ob, &oa, &ob]
            .iter()
            .map(|o| o.write_registration("00112233", now).unwrap().sequence)
            .collect();
        assert_eq!(seqs, [1, 6, 7, 8]);
        assert_eq!(ob.last_sequence(Kind::Registration).unwrap(), 8);
        assert_eq!(oa.write_usage("00112233", &[], now).unwrap().sequence, 1);
    }

    #[test]
    fn a_streamed_bundle_lists_its_files_on_disk_until_they_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let usage = UsageOutbox::new(
            o.clone(),
            Ok("00112233".into()),
            Arc::new(crate::clock::SystemClock),
        );
        let mut bundle = usage.open().unwrap();
        let mut deflater = crate::bundle::Deflater::new();
        let mut shas = Vec::new();
        for body in ["{\"n\":1}", "{\"n\":2}", "{\"n\":1}"] {
            let sha = crate::protocol::sha256_hex(body.as_bytes());
            let e = deflater
                .prepare(super::super::payload::usage_path(&sha), body.as_bytes())
                .unwrap();
            bundle.add(&e, &sha).unwrap();
            shas.push(sha);
        }
        assert_eq!(bundle.files(), 2, "identical bytes are one usage file");
        let (written, files) = bundle.finish().unwrap();
        assert_eq!(written.usage_files, 2);
        let mut listed = Vec::new();
        files
            .chunks(1, |c| {
                listed.extend_from_slice(c);
                Ok::<_, TransportError>(())
            })
            .unwrap();
        assert_eq!(listed, shas[..2]);
        let last: LastUsage = crate::state::load(&o.last_usage_file()).unwrap().unwrap();
        assert!(last.files.is_empty(), "no inline list: {:?}", last.files);
        assert_eq!(last.files_list.as_deref(), Some("outbox-usage-1.files"));
        let bundled = usage.last_bundled().unwrap();
        assert_eq!(bundled, shas[..2].iter().cloned().collect::<HashSet<_>>());
        usage.marked(written.sequence).unwrap();
        assert!(usage.last_bundled().unwrap().is_empty());
        let m = verify_file_with_pubkey(&written.path, &dir.path().join("keys/jpd.pub")).unwrap();
        assert_eq!(
            m.entries.len(),
            3,
            "the registration record and two usage files"
        );
    }

    #[test]
    fn each_bundle_gets_the_next_sequence_of_its_kind_and_verifies_with_the_jpd_key() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let now = Utc::now();
        let r1 = o.write_registration("00112233", now).unwrap();
        let file = |s: &str| UsageUpload {
            sha256: crate::protocol::sha256_hex(s.as_bytes()),
            name: "u.json".into(),
            content: bytes::Bytes::from(s.to_string()),
        };
        let same = file(r#"{"product":"xray","timestamp":"2026-01-01T00:00:00Z"}"#);
        let u1 = o
            .write_usage("00112233", &[same.clone(), same, file("{}")], now)
            .unwrap();
        let r2 = o.write_registration("00112233", now).unwrap();
        assert_eq!((r1.sequence, u1.sequence, r2.sequence), (1, 1, 2));
        assert_eq!(u1.usage_files, 2, "identical bytes are one usage file");
        let pubkey = dir.path().join("keys/jpd.pub");
        let m = verify_file_with_pubkey(&u1.path, &pubkey).unwrap();
        assert_eq!(m.entries.len(), 3);
        assert_eq!(
            m.signing_key_id,
            read_public_key(&pubkey).unwrap().id.to_string()
        );
        assert_eq!(o.newest(Kind::Registration), Some(r2.path));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keys/jpd.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
