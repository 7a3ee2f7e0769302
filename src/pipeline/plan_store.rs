//! A plan on disk: written once, atomically, before anything is deployed or deleted; read back
//! entry by entry while it is executed; its progress saved after each step.
//!
//! Layout of `<data_dir>/usage/archival/plan/`: `plan.json` (id, repo, archive list;
//! checksummed state file), `entries-<k>.jsonl` (one [`PlanEntry`] per line for archive `k`),
//! `progress.json` (the step each archive reached), `dropped-<k>.txt` (spool names left out of
//! archive `k` because they vanished or changed). The folder is built as `plan.tmp/`, every
//! file fsynced, then renamed to `plan/` and its parent fsynced: a plan exists whole or not at
//! all. Its presence means "a plan is active"; it is removed when every archive is done.

use super::plan::{ArchiveSpec, EntryNames, PlanEntry, PlanInput, Planner};
use super::{Layout, PipelineError};
use crate::bundle::Writeback;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The fixed part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlanHeader {
    /// Unique id (for counting a plan once).
    pub id: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// Artifactory repository.
    pub repo: String,
    /// The archives, in order.
    pub archives: Vec<ArchiveSpec>,
}

impl PlanHeader {
    /// Usage files in the whole plan.
    pub(crate) fn total_entries(&self) -> u64 {
        self.archives.iter().map(|a| a.entries).sum()
    }
}

/// How far one archive of a plan got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(crate) enum ArchiveStep {
    /// Not yet deployed and verified.
    Planned,
    /// Deployed and its SHA-256 read back: originals may be deleted.
    Verified {
        /// SHA-256 of the archive.
        sha256: String,
        /// Its size.
        size: u64,
        /// Usage files in it.
        files: u64,
    },
    /// Originals deleted.
    Done {
        /// SHA-256 of the archive.
        sha256: String,
        /// Its size.
        size: u64,
        /// Usage files in it.
        files: u64,
    },
}

/// The step of every archive of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlanProgress {
    /// One per archive, in order.
    pub steps: Vec<ArchiveStep>,
}

fn entries_file(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("entries-{k:04}.jsonl"))
}

/// The list of names left out of archive `k`.
pub(crate) fn dropped_file(layout: &Layout, k: usize) -> PathBuf {
    layout.plan_dir().join(format!("dropped-{k:04}.txt"))
}

fn tmp_plan_dir(layout: &Layout) -> PathBuf {
    layout.root.join("archival").join("plan.tmp")
}

/// Writes a new plan while the spool is scanned.
pub(crate) struct PlanWriter {
    dir: PathBuf,
    planner: Planner,
    current: Option<(usize, BufWriter<Writeback>, Sha256)>,
    names: EntryNames,
    digests: Vec<String>,
}

impl PlanWriter {
    /// Starts a plan in a fresh `plan.tmp/`.
    pub(crate) fn begin(layout: &Layout, planner: Planner) -> Result<Self, PipelineError> {
        let dir = tmp_plan_dir(layout);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(PipelineError::io("remove", &dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| PipelineError::io("create", &dir, e))?;
        Ok(PlanWriter {
            dir,
            planner,
            current: None,
            names: EntryNames::default(),
            digests: Vec::new(),
        })
    }

    /// Places one uploaded file into the plan; answers the index of its archive and its entry,
    /// or `None` when its entry path is already in the archive being filled (the same spool
    /// name listed twice): that file is left for the next plan.
    pub fn add(&mut self, f: &PlanInput<'_>) -> Result<Option<(usize, PlanEntry)>, PipelineError> {
        if !self.names.insert(f.path) {
            tracing::warn!(file = %f.name, "spool name listed twice; left for the next plan");
            return Ok(None);
        }
        let (k, entry) = self.planner.place(f);
        if self.current.as_ref().map(|(i, _, _)| *i) != Some(k) {
            self.close_current()?;
            self.names = EntryNames::default();
            self.names.insert(&entry.path);
            let p = entries_file(&self.dir, k);
            let file = File::create(&p).map_err(|e| PipelineError::io("write", &p, e))?;
            self.current = Some((k, BufWriter::new(Writeback::new(file)), Sha256::new()));
        }
        if let Some((k, w, hash)) = &mut self.current {
            let p = entries_file(&self.dir, *k);
            let mut line =
                serde_json::to_vec(&entry).map_err(|e| PipelineError::io("write", &p, e.into()))?;
            line.push(b'\n');
            hash.update(&line);
            w.write_all(&line)
                .map_err(|e| PipelineError::io("write", &p, e))?;
        }
        Ok(Some((k, entry)))
    }

    fn close_current(&mut self) -> Result<(), PipelineError> {
        if let Some((k, w, hash)) = self.current.take() {
            let p = entries_file(&self.dir, k);
            let file = w
                .into_inner()
                .map_err(|e| PipelineError::io("write", &p, e.into_error()))?;
            file.into_file()
                .sync_all()
                .map_err(|e| PipelineError::fsync(&p, e))?;
            self.digests.push(hex::encode(hash.finalize()));
        }
        Ok(())
    }

    /// Makes the plan durable and active; `None` (and nothing on disk) when it is empty.
    pub fn commit(
        mut self,
        layout: &Layout,
        id: String,
        created: String,
        repo: &str,
    ) -> Result<Option<PlanHeader>, PipelineError> {
        self.close_current()?;
        let mut archives = self.planner.into_archives();
        for (spec, digest) in archives.iter_mut().zip(std::mem::take(&mut self.digests)) {
            spec.entries_sha256 = Some(digest);
        }
        if archives.is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
            return Ok(None);
        }
        let header = PlanHeader {
            id,
            created,
            repo: repo.to_string(),
            archives,
        };
        crate::state::save(&self.dir.join("plan.json"), &header)?;
        crate::state::sync_dir(&self.dir).map_err(|e| PipelineError::fsync(&self.dir, e))?;
        let dest = layout.plan_dir();
        fs::rename(&self.dir, &dest).map_err(|e| PipelineError::io("activate", &dest, e))?;
        let parent = dest.parent().unwrap_or(&layout.root);
        crate::state::sync_dir(parent).map_err(|e| PipelineError::fsync(parent, e))?;
        Ok(Some(header))
    }
}

/// The active plan, if any.
pub(crate) fn load_plan(layout: &Layout) -> Result<Option<PlanHeader>, PipelineError> {
    let dir = layout.plan_dir();
    if !dir.is_dir() {
        return Ok(None);
    }
    let p = dir.join("plan.json");
    match crate::state::load::<PlanHeader>(&p)? {
        Some(h) => Ok(Some(h)),
        None => Err(PipelineError::BadPlan {
            path: p,
            reason: "plan.json is missing".into(),
        }),
    }
}

/// The saved progress of the active plan (all `Planned` when none was saved).
pub(crate) fn load_progress(
    layout: &Layout,
    plan: &PlanHeader,
) -> Result<PlanProgress, PipelineError> {
    let p = layout.plan_dir().join("progress.json");
    let n = plan.archives.len();
    match crate::state::load::<PlanProgress>(&p)? {
        Some(pr) if pr.steps.len() == n => Ok(pr),
        Some(_) => Err(PipelineError::BadPlan {
            path: p,
            reason: "progress does not match the plan".into(),
        }),
        None => Ok(PlanProgress {
            steps: vec![ArchiveStep::Planned; n],
        }),
    }
}

/// Saves the progress durably.
pub(crate) fn save_progress(layout: &Layout, progress: &PlanProgress) -> Result<(), PipelineError> {
    Ok(crate::state::save(
        &layout.plan_dir().join("progress.json"),
        progress,
    )?)
}

/// Checks the entries file of archive `k` against the plan: as many lines as the plan
/// recorded, and (in plans that record it) the same SHA-256. A list cut, emptied or edited
/// after the plan was made would let a file be deleted without being archived or land in two
/// archives, so a mismatch stops the run before anything is assembled or deleted.
pub(crate) fn check_entries(
    layout: &Layout,
    plan: &PlanHeader,
    k: usize,
) -> Result<(), PipelineError> {
    let p = entries_file(&layout.plan_dir(), k);
    let Some(spec) = plan.archives.get(k) else {
        return Err(PipelineError::BadPlan {
            path: p,
            reason: format!("the plan has no archive {k}"),
        });
    };
    let f = File::open(&p).map_err(|e| PipelineError::io("read", &p, e))?;
    let mut reader = BufReader::new(f);
    let (mut hash, mut lines, mut line) = (Sha256::new(), 0u64, Vec::new());
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| PipelineError::io("read", &p, e))?;
        if n == 0 {
            break;
        }
        hash.update(&line);
        lines += 1;
    }
    let digest = hex::encode(hash.finalize());
    let digest_differs = spec.entries_sha256.as_ref().is_some_and(|d| *d != digest);
    if lines != spec.entries || digest_differs {
        return Err(PipelineError::BadPlan {
            path: p,
            reason: format!(
                "its entries list was changed after the plan was made: it holds {lines} entries with SHA-256 {digest}, the plan recorded {} entries{}",
                spec.entries,
                spec.entries_sha256
                    .as_ref()
                    .map_or(String::new(), |d| format!(" with SHA-256 {d}"))
            ),
        });
    }
    Ok(())
}

/// Streams the entries of archive `k`.
pub fn entries(
    layout: &Layout,
    k: usize,
) -> Result<impl Iterator<Item = Result<PlanEntry, PipelineError>>, PipelineError> {
    let p = entries_file(&layout.plan_dir(), k);
    let f = File::open(&p).map_err(|e| PipelineError::io("read", &p, e))?;
    Ok(BufReader::new(f).lines().map(move |line| {
        let line = line.map_err(|e| PipelineError::io("read", &p, e))?;
        serde_json::from_str::<PlanEntry>(&line).map_err(|e| PipelineError::BadPlan {
            path: p.clone(),
            reason: e.to_string(),
        })
    }))
}

/// Records durably which spool names were left out of archive `k`.
pub(crate) fn save_dropped(
    layout: &Layout,
    k: usize,
    names: &[String],
) -> Result<(), PipelineError> {
    let p = dropped_file(layout, k);
    let mut text = String::new();
    for n in names {
        text.push_str(&serde_json::to_string(n).unwrap_or_default());
        text.push('\n');
    }
    crate::state::write_atomic(&p, text.as_bytes()).map_err(|e| PipelineError::io("write", &p, e))
}

/// The names left out of archive `k`.
pub(crate) fn load_dropped(layout: &Layout, k: usize) -> Result<HashSet<String>, PipelineError> {
    let p = dropped_file(layout, k);
    match fs::read_to_string(&p) {
        Ok(t) => Ok(t
            .lines()
            .filter_map(|l| serde_json::from_str::<String>(l).ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(PipelineError::io("read", &p, e)),
    }
}

fn done_plan_dir(layout: &Layout) -> PathBuf {
    layout.root.join("archival").join("plan.done")
}

/// Retires the finished plan: one atomic rename to `plan.done/` (fsynced), then removal. A crash
/// while removing leaves a `plan.done/` that the next run sweeps, never a half-removed active
/// plan.
pub fn finish(layout: &Layout) -> Result<(), PipelineError> {
    let dir = layout.plan_dir();
    let done = done_plan_dir(layout);
    sweep_done(layout)?;
    fs::rename(&dir, &done).map_err(|e| PipelineError::io("retire", &dir, e))?;
    let parent = dir.parent().unwrap_or(&layout.root);
    crate::state::sync_dir(parent).map_err(|e| PipelineError::fsync(parent, e))?;
    sweep_done(layout)
}

/// Removes a retired plan left by a crash.
pub(crate) fn sweep_done(layout: &Layout) -> Result<(), PipelineError> {
    let done = done_plan_dir(layout);
    match fs::remove_dir_all(&done) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PipelineError::io("remove", &done, e)),
    }
}
