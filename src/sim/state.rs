//! The simulator's shared state: options, counters, the active faults and the three stores
//! (JES registrations, JCS usage, Artifactory archives), with the data folder's layout.
//!
//! Everything a client changes is kept on disk under the data folder and read back on start,
//! so a restarted simulator still knows its tokens, still recognises a usage file it has seen
//! (deduplication by SHA-256) and still counts the archives it holds. Plain call counters live
//! only in memory: they describe this run.

use super::archive_book::ArchiveBook;
use super::fault::FaultSet;
use super::jes_book::JesBook;
use super::sync::lock;
use super::usage_store::UsageStore;
use super::{SimError, SimOptions};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where each kind of data lives under the data folder.
#[derive(Debug, Clone)]
pub(crate) struct DataDirs {
    /// Temp files (uploads in flight); same file system as the rest, so renames are atomic.
    pub tmp: PathBuf,
    /// JES state: `state.json` (token digests and the served subscription).
    pub jes: PathBuf,
    /// JCS usage files, `usage/<first two hex>/<sha256>`, and `duplicates.log`.
    pub jcs: PathBuf,
    /// Deployed artifacts, `<repo>/<path>`.
    pub artifactory: PathBuf,
    /// Size and SHA-256 of each artifact, `<repo>/<path>.json`.
    pub artifactory_meta: PathBuf,
    /// One verdict per stored archive, `<sha256 of repo/path>.json`.
    pub archives: PathBuf,
}

impl DataDirs {
    fn new(root: &Path) -> Self {
        DataDirs {
            tmp: root.join("tmp"),
            jes: root.join("jes"),
            jcs: root.join("jcs"),
            artifactory: root.join("artifactory"),
            artifactory_meta: root.join("artifactory-meta"),
            archives: root.join("archives"),
        }
    }

    fn create(&self) -> Result<(), SimError> {
        for dir in [
            &self.tmp,
            &self.jes,
            &self.jcs,
            &self.artifactory,
            &self.artifactory_meta,
            &self.archives,
        ] {
            std::fs::create_dir_all(dir).map_err(|e| SimError::io("create", dir, e))?;
        }
        Ok(())
    }
}

/// Call counters for this run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub register_calls: AtomicU64,
    pub entitlements_calls: AtomicU64,
    pub entitlements_not_modified: AtomicU64,
    pub usage_calls: AtomicU64,
    pub token_calls: AtomicU64,
    pub deploy_calls: AtomicU64,
    pub storage_calls: AtomicU64,
    pub faults_fired: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What `GET /_sim/stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Distinct usage files (by SHA-256) JCS holds, across restarts.
    pub usage_received_unique: u64,
    /// Usage files received again after JCS already held them, across restarts.
    pub usage_received_duplicate: u64,
    /// Distinct usage files (by SHA-256) found and checked inside the stored archives.
    pub archived_usage_files: u64,
    /// Requests to the register endpoint this run (faulted ones included).
    pub register_calls: u64,
    /// Requests to the entitlements endpoint this run (faulted ones included).
    pub entitlements_calls: u64,
    /// Entitlements requests answered 304 Not Modified this run.
    pub entitlements_not_modified: u64,
    /// Requests to the usage endpoint this run (faulted ones included).
    pub usage_calls: u64,
    /// Requests to the Access token check this run (faulted ones included).
    pub token_calls: u64,
    /// Artifact deploy requests this run (faulted ones included).
    pub deploy_calls: u64,
    /// Storage info requests this run (faulted ones included).
    pub storage_calls: u64,
    /// Archives (`*.zip` artifacts) currently stored, valid or not.
    pub archives_stored: u64,
    /// Stored archives whose index did not check out.
    pub archives_invalid: u64,
    /// Faults that fired this run.
    pub faults_fired: u64,
}

/// Everything the request handlers share.
pub(crate) struct SimState {
    pub dirs: DataDirs,
    pub accepted_licenses: Option<Vec<String>>,
    pub jpd_token: Option<Secret>,
    pub usage_body_limit: usize,
    pub max_artifact_bytes: u64,
    pub counters: Counters,
    pub faults: Mutex<FaultSet>,
    pub jes: JesBook,
    pub usage: UsageStore,
    pub archives: Mutex<ArchiveBook>,
    /// Held while a deploy moves its upload into place (see `artifacts::place`).
    pub placing: Mutex<()>,
    /// Where "now" is read.
    pub clock: crate::clock::SharedClock,
}

impl SimState {
    /// Creates the data folder's layout and reads back what a previous run stored.
    pub fn open(opts: SimOptions) -> Result<SimState, SimError> {
        let dirs = DataDirs::new(&opts.data_dir);
        dirs.create()?;
        clear_tmp(&dirs.tmp);
        let jes = JesBook::load(&dirs.jes)?;
        let usage = UsageStore::load(&dirs.jcs, &dirs.tmp)?;
        let archives = ArchiveBook::load(&dirs.archives)?;
        Ok(SimState {
            dirs,
            accepted_licenses: opts.accepted_licenses,
            jpd_token: opts.jpd_token,
            usage_body_limit: opts.usage_body_limit,
            max_artifact_bytes: opts.max_artifact_bytes,
            counters: Counters::default(),
            faults: Mutex::new(FaultSet::new(opts.faults)),
            jes,
            usage,
            archives: Mutex::new(archives),
            placing: Mutex::new(()),
            clock: opts.clock,
        })
    }

    /// The current figures.
    pub fn stats(&self) -> SimStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (unique, duplicate) = self.usage.counts();
        let (archived, stored, invalid) = lock(&self.archives).counts();
        SimStats {
            usage_received_unique: unique,
            usage_received_duplicate: duplicate,
            archived_usage_files: archived,
            register_calls: get(&c.register_calls),
            entitlements_calls: get(&c.entitlements_calls),
            entitlements_not_modified: get(&c.entitlements_not_modified),
            usage_calls: get(&c.usage_calls),
            token_calls: get(&c.token_calls),
            deploy_calls: get(&c.deploy_calls),
            storage_calls: get(&c.storage_calls),
            archives_stored: stored,
            archives_invalid: invalid,
            faults_fired: get(&c.faults_fired),
        }
    }
}

/// Removes uploads left half-done by a previous run; failures only leave litter behind.
fn clear_tmp(tmp: &Path) {
    if let Ok(entries) = std::fs::read_dir(tmp) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
