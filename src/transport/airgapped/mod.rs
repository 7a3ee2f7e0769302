//! `AirGappedTransport`: the `Transport` that writes signed bundles instead of calling JES/JCS.
//!
//! The jobs call it exactly as they call the online transport. `register` writes a
//! registration bundle and answers an offline token; `fetch_entitlements` has nobody to ask,
//! so it answers from the inbox (see [`super::inbox`]), tagged with the imported bundle's
//! sequence and digest, or tells the person what to carry across; `upload_usage` writes a
//! usage bundle, and that bundle, written and fsynced, is the receipt: every file in it is
//! acknowledged and the pipeline moves on unchanged (archival included). The usage job does
//! not hand it batches: it streams files into the [`UsageOutbox`] `usage_outbox` answers
//! (one bundle up to `airgap.max_bundle_bytes`), with the same bundle-before-ledger order.

use std::sync::Arc;

pub use super::airgap_error::AirgapError;
use super::inbox::Inbox;
use super::outbox::{Outbox, UsageOutbox, WrittenBundle};
use crate::bundle::Kind;
use crate::clock::SharedClock;
use crate::entitlements::EntitlementsStore;
use crate::protocol::{RegisterRequest, RegisterResponse};
use crate::secret::Secret;
use crate::transport::{EntitlementsFetch, Transport, TransportError, UsageReceipt, UsageUpload};

/// The registration token of an air-gapped JPD: there is no JES to issue one.
pub(crate) const OFFLINE_TOKEN: &str = "offline";

/// Usage files per bundle: a bundle carries as many as one upload call hands it, so the
/// transport asks for large batches (a person carries one file, not hundreds).
pub(crate) const BUNDLE_BATCH: usize = 100_000;

/// The transport of air-gapped mode; see the module doc.
pub(crate) struct AirGappedTransport {
    outbox: Outbox,
    inbox: Inbox,
    store: Arc<EntitlementsStore>,
    clock: SharedClock,
    /// The sequence of the inbox entry the last fetch saw, for [`Transport::unchanged`].
    last_seen: std::sync::Mutex<Option<u64>>,
}

fn local(e: AirgapError) -> TransportError {
    TransportError::local(e.to_string())
}

impl AirGappedTransport {
    /// A transport writing into `outbox`, answering entitlements from `inbox`, reading the
    /// registration from `store`.
    pub fn new(
        outbox: Outbox,
        inbox: Inbox,
        store: Arc<EntitlementsStore>,
        clock: SharedClock,
    ) -> Self {
        AirGappedTransport {
            outbox,
            inbox,
            store,
            clock,
            last_seen: std::sync::Mutex::new(None),
        }
    }

    fn fingerprint(&self) -> Option<String> {
        self.store
            .snapshot()
            .registration
            .map(|r| r.license_fingerprint)
    }

    /// The registered license's fingerprint, or the error that usage cannot be written yet.
    fn registered(&self) -> Result<String, TransportError> {
        self.fingerprint().ok_or_else(|| {
            TransportError::unavailable(
                None,
                "air-gapped: the license is not registered yet; run the entitlements job first",
            )
        })
    }

    /// Writes a fresh registration bundle (for `GET /api/v1/offline/start_register`).
    pub(crate) async fn write_registration(
        &self,
        license_fingerprint: &str,
    ) -> Result<WrittenBundle, AirgapError> {
        let outbox = self.outbox.clone();
        let fp = license_fingerprint.to_string();
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || outbox.write_registration(&fp, now))
            .await
            .map_err(|e| AirgapError::Job(format!("the bundle writer stopped: {e}")))?
    }
}

#[async_trait::async_trait]
impl Transport for AirGappedTransport {
    async fn register(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, TransportError> {
        let b = self
            .write_registration(&request.license_key.fingerprint())
            .await
            .map_err(local)?;
        tracing::info!(bundle = %b.path.display(), "wrote a registration bundle; carry it to the vendor");
        Ok(RegisterResponse {
            registration_token: Secret::new(OFFLINE_TOKEN),
            subscription_id: "offline".into(),
        })
    }

    async fn fetch_entitlements(
        &self,
        _jpd_id: &str,
        _registration_token: &Secret,
        etag: Option<&str>,
    ) -> Result<EntitlementsFetch, TransportError> {
        let entry = self
            .inbox
            .latest()
            .await
            .map_err(|e| TransportError::local(e.to_string()))?;
        *self.last_seen.lock().unwrap_or_else(|e| e.into_inner()) =
            entry.as_ref().map(|e| e.sequence);
        match entry {
            Some(entry) if etag == Some(entry.tag().as_str()) => Ok(EntitlementsFetch::NotModified),
            Some(entry) => Ok(EntitlementsFetch::Updated {
                etag: Some(entry.tag()),
                entitlements: entry.entitlements,
            }),
            None => {
                let bundle = match self.outbox.newest(Kind::Registration) {
                    Some(p) => p,
                    None => {
                        let fp = self.fingerprint().unwrap_or_default();
                        self.write_registration(&fp).await.map_err(local)?.path
                    }
                };
                Err(TransportError::unavailable(
                    None,
                    format!(
                        "air-gapped: no entitlements bundle has been imported yet; carry the registration bundle {} to the vendor, then import the entitlements bundle they answer with `jfconnect bundle import FILE` (or POST /api/v1/offline/register)",
                        bundle.display()
                    ),
                ))
            }
        }
    }

    async fn upload_usage(
        &self,
        _jpd_id: &str,
        _registration_token: &Secret,
        batch: &[UsageUpload],
    ) -> Result<UsageReceipt, TransportError> {
        if batch.is_empty() {
            return Ok(UsageReceipt::default());
        }
        let fp = self.registered()?;
        let outbox = self.outbox.clone();
        let files = batch.to_vec();
        let now = self.clock.now();
        let b = tokio::task::spawn_blocking(move || outbox.write_usage(&fp, &files, now))
            .await
            .map_err(|e| TransportError::local(format!("the bundle writer stopped: {e}")))?
            .map_err(local)?;
        tracing::info!(bundle = %b.path.display(), files = b.usage_files, "wrote a usage bundle; carry it to the vendor");
        // The bundle is whole on disk (fsynced and renamed): it is the receipt of every file.
        Ok(UsageReceipt {
            acknowledged: batch.iter().map(|f| f.sha256.clone()).collect(),
            duplicates: 0,
        })
    }

    fn unchanged(&self) -> String {
        match *self.last_seen.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(sequence) => format!(
                "entitlements unchanged (no new entitlements bundle since sequence {sequence})"
            ),
            None => "entitlements unchanged (no new entitlements bundle was imported)".into(),
        }
    }

    fn batch_size(&self, configured: usize) -> usize {
        configured.max(BUNDLE_BATCH)
    }

    fn usage_outbox(&self) -> Option<UsageOutbox> {
        Some(UsageOutbox::new(
            self.outbox.clone(),
            self.registered(),
            self.clock.clone(),
        ))
    }

    fn describe(&self) -> String {
        format!("air-gapped: bundles in {}", self.outbox.dir.display())
    }
}
