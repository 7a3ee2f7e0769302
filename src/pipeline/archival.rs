//! The archival job: plan, then execute — one piece of code for online and air-gapped mode.
//!
//! 1. Resume the active plan, if a crash or failure left one.
//! 2. Scan the spool for uploaded files (recorded in the ledger) and write a new plan durably.
//! 3. For each archive of the plan: assemble the zip in a temp file and fsync it; deploy it
//!    unless Artifactory already holds the same name with the same SHA-256; read back its
//!    storage info and compare SHA-256 and size; save the step *verified*; only then delete the
//!    originals (each checked against its planned identity), fsync the spool, record them
//!    archived in the ledger; save the step *done*. When every archive is done, add the totals to the counters
//!    and remove the plan.
//!
//! Any failure stops the run with nothing deleted that is not in a verified archive; the next
//! run resumes at the saved step. See `docs/usage-pipeline.md`.
//!
//! With the shared ledger (database mode) a file goes into this node's plan only once this
//! node holds its archival claim; the files of an archive are marked archived in the database
//! (fenced) after the read-back and before any delete. A spool file whose bytes another node
//! already archived is a *copy*: it is deleted once this node has read that archive's checksum
//! back from the JPD itself. Archive names carry the node id instead of the host name.

use super::assemble::{self, assemble, ArchiveBuilder, Assembled};
use super::ledger::{ArchiveClaim, ArchiveRef, Ledger, UsageLedger};
use super::plan;
use super::plan::{PlanInput, Planner};
use super::plan_store::{self, ArchiveStep, PlanHeader, PlanWriter};
use super::progress::Progress;
use super::spool::{self, Identity};
use super::{acquire_lock, Layout, PipelineError, RunOptions};
use crate::bundle::Deflater;
use crate::config::Config;
use crate::jpd::Jpd;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::sync::Arc;

/// Deletions per spool fsync and ledger append.
const DELETE_CHUNK: usize = 8192;

/// Spool names per chunk of the planning scan: one `claim_archival` each.
const SCAN_CHUNK: usize = 256;

/// One archive that reached the JPD in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedArchive {
    /// Path in the repository.
    pub name: String,
    /// Usage files in it.
    pub files: u64,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, as read back.
    pub sha256: String,
}

/// What an archival run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivalOutcome {
    /// The repository.
    pub repo: String,
    /// Archives verified and whose originals were deleted in this run.
    pub archives: Vec<ArchivedArchive>,
    /// True when a plan left by an earlier run was finished first.
    pub resumed: bool,
    /// Files moved to quarantine.
    pub quarantined: u64,
    /// Valid files not yet uploaded (left for the usage job).
    pub pending: u64,
    /// Files still being written.
    pub not_settled: u64,
    /// Uploaded files another node holds the archival claim of (shared ledger).
    pub held_elsewhere: u64,
    /// Copies of files another node archived, deleted after this node read the archive back.
    pub copies_deleted: u64,
}

impl ArchivalOutcome {
    /// Usage files archived (and deleted) in this run.
    pub fn files(&self) -> u64 {
        self.archives.iter().map(|a| a.files).sum()
    }

    /// One line for a person.
    pub fn summary(&self) -> String {
        let mut s = if self.archives.is_empty() {
            format!(
                "nothing to archive ({} not yet uploaded)",
                crate::words::count(self.pending, "usage file", "usage files")
            )
        } else {
            let names: Vec<String> = self
                .archives
                .iter()
                .map(|a| format!("{}/{}", self.repo, a.name))
                .collect();
            format!(
                "archived {} into {}, checksum verified, originals deleted",
                crate::words::count(self.files(), "usage file", "usage files"),
                names.join(", ")
            )
        };
        if self.copies_deleted > 0 {
            s.push_str(&format!(
                "; {} of files other nodes archived deleted after their archives were read back",
                crate::words::count(self.copies_deleted, "copy", "copies")
            ));
        }
        if self.held_elsewhere > 0 {
            s.push_str(&format!(
                "; {} left for the node that holds {}",
                crate::words::count(self.held_elsewhere, "usage file", "usage files"),
                if self.held_elsewhere == 1 {
                    "it"
                } else {
                    "them"
                }
            ));
        }
        s
    }
}

/// Finishes the active plan, then plans and archives the files uploaded since.
pub async fn archive_uploaded_with(
    config: &Config,
    jpd: &dyn Jpd,
    progress: &dyn Progress,
    opts: &RunOptions,
) -> Result<ArchivalOutcome, PipelineError> {
    let layout = Layout::new(config);
    let _lock = acquire_lock(&layout).await?;
    let counter = Ledger::open_with(&layout.root, opts.failpoint.clone())?;
    let ledger: Arc<dyn UsageLedger> = match &opts.ledger {
        Some(l) => l.clone(),
        None => Arc::new(counter.clone()),
    };
    clear_tmp(&layout)?;
    plan_store::sweep_done(&layout)?;
    let mut out = ArchivalOutcome {
        repo: config.archival.repo.clone(),
        ..Default::default()
    };
    let mut token_checked = false;
    if let Some(plan) = plan_store::load_plan(&layout)? {
        jpd.check_token().await?;
        token_checked = true;
        out.resumed = true;
        execute(
            &layout,
            &ledger,
            &counter,
            &plan,
            Vec::new(),
            jpd,
            progress,
            opts,
            &mut out,
        )
        .await?;
    }
    let (l, lg, c, o) = (layout.clone(), ledger.clone(), config.clone(), opts.clone());
    let rt = tokio::runtime::Handle::current();
    let planned = tokio::task::spawn_blocking(move || make_plan(&l, &lg, &c, &o, &rt))
        .await
        .map_err(|e| PipelineError::io("plan", &layout.root, io::Error::other(e)))?;
    let (plan, scan, built, copies) = match planned {
        Ok(v) => v,
        Err(e) => {
            let _ = clear_tmp(&layout);
            return Err(e);
        }
    };
    out.quarantined = scan.quarantined;
    out.pending = scan.pending;
    out.not_settled = scan.not_settled;
    out.held_elsewhere = scan.elsewhere;
    if let Some(plan) = plan {
        opts.failpoint.hit("after-plan")?;
        if !token_checked {
            jpd.check_token().await?;
            token_checked = true;
        }
        execute(
            &layout, &ledger, &counter, &plan, built, jpd, progress, opts, &mut out,
        )
        .await?;
    }
    if !copies.is_empty() {
        if !token_checked {
            jpd.check_token().await?;
        }
        out.copies_deleted = delete_copies(&layout, copies, jpd).await?;
    }
    counter.record_scan(scan.pending + scan.not_settled, scan.elsewhere)?;
    Ok(out)
}

fn clear_tmp(layout: &Layout) -> Result<(), PipelineError> {
    let tmp = layout.tmp_dir();
    match fs::remove_dir_all(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PipelineError::io("clean", &tmp, e)),
    }
}

#[derive(Debug, Default)]
struct ScanCounts {
    quarantined: u64,
    pending: u64,
    not_settled: u64,
    elsewhere: u64,
}

/// A spool file whose bytes another node already archived.
#[derive(Debug)]
struct Copy {
    name: String,
    ident: Identity,
}

/// Copies grouped by the archive that holds their bytes.
type Copies = BTreeMap<(String, String, String, u64), Vec<Copy>>;

type Planned = (Option<PlanHeader>, ScanCounts, Vec<Assembled>, Copies);

/// Scans the spool and writes a plan of every uploaded file (blocking). In the same pass, each
/// archive of the plan is assembled from the bytes just read and checked, so a file is read
/// once: files are read, hashed and deflated on every core while this thread writes the plan
/// and the zip in listing order (`bundle::Ordered`). The archives are only temp files until
/// the plan is committed and executed, and a resumed plan re-assembles them from the spool
/// instead.
fn make_plan(
    layout: &Layout,
    ledger: &Arc<dyn UsageLedger>,
    config: &Config,
    opts: &RunOptions,
    rt: &tokio::runtime::Handle,
) -> Result<Planned, PipelineError> {
    let now = opts.clock.now();
    let name = ledger.node().map_or_else(host_name, str::to_string);
    let planner = Planner::new(&name, now.date_naive(), config.archival.max_archive_bytes);
    let mut writer = PlanWriter::begin(layout, planner)?;
    let mut scan = spool::SpoolScan::open(&layout.spool)?;
    let mut counts = ScanCounts::default();
    let mut first_sha = None;
    let mut built: Vec<Assembled> = Vec::new();
    let mut current: Option<(usize, ArchiveBuilder)> = None;
    let rules = layout.scan_rules(config, opts);
    let mut seen = spool::ScanCounts::default();
    let mut copies = Copies::new();
    scan.stream(
        SCAN_CHUNK,
        &rules,
        &mut seen,
        Deflater::new,
        |deflater, mut f| {
            if ledger.surely_not_uploaded(&f.sha256) {
                return None;
            }
            let content = std::mem::take(&mut f.content);
            let path = plan::entry_path(&f.head, &f.name);
            let prepared = deflater.prepare(path, &content);
            Some((f, prepared))
        },
        |_, found| {
            let shas: Vec<String> = found
                .iter()
                .flatten()
                .map(|(f, _)| f.sha256.clone())
                .collect();
            let claims = rt.block_on(ledger.claim_archival(shas))?;
            for s in found {
                let Some((f, prepared)) = s else {
                    counts.pending += 1;
                    continue;
                };
                match claims.get(&f.sha256) {
                    Some(ArchiveClaim::Mine) => {}
                    Some(ArchiveClaim::Elsewhere(_)) => {
                        counts.elsewhere += 1;
                        continue;
                    }
                    Some(ArchiveClaim::Archived(a)) => {
                        copies
                            .entry((a.repo.clone(), a.name.clone(), a.sha256.clone(), a.size))
                            .or_default()
                            .push(Copy {
                                name: f.name.clone(),
                                ident: f.ident,
                            });
                        continue;
                    }
                    Some(ArchiveClaim::NotUploaded) | None => {
                        counts.pending += 1;
                        continue;
                    }
                }
                let path = layout.spool.join(&f.name);
                let prepared = prepared.map_err(|e| PipelineError::io("deflate", &path, e))?;
                first_sha.get_or_insert_with(|| f.sha256.clone());
                let Some((k, _)) = writer.add(&PlanInput {
                    name: &f.name,
                    sha256: &f.sha256,
                    path: &prepared.path,
                    ident: f.ident,
                })?
                else {
                    counts.not_settled += 1;
                    continue;
                };
                if current.as_ref().map(|(i, _)| *i) != Some(k) {
                    if let Some((_, b)) = current.take() {
                        built.push(b.finish()?);
                    }
                    let out = assemble::archive_temp_path(layout, k);
                    current = Some((k, ArchiveBuilder::create(layout, &out)?));
                }
                if let Some((_, b)) = current.as_mut() {
                    b.add(&prepared, &f.sha256, &opts.failpoint)?;
                }
            }
            Ok(())
        },
    )?;
    counts.quarantined = seen.quarantined;
    counts.not_settled += seen.not_settled;
    if let Some((_, b)) = current.take() {
        built.push(b.finish()?);
    }
    let id = format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%S%.6fZ"),
        first_sha.as_deref().map_or("", |s| &s[..12])
    );
    let plan = writer.commit(layout, id, now.to_rfc3339(), &config.archival.repo)?;
    Ok((plan, counts, built, copies))
}

/// This machine's name, for archive paths.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "jfconnect".into())
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    layout: &Layout,
    ledger: &Arc<dyn UsageLedger>,
    counter: &Ledger,
    plan: &PlanHeader,
    prebuilt: Vec<Assembled>,
    jpd: &dyn Jpd,
    progress: &dyn Progress,
    opts: &RunOptions,
    out: &mut ArchivalOutcome,
) -> Result<(), PipelineError> {
    let mut steps = plan_store::load_progress(layout, plan)?;
    let mut prebuilt: Vec<Option<Assembled>> = prebuilt.into_iter().map(Some).collect();
    progress.start("archive", plan.total_entries());
    for (k, spec) in plan.archives.iter().enumerate() {
        if !matches!(steps.steps[k], ArchiveStep::Done { .. }) {
            plan_store::check_entries(layout, plan, k)?;
        }
        if let ArchiveStep::Planned = steps.steps[k] {
            let built = match prebuilt.get_mut(k).and_then(Option::take) {
                Some(b) => b,
                None => {
                    let (l, f) = (layout.clone(), opts.failpoint.clone());
                    tokio::task::spawn_blocking(move || assemble(&l, k, &f))
                        .await
                        .map_err(|e| {
                            PipelineError::io("assemble", &layout.root, io::Error::other(e))
                        })??
                }
            };
            if !built.dropped.is_empty() {
                plan_store::save_dropped(layout, k, &built.dropped)?;
            }
            opts.failpoint.hit("after-archive-write")?;
            if built.files > 0 {
                deploy_and_verify(plan, &spec.name, &built, jpd, opts).await?;
            }
            steps.steps[k] = ArchiveStep::Verified {
                sha256: built.sha256.clone(),
                size: built.size,
                files: built.files,
            };
            plan_store::save_progress(layout, &steps)?;
            let _ = fs::remove_file(&built.path);
            opts.failpoint.hit("after-verify")?;
        }
        if let ArchiveStep::Verified {
            sha256,
            size,
            files,
        } = steps.steps[k].clone()
        {
            if ledger.node().is_some() {
                let archive = ArchiveRef {
                    repo: plan.repo.clone(),
                    name: spec.name.clone(),
                    sha256: sha256.clone(),
                    size,
                };
                record_archived(layout, ledger.as_ref(), k, &archive, files > 0).await?;
            }
            let (l, lg, f) = (layout.clone(), ledger.clone(), opts.failpoint.clone());
            tokio::task::spawn_blocking(move || delete_originals(&l, &lg, k, &f))
                .await
                .map_err(|e| PipelineError::io("delete", &layout.spool, io::Error::other(e)))??;
            opts.failpoint.hit("after-delete")?;
            steps.steps[k] = ArchiveStep::Done {
                sha256: sha256.clone(),
                size,
                files,
            };
            plan_store::save_progress(layout, &steps)?;
            opts.failpoint.hit("after-archive-done")?;
            if files > 0 {
                // The record is for people; a failure to write it never fails the run.
                if let Err(e) = super::history::record_archive(
                    layout,
                    super::history::ArchiveRecord {
                        name: spec.name.clone(),
                        repo: plan.repo.clone(),
                        files,
                        bytes: size,
                        sha256: sha256.clone(),
                        done_at: opts.clock.now(),
                    },
                ) {
                    tracing::warn!(error = %e, "cannot add the archive to the usage history");
                }
                out.archives.push(super::archival::ArchivedArchive {
                    name: spec.name.clone(),
                    files,
                    bytes: size,
                    sha256,
                });
            }
        }
        progress.inc(spec.entries);
    }
    progress.finish();
    let (files, bytes) = steps.steps.iter().fold((0, 0), |(f, b), s| match s {
        ArchiveStep::Done { files, size, .. } => (f + files, b + size),
        _ => (f, b),
    });
    counter.record_plan_done(&plan.id, files, bytes)?;
    plan_store::finish(layout)
}

async fn deploy_and_verify(
    plan: &PlanHeader,
    name: &str,
    built: &Assembled,
    jpd: &dyn Jpd,
    opts: &RunOptions,
) -> Result<(), PipelineError> {
    let repo = plan.repo.as_str();
    let present = jpd.storage_info(repo, name).await?;
    let same = present
        .as_ref()
        .is_some_and(|i| i.checksums.sha256 == built.sha256 && i.size == built.size.to_string());
    if same {
        tracing::info!(archive = %name, "archive already in Artifactory with the same checksum; not deployed again");
    } else {
        jpd.deploy(repo, name, &built.path, &built.sha256, built.size)
            .await?;
        opts.failpoint.hit("after-deploy")?;
    }
    let back = jpd.storage_info(repo, name).await?;
    match back {
        Some(i) if i.checksums.sha256 == built.sha256 && i.size == built.size.to_string() => Ok(()),
        other => Err(PipelineError::ChecksumMismatch {
            path: format!("{repo}/{name}"),
            stored: other
                .as_ref()
                .map_or("(nothing)".into(), |i| i.checksums.sha256.clone()),
            stored_size: other.map_or("0".into(), |i| i.size),
            expected: built.sha256.clone(),
            size: built.size,
        }),
    }
}

/// Marks the files of verified archive `k` archived in the shared ledger (when `deployed`; an
/// archive whose every file was dropped was never deployed) and gives back the claims of its
/// dropped files. Nothing of the archive is deleted before this succeeded.
async fn record_archived(
    layout: &Layout,
    ledger: &dyn UsageLedger,
    k: usize,
    archive: &ArchiveRef,
    deployed: bool,
) -> Result<(), PipelineError> {
    let l = layout.clone();
    let (kept, dropped) = tokio::task::spawn_blocking(move || {
        let dropped_names = plan_store::load_dropped(&l, k)?;
        let mut kept = HashSet::new();
        let mut dropped = HashSet::new();
        for e in plan_store::entries(&l, k)? {
            let e = e?;
            if dropped_names.contains(&e.spool_name) {
                dropped.insert(e.sha256);
            } else {
                kept.insert(e.sha256);
            }
        }
        Ok::<_, PipelineError>((kept, dropped))
    })
    .await
    .map_err(|e| PipelineError::io("read", &layout.root, io::Error::other(e)))??;
    if deployed {
        ledger
            .mark_archived(kept.iter().cloned().collect(), archive)
            .await?;
    }
    let released: Vec<String> = dropped
        .into_iter()
        .filter(|s| !deployed || !kept.contains(s))
        .collect();
    ledger.release(released).await
}

/// Deletes the spool's copies of files other nodes archived: per archive, only after this node
/// read its SHA-256 and size back from the JPD and they match what the ledger recorded.
async fn delete_copies(
    layout: &Layout,
    copies: Copies,
    jpd: &dyn Jpd,
) -> Result<u64, PipelineError> {
    let mut deleted = 0;
    for ((repo, name, sha256, size), files) in copies {
        match jpd.storage_info(&repo, &name).await? {
            Some(i) if i.checksums.sha256 == sha256 && i.size == size.to_string() => {}
            other => {
                return Err(PipelineError::ChecksumMismatch {
                    path: format!("{repo}/{name}"),
                    stored: other
                        .as_ref()
                        .map_or("(nothing)".into(), |i| i.checksums.sha256.clone()),
                    stored_size: other.map_or("0".into(), |i| i.size),
                    expected: sha256,
                    size,
                })
            }
        }
        let l = layout.clone();
        deleted += tokio::task::spawn_blocking(move || {
            let dir = spool::open_dir(&l.spool)
                .map_err(|err| PipelineError::io("list", &l.spool, err))?;
            let mut n = 0u64;
            for c in &files {
                if delete_unchanged(&dir, &l, &c.name, &c.ident)? == Deletion::Deleted {
                    n += 1;
                }
            }
            crate::state::sync_dir(&l.spool).map_err(|e| PipelineError::fsync(&l.spool, e))?;
            Ok::<_, PipelineError>(n)
        })
        .await
        .map_err(|e| PipelineError::io("delete", &layout.spool, io::Error::other(e)))??;
    }
    Ok(deleted)
}

/// What [`delete_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletion {
    Deleted,
    /// Gone already (a resumed deletion).
    Gone,
    /// Changed or replaced since it was read: kept.
    Kept,
}

/// Deletes spool file `name` if it is still the regular file of identity `ident`: the one
/// place a usage file is deleted.
fn delete_unchanged(
    dir: &std::os::fd::OwnedFd,
    layout: &Layout,
    name: &str,
    ident: &Identity,
) -> Result<Deletion, PipelineError> {
    let os = std::ffi::OsStr::new(name);
    let path = || layout.spool.join(name);
    // Identity right before the delete, relative to the spool's descriptor and without
    // following a symlink: the planned file, unchanged.
    match Identity::at(std::os::fd::AsFd::as_fd(dir), os) {
        Ok(Some(now)) if ident.same_file(&now) => {
            rustix::fs::unlinkat(dir, os, rustix::fs::AtFlags::empty())
                .map_err(|err| PipelineError::io("delete", &path(), err.into()))?;
            Ok(Deletion::Deleted)
        }
        Ok(Some(_)) => {
            tracing::warn!(file = %name, "usage file changed after it was archived; kept");
            Ok(Deletion::Kept)
        }
        Ok(None) => {
            tracing::warn!(file = %name, reason = "it is not a regular file", "usage file was replaced after it was archived; kept");
            Ok(Deletion::Kept)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Deletion::Gone),
        Err(err) => Err(PipelineError::io("inspect", &path(), err)),
    }
}

/// Deletes the originals of verified archive `k` through [`delete_unchanged`], in chunks of
/// [`DELETE_CHUNK`]: each chunk's deletions are made durable (one spool fsync), then the
/// chunk's files are recorded archived in the ledger (one append), so a record never goes
/// before the deletion of its original is durable. A chunk's files are deleted by two threads,
/// each taking half: ext4 frees an unlinked file's inode and blocks after the folder's lock is
/// released, so two deletions overlap where one thread would wait for each in turn.
fn delete_originals(
    layout: &Layout,
    ledger: &Arc<dyn UsageLedger>,
    k: usize,
    failpoint: &super::failpoint::Failpoints,
) -> Result<(), PipelineError> {
    let dropped = plan_store::load_dropped(layout, k)?;
    // Every file is looked at and unlinked relative to the spool's descriptor (`statx`,
    // `unlinkat`): no path walk per file.
    let dir = spool::open_dir(&layout.spool)
        .map_err(|err| PipelineError::io("list", &layout.spool, err))?;
    let mut chunk: Vec<plan::PlanEntry> = Vec::with_capacity(DELETE_CHUNK);
    let mut deleted_any = false;
    let mut flush = |chunk: &mut Vec<plan::PlanEntry>| -> Result<(), PipelineError> {
        let mut rest = &chunk[..];
        let mut archived: Vec<String> = Vec::with_capacity(chunk.len());
        // Until the first deletion, one at a time: the failpoint stops right after it.
        while !deleted_any {
            let Some((e, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            match delete_unchanged(&dir, layout, &e.spool_name, &e.ident)? {
                Deletion::Kept => continue,
                Deletion::Gone => {}
                Deletion::Deleted => {
                    deleted_any = true;
                    failpoint.hit("after-delete-one")?;
                }
            }
            archived.push(e.sha256.clone());
        }
        let (left, right) = rest.split_at(rest.len() / 2);
        let delete_part = |part: &[plan::PlanEntry]| -> Result<Vec<String>, PipelineError> {
            let mut gone = Vec::with_capacity(part.len());
            for e in part {
                if delete_unchanged(&dir, layout, &e.spool_name, &e.ident)? != Deletion::Kept {
                    gone.push(e.sha256.clone());
                }
            }
            Ok(gone)
        };
        let (mine, theirs) = std::thread::scope(|s| {
            let other = s.spawn(|| delete_part(right));
            let mine = delete_part(left);
            let theirs = other.join().unwrap_or_else(|_| {
                Err(PipelineError::io(
                    "delete",
                    &layout.spool,
                    io::Error::other("a thread deleting usage files failed"),
                ))
            });
            (mine, theirs)
        });
        // What either thread deleted is made durable before an error is reported.
        crate::state::sync_dir(&layout.spool)
            .map_err(|e| PipelineError::fsync(&layout.spool, e))?;
        archived.extend(mine?);
        archived.extend(theirs?);
        ledger.forget(&archived)?;
        chunk.clear();
        Ok(())
    };
    for e in plan_store::entries(layout, k)? {
        let e = e?;
        if dropped.contains(&e.spool_name) {
            continue;
        }
        chunk.push(e);
        if chunk.len() >= DELETE_CHUNK {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)
}
