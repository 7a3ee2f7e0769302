//! The usage job: send every pending spool file to JCS (or into a bundle — whatever the
//! `Transport` is), in batches, each file named by the SHA-256 of its bytes.
//!
//! Order per batch: send → JCS acknowledges → markers written and fsynced
//! ([`Ledger::mark_uploaded`]). Only acknowledged files get a marker, and the marker never
//! comes before the acknowledgement. A crash after the acknowledgement and before the marker
//! re-sends the batch next time; JCS recognises the SHA-256 and counts it as a duplicate, never
//! twice. Air-gapped, the files are streamed into usage bundles instead ([`stream_pending`]),
//! each bundle finished before its files' markers.
//!
//! With the shared ledger (database mode) each batch is first claimed: a file another node
//! already uploaded, or is uploading now, is left out, so bytes present on two nodes are sent
//! once. Air-gapped in database mode, the batches go through the transport's bundle writer
//! (one bundle per batch, claimed like an upload) instead of the stream.

use super::failpoint::Failpoints;
use super::ledger::{Ledger, UsageLedger};
use super::progress::Progress;
use super::spool::{self, UsageFile};
use super::{acquire_lock, Layout, PipelineError, RunOptions};
use crate::bundle::Deflater;
use crate::config::Config;
use crate::secret::Secret;
use crate::transport::outbox::{UsageBundle, UsageOutbox};
use crate::transport::payload::usage_path;
use crate::transport::{Transport, UsageUpload};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Most bytes of usage files held for one upload request (a single larger file goes alone).
pub(crate) const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Files examined per parallel step of the spool scan.
const SCAN_CHUNK: usize = 256;

/// What a usage run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageOutcome {
    /// Files acknowledged in this run.
    pub uploaded: u64,
    /// Of those, how many JCS already had (a retry after a crash).
    pub duplicates: u64,
    /// Files skipped because they were acknowledged in an earlier run.
    pub already_uploaded: u64,
    /// Files moved to quarantine.
    pub quarantined: u64,
    /// Files left because they are still being written.
    pub not_settled: u64,
    /// Upload requests sent.
    pub batches: u64,
}

impl UsageOutcome {
    /// One line for a person.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "uploaded {} in {} ({} already there)",
            crate::words::count(self.uploaded, "usage file", "usage files"),
            crate::words::count(self.batches, "batch", "batches"),
            self.duplicates
        );
        if self.quarantined > 0 {
            s.push_str(&format!("; {} quarantined", self.quarantined));
        }
        if self.not_settled > 0 {
            s.push_str(&format!("; {} still being written", self.not_settled));
        }
        s
    }
}

/// Uploads every pending usage file in batches of `config.usage.batch_size` (or what the transport asks for). On a failed
/// request the run stops and the files of that batch (and all later ones) stay pending.
pub async fn upload_pending_with(
    config: &Config,
    transport: &dyn Transport,
    jpd_id: &str,
    token: &Secret,
    progress: &dyn Progress,
    opts: &RunOptions,
) -> Result<UsageOutcome, PipelineError> {
    let layout = Layout::new(config);
    let _lock = acquire_lock(&layout).await?;
    let counter = Ledger::open(&layout.root)?;
    progress.start("upload", spool::count_candidates(&layout.spool));
    if opts.ledger.is_none() {
        if let Some(outbox) = transport.usage_outbox() {
            return stream_pending(&layout, &counter, outbox, config, progress, opts).await;
        }
    }
    let ledger: Arc<dyn UsageLedger> = match &opts.ledger {
        Some(l) => l.clone(),
        None => Arc::new(counter.clone()),
    };
    let batch_size = transport.batch_size(config.usage.batch_size).max(1);
    let mut out = UsageOutcome::default();
    let mut scan = spool::SpoolScan::open(&layout.spool)?;
    let rules = layout.scan_rules(config, opts);
    let mut queue: VecDeque<UsageFile> = VecDeque::new();
    let mut queued_bytes = 0u64;
    let mut exhausted = false;
    let mut tally = super::history::UsageHistory::default();
    loop {
        while !exhausted && queue.len() < batch_size && queued_bytes < BATCH_BYTES {
            let (l, r, n) = (
                ledger.clone(),
                rules.clone(),
                SCAN_CHUNK.min(batch_size).max(8),
            );
            let mut counts = spool::ScanCounts::default();
            let (back, found) = tokio::task::spawn_blocking(move || {
                let found = scan.next_batch(
                    n,
                    &r,
                    &mut counts,
                    || (),
                    |_, f| {
                        if l.surely_uploaded(&f.sha256) {
                            None
                        } else {
                            Some(f)
                        }
                    },
                );
                (scan, found.map(|f| (f, counts)))
            })
            .await
            .map_err(|e| PipelineError::io("scan", &layout.spool, std::io::Error::other(e)))?;
            scan = back;
            let (found, counts) = found?;
            let Some(found) = found else {
                exhausted = true;
                break;
            };
            out.quarantined += counts.quarantined;
            out.not_settled += counts.not_settled;
            progress.inc(counts.examined - found.len() as u64);
            for f in found {
                match f {
                    None => {
                        out.already_uploaded += 1;
                        progress.inc(1);
                    }
                    Some(f) => {
                        queued_bytes += f.content.len() as u64;
                        queue.push_back(f);
                    }
                }
            }
        }
        if queue.is_empty() {
            break;
        }
        let batch = take_batch(&mut queue, batch_size);
        queued_bytes = queue.iter().map(|f| f.content.len() as u64).sum();
        let batch_len = batch.len() as u64;
        let claimed = ledger
            .claim_uploads(batch.iter().map(|f| f.sha256.clone()).collect())
            .await;
        let sent = match claimed {
            Ok(claimed) => {
                let claimed: HashSet<String> = claimed.into_iter().collect();
                let (batch, elsewhere): (Vec<UsageFile>, Vec<UsageFile>) =
                    batch.into_iter().partition(|f| claimed.contains(&f.sha256));
                out.already_uploaded += elsewhere.len() as u64;
                progress.inc(elsewhere.len() as u64);
                if batch.is_empty() {
                    continue;
                }
                send(transport, jpd_id, token, &batch, &*ledger, opts, &mut tally)
                    .await
                    .map(|(acked, dups)| (acked, dups, batch.len() as u64))
            }
            Err(e) => Err(e),
        };
        let (acked, dups, sent_files) = match sent {
            Ok(v) => v,
            Err(e) => {
                let pending = out.not_settled + batch_len + queue.len() as u64;
                let _ = counter.record_scan(pending, out.already_uploaded + out.uploaded);
                let _ = super::history::record_counts(&layout, &tally, opts.clock.now());
                progress.finish();
                return Err(e);
            }
        };
        out.batches += 1;
        out.uploaded += acked;
        out.duplicates += dups;
        out.not_settled += sent_files - acked;
        progress.inc(sent_files);
    }
    progress.finish();
    counter.record_scan(out.not_settled, out.already_uploaded + out.uploaded)?;
    if let Err(e) = super::history::record_counts(&layout, &tally, opts.clock.now()) {
        tracing::warn!(error = %e, "cannot add this run to the usage history");
    }
    Ok(out)
}

/// Takes up to `n` files and [`BATCH_BYTES`] bytes (at least one file) off the queue.
fn take_batch(queue: &mut VecDeque<UsageFile>, n: usize) -> Vec<UsageFile> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    while let Some(f) = queue.front() {
        let len = f.content.len() as u64;
        if !batch.is_empty() && (batch.len() >= n || bytes + len > BATCH_BYTES) {
            break;
        }
        bytes += len;
        if let Some(f) = queue.pop_front() {
            batch.push(f);
        }
    }
    batch
}

/// Sends one batch and records the acknowledged files (in the ledger, and in `tally` by day
/// and product); answers (acknowledged, duplicates).
async fn send(
    transport: &dyn Transport,
    jpd_id: &str,
    token: &Secret,
    batch: &[UsageFile],
    ledger: &dyn UsageLedger,
    opts: &RunOptions,
    tally: &mut super::history::UsageHistory,
) -> Result<(u64, u64), PipelineError> {
    let uploads: Vec<UsageUpload> = batch
        .iter()
        .map(|f| UsageUpload {
            sha256: f.sha256.clone(),
            name: f.name.clone(),
            content: bytes::Bytes::copy_from_slice(&f.content),
        })
        .collect();
    let receipt = transport.upload_usage(jpd_id, token, &uploads).await?;
    opts.failpoint.hit("usage-after-upload")?;
    let acknowledged: HashSet<&str> = receipt.acknowledged.iter().map(String::as_str).collect();
    let ours: Vec<String> = batch
        .iter()
        .filter(|f| acknowledged.contains(f.sha256.as_str()))
        .map(|f| f.sha256.clone())
        .collect();
    let acked_heads: Vec<_> = batch
        .iter()
        .filter(|f| acknowledged.contains(f.sha256.as_str()))
        .map(|f| (f.head.timestamp.date_naive(), f.head.product.clone()))
        .collect();
    let n = ours.len() as u64;
    ledger.mark_uploaded(ours).await?;
    opts.failpoint.hit("usage-after-ledger")?;
    for (day, product) in &acked_heads {
        tally.count(*day, product);
    }
    Ok((n, receipt.duplicates as u64))
}

/// Names examined per step of a streamed export (deflated on every core, then written).
const STREAM_CHUNK: usize = 512;

/// One bundle being filled, and what it holds.
struct Filling {
    bundle: UsageBundle,
    shas: Vec<String>,
    heads: Vec<(chrono::NaiveDate, String)>,
}

/// Where a streamed run stands between two steps (moved to the blocking thread and back).
struct Stream {
    scan: spool::SpoolScan,
    filling: Option<Filling>,
    /// The files of the last usage bundle, whole in the outbox (a killed run's).
    bundled: HashSet<String>,
    /// Pending files found in it: acknowledged from it, never written again.
    answered: Vec<String>,
    answered_heads: Vec<(chrono::NaiveDate, String)>,
    out: UsageOutcome,
    tally: super::history::UsageHistory,
    examined: u64,
}

/// Air-gapped: every pending file is deflated on every core and streamed into usage bundles
/// (one, unless it passes `airgap.max_bundle_bytes` or a reader's caps); each bundle is
/// finished (signed, fsynced, renamed) before its files' markers are written, the same order
/// as an upload's acknowledgement and markers. Memory holds one step's files and, per bundle,
/// the SHA-256 of each file in it.
async fn stream_pending(
    layout: &Layout,
    ledger: &Ledger,
    outbox: UsageOutbox,
    config: &Config,
    progress: &dyn Progress,
    opts: &RunOptions,
) -> Result<UsageOutcome, PipelineError> {
    let rules = layout.scan_rules(config, opts);
    let mut state = Stream {
        scan: spool::SpoolScan::open(&layout.spool)?,
        filling: None,
        bundled: outbox.last_bundled()?,
        answered: Vec::new(),
        answered_heads: Vec::new(),
        out: UsageOutcome::default(),
        tally: super::history::UsageHistory::default(),
        examined: 0,
    };
    let mut done = false;
    while !done {
        let (l, r, o, f) = (
            ledger.clone(),
            rules.clone(),
            outbox.clone(),
            opts.failpoint.clone(),
        );
        let before = state.examined;
        let (back, step) = tokio::task::spawn_blocking(move || {
            let step = stream_step(&mut state, &l, &r, &o, &f);
            (state, step)
        })
        .await
        .map_err(|e| PipelineError::io("scan", &layout.spool, std::io::Error::other(e)))?;
        state = back;
        progress.inc(state.examined - before);
        match step {
            Ok(more) => done = !more,
            Err(e) => {
                let pending = state.out.not_settled
                    + state.filling.as_ref().map_or(0, |f| f.shas.len() as u64);
                drop(state.filling.take());
                let done = state.out.already_uploaded + state.out.uploaded;
                let _ = ledger.record_scan(pending, done);
                let _ = super::history::record_counts(layout, &state.tally, opts.clock.now());
                progress.finish();
                return Err(e);
            }
        }
    }
    progress.finish();
    let out = state.out;
    ledger.record_scan(out.not_settled, out.already_uploaded + out.uploaded)?;
    if let Err(e) = super::history::record_counts(layout, &state.tally, opts.clock.now()) {
        tracing::warn!(error = %e, "cannot add this run to the usage history");
    }
    Ok(out)
}

/// One step of [`stream_pending`]: the next names of the spool into the bundle (finishing
/// full ones); at the end of the spool, the last bundle. Answers false at the end.
fn stream_step(
    s: &mut Stream,
    ledger: &Ledger,
    rules: &spool::ScanRules,
    outbox: &UsageOutbox,
    failpoint: &Failpoints,
) -> Result<bool, PipelineError> {
    let mut counts = spool::ScanCounts::default();
    let found = s.scan.next_batch(
        STREAM_CHUNK,
        rules,
        &mut counts,
        Deflater::new,
        |deflater, f| {
            if ledger.is_uploaded(&f.sha256) {
                return None;
            }
            let prepared = deflater.prepare(usage_path(&f.sha256), &f.content);
            Some((f.sha256, f.head, prepared))
        },
    )?;
    s.out.quarantined += counts.quarantined;
    s.out.not_settled += counts.not_settled;
    s.examined += counts.examined;
    let Some(found) = found else {
        if let Some(filling) = s.filling.take() {
            seal(s, filling, ledger, failpoint)?;
        }
        if !s.answered.is_empty() {
            outbox.answered()?;
            failpoint.hit("usage-after-upload")?;
            ledger.mark_uploaded(s.answered.iter().map(String::as_str))?;
            failpoint.hit("usage-after-ledger")?;
            for (day, product) in s.answered_heads.drain(..) {
                s.tally.count(day, &product);
            }
            s.out.batches += 1;
            s.out.uploaded += s.answered.len() as u64;
            s.answered.clear();
        }
        return Ok(false);
    };
    for item in found {
        let Some((sha256, head, prepared)) = item else {
            s.out.already_uploaded += 1;
            continue;
        };
        if s.bundled.contains(&sha256) {
            s.answered_heads
                .push((head.timestamp.date_naive(), head.product));
            s.answered.push(sha256);
            continue;
        }
        let entry = prepared.map_err(|e| PipelineError::io("deflate", &rules.quarantine, e))?;
        if s.filling.as_ref().is_some_and(|f| !f.bundle.fits(&entry)) {
            if let Some(full) = s.filling.take() {
                seal(s, full, ledger, failpoint)?;
            }
        }
        let filling = match s.filling.as_mut() {
            Some(f) => f,
            None => s.filling.insert(Filling {
                bundle: outbox.open()?,
                shas: Vec::new(),
                heads: Vec::new(),
            }),
        };
        filling.bundle.add(&entry, &sha256).map_err(local)?;
        filling
            .heads
            .push((head.timestamp.date_naive(), head.product));
        filling.shas.push(sha256);
    }
    Ok(true)
}

fn local(e: crate::transport::airgap_error::AirgapError) -> PipelineError {
    PipelineError::Remote(crate::transport::TransportError::local(e.to_string()))
}

/// Finishes a bundle — from then on it is the receipt of its files — and writes their markers.
fn seal(
    s: &mut Stream,
    filling: Filling,
    ledger: &Ledger,
    failpoint: &Failpoints,
) -> Result<(), PipelineError> {
    let written = filling.bundle.finish().map_err(local)?;
    tracing::info!(bundle = %written.path.display(), files = written.usage_files, "wrote a usage bundle; carry it to the vendor");
    failpoint.hit("usage-after-upload")?;
    ledger.mark_uploaded(filling.shas.iter().map(String::as_str))?;
    failpoint.hit("usage-after-ledger")?;
    for (day, product) in &filling.heads {
        s.tally.count(*day, product);
    }
    s.out.batches += 1;
    s.out.uploaded += filling.shas.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_in_one_batch_is_said_in_the_singular() {
        let one = UsageOutcome {
            uploaded: 1,
            batches: 1,
            ..UsageOutcome::default()
        };
        assert_eq!(
            one.summary(),
            "uploaded 1 usage file in 1 batch (0 already there)"
        );
    }
}
