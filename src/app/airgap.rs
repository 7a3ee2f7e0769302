//! The air-gapped operations of the app: `bundle import` (and `POST /api/v1/offline/register`),
//! `bundle export`, and a fresh registration bundle for `GET /api/v1/offline/start_register`.
//!
//! Both run a job through the scheduler, under the job's lock, on the service built from the
//! configuration: an import puts the verified payload in the inbox and runs the entitlements
//! job (the only writer of the entitlements store); an export runs the usage job, whose
//! air-gapped transport writes the usage bundle, and then reads what the outbox holds beyond
//! the sequence it held before. No configuration is changed and nothing is passed around the
//! job.
//!
//! `bundle export`, in order: (1) if the license was never registered, runs the entitlements
//! job once, which writes a registration bundle; (2) runs the usage job once: every pending,
//! settled usage file goes into a signed usage bundle in `airgap.outbox_dir`, and those files
//! become *uploaded* in the ledger only after the bundle is whole on disk (archival later
//! archives and deletes them, exactly as online); (3) copies the bundle to FILE (fsynced; the
//! outbox keeps its copy as the record). With no usage pending, it exports a fresh
//! registration bundle instead, which the vendor answers all the same. When the pending usage
//! needs more than one bundle, the further ones are copied next to FILE as `NAME-2.jfbundle`,
//! `NAME-3.jfbundle`, ...

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::App;
use crate::bundle::Kind;
use crate::jobs::scheduler::{Prepared, Scheduler};
use crate::jobs::JobName;
use crate::transport::airgapped::AirgapError;
use crate::transport::inbox::{self, ImportOutcome, Inbox};
use crate::transport::outbox::{Outbox, WrittenBundle};

/// How long an import or export waits for a run of the same job (in `serve`, say) to end.
const JOB_WAIT: Duration = Duration::from_secs(60);

/// In database mode, how often an import asks whether the leaseholder applied it, and how
/// many times (60 s in all).
const IMPORT_POLL: Duration = Duration::from_millis(200);
const IMPORT_POLLS: u32 = 300;

/// A verified entitlements bundle, not imported: what it holds and which configured vendor
/// key file signed it.
#[derive(Debug, Clone)]
pub(crate) struct BundlePreview {
    /// The verified manifest and payload.
    pub verified: inbox::Verified,
    /// The file of `airgap.vendor_public_keys` whose key signed it.
    pub key_file: Option<PathBuf>,
}

/// What an export did.
#[derive(Debug, Clone)]
pub(crate) struct ExportOutcome {
    /// Each exported bundle: where it was copied to, and what it is.
    pub files: Vec<(PathBuf, WrittenBundle)>,
    /// The usage job's summary.
    pub usage_summary: String,
    /// The JPD's public key file, to check the bundle with.
    pub jpd_public_key: PathBuf,
}

impl std::fmt::Display for ExportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "usage job: {}", self.usage_summary)?;
        for (dest, b) in &self.files {
            let what = match b.kind {
                Kind::Usage => {
                    format!(
                        "{} and the registration request",
                        crate::words::count(b.usage_files as u64, "usage file", "usage files")
                    )
                }
                _ => "the registration request (no usage was pending)".to_string(),
            };
            writeln!(
                f,
                "exported {} ({} bundle, sequence {}): {what}",
                dest.display(),
                b.kind,
                b.sequence
            )?;
        }
        write!(
            f,
            "carry it to the vendor; anyone can check it by hand with the JPD's public key {}",
            self.jpd_public_key.display()
        )
    }
}

impl App {
    fn airgapped(
        &self,
        command: &'static str,
    ) -> Result<(&Outbox, &Inbox, &Arc<Scheduler>), AirgapError> {
        match (&self.outbox, &self.inbox, self.scheduler()) {
            (Some(o), Some(i), Some(s)) => Ok((o, i, s)),
            _ => Err(AirgapError::NotAirGapped(command)),
        }
    }

    /// Verifies the entitlements bundle `file`, records it with its payload in the inbox and
    /// has the entitlements job apply it; answers once the store holds the bundle's
    /// entitlements. A refused bundle changes nothing. On a single node the job runs at once,
    /// under its lock; in database mode the node holding the entitlements lease applies it
    /// (this one at once when it holds the lease) and the answer waits for that, bounded.
    pub(crate) async fn import_entitlements_bundle(
        &self,
        file: &Path,
    ) -> Result<ImportOutcome, AirgapError> {
        let (_, inbox, scheduler) = self.airgapped("jfconnect bundle import")?;
        self.apply_pending_import(inbox, scheduler).await?;
        let verified = self.verify_entitlements_bundle(inbox, file).await?;
        if inbox.store().shared() {
            return self.import_shared(inbox, scheduler, verified).await;
        }
        let report = scheduler
            .run_now_prepared(JobName::Entitlements, JOB_WAIT, || {
                inbox::accept(inbox, &verified)
            })
            .await;
        match report {
            Ok(_) => {}
            Err(Prepared::Prepare(e)) => return Err(e),
            Err(Prepared::Job(e)) => {
                return Err(AirgapError::Job(format!(
                    "the bundle was accepted, but the entitlements job failed ({}): {}; its next run applies the bundle",
                    e.class, e.message
                )))
            }
        }
        let tag = verified.entry().tag();
        let stored = self.entitlements.snapshot().current.and_then(|c| c.etag);
        if stored.as_deref() != Some(tag.as_str()) {
            return Err(AirgapError::Job(format!(
                "the bundle was accepted, but the entitlements job stored {} instead of it; run `jfconnect jobs run entitlements`",
                stored.as_deref().unwrap_or("nothing")
            )));
        }
        Ok(verified.outcome(&self.clock))
    }

    /// The import of database mode: the compare-and-set and the inbox entry in one
    /// transaction (no local lock: the database orders imports from every node), then a wait
    /// until the leaseholder stored the entitlements and marked the import applied.
    async fn import_shared(
        &self,
        inbox: &Inbox,
        scheduler: &Arc<Scheduler>,
        verified: inbox::Verified,
    ) -> Result<ImportOutcome, AirgapError> {
        inbox::accept(inbox, &verified).await?;
        let holds_lease = self
            .cluster()
            .is_some_and(|c| c.fence(JobName::Entitlements.as_str()).is_some());
        if holds_lease {
            scheduler.trigger(JobName::Entitlements);
        }
        let bundle_id = &verified.manifest().bundle_id;
        for _ in 0..IMPORT_POLLS {
            if inbox.store().import_applied(inbox::KIND, bundle_id).await? {
                return Ok(verified.outcome(&self.clock));
            }
            tokio::time::sleep(IMPORT_POLL).await;
        }
        Err(AirgapError::Job(format!(
            "the bundle was verified and recorded in the shared database, but no node applied it within {} s; the node holding the entitlements lease applies it (see `jfconnect status`), so check that a `jfconnect serve` of this JPD is running",
            (IMPORT_POLL * IMPORT_POLLS).as_secs()
        )))
    }

    /// An import killed after it committed its bundle to the history but before the
    /// entitlements job stored it leaves the entitlements in the inbox only (the history is
    /// ahead of the store). Before anything else, the job applies them, so the history and the
    /// store agree whatever this import's outcome (a rerun of that import is then refused as
    /// already imported, with its entitlements in effect). A failed job is left to the
    /// import's own run, which reports it.
    async fn apply_pending_import(
        &self,
        inbox: &Inbox,
        scheduler: &Scheduler,
    ) -> Result<(), AirgapError> {
        if inbox.store().shared() {
            // Database mode: the leaseholder applies every committed import.
            return Ok(());
        }
        let pending = inbox.latest().await?;
        let stored = self.entitlements.snapshot().current.and_then(|c| c.etag);
        if pending.is_some_and(|p| stored.as_deref() != Some(p.tag().as_str())) {
            let _ = scheduler
                .run_now_prepared(JobName::Entitlements, JOB_WAIT, || async {
                    Ok::<(), AirgapError>(())
                })
                .await;
        }
        Ok(())
    }

    /// Verifies the entitlements bundle `file` exactly as an import would (keys, this JPD,
    /// kind, expiry, the import history) and reads its payload, changing nothing: the preview
    /// the console shows before "Apply" runs [`App::import_entitlements_bundle`], which
    /// verifies again.
    pub(crate) async fn preview_entitlements_bundle(
        &self,
        file: &Path,
    ) -> Result<BundlePreview, AirgapError> {
        let (_, inbox, _) = self.airgapped("an entitlements bundle preview")?;
        let verified = self.verify_entitlements_bundle(inbox, file).await?;
        let id = verified.manifest().signing_key_id.clone();
        let keys = self.config.airgap.vendor_public_keys.clone();
        let key_file = tokio::task::spawn_blocking(move || {
            keys.into_iter()
                .find(|p| crate::bundle::read_public_key(p).is_ok_and(|k| k.id.to_string() == id))
        })
        .await
        .ok()
        .flatten();
        Ok(BundlePreview { verified, key_file })
    }

    /// Step 1 of an import (writes nothing): the JPD id and the import history from the
    /// store, then the bundle checked off the async threads.
    async fn verify_entitlements_bundle(
        &self,
        inbox: &Inbox,
        file: &Path,
    ) -> Result<inbox::Verified, AirgapError> {
        let store = inbox.store();
        let jpd_id = match store.jpd_id().await? {
            Some(id) => id,
            None if store.shared() => {
                return Err(AirgapError::Job(
                    "the shared database holds no JPD identity yet; start `jfconnect serve` on a node of this JPD first".into(),
                ))
            }
            None => {
                return Err(AirgapError::NoJpdId(
                    self.config.data_dir.join(crate::state::JPD_ID_FILE),
                ))
            }
        };
        let history = inbox.history().await?;
        let (config, clock, path) = (self.config.clone(), self.clock.clone(), file.to_path_buf());
        tokio::task::spawn_blocking(move || inbox::verify(&config, &jpd_id, history, clock, &path))
            .await
            .map_err(|e| AirgapError::Job(format!("the bundle check stopped: {e}")))?
    }

    /// The newest `n` bundles of `kind` in the outbox, newest first, each checked with the
    /// JPD's public key.
    pub(crate) fn outbox_bundles(
        &self,
        kind: Kind,
        n: u64,
    ) -> Result<Vec<WrittenBundle>, AirgapError> {
        let (outbox, _, _) = self.airgapped("the outbox")?;
        let last = outbox.last_sequence(kind)?;
        let mut found = outbox.written_since(kind, last.saturating_sub(n))?;
        found.reverse();
        Ok(found)
    }

    /// The outbox file called `name`, when `name` is a bundle file name this JPD writes and
    /// the file exists (never a path outside the outbox).
    pub(crate) fn outbox_file(&self, name: &str) -> Option<PathBuf> {
        let outbox = self.outbox.as_ref()?;
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !plain || name.starts_with('.') {
            return None;
        }
        crate::transport::payload::parse_bundle_file_name(name)?;
        let path = outbox.dir.join(name);
        path.is_file().then_some(path)
    }

    /// A fresh signed registration bundle in the outbox, for the license in effect.
    pub(crate) async fn registration_bundle(&self) -> Result<WrittenBundle, AirgapError> {
        let (outbox, _, _) = self.airgapped("an offline registration")?;
        let license = self
            .license
            .read()
            .map_err(|e| AirgapError::Job(e.to_string()))?
            .ok_or_else(|| AirgapError::NoLicense(self.license.none_found()))?;
        let (outbox, fp, now) = (outbox.clone(), license.fingerprint(), self.clock.now());
        tokio::task::spawn_blocking(move || outbox.write_registration(&fp, now))
            .await
            .map_err(|e| AirgapError::Job(format!("the bundle writer stopped: {e}")))?
    }

    /// Runs the export described in the module doc.
    /// An existing `out` is kept (refused before anything runs) unless `replace`.
    pub(crate) async fn export_usage_bundle(
        &self,
        out: &Path,
        replace: bool,
    ) -> Result<ExportOutcome, AirgapError> {
        let (outbox, _, scheduler) = self.airgapped("jfconnect bundle export")?;
        if !replace && std::fs::symlink_metadata(out).is_ok() {
            return Err(AirgapError::OutExists(out.to_path_buf()));
        }
        if self.entitlements.snapshot().registration.is_none() {
            // Without imported entitlements the job ends "unavailable" after registering; only
            // a missing registration matters here.
            if let Err(e) = scheduler
                .run_now_prepared(JobName::Entitlements, JOB_WAIT, || async {
                    Ok::<(), AirgapError>(())
                })
                .await
            {
                if self.entitlements.snapshot().registration.is_none() {
                    return Err(match e {
                        Prepared::Prepare(e) => e,
                        Prepared::Job(e) => AirgapError::Job(e.message),
                    });
                }
            }
        }
        let before = outbox.last_sequence(Kind::Usage)?;
        let handed_before = outbox.last_usage_handed()?;
        let report = scheduler
            .run_now_prepared(JobName::Usage, JOB_WAIT, || async {
                Ok::<(), AirgapError>(())
            })
            .await
            .map_err(|e| match e {
                Prepared::Prepare(e) => e,
                Prepared::Job(e) => {
                    AirgapError::Job(format!("the usage job failed ({}): {}", e.class, e.message))
                }
            })?;
        let mut bundles = outbox.written_since(Kind::Usage, before)?;
        if bundles.is_empty() {
            // A killed export wrote its bundle but never copied it out; this run found every
            // file already in it and answered from it (no second bundle): hand that one out.
            if let Some((sequence, handed)) = outbox.last_usage_handed()? {
                if handed_before.is_some_and(|(s, h)| s == sequence && h < handed) {
                    bundles = outbox.written_since(Kind::Usage, sequence - 1)?;
                    bundles.retain(|b| b.sequence == sequence);
                }
            }
        }
        if bundles.is_empty() {
            bundles.push(self.registration_bundle().await?);
        }
        let mut files = Vec::new();
        for (i, b) in bundles.into_iter().enumerate() {
            let dest = numbered(out, i + 1);
            copy_export(&b.path, &dest, replace)?;
            files.push((dest, b));
        }
        Ok(ExportOutcome {
            files,
            usage_summary: report.summary,
            jpd_public_key: outbox.public_key_file(),
        })
    }
}

/// `out` for the first bundle, `NAME-n.jfbundle` beside it for the n-th.
fn numbered(out: &Path, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new = match name.strip_suffix(".jfbundle") {
        Some(stem) => format!("{stem}-{n}.jfbundle"),
        None => format!("{name}-{n}"),
    };
    out.with_file_name(new)
}

/// Copies `src` to `dest` durably (`state::copy_durably`), readable by all (0644): the file
/// is carried out of the machine.
/// An existing `dest` is kept unless `replace` (the new bundle stays in the outbox).
fn copy_export(src: &Path, dest: &Path, replace: bool) -> Result<(), AirgapError> {
    let how = crate::state::Durably {
        mode: Some(0o644),
        keep_existing: !replace,
        ..Default::default()
    };
    crate::state::copy_durably(src, dest, how)
        .map(|_| ())
        .map_err(|e| match e.source.kind() {
            std::io::ErrorKind::AlreadyExists if !replace => {
                AirgapError::OutExists(dest.to_path_buf())
            }
            _ => AirgapError::io(e.step, e.path, e.source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn further_bundles_are_numbered_beside_the_first() {
        let out = Path::new("/x/usage.jfbundle");
        assert_eq!(numbered(out, 1), out);
        assert_eq!(numbered(out, 3), Path::new("/x/usage-3.jfbundle"));
        assert_eq!(numbered(Path::new("b"), 2), Path::new("b-2"));
    }
}
