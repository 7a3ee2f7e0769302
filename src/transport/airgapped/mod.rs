//! `AirGappedTransport`: the `Transport` that writes signed bundles instead of calling JES/JCS.
//!
//! The jobs call it exactly as they call the online transport. `register` writes a
//! registration bundle and answers an offline token; `fetch_entitlements` has nobody to ask,
//! so it answers what was imported (see [`super::inbox`]) or tells the person what to carry
//! across; `upload_usage` writes a usage bundle, and that bundle, written and fsynced, is the
//! receipt: every file in it is acknowledged and the pipeline moves on unchanged (archival
//! included).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::outbox::{Outbox, WrittenBundle};
mod error;
use crate::bundle::Kind;
use crate::clock::SharedClock;
use crate::entitlements::{EntitlementsState, EntitlementsStore};
use crate::protocol::{RegisterRequest, RegisterResponse};
use crate::secret::Secret;
use crate::transport::{EntitlementsFetch, Transport, TransportError, UsageReceipt, UsageUpload};
pub use error::AirgapError;

/// The registration token of an air-gapped JPD: there is no JES to issue one.
pub const OFFLINE_TOKEN: &str = "offline";

/// The transport of air-gapped mode; see the module doc.
pub struct AirGappedTransport {
    outbox: Outbox,
    store: Arc<EntitlementsStore>,
    state_file: PathBuf,
    clock: SharedClock,
    written: Mutex<Vec<WrittenBundle>>,
}

fn local(e: AirgapError) -> TransportError {
    TransportError::local(e.to_string())
}

impl AirGappedTransport {
    /// A transport writing into `outbox`, answering entitlements from `store` (whose file is
    /// `<state_dir>/entitlements.json`).
    pub fn new(outbox: Outbox, store: Arc<EntitlementsStore>, clock: SharedClock) -> Self {
        let state_file = outbox.state_dir.join("entitlements.json");
        AirGappedTransport {
            outbox,
            store,
            state_file,
            clock,
            written: Mutex::new(Vec::new()),
        }
    }

    /// The outbox it writes into.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The bundles this transport wrote since it was made (or since the last call), oldest
    /// first.
    pub fn take_written(&self) -> Vec<WrittenBundle> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn remember(&self, b: &WrittenBundle) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b.clone());
    }

    fn fingerprint(&self) -> Option<String> {
        self.store
            .snapshot()
            .registration
            .map(|r| r.license_fingerprint)
    }

    /// Writes a fresh registration bundle (for `GET /api/v1/offline/start_register`).
    pub async fn write_registration(
        &self,
        license_fingerprint: &str,
    ) -> Result<WrittenBundle, AirgapError> {
        let outbox = self.outbox.clone();
        let fp = license_fingerprint.to_string();
        let now = self.clock.now();
        let b = tokio::task::spawn_blocking(move || outbox.write_registration(&fp, now))
            .await
            .map_err(|e| AirgapError::Job(format!("the bundle writer stopped: {e}")))??;
        self.remember(&b);
        Ok(b)
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
        _etag: Option<&str>,
    ) -> Result<EntitlementsFetch, TransportError> {
        // `jfconnect bundle import` in another process writes the state file, not this
        // process's copy: pick its result up from disk.
        let on_disk: Option<EntitlementsState> =
            crate::state::load(&self.state_file).ok().flatten();
        let in_memory = self.store.snapshot().current;
        match (on_disk.and_then(|s| s.current), in_memory) {
            (Some(disk), Some(mem)) if disk.entitlements == mem.entitlements => {
                Ok(EntitlementsFetch::NotModified)
            }
            (Some(disk), _) => Ok(EntitlementsFetch::Updated {
                etag: None,
                entitlements: disk.entitlements,
            }),
            (None, Some(_)) => Ok(EntitlementsFetch::NotModified),
            (None, None) => {
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
        let fp = self.fingerprint().ok_or_else(|| {
            TransportError::unavailable(
                None,
                "air-gapped: the license is not registered yet; run the entitlements job first",
            )
        })?;
        let outbox = self.outbox.clone();
        let files = batch.to_vec();
        let now = self.clock.now();
        let b = tokio::task::spawn_blocking(move || outbox.write_usage(&fp, &files, now))
            .await
            .map_err(|e| TransportError::local(format!("the bundle writer stopped: {e}")))?
            .map_err(local)?;
        tracing::info!(bundle = %b.path.display(), files = b.usage_files, "wrote a usage bundle; carry it to the vendor");
        self.remember(&b);
        // The bundle is whole on disk (fsynced and renamed): it is the receipt of every file.
        Ok(UsageReceipt {
            acknowledged: batch.iter().map(|f| f.sha256.clone()).collect(),
            duplicates: 0,
        })
    }

    fn unchanged(&self) -> &'static str {
        "entitlements unchanged (no newer entitlements bundle was imported)"
    }

    fn describe(&self) -> String {
        format!("air-gapped: bundles in {}", self.outbox.dir.display())
    }
}
