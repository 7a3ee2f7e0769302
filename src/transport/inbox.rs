//! Importing an entitlements bundle: verify everything, store the entitlements as a fetch
//! would, and only then record the bundle in the import history.
//!
//! Order matters for "a refused bundle changes nothing": verification writes nothing (not
//! even a lock file); the entitlements are stored next; the history commit comes last. A crash
//! between the two leaves the entitlements applied and the bundle importable again, which
//! re-applies the same entitlements: harmless, unlike the reverse order, which could record a
//! bundle whose entitlements were never stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::airgapped::AirgapError;
use super::payload::{ENTITLEMENTS_PATH, MAX_ENTITLEMENTS_BYTES};
use crate::bundle::{
    read_trusted_keys, verify_bundle, BundleError, Expectations, ImportStore, Kind, Limits,
    Manifest,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::entitlements::{valid_at, EntitlementsStore, StoredEntitlements};
use crate::protocol::Entitlements;

static IMPORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
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
            "imported entitlements bundle {} (sequence {}): {} entitlements of subscription {}, {} valid now",
            self.manifest.bundle_id,
            self.manifest.sequence,
            self.entitlements,
            self.subscription_id,
            self.valid_now
        )
    }
}

/// `<data_dir>/state/bundle-import-entitlements.json`: replay and rollback history.
pub fn history_path(config: &Config) -> PathBuf {
    config.state_dir().join("bundle-import-entitlements.json")
}

/// Reads `<data_dir>/jpd_id` without making one (an import must not change a data folder it
/// refuses a bundle for).
pub fn read_jpd_id(data_dir: &Path) -> Result<String, AirgapError> {
    let path = data_dir.join("jpd_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(AirgapError::NoJpdId(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AirgapError::NoJpdId(path)),
        Err(e) => Err(AirgapError::io("read", path, e)),
    }
}

/// Verifies the entitlements bundle `file` against `airgap.vendor_public_keys`, this JPD and
/// the import history, stores its entitlements in `store`, then commits the history.
pub fn import_entitlements(
    config: &Config,
    store: &EntitlementsStore,
    clock: SharedClock,
    file: &Path,
) -> Result<ImportOutcome, AirgapError> {
    if config.airgap.vendor_public_keys.is_empty() {
        return Err(AirgapError::NoVendorKeys);
    }
    // Two imports in this process (HTTP and HTTP) run one after the other, so the second
    // sees the first one's history; `commit` re-checks it against the disk in any case.
    let _one_at_a_time = IMPORTS.lock().unwrap_or_else(|e| e.into_inner());
    let jpd_id = read_jpd_id(&config.data_dir)?;
    let trust = read_trusted_keys(&config.airgap.vendor_public_keys)?;
    let history = ImportStore::new(history_path(config));
    let expect = Expectations {
        kind: Some(Kind::Entitlements),
        jpd_id: Some(jpd_id.clone()),
        clock: clock.clone(),
        history: Some(history.load()?),
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
    let bytes = verified.read_entry(ENTITLEMENTS_PATH)?;
    let entitlements: Entitlements =
        serde_json::from_slice(&bytes).map_err(|e| payload_err(e.to_string()))?;
    if entitlements.jpd_id != jpd_id {
        return Err(payload_err(format!(
            "it is issued for JPD {}, not this JPD ({jpd_id})",
            entitlements.jpd_id
        )));
    }
    let now = clock.now();
    let outcome = ImportOutcome {
        manifest: verified.manifest().clone(),
        subscription_id: entitlements.subscription_id.clone(),
        entitlements: entitlements.entitlements.len(),
        valid_now: valid_at(&entitlements, now).entitlements.len(),
    };
    store.update(|s| {
        s.current = Some(StoredEntitlements {
            etag: None,
            fetched_at: now,
            confirmed_at: now,
            entitlements,
        })
    })?;
    verified.commit(&history)?;
    Ok(outcome)
}

fn payload_err(reason: String) -> AirgapError {
    AirgapError::Payload {
        path: ENTITLEMENTS_PATH.into(),
        reason,
    }
}

/// Opens the entitlements store of `config` (for the CLI, which runs no service).
pub fn open_store(config: &Config) -> Result<Arc<EntitlementsStore>, AirgapError> {
    Ok(Arc::new(EntitlementsStore::open(&config.state_dir())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{
        keys_generate, new_bundle_id, write_bundle, BundleSpec, PayloadEntry, PayloadSource,
    };
    use crate::protocol::Entitlement;
    use chrono::Utc;

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

    #[test]
    fn entitlements_starting_later_are_stored_but_not_valid_yet_and_a_refusal_keeps_the_store() {
        let dir = tempfile::tempdir().unwrap();
        keys_generate(&dir.path().join("vendor")).unwrap();
        let mut config = Config::defaults(dir.path().join("data"));
        config.airgap.vendor_public_keys = vec![dir.path().join("vendor.pub")];
        std::fs::create_dir_all(&config.data_dir).unwrap();
        std::fs::write(config.data_dir.join("jpd_id"), "jpd-imp-1").unwrap();
        let store = open_store(&config).unwrap();
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let later = crate::bundle::format_time(Utc::now() + chrono::Duration::days(10));
        let line = |product: &str, from: Option<String>| Entitlement {
            product: product.into(),
            feature: "f".into(),
            valid_from: from,
            valid_until: None,
        };
        let lines = vec![line("xray", None), line("artifactory", Some(later))];
        let good = bundle(dir.path(), "jpd-imp-1", "jpd-imp-1", 3, lines);
        let out = import_entitlements(&config, &store, clock.clone(), &good).unwrap();
        assert_eq!((out.entitlements, out.valid_now), (2, 1));
        let stored = store.snapshot().current.unwrap();
        assert_eq!(stored.etag, None);
        assert_eq!(stored.entitlements.entitlements.len(), 2);

        // Signed by the vendor for this JPD, but the payload names another JPD: refused,
        // nothing stored, nothing committed.
        let history_before = std::fs::read(history_path(&config)).unwrap();
        let wrong = bundle(dir.path(), "jpd-imp-1", "jpd-else", 4, vec![]);
        let err = import_entitlements(&config, &store, clock, &wrong).unwrap_err();
        assert!(err.to_string().contains("jpd-else"), "{err}");
        assert!(err.is_bad_input());
        assert_eq!(store.snapshot().current.unwrap(), stored);
        assert_eq!(
            std::fs::read(history_path(&config)).unwrap(),
            history_before
        );
    }
}
