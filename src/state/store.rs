//! One trait for the durable state an import touches, with two stores behind it: the data
//! folder's files ([`FileStore`], a single node) and, in database mode, the JPD's PostgreSQL
//! (`ha::store::PgStore`), which every node of the JPD shares.
//!
//! What it holds: the JPD's id, the bundle import history of each bundle kind (replay and
//! rollback protection) and the import inbox (the verified payload of the newest import, which
//! the entitlements job applies). Recording an import is one compare-and-set of the sequence
//! together with the inbox entry: a refused import changes nothing, and of several imports of
//! one sequence exactly one wins.
//!
//! The rule of the compare-and-set is [`next_history`]; the file store and the bundle module's
//! history file apply it under the entitlements job's lock, the database in one transaction.
//!
//! It also holds the jobs' schedules and last runs ([`ScheduleDocs`]): the file store keeps
//! `state/schedule.json` as before; the database keeps one document per JPD for a leased job
//! (written only by the leaseholder, with its [`Fence`]) and one per node for the others.

use super::{load, load_or_set_aside, save, StateError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A granted lease: what a leaseholder's writes carry (the database refuses a stale one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The job the lease is for.
    pub job: String,
    /// The node holding it.
    pub holder: String,
    /// The epoch; raised each time the lease changes hands.
    pub epoch: i64,
}

/// The schedule documents one node's scheduler reads, by job name: `jpd` holds the leased
/// jobs' (one per JPD, database mode only), `node` this node's own (every job of a single node).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleDocs {
    /// Per JPD: written by the job's leaseholder.
    pub jpd: BTreeMap<String, serde_json::Value>,
    /// Per node (a single node's `state/schedule.json`).
    pub node: BTreeMap<String, serde_json::Value>,
}

/// How one job's schedule document changes: given the stored one (if any), the new one.
pub type ScheduleChange<'a> =
    Box<dyn FnOnce(Option<serde_json::Value>) -> serde_json::Value + Send + 'a>;

/// The import history of one kind of bundle from one trust domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportState {
    /// Sequence of the last imported bundle.
    pub last_sequence: Option<u64>,
    /// Newest `created` among imported bundles.
    pub newest_created: Option<DateTime<Utc>>,
    /// Every bundle id imported.
    pub imported_ids: BTreeSet<String>,
}

/// A bundle import that the history refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportConflict {
    /// The bundle id was imported before.
    #[error("bundle {0} was imported before")]
    AlreadyImported(String),
    /// An older sequence than the last imported.
    #[error("bundle sequence {sequence} is older than the last imported ({last})")]
    OlderSequence {
        /// The bundle's.
        sequence: u64,
        /// The last imported.
        last: u64,
    },
    /// The same sequence as the last imported.
    #[error("bundle sequence {0} was already imported")]
    SameSequence(u64),
}

/// One verified bundle to record as imported, with what the inbox keeps of it.
#[derive(Debug, Clone)]
pub struct ImportCommit<'a> {
    /// Bundle kind (`entitlements`, …).
    pub kind: &'a str,
    /// Its id.
    pub bundle_id: &'a str,
    /// Its sequence.
    pub sequence: u64,
    /// Its `created` time.
    pub created: DateTime<Utc>,
    /// SHA-256 of the bundle file (hex).
    pub bundle_sha256: &'a str,
    /// The tag the entitlements job stores as the ETag of what it applied from this import.
    pub tag: &'a str,
    /// The verified payload the job applies.
    pub entry: &'a serde_json::Value,
}

/// The history after importing `c`, or why `current` refuses it: a bundle id seen before, or a
/// sequence not above the last one.
pub(crate) fn next_history(
    mut current: ImportState,
    bundle_id: &str,
    sequence: u64,
    created: DateTime<Utc>,
) -> Result<ImportState, ImportConflict> {
    if current.imported_ids.contains(bundle_id) {
        return Err(ImportConflict::AlreadyImported(bundle_id.to_string()));
    }
    match current.last_sequence {
        Some(last) if sequence < last => {
            return Err(ImportConflict::OlderSequence { sequence, last })
        }
        Some(last) if sequence == last => return Err(ImportConflict::SameSequence(last)),
        _ => {}
    }
    current.last_sequence = Some(sequence);
    current.newest_created = Some(current.newest_created.map_or(created, |c| c.max(created)));
    current.imported_ids.insert(bundle_id.to_string());
    Ok(current)
}

/// The durable state of one JPD that an import reads and writes.
#[async_trait::async_trait]
pub(crate) trait StateStore: Send + Sync {
    /// True when other nodes see what this store holds (the shared database): an import is
    /// then applied by whichever node holds the entitlements lease, not under a local lock.
    fn shared(&self) -> bool;

    /// The JPD's id; `None` before the first start made one.
    async fn jpd_id(&self) -> Result<Option<String>, StateError>;

    /// The import history of one bundle kind (empty when nothing was imported).
    async fn import_history(&self, kind: &str) -> Result<ImportState, StateError>;

    /// Records an import and puts its payload in the inbox, as one compare-and-set: refused
    /// (`Ok(Err(..))`, nothing changed) for a bundle id seen before or a sequence not above
    /// the last one. The file store must be called under the entitlements job's lock.
    async fn commit_import(
        &self,
        commit: &ImportCommit<'_>,
    ) -> Result<Result<(), ImportConflict>, StateError>;

    /// The inbox entry of the newest import of `kind`.
    async fn latest_import(&self, kind: &str) -> Result<Option<serde_json::Value>, StateError>;

    /// True once the import of `bundle_id` was applied: the entitlements it brought, or a newer
    /// import's, are the stored ones. The file store's imports are applied under the same lock
    /// right after they are recorded, so there a recorded import counts as applied.
    async fn import_applied(&self, kind: &str, bundle_id: &str) -> Result<bool, StateError>;

    /// Every schedule document this node's scheduler reads.
    async fn schedules(&self) -> Result<ScheduleDocs, StateError>;

    /// Changes one job's schedule document in one step (no other change of it in between).
    /// With `fence`, the JPD's document of that leased job, refused (`StateError::Fenced`)
    /// unless the fence is the lease's current one; without, this node's own.
    async fn update_schedule(
        &self,
        job: &str,
        fence: Option<&Fence>,
        change: ScheduleChange<'_>,
    ) -> Result<(), StateError>;
}

/// The state in a data folder: `jpd_id`, `state/bundle-import-<kind>.json` (the history) and
/// `state/inbox-<kind>.json` (the newest import's payload), each written durably and
/// checksummed by this module.
#[derive(Debug, Clone)]
pub(crate) struct FileStore {
    data_dir: PathBuf,
}

/// `state/schedule.json` as this module reads it (the scheduler gives each job's meaning).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ScheduleFile {
    jobs: BTreeMap<String, serde_json::Value>,
}

/// The longest a change of the schedule waits for another process's change (each holds
/// `locks/schedule.lock` for one load and save).
const SCHEDULE_LOCK_WAIT: Duration = Duration::from_secs(30);

impl FileStore {
    /// The store of the data folder `data_dir`.
    pub fn new(data_dir: &Path) -> FileStore {
        FileStore {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The history file of `kind`.
    pub fn history_path(&self, kind: &str) -> PathBuf {
        self.data_dir
            .join("state")
            .join(format!("bundle-import-{kind}.json"))
    }

    /// The inbox file of `kind`.
    pub fn inbox_path(&self, kind: &str) -> PathBuf {
        self.data_dir
            .join("state")
            .join(format!("inbox-{kind}.json"))
    }

    fn history(&self, kind: &str) -> Result<ImportState, StateError> {
        Ok(load(&self.history_path(kind))?.unwrap_or_default())
    }

    /// `state/schedule.json`.
    pub fn schedule_path(&self) -> PathBuf {
        self.data_dir.join("state").join("schedule.json")
    }

    /// The schedules; a damaged file is set aside (every job becomes due, which is safe).
    fn schedule_file(&self) -> Result<ScheduleFile, StateError> {
        Ok(load_or_set_aside(&self.schedule_path())?.unwrap_or_default())
    }

    /// [`StateStore::update_schedule`] for every job in `jobs`, for code that may block (the
    /// scheduler's open, before anything is served), under the same lock.
    pub fn update_schedules_blocking(
        &self,
        jobs: &[&str],
        mut change: impl FnMut(Option<serde_json::Value>) -> serde_json::Value,
    ) -> Result<(), StateError> {
        let path = self.data_dir.join("locks").join("schedule.lock");
        let lock = super::wait_for_lock_blocking(&path, SCHEDULE_LOCK_WAIT);
        let _lock = self.held(path, lock)?;
        let mut all = self.schedule_file()?;
        for job in jobs {
            let next = change(all.jobs.remove(*job));
            all.jobs.insert(job.to_string(), next);
        }
        save(&self.schedule_path(), &all)
    }

    /// Takes `locks/schedule.lock` (across processes), waiting up to [`SCHEDULE_LOCK_WAIT`]
    /// without holding up an async worker.
    async fn schedule_lock(&self) -> Result<super::LockFile, StateError> {
        let path = self.data_dir.join("locks").join("schedule.lock");
        let lock = super::wait_for_lock(&path, SCHEDULE_LOCK_WAIT).await;
        self.held(path, lock)
    }

    /// The lock a wait for `path` got, or why not (naming who held it).
    fn held(
        &self,
        path: PathBuf,
        lock: std::io::Result<Option<super::LockFile>>,
    ) -> Result<super::LockFile, StateError> {
        let failed = |source| StateError::Io {
            action: "lock",
            path: path.clone(),
            source,
        };
        match lock {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => {
                let who = super::LockFile::holder(&path)
                    .map_or("another process".to_string(), |pid| {
                        format!("process {pid}")
                    });
                Err(failed(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("{who} held it for over {} s", SCHEDULE_LOCK_WAIT.as_secs()),
                )))
            }
            Err(source) => Err(failed(source)),
        }
    }
}

#[async_trait::async_trait]
impl StateStore for FileStore {
    fn shared(&self) -> bool {
        false
    }

    async fn jpd_id(&self) -> Result<Option<String>, StateError> {
        super::read_jpd_id(&self.data_dir)
    }

    async fn import_history(&self, kind: &str) -> Result<ImportState, StateError> {
        self.history(kind)
    }

    /// Inbox first, then the history: a crash between the two leaves the payload in the inbox
    /// and the bundle importable again, which re-applies the same entitlements (harmless); the
    /// reverse order could record a bundle whose entitlements never arrived.
    async fn commit_import(
        &self,
        c: &ImportCommit<'_>,
    ) -> Result<Result<(), ImportConflict>, StateError> {
        let next = match next_history(self.history(c.kind)?, c.bundle_id, c.sequence, c.created) {
            Ok(next) => next,
            Err(conflict) => return Ok(Err(conflict)),
        };
        save(&self.inbox_path(c.kind), c.entry)?;
        save(&self.history_path(c.kind), &next)?;
        Ok(Ok(()))
    }

    async fn latest_import(&self, kind: &str) -> Result<Option<serde_json::Value>, StateError> {
        load(&self.inbox_path(kind))
    }

    async fn import_applied(&self, kind: &str, bundle_id: &str) -> Result<bool, StateError> {
        Ok(self.history(kind)?.imported_ids.contains(bundle_id))
    }

    async fn schedules(&self) -> Result<ScheduleDocs, StateError> {
        Ok(ScheduleDocs {
            jpd: BTreeMap::new(),
            node: self.schedule_file()?.jobs,
        })
    }

    /// Load, change, save under `locks/schedule.lock`, so a `jfconnect jobs run` in another
    /// process and the service agree on what ran last. A single node holds no leases, so the
    /// document is always this node's.
    async fn update_schedule(
        &self,
        job: &str,
        _fence: Option<&Fence>,
        change: ScheduleChange<'_>,
    ) -> Result<(), StateError> {
        let _lock = self.schedule_lock().await?;
        let mut all = self.schedule_file()?;
        let next = change(all.jobs.remove(job));
        all.jobs.insert(job.to_string(), next);
        save(&self.schedule_path(), &all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn commit<'a>(id: &'a str, sequence: u64, entry: &'a serde_json::Value) -> ImportCommit<'a> {
        ImportCommit {
            kind: "entitlements",
            bundle_id: id,
            sequence,
            created: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            bundle_sha256: "00",
            tag: "bundle-x",
            entry,
        }
    }

    #[tokio::test]
    async fn the_file_store_keeps_todays_files_and_a_refusal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let first = serde_json::json!({"sequence": 3});
        assert_eq!(
            store.commit_import(&commit("b3", 3, &first)).await.unwrap(),
            Ok(())
        );
        assert!(dir.path().join("state/inbox-entitlements.json").is_file());
        assert!(dir
            .path()
            .join("state/bundle-import-entitlements.json")
            .is_file());
        assert_eq!(
            store.latest_import("entitlements").await.unwrap(),
            Some(first)
        );
        assert!(store.import_applied("entitlements", "b3").await.unwrap());

        let before = std::fs::read(store.inbox_path("entitlements")).unwrap();
        let older = serde_json::json!({"sequence": 2});
        assert_eq!(
            store.commit_import(&commit("b2", 2, &older)).await.unwrap(),
            Err(ImportConflict::OlderSequence {
                sequence: 2,
                last: 3
            })
        );
        assert_eq!(
            store.commit_import(&commit("b3", 4, &older)).await.unwrap(),
            Err(ImportConflict::AlreadyImported("b3".into()))
        );
        assert_eq!(
            store
                .commit_import(&commit("b3b", 3, &older))
                .await
                .unwrap(),
            Err(ImportConflict::SameSequence(3))
        );
        assert_eq!(
            std::fs::read(store.inbox_path("entitlements")).unwrap(),
            before
        );
        let history = store.import_history("entitlements").await.unwrap();
        assert_eq!(history.last_sequence, Some(3));
        assert_eq!(history.imported_ids.len(), 1);
        assert_eq!(
            store.import_history("usage").await.unwrap(),
            ImportState::default()
        );
    }
}
