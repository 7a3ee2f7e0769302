//! The usage pipeline: the life of a usage file from the spool to a verified archive in the
//! JPD, and nothing else.
//!
//! A usage file is *pending* while it sits in the spool, *uploaded* once JCS (or an export
//! bundle) acknowledged it and that fact is durable in the [`ledger`], and *archived* once an
//! archive holding it was deployed to Artifactory and its SHA-256 read back — only then is the
//! original deleted. `docs/usage-pipeline.md` is the prose version: state machine, grouping
//! rule, durability order and why each step is safe to crash in.
//!
//! Code map: [`spool`] lists, settles, validates and quarantines files; [`ledger`] keeps the
//! durable per-file state (the data folder's log and index, or the nodes' shared ledger in database
//! mode, behind [`UsageLedger`]) and the counters; [`upload`] is the usage job; [`plan`] is the
//! pure grouping rule; [`plan_store`] writes and reads a plan durably (the zip itself is written
//! by `bundle`'s streaming writer, the one bundles use);
//! [`archival`] is the archival job that executes a plan.
//!
//! Architecture invariant: a usage file is deleted in exactly one place,
//! `archival::delete_unchanged`, and only for an archive whose checksum this node read back
//! (its own archive's originals, or a copy of a file another node archived).

pub mod archival;
mod assemble;
mod error;
pub mod failpoint;
pub mod history;
pub mod ledger;
pub mod plan;
pub(crate) mod plan_store;
pub mod progress;
pub mod spool;
pub mod upload;
mod uploaded_set;

pub use archival::{archive_uploaded_with, ArchivalOutcome};

pub use error::PipelineError;
pub use ledger::{pipeline_counts, Counts, SharedLedger, UsageLedger};
pub(crate) use progress::console_progress;
pub use progress::NoProgress;
pub use upload::{upload_pending_with, UsageOutcome};

use crate::clock::SharedClock;
use crate::config::Config;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a spool file must stay unchanged (size and mtime) before it is picked up.
pub(crate) const SETTLE_WINDOW: Duration = Duration::from_secs(2);

/// Knobs of one run that are not configuration: tests and the demo set them.
#[derive(Clone)]
pub struct RunOptions {
    /// See [`SETTLE_WINDOW`].
    pub settle: Duration,
    /// A failpoint to stop at (see [`failpoint`]).
    pub failpoint: failpoint::Failpoints,
    /// The only source of "now" in the pipeline (settle window, plan date and id).
    pub clock: SharedClock,
    /// The usage ledger: `None` for the data folder's ledger (a single node), the JPD's
    /// shared ledger in database mode.
    pub ledger: Option<Arc<dyn ledger::UsageLedger>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("settle", &self.settle)
            .field("failpoint", &self.failpoint)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// The settle window from `JFCONNECT_SPOOL_SETTLE_MS` as captured in `config` (default
    /// [`SETTLE_WINDOW`]), the failpoint from `JFCONNECT_FAILPOINT` (which aborts the process;
    /// only with the `failpoints` feature) and `clock`.
    pub fn from_config(config: &Config, clock: SharedClock) -> Self {
        RunOptions {
            settle: config.env.spool_settle().unwrap_or(SETTLE_WINDOW),
            failpoint: failpoint::Failpoints::from_env(),
            clock,
            ledger: None,
        }
    }

    /// The same options using `ledger` (`None`: the data folder's ledger).
    pub fn with_ledger(mut self, ledger: Option<Arc<dyn ledger::UsageLedger>>) -> Self {
        self.ledger = ledger;
        self
    }
}

/// Where the pipeline keeps its files under `data_dir`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The spool the Observability service writes into.
    pub spool: PathBuf,
    /// `<data_dir>/quarantine`: refused usage files and their `.reason` sidecars.
    pub quarantine: PathBuf,
    /// `<data_dir>/usage`: ledger, counters, plan, lock.
    pub root: PathBuf,
}

impl Layout {
    /// The layout for `config`.
    pub fn new(config: &Config) -> Self {
        Layout {
            spool: config.usage.spool_dir.clone(),
            quarantine: config.data_dir.join("quarantine"),
            root: config.data_dir.join("usage"),
        }
    }

    /// The lock that keeps usage and archival runs (and processes) apart.
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("pipeline.lock")
    }

    /// Folder of the active archive plan.
    pub(crate) fn plan_dir(&self) -> PathBuf {
        self.root.join("archival").join("plan")
    }

    /// The rules of a spool scan in a run with `opts`.
    pub(crate) fn scan_rules(&self, config: &Config, opts: &RunOptions) -> spool::ScanRules {
        spool::ScanRules {
            quarantine: self.quarantine.clone(),
            settle: opts.settle,
            max: config.usage.max_file_bytes,
            failpoint: opts.failpoint.clone(),
            clock: opts.clock.clone(),
        }
    }

    /// Folder of archives being written.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("archival").join("tmp")
    }
}

/// How long a run waits for another run (or process) holding the pipeline lock.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Takes the pipeline lock, waiting (asynchronously, bounded) while another run holds it.
async fn acquire_lock(layout: &Layout) -> Result<crate::state::LockFile, PipelineError> {
    let path = layout.lock_file();
    crate::state::wait_for_lock(&path, LOCK_WAIT)
        .await
        .map_err(|e| PipelineError::io("lock", &path, e))?
        .ok_or(PipelineError::Busy { lock: path })
}
