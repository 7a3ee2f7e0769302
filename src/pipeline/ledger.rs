//! The durable state of each usage file, keyed by the SHA-256 of its content, and the counters
//! shown by `status` and `/metrics`.
//!
//! *Pending* is implicit: a valid file in the spool the ledger does not hold. *Uploaded* is a
//! `+<sha256>` record in `<data_dir>/usage/ledger/uploaded.log` (or, after a compaction, an
//! entry of the sorted `uploaded.idx`). A batch's records are one append and one
//! `fdatasync`, made only after JCS acknowledged the files and before the run goes on, so the
//! claim never precedes the acknowledgement and is never lost once relied on. *Archived* means
//! the original is gone: a `-<sha256>` record is appended after the deletion of the original
//! was made durable, and the archived total is kept in `counts.json`. That record needs no
//! fsync: an entry that comes back after a crash names content that was uploaded, which is
//! true.
//!
//! Memory stays flat whatever the number of files: the index is searched on disk (one 4 KiB
//! read per lookup), and only the log's records since the last compaction are held. The format,
//! the compaction and what a crash at each step leaves are in `uploaded_set`.
//!
//! [`UsageLedger`] is what the usage and archival jobs ask: the data folder's ledger
//! ([`Ledger`], a single node) or, in database mode, the ledger shared by every node of the JPD
//! ([`SharedLedger`] over `ha::usage`), where a file is claimed before it is uploaded or
//! planned, so bytes present on two nodes are uploaded once and archived once. The counters
//! stay in the node's `counts.json` in both modes: they describe this node's spool.

use super::failpoint::Failpoints;
use super::uploaded_set::{UploadedSet, COMPACT_AT};
use super::PipelineError;
pub use crate::ha::usage::{ArchiveClaim, ArchiveRef};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Counts of usage files by state, for `status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Valid files in the spool not yet acknowledged (as of the last run).
    pub pending: u64,
    /// Files acknowledged but not yet archived (as of the last run).
    pub uploaded: u64,
    /// Files archived (and deleted) since the data folder was created.
    pub archived: u64,
    /// Files in quarantine now.
    pub quarantined: u64,
    /// Bytes of archives uploaded to the JPD since the data folder was created.
    pub bytes_archived: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CountsFile {
    pending: u64,
    uploaded: u64,
    archived: u64,
    bytes_archived: u64,
    /// The last plan whose totals were added, so a resumed plan is never counted twice.
    last_plan: Option<String>,
}

/// Reads the counters; cheap (one small file and one short folder listing).
pub fn pipeline_counts(config: &crate::config::Config) -> Counts {
    let layout = super::Layout::new(config);
    let file: CountsFile = crate::state::load(&layout.root.join("counts.json"))
        .ok()
        .flatten()
        .unwrap_or_default();
    Counts {
        pending: file.pending,
        uploaded: file.uploaded,
        archived: file.archived,
        quarantined: super::spool::count_quarantined(&layout.quarantine),
        bytes_archived: file.bytes_archived,
    }
}

/// The single node's ledger (the set of uploaded files in `<data_dir>/usage/ledger/`, see
/// `uploaded_set`) and the counters file. Clones share one open ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    set: Arc<UploadedSet>,
    counts: PathBuf,
}

impl Ledger {
    /// Opens the ledger under `root` (`<data_dir>/usage`), creating its folder durably,
    /// cutting a torn last record and importing the first format's marker files. The caller
    /// holds the pipeline lock.
    pub fn open(root: &Path) -> Result<Self, PipelineError> {
        Ledger::open_with(root, Failpoints::off())
    }

    /// [`Ledger::open`] with the run's failpoints (a compaction may stop at one).
    pub(crate) fn open_with(root: &Path, failpoint: Failpoints) -> Result<Self, PipelineError> {
        let compact_at = super::failpoint::ledger_compact_at().unwrap_or(COMPACT_AT);
        let set = UploadedSet::open(&root.join("ledger"), compact_at, failpoint)?;
        Ok(Ledger {
            set: Arc::new(set),
            counts: root.join("counts.json"),
        })
    }

    /// True when the file with this SHA-256 was acknowledged and not yet archived.
    pub(crate) fn is_uploaded(&self, sha256: &str) -> bool {
        self.set.contains(sha256)
    }

    /// Records durably that these files were acknowledged: one append to the ledger's log and
    /// one `fdatasync`, done before this returns. Call only after the acknowledgement.
    pub fn mark_uploaded<'a>(
        &self,
        shas: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PipelineError> {
        self.set.mark(shas)
    }

    /// Records that these files were archived (after their deletion was made durable): one
    /// append, no fsync.
    pub fn forget<'a>(&self, shas: impl IntoIterator<Item = &'a str>) -> Result<(), PipelineError> {
        self.set.forget(shas)
    }

    /// How many files are uploaded and not yet archived (reads the index once per entry of
    /// the log; for tests and tools).
    pub fn uploaded_count(&self) -> u64 {
        self.set.count()
    }

    fn load(&self) -> CountsFile {
        crate::state::load_or_set_aside(&self.counts)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Stores what a run saw: `pending` and `uploaded` files in the spool.
    pub(crate) fn record_scan(&self, pending: u64, uploaded: u64) -> Result<(), PipelineError> {
        let mut c = self.load();
        c.pending = pending;
        c.uploaded = uploaded;
        Ok(crate::state::save(&self.counts, &c)?)
    }

    /// Adds a finished plan's totals once, whatever the number of times it is called.
    pub(crate) fn record_plan_done(
        &self,
        plan_id: &str,
        files: u64,
        bytes: u64,
    ) -> Result<(), PipelineError> {
        let mut c = self.load();
        if c.last_plan.as_deref() == Some(plan_id) {
            return Ok(());
        }
        c.archived += files;
        c.bytes_archived += bytes;
        c.uploaded = c.uploaded.saturating_sub(files);
        c.last_plan = Some(plan_id.to_string());
        Ok(crate::state::save(&self.counts, &c)?)
    }
}

/// The per-file state the usage and archival jobs rely on, behind one interface: the data
/// folder's ledger ([`Ledger`]) or the JPD's shared ledger ([`SharedLedger`]).
#[async_trait::async_trait]
pub trait UsageLedger: Send + Sync {
    /// The name archives of this ledger's node carry: `None` for a single node (the host
    /// name, as before), the node id in database mode.
    fn node(&self) -> Option<&str>;
    /// A cheap local answer, asked while the spool is scanned: true when the file certainly
    /// needs no upload (the data folder's ledger knows; the shared one asks in [`claim_uploads`]).
    ///
    /// [`claim_uploads`]: UsageLedger::claim_uploads
    fn surely_uploaded(&self, sha256: &str) -> bool;
    /// True when the file certainly is not ready for archival (not uploaded), asked while the
    /// spool is scanned for a plan.
    fn surely_not_uploaded(&self, sha256: &str) -> bool;
    /// Of `shas`, the ones this node should upload now.
    async fn claim_uploads(&self, shas: Vec<String>) -> Result<Vec<String>, PipelineError>;
    /// Records durably that JCS acknowledged these files; call only after the acknowledgement.
    async fn mark_uploaded(&self, shas: Vec<String>) -> Result<(), PipelineError>;
    /// Where each file stands for this node's next archive plan (claiming the ones it takes).
    async fn claim_archival(
        &self,
        shas: Vec<String>,
    ) -> Result<HashMap<String, ArchiveClaim>, PipelineError>;
    /// Records that these files are in `archive`, whose checksum was read back; nothing may be
    /// deleted before this succeeded.
    async fn mark_archived(
        &self,
        shas: Vec<String>,
        archive: &ArchiveRef,
    ) -> Result<(), PipelineError>;
    /// Gives back claims of planned files that were left out of their archive.
    async fn release(&self, shas: Vec<String>) -> Result<(), PipelineError>;
    /// Drops what is kept about files whose originals were deleted (blocking).
    fn forget(&self, shas: &[String]) -> Result<(), PipelineError>;
}

#[async_trait::async_trait]
impl UsageLedger for Ledger {
    fn node(&self) -> Option<&str> {
        None
    }
    fn surely_uploaded(&self, sha256: &str) -> bool {
        self.is_uploaded(sha256)
    }
    fn surely_not_uploaded(&self, sha256: &str) -> bool {
        !self.is_uploaded(sha256)
    }
    async fn claim_uploads(&self, shas: Vec<String>) -> Result<Vec<String>, PipelineError> {
        Ok(shas)
    }
    async fn mark_uploaded(&self, shas: Vec<String>) -> Result<(), PipelineError> {
        let l = self.clone();
        tokio::task::spawn_blocking(move || l.mark_uploaded(shas.iter().map(String::as_str)))
            .await
            .map_err(|e| PipelineError::io("record", self.set.dir(), std::io::Error::other(e)))?
    }
    async fn claim_archival(
        &self,
        shas: Vec<String>,
    ) -> Result<HashMap<String, ArchiveClaim>, PipelineError> {
        Ok(shas.into_iter().map(|s| (s, ArchiveClaim::Mine)).collect())
    }
    async fn mark_archived(&self, _: Vec<String>, _: &ArchiveRef) -> Result<(), PipelineError> {
        Ok(())
    }
    async fn release(&self, _: Vec<String>) -> Result<(), PipelineError> {
        Ok(())
    }
    fn forget(&self, shas: &[String]) -> Result<(), PipelineError> {
        Ledger::forget(self, shas.iter().map(String::as_str))
    }
}

/// The usage ledger shared by the nodes of a JPD (database mode; see `ha::usage`).
#[derive(Clone)]
pub struct SharedLedger {
    db: crate::ha::db::Db,
    node_id: String,
    member: MemberSource,
    claim_ttl: std::time::Duration,
}

/// This process's membership of the cluster, once it has joined (`None` before).
pub type MemberSource = Arc<dyn Fn() -> Option<crate::ha::nodes::Member> + Send + Sync>;

impl SharedLedger {
    /// The shared ledger of a node that has joined, claiming as `member`; an upload claim
    /// lapses after `claim_ttl`.
    pub fn new(
        db: crate::ha::db::Db,
        member: crate::ha::nodes::Member,
        claim_ttl: std::time::Duration,
    ) -> Self {
        let node_id = member.node_id.clone();
        SharedLedger::joining(
            db,
            node_id,
            Arc::new(move || Some(member.clone())),
            claim_ttl,
        )
    }

    /// The shared ledger of node `node_id`, which may not have joined yet (it started while
    /// the database was away): until `member` answers, every claim and mark fails as the
    /// database being unavailable, so runs retry and nothing is uploaded or deleted.
    pub fn joining(
        db: crate::ha::db::Db,
        node_id: String,
        member: MemberSource,
        claim_ttl: std::time::Duration,
    ) -> Self {
        SharedLedger {
            db,
            node_id,
            member,
            claim_ttl,
        }
    }

    fn member(&self) -> Result<crate::ha::nodes::Member, PipelineError> {
        (self.member)().ok_or_else(|| {
            crate::ha::db::DbError::Unavailable {
                url: self.db.url().to_string(),
                reason: format!("node {} has not joined the cluster yet", self.node_id),
            }
            .into()
        })
    }
}

#[async_trait::async_trait]
impl UsageLedger for SharedLedger {
    fn node(&self) -> Option<&str> {
        Some(&self.node_id)
    }
    fn surely_uploaded(&self, _: &str) -> bool {
        false
    }
    fn surely_not_uploaded(&self, _: &str) -> bool {
        false
    }
    async fn claim_uploads(&self, shas: Vec<String>) -> Result<Vec<String>, PipelineError> {
        if shas.is_empty() {
            return Ok(shas);
        }
        Ok(
            crate::ha::usage::claim_uploads(&self.db, &self.member()?, &shas, self.claim_ttl)
                .await?,
        )
    }
    async fn mark_uploaded(&self, shas: Vec<String>) -> Result<(), PipelineError> {
        if shas.is_empty() {
            return Ok(());
        }
        Ok(crate::ha::usage::mark_uploaded(&self.db, &self.member()?, &shas).await?)
    }
    async fn claim_archival(
        &self,
        shas: Vec<String>,
    ) -> Result<HashMap<String, ArchiveClaim>, PipelineError> {
        if shas.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(crate::ha::usage::claim_archival(&self.db, &self.member()?, &shas).await?)
    }
    async fn mark_archived(
        &self,
        shas: Vec<String>,
        archive: &ArchiveRef,
    ) -> Result<(), PipelineError> {
        if shas.is_empty() {
            return Ok(());
        }
        Ok(crate::ha::usage::mark_archived(&self.db, &self.member()?, &shas, archive).await?)
    }
    async fn release(&self, shas: Vec<String>) -> Result<(), PipelineError> {
        if shas.is_empty() {
            return Ok(());
        }
        Ok(crate::ha::usage::release(&self.db, &self.member()?, &shas).await?)
    }
    fn forget(&self, _: &[String]) -> Result<(), PipelineError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_uploaded_only_between_acknowledgement_and_archival() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let sha = "ab".repeat(32);
        assert!(!l.is_uploaded(&sha));
        l.mark_uploaded([sha.as_str()]).unwrap();
        assert!(l.is_uploaded(&sha));
        l.forget([sha.as_str()]).unwrap();
        assert!(!l.is_uploaded(&sha));
    }

    #[test]
    fn hostile_ids_never_name_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        l.mark_uploaded(["../../etc/passwd", "AB"]).unwrap();
        assert!(!l.is_uploaded("../../etc/passwd"));
    }

    #[test]
    fn a_plan_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        l.record_plan_done("p1", 10, 1000).unwrap();
        l.record_plan_done("p1", 10, 1000).unwrap();
        let c = l.load();
        assert_eq!((c.archived, c.bytes_archived), (10, 1000));
    }
}
