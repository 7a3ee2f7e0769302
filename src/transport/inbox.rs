//! The inbox of air-gapped mode: where a verified entitlements bundle waits for the
//! entitlements job, which is the only writer of the entitlements store in both modes.
//!
//! The inbox and the import history live in the JPD's state store ([`StateStore`]): the data
//! folder's files for a single node, the shared database in database mode. An import has three
//! steps, in this order, so that a refused bundle changes nothing and a crash loses nothing:
//! 1. [`verify`] checks everything (vendor keys, this JPD, kind, expiry, the import history
//!    read before) and reads the payload. It writes nothing, not even a lock file.
//! 2. [`accept`] records the import in the store: one compare-and-set of the sequence together
//!    with the payload in the inbox (`StateStore::commit_import`; the data folder's store does
//!    it under the entitlements job's lock, which the caller holds, the database in one
//!    transaction). Another import that committed meanwhile makes it refuse, changing nothing.
//! 3. The entitlements job runs (at once under the same lock on a single node; on the node
//!    holding the entitlements lease in database mode): the air-gapped transport answers its
//!    fetch from the inbox, tagged with the bundle's sequence and digest, and the job stores
//!    them as it stores a fetch from JES.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::airgap_error::AirgapError;
use super::payload::{ENTITLEMENTS_PATH, MAX_ENTITLEMENTS_BYTES};
use crate::bundle::{
    read_trusted_keys, verify_bundle, BundleError, Expectations, ImportState, Kind, Limits,
    Manifest,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::entitlements::valid_at;
use crate::protocol::Entitlements;
use crate::state::{ImportCommit, StateError, StateStore};

/// The bundle kind the inbox holds.
pub(crate) const KIND: &str = "entitlements";

/// What an import did.
#[derive(Debug, Clone)]
pub(crate) struct ImportOutcome {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The subscription.
    pub subscription_id: String,
    /// Entitlements stored.
    pub entitlements: usize,
    /// Of those, how many are valid now (the rest start later or have ended).
    pub valid_now: usize,
}

impl ImportOutcome {
    /// One line for a person.
    pub fn summary(&self) -> String {
        format!(
            "imported entitlements bundle {} (sequence {}): {} of subscription {}, {} valid now",
            self.manifest.bundle_id,
            self.manifest.sequence,
            crate::words::count(self.entitlements as u64, "entitlement", "entitlements"),
            self.subscription_id,
            self.valid_now
        )
    }
}

/// One verified entitlements bundle's payload, waiting for (or already taken by) the
/// entitlements job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InboxEntry {
    /// The bundle it came in.
    pub bundle_id: String,
    /// The bundle's sequence.
    pub sequence: u64,
    /// SHA-256 of the payload's `entitlements.json`.
    pub sha256: String,
    /// The entitlements.
    pub entitlements: Entitlements,
}

impl InboxEntry {
    /// The tag the entitlements job keeps as the ETag of what it stored: the bundle's
    /// sequence and the payload digest.
    pub fn tag(&self) -> String {
        format!(
            "bundle-{}-{}",
            self.sequence,
            &self.sha256[..16.min(self.sha256.len())]
        )
    }
}

/// A verified bundle, read but not yet accepted.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    manifest: Manifest,
    entry: InboxEntry,
    bundle_sha256: String,
}

impl Verified {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// What goes into the inbox.
    pub fn entry(&self) -> &InboxEntry {
        &self.entry
    }
    /// The outcome to report once the job stored the entitlements.
    pub fn outcome(&self, clock: &SharedClock) -> ImportOutcome {
        let e = &self.entry.entitlements;
        ImportOutcome {
            manifest: self.manifest.clone(),
            subscription_id: e.subscription_id.clone(),
            entitlements: e.entitlements.len(),
            valid_now: valid_at(e, clock.now()).entitlements.len(),
        }
    }
}

/// The inbox and the import history, in the JPD's state store.
#[derive(Clone)]
pub(crate) struct Inbox {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inbox(shared: {})", self.store.shared())
    }
}

impl Inbox {
    /// The inbox kept in `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Inbox {
        Inbox { store }
    }

    /// The store it is kept in.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The newest accepted entry, read from the store (an import in another process, or on
    /// another node in database mode, is seen).
    pub async fn latest(&self) -> Result<Option<InboxEntry>, StateError> {
        let Some(value) = self.store.latest_import(KIND).await? else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: "the import inbox".into(),
                reason: e.to_string(),
            })
    }

    /// The import history, read before a bundle is verified.
    pub async fn history(&self) -> Result<ImportState, StateError> {
        self.store.import_history(KIND).await
    }
}

/// Step 1: verifies the entitlements bundle `file` against `airgap.vendor_public_keys`, the
/// JPD `jpd_id` and the import `history`, and reads its payload. Writes nothing.
pub fn verify(
    config: &Config,
    jpd_id: &str,
    history: ImportState,
    clock: SharedClock,
    file: &Path,
) -> Result<Verified, AirgapError> {
    if config.airgap.vendor_public_keys.is_empty() {
        return Err(AirgapError::NoVendorKeys);
    }
    let trust = read_trusted_keys(&config.airgap.vendor_public_keys)?;
    let expect = Expectations {
        kind: Some(Kind::Entitlements),
        jpd_id: Some(jpd_id.to_string()),
        clock,
        history: Some(history),
    };
    let verified = verify_bundle(file, &trust, &expect, &Limits::default())?;
    let listed = verified
        .manifest()
        .entries
        .iter()
        .find(|e| e.path == ENTITLEMENTS_PATH)
        .ok_or_else(|| BundleError::MissingEntry(ENTITLEMENTS_PATH.into()))?;
    if listed.size > MAX_ENTITLEMENTS_BYTES {
        return Err(payload_err(format!(
            "it is {} bytes, over the {MAX_ENTITLEMENTS_BYTES}-byte limit",
            listed.size
        )));
    }
    let sha256 = listed.sha256.clone();
    let bytes = verified.read_entry(ENTITLEMENTS_PATH)?;
    let entitlements: Entitlements =
        serde_json::from_slice(&bytes).map_err(|e| payload_err(e.to_string()))?;
    if entitlements.jpd_id != jpd_id {
        return Err(payload_err(format!(
            "it is issued for JPD {}, not this JPD ({jpd_id})",
            entitlements.jpd_id
        )));
    }
    let bundle_sha256 = file_sha256(file)?;
    let manifest = verified.manifest().clone();
    Ok(Verified {
        entry: InboxEntry {
            bundle_id: manifest.bundle_id.clone(),
            sequence: manifest.sequence,
            sha256,
            entitlements,
        },
        manifest,
        bundle_sha256,
    })
}

/// SHA-256 of the bundle file (hex), read in blocks.
fn file_sha256(file: &Path) -> Result<String, AirgapError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(file).map_err(|e| AirgapError::io("read", file, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| AirgapError::io("read", file, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Step 2: records the import in the store (one compare-and-set of the sequence with the
/// payload in the inbox). A bundle refused here (another import committed meanwhile) changes
/// nothing. A data folder's store must be called under the entitlements job's lock.
pub async fn accept(inbox: &Inbox, verified: &Verified) -> Result<(), AirgapError> {
    let entry = serde_json::to_value(&verified.entry).map_err(|e| payload_err(e.to_string()))?;
    let commit = ImportCommit {
        kind: KIND,
        bundle_id: &verified.manifest.bundle_id,
        sequence: verified.manifest.sequence,
        created: verified.manifest.created()?,
        bundle_sha256: &verified.bundle_sha256,
        tag: &verified.entry.tag(),
        entry: &entry,
    };
    inbox
        .store
        .commit_import(&commit)
        .await?
        .map_err(|conflict| BundleError::from(conflict).into())
}

fn payload_err(reason: String) -> AirgapError {
    AirgapError::Payload {
        path: ENTITLEMENTS_PATH.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{
        keys_generate, new_bundle_id, write_bundle, BundleSpec, PayloadEntry, PayloadSource,
    };
    use crate::protocol::Entitlement;
    use chrono::Utc;
    use std::path::PathBuf;

    /// An entitlements bundle signed by the test's vendor key for `manifest_jpd`, whose
    /// payload names `payload_jpd`.
    fn bundle(
        dir: &Path,
        manifest_jpd: &str,
        payload_jpd: &str,
        seq: u64,
        lines: Vec<Entitlement>,
    ) -> PathBuf {
        let sk = crate::bundle::read_secret_key(&dir.join("vendor.key")).unwrap();
        let now = Utc::now();
        let e = Entitlements {
            subscription_id: "sub-1".into(),
            subscription_type: "pro".into(),
            jpd_id: payload_jpd.into(),
            issued_at: crate::bundle::format_time(now),
            entitlements: lines,
        };
        let out = dir.join(format!("e{seq}.jfbundle"));
        let spec = BundleSpec {
            kind: Kind::Entitlements,
            bundle_id: new_bundle_id(),
            jpd_id: manifest_jpd.into(),
            created: now,
            expires: now + chrono::Duration::days(1),
            sequence: seq,
        };
        let payload = vec![PayloadEntry {
            path: ENTITLEMENTS_PATH.into(),
            source: PayloadSource::Bytes(serde_json::to_vec(&e).unwrap()),
        }];
        write_bundle(&out, &spec, payload, &sk).unwrap();
        out
    }

    #[tokio::test]
    async fn a_verified_bundle_lands_in_the_inbox_and_a_refusal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        keys_generate(&dir.path().join("vendor")).unwrap();
        let mut config = Config::defaults(dir.path().join("data"));
        config.airgap.vendor_public_keys = vec![dir.path().join("vendor.pub")];
        std::fs::create_dir_all(&config.data_dir).unwrap();
        std::fs::write(config.data_dir.join("jpd_id"), "jpd-imp-1").unwrap();
        let files = crate::state::FileStore::new(&config.data_dir);
        let inbox = Inbox::new(Arc::new(files.clone()));
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let history = || {
            futures_util::FutureExt::now_or_never(inbox.history())
                .unwrap()
                .unwrap()
        };
        let later = crate::bundle::format_time(Utc::now() + chrono::Duration::days(10));
        let line = |product: &str, from: Option<String>| Entitlement {
            product: product.into(),
            feature: "f".into(),
            valid_from: from,
            valid_until: None,
        };
        let lines = vec![line("xray", None), line("artifactory", Some(later))];
        let good = bundle(dir.path(), "jpd-imp-1", "jpd-imp-1", 3, lines);
        let v = verify(&config, "jpd-imp-1", history(), clock.clone(), &good).unwrap();
        assert_eq!(
            inbox.latest().await.unwrap(),
            None,
            "verifying writes nothing"
        );
        accept(&inbox, &v).await.unwrap();
        let out = v.outcome(&clock);
        assert_eq!((out.entitlements, out.valid_now), (2, 1));
        let entry = inbox.latest().await.unwrap().unwrap();
        assert_eq!(entry.sequence, 3);
        assert_eq!(entry.entitlements.entitlements.len(), 2);
        assert!(entry.tag().starts_with("bundle-3-"), "{}", entry.tag());

        // Accepting the same verified bundle again (a second importer that verified before
        // the first committed) is refused under the lock.
        assert!(accept(&inbox, &v).await.is_err());

        // Signed by the vendor for this JPD, but the payload names another JPD: refused,
        // nothing stored, nothing committed.
        let history_path = files.history_path(KIND);
        let history_before = std::fs::read(&history_path).unwrap();
        let wrong = bundle(dir.path(), "jpd-imp-1", "jpd-else", 4, vec![]);
        let err = verify(&config, "jpd-imp-1", history(), clock, &wrong).unwrap_err();
        assert!(err.to_string().contains("jpd-else"), "{err}");
        assert!(err.is_bad_input());
        assert_eq!(inbox.latest().await.unwrap().unwrap(), entry);
        assert_eq!(std::fs::read(&history_path).unwrap(), history_before);
    }
}
