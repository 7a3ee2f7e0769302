//! The usage job: send every pending spool file to JCS (or into a bundle — whatever the
//! `Transport` is), in batches, each file named by the SHA-256 of its bytes.
//!
//! Order per batch: send → JCS acknowledges → the files recorded in the ledger, one append and
//! one fsync ([`Ledger::mark_uploaded`]). Only acknowledged files are recorded, and the record
//! never comes before the acknowledgement. A crash after the acknowledgement and before the
//! record re-sends the batch next time; JCS recognises the SHA-256 and counts it as a duplicate, never
//! twice. Batches are pipelined: the spool is read one batch ahead on a blocking thread, and
//! [`IN_FLIGHT`] requests are out at once; each batch keeps that order on its own. A batch is
//! capped in files (`usage.batch_size`) and in bytes of request body (`usage.max_batch_bytes`),
//! and its body is written once from the files' bytes (`protocol::usage_batch_body`).
//! Air-gapped, the files are streamed into usage bundles instead ([`stream_pending`]),
//! each bundle finished before its files are recorded.
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

/// Files examined per parallel step of the spool scan.
const SCAN_CHUNK: usize = 256;

/// Upload requests in flight at once: while JCS reads one batch, the next is on its way and
/// the files of an acknowledged one are recorded in the ledger. Each batch keeps its own order (sent,
/// acknowledged, then marked); batches do not wait for each other.
const IN_FLIGHT: usize = 2;

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

/// How large one upload request may grow.
#[derive(Debug, Clone, Copy)]
struct BatchLimits {
    /// Usage files (`usage.batch_size`, or what the transport asks for).
    files: usize,
    /// Bytes of the request's body (`usage.max_batch_bytes`); a file whose own request is
    /// larger goes alone.
    bytes: u64,
}

/// Bytes `f` adds to the body of an upload request.
fn wire_len(f: &UsageFile) -> u64 {
    crate::protocol::usage_wire_len(&f.name, f.content.len()) as u64
}

/// What the scan saw besides the files it put in a batch.
#[derive(Debug, Default)]
struct Seen {
    quarantined: u64,
    not_settled: u64,
    already_uploaded: u64,
    /// Names looked at that are in no batch and not counted above as already uploaded.
    other: u64,
}

/// One step of the scan: the next batch (empty at the end of the spool) and what was seen
/// while filling it.
type ScanStep = Result<(Vec<UsageFile>, Seen), PipelineError>;

/// Uploads every pending usage file in batches of `config.usage.batch_size` files (or what the
/// transport asks for) and at most `config.usage.max_batch_bytes` of request body. The spool
/// is read on a blocking thread one batch ahead of the requests; [`IN_FLIGHT`] requests are in
/// flight at once. On a failed request the run takes no new batch, lets the ones in flight
/// finish (their files are marked if acknowledged) and answers the failure; the files of the
/// failed batch, and every file not sent, stay pending.
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
    let counter = Ledger::open_with(&layout.root, opts.failpoint.clone())?;
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
    let limits = BatchLimits {
        files: transport.batch_size(config.usage.batch_size).max(1),
        bytes: config.usage.max_batch_bytes,
    };
    let scan = spool::SpoolScan::open(&layout.spool)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (rules, l) = (layout.scan_rules(config, opts), ledger.clone());
    let scanner = tokio::task::spawn_blocking(move || scan_batches(scan, &rules, &*l, limits, &tx));
    let sender = Sender {
        transport,
        jpd_id,
        token,
        ledger: &*ledger,
        opts,
    };
    let mut run = Run::default();
    let sent = sender.send_all(rx, &mut run, progress).await;
    // The receiver is gone: the scanner stops at its next batch. Wait for it, so nothing
    // touches the spool (quarantine) once the lock is released.
    let scanned = scanner
        .await
        .map_err(|e| PipelineError::io("scan", &layout.spool, std::io::Error::other(e)));
    progress.finish();
    let out = run.out;
    if let Err(e) = sent.and(scanned) {
        let _ = counter.record_scan(
            out.not_settled + run.unsent,
            out.already_uploaded + out.uploaded,
        );
        let _ = super::history::record_counts(&layout, &run.tally, opts.clock.now());
        return Err(e);
    }
    counter.record_scan(out.not_settled, out.already_uploaded + out.uploaded)?;
    if let Err(e) = super::history::record_counts(&layout, &run.tally, opts.clock.now()) {
        tracing::warn!(error = %e, "cannot add this run to the usage history");
    }
    Ok(out)
}

/// The scanning side of a run (blocking): fills batches from the spool and hands each to the
/// sender. The channel holds one, so the spool is read at most one batch ahead.
fn scan_batches(
    mut scan: spool::SpoolScan,
    rules: &spool::ScanRules,
    ledger: &dyn UsageLedger,
    limits: BatchLimits,
    tx: &tokio::sync::mpsc::Sender<ScanStep>,
) {
    let mut queue: VecDeque<UsageFile> = VecDeque::new();
    let mut queued = 0u64;
    let mut seen = Seen::default();
    let mut exhausted = false;
    loop {
        while !exhausted && queue.len() < limits.files && queued < limits.bytes {
            let mut counts = spool::ScanCounts::default();
            let n = SCAN_CHUNK.min(limits.files - queue.len()).max(8);
            let found = scan.next_batch(
                n,
                rules,
                &mut counts,
                || (),
                |_, f| (!ledger.surely_uploaded(&f.sha256)).then_some(f),
            );
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            seen.quarantined += counts.quarantined;
            seen.not_settled += counts.not_settled;
            let Some(found) = found else {
                exhausted = true;
                break;
            };
            seen.other += counts.examined - found.len() as u64;
            for f in found {
                match f {
                    None => seen.already_uploaded += 1,
                    Some(f) => {
                        queued += wire_len(&f);
                        queue.push_back(f);
                    }
                }
            }
        }
        let batch = take_batch(&mut queue, limits);
        queued = queue.iter().map(wire_len).sum();
        let end = batch.is_empty();
        if tx
            .blocking_send(Ok((batch, std::mem::take(&mut seen))))
            .is_err()
            || end
        {
            return;
        }
    }
}

/// Takes up to `limits.files` files and `limits.bytes` of request body off the queue (at
/// least one file, however large).
fn take_batch(queue: &mut VecDeque<UsageFile>, limits: BatchLimits) -> Vec<UsageFile> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    while let Some(f) = queue.front() {
        let len = wire_len(f);
        if !batch.is_empty() && (batch.len() >= limits.files || bytes + len > limits.bytes) {
            break;
        }
        bytes += len;
        if let Some(f) = queue.pop_front() {
            batch.push(f);
        }
    }
    batch
}

/// What a run has done so far.
#[derive(Default)]
struct Run {
    out: UsageOutcome,
    tally: super::history::UsageHistory,
    /// Files of batches that failed.
    unsent: u64,
}

/// One batch's result.
struct Sent {
    /// Files sent.
    files: u64,
    /// Of those, acknowledged.
    acked: u64,
    /// Of those, already known to JCS.
    duplicates: u64,
    /// Files left out because another node uploads them.
    elsewhere: u64,
    /// (day, product) of every acknowledged file.
    heads: Vec<(chrono::NaiveDate, String)>,
}

/// The sending side of a run.
struct Sender<'a> {
    transport: &'a dyn Transport,
    jpd_id: &'a str,
    token: &'a Secret,
    ledger: &'a dyn UsageLedger,
    opts: &'a RunOptions,
}

impl Sender<'_> {
    /// Claims, sends and marks the batches the scanner hands over, [`IN_FLIGHT`] at once. The
    /// first failure stops taking batches; the ones in flight finish; the failure is answered.
    async fn send_all(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<ScanStep>,
        run: &mut Run,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        use futures_util::StreamExt;
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut failed = None;
        let mut open = true;
        loop {
            let take = open && failed.is_none() && in_flight.len() < IN_FLIGHT;
            if !take && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                step = rx.recv(), if take => match step {
                    None => open = false,
                    Some(Err(e)) => failed = Some(e),
                    Some(Ok((batch, seen))) => {
                        let out = &mut run.out;
                        out.quarantined += seen.quarantined;
                        out.not_settled += seen.not_settled;
                        out.already_uploaded += seen.already_uploaded;
                        progress.inc(seen.other + seen.already_uploaded);
                        if !batch.is_empty() {
                            in_flight.push(self.one(batch));
                        }
                    }
                },
                Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                    Ok(sent) => {
                        let out = &mut run.out;
                        out.already_uploaded += sent.elsewhere;
                        progress.inc(sent.elsewhere + sent.files);
                        if sent.files > 0 {
                            out.batches += 1;
                            out.uploaded += sent.acked;
                            out.duplicates += sent.duplicates;
                            out.not_settled += sent.files - sent.acked;
                        }
                        for (day, product) in &sent.heads {
                            run.tally.count(*day, product);
                        }
                    }
                    Err((e, files)) => {
                        run.unsent += files;
                        failed.get_or_insert(e);
                    }
                },
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// One batch: claimed, sent, and its acknowledged files marked (after the
    /// acknowledgement, never before). A failure answers the number of files it leaves.
    async fn one(&self, batch: Vec<UsageFile>) -> Result<Sent, (PipelineError, u64)> {
        let n = batch.len() as u64;
        let shas = batch.iter().map(|f| f.sha256.clone()).collect();
        let claimed = self.ledger.claim_uploads(shas).await.map_err(|e| (e, n))?;
        let claimed: HashSet<String> = claimed.into_iter().collect();
        let (batch, elsewhere): (Vec<UsageFile>, Vec<UsageFile>) =
            batch.into_iter().partition(|f| claimed.contains(&f.sha256));
        let elsewhere = elsewhere.len() as u64;
        let files = batch.len() as u64;
        if batch.is_empty() {
            return Ok(Sent {
                files,
                acked: 0,
                duplicates: 0,
                elsewhere,
                heads: Vec::new(),
            });
        }
        // The bytes move into the request; only the identity and the head stay.
        let (uploads, heads): (Vec<UsageUpload>, Vec<_>) = batch
            .into_iter()
            .map(|f| {
                let head = (f.head.timestamp.date_naive(), f.head.product);
                let upload = UsageUpload {
                    sha256: f.sha256,
                    name: f.name,
                    content: f.content.into(),
                };
                (upload, head)
            })
            .unzip();
        let fail = |e: PipelineError| (e, files);
        let receipt = self
            .transport
            .upload_usage(self.jpd_id, self.token, &uploads)
            .await
            .map_err(|e| fail(e.into()))?;
        self.opts
            .failpoint
            .hit("usage-after-upload")
            .map_err(fail)?;
        let acknowledged: HashSet<&str> = receipt.acknowledged.iter().map(String::as_str).collect();
        let (ours, heads): (Vec<String>, Vec<_>) = uploads
            .iter()
            .zip(heads)
            .filter(|(u, _)| acknowledged.contains(u.sha256.as_str()))
            .map(|(u, head)| (u.sha256.clone(), head))
            .unzip();
        drop(uploads);
        let acked = ours.len() as u64;
        self.ledger.mark_uploaded(ours).await.map_err(fail)?;
        self.opts
            .failpoint
            .hit("usage-after-ledger")
            .map_err(fail)?;
        Ok(Sent {
            files,
            acked,
            duplicates: receipt.duplicates as u64,
            elsewhere,
            heads,
        })
    }
}

/// Names per chunk of a streamed export's pipeline (examined and deflated on every core while
/// the bundle is written).
const STREAM_CHUNK: usize = 256;

/// One bundle being filled, and its files counted by day and product (the files themselves
/// are listed on disk by the bundle).
struct Filling {
    bundle: UsageBundle,
    tally: super::history::UsageHistory,
}

/// Where a streamed run stands (moved to the blocking thread and back).
struct Stream {
    filling: Option<Filling>,
    /// The files of the last usage bundle, whole in the outbox (a killed run's).
    bundled: HashSet<String>,
    /// Pending files found in it: acknowledged from it, never written again.
    answered: Vec<String>,
    answered_heads: Vec<(chrono::NaiveDate, String)>,
    out: UsageOutcome,
    tally: super::history::UsageHistory,
}

/// Air-gapped: every pending file is deflated on every core and streamed into usage bundles
/// (one, unless it passes `airgap.max_bundle_bytes` or a reader's caps); each bundle is
/// finished (signed, fsynced, renamed) before its files are recorded in the ledger, the same
/// order as an upload's acknowledgement and record. Memory holds the pipeline's chunks in flight
/// and, per bundle, the SHA-256 of each file in it.
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
        filling: None,
        bundled: outbox.last_bundled()?,
        answered: Vec::new(),
        answered_heads: Vec::new(),
        out: UsageOutcome::default(),
        tally: super::history::UsageHistory::default(),
    };
    let (examined_tx, mut examined) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let (l, f, spool) = (ledger.clone(), opts.failpoint.clone(), layout.spool.clone());
    let mut run = tokio::task::spawn_blocking(move || {
        let step = stream_all(&mut state, &spool, &l, &rules, &outbox, &f, &examined_tx);
        (state, step)
    });
    let joined = loop {
        tokio::select! {
            Some(n) = examined.recv() => progress.inc(n),
            joined = &mut run => break joined,
        }
    };
    while let Ok(n) = examined.try_recv() {
        progress.inc(n);
    }
    let (mut state, step) =
        joined.map_err(|e| PipelineError::io("scan", &layout.spool, std::io::Error::other(e)))?;
    if let Err(e) = step {
        let pending =
            state.out.not_settled + state.filling.as_ref().map_or(0, |f| f.bundle.files());
        drop(state.filling.take());
        let done = state.out.already_uploaded + state.out.uploaded;
        let _ = ledger.record_scan(pending, done);
        let _ = super::history::record_counts(layout, &state.tally, opts.clock.now());
        progress.finish();
        return Err(e);
    }
    progress.finish();
    let out = state.out;
    ledger.record_scan(out.not_settled, out.already_uploaded + out.uploaded)?;
    if let Err(e) = super::history::record_counts(layout, &state.tally, opts.clock.now()) {
        tracing::warn!(error = %e, "cannot add this run to the usage history");
    }
    Ok(out)
}

/// The whole of [`stream_pending`] on a blocking thread: the spool through the pipeline into
/// bundles (finishing full ones), then the last bundle; the names examined so far go to
/// `examined` for the progress bar.
fn stream_all(
    s: &mut Stream,
    spool_dir: &std::path::Path,
    ledger: &Ledger,
    rules: &spool::ScanRules,
    outbox: &UsageOutbox,
    failpoint: &Failpoints,
    examined: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(), PipelineError> {
    let mut scan = spool::SpoolScan::open(spool_dir)?;
    let mut counts = spool::ScanCounts::default();
    let mut told = 0;
    scan.stream(
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
        |counts, found| {
            s.out.quarantined = counts.quarantined;
            s.out.not_settled = counts.not_settled;
            let _ = examined.send(counts.examined - told);
            told = counts.examined;
            for item in found {
                let Some((sha256, head, prepared)) = item else {
                    s.out.already_uploaded += 1;
                    continue;
                };
                take(s, sha256, head, prepared, rules, ledger, outbox, failpoint)?;
            }
            Ok(())
        },
    )?;
    s.out.quarantined = counts.quarantined;
    s.out.not_settled = counts.not_settled;
    let _ = examined.send(counts.examined - told);
    if let Some(filling) = s.filling.take() {
        seal(s, filling, ledger, outbox, failpoint)?;
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
    Ok(())
}

/// One pending file into the bundle being filled (finishing it first when the file would
/// not fit), or acknowledged from the last bundle when it is already in it.
#[allow(clippy::too_many_arguments)]
fn take(
    s: &mut Stream,
    sha256: String,
    head: spool::UsageHead,
    prepared: std::io::Result<crate::bundle::PreparedEntry>,
    rules: &spool::ScanRules,
    ledger: &Ledger,
    outbox: &UsageOutbox,
    failpoint: &Failpoints,
) -> Result<(), PipelineError> {
    if s.bundled.contains(&sha256) {
        s.answered_heads
            .push((head.timestamp.date_naive(), head.product));
        s.answered.push(sha256);
        return Ok(());
    }
    let entry = prepared.map_err(|e| PipelineError::io("deflate", &rules.quarantine, e))?;
    if s.filling.as_ref().is_some_and(|f| !f.bundle.fits(&entry)) {
        if let Some(full) = s.filling.take() {
            seal(s, full, ledger, outbox, failpoint)?;
        }
    }
    let filling = match s.filling.as_mut() {
        Some(f) => f,
        None => s.filling.insert(Filling {
            bundle: outbox.open()?,
            tally: super::history::UsageHistory::default(),
        }),
    };
    let before = filling.bundle.files();
    filling.bundle.add(&entry, &sha256).map_err(local)?;
    if filling.bundle.files() > before {
        filling
            .tally
            .count(head.timestamp.date_naive(), &head.product);
    }
    Ok(())
}

fn local(e: crate::transport::airgap_error::AirgapError) -> PipelineError {
    PipelineError::Remote(crate::transport::TransportError::local(e.to_string()))
}

/// Finishes a bundle — from then on it is the receipt of its files — and records them in the
/// ledger (read back from the bundle's list of files, one append and fsync per 8,192).
fn seal(
    s: &mut Stream,
    filling: Filling,
    ledger: &Ledger,
    outbox: &UsageOutbox,
    failpoint: &Failpoints,
) -> Result<(), PipelineError> {
    let (written, files) = filling.bundle.finish().map_err(local)?;
    tracing::info!(bundle = %written.path.display(), files = written.usage_files, "wrote a usage bundle; carry it to the vendor");
    failpoint.hit("usage-after-upload")?;
    files.chunks(8192, |shas| {
        ledger.mark_uploaded(shas.iter().map(String::as_str))
    })?;
    failpoint.hit("usage-after-ledger")?;
    outbox.marked(written.sequence)?;
    s.tally.merge_counts(&filling.tally);
    s.out.batches += 1;
    s.out.uploaded += written.usage_files as u64;
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
