//! The inbox of air-gapped mode: where a verified entitlements bundle waits for the
//! entitlements job, which is the only writer of the entitlements store in both modes.
//!
//! An import has three steps, in this order, so that a refused bundle changes nothing and a
//! crash loses nothing:
//! 1. [`verify`] checks everything (vendor keys, this JPD, kind, expiry, the import history)
//!    and reads the payload. It writes nothing, not even a lock file.
//! 2. Under the entitlements job's lock (the caller holds it), [`accept`] re-checks the history
//!    against the disk, writes the payload into the inbox (`state/inbox-entitlements.json`,
//!    durably), then commits the history (a compare-and-set of the last sequence). A crash
//!    between the two leaves the entitlements in the inbox and the bundle importable again,
//!    which re-applies the same entitlements: harmless. The reverse order could record a
//!    bundle whose entitlements never arrived.
//! 3. Still under the lock, the entitlements job runs: the air-gapped transport answers its
//!    fetch from the inbox, tagged with the bundle's sequence and digest, and the job stores
//!    them as it stores a fetch from JES.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::airgap_error::AirgapError;
use super::payload::{ENTITLEMENTS_PATH, MAX_ENTITLEMENTS_BYTES};
use crate::bundle::{
    read_trusted_keys, verify_bundle, BundleError, Expectations, ImportStore, Kind, Limits,
    Manifest,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::entitlements::valid_at;
use crate::protocol::Entitlements;
use crate::state::StateError;

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

/// The inbox and the import history of one data folder.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    path: PathBuf,
    history: ImportStore,
}

impl Inbox {
    /// The inbox under `state_dir` (`inbox-entitlements.json`, `bundle-import-entitlements.json`).
    pub fn new(state_dir: &Path) -> Inbox {
        Inbox {
            path: state_dir.join("inbox-entitlements.json"),
            history: ImportStore::new(state_dir.join("bundle-import-entitlements.json")),
        }
    }

    /// The inbox under `config`'s data folder.
    pub fn from_config(config: &Config) -> Inbox {
        Inbox::new(&config.state_dir())
    }

    /// The newest accepted entry, read from disk (an import in another process is seen).
    pub fn latest(&self) -> Result<Option<InboxEntry>, StateError> {
        crate::state::load(&self.path)
    }

    /// The import history file (replay and rollback protection).
    #[cfg(test)]
    pub(crate) fn history_path(&self) -> &Path {
        self.history.path()
    }
}

/// Reads `<data_dir>/jpd_id` without making one (an import must not change a data folder it
/// refuses a bundle for).
pub(crate) fn read_jpd_id(data_dir: &Path) -> Result<String, AirgapError> {
    crate::state::read_jpd_id(data_dir)?
        .ok_or_else(|| AirgapError::NoJpdId(data_dir.join(crate::state::JPD_ID_FILE)))
}

/// Step 1: verifies the entitlements bundle `file` against `airgap.vendor_public_keys`, this
/// JPD and the import history, and reads its payload. Writes nothing.
pub fn verify(
    config: &Config,
    inbox: &Inbox,
    clock: SharedClock,
    file: &Path,
) -> Result<Verified, AirgapError> {
    if config.airgap.vendor_public_keys.is_empty() {
        return Err(AirgapError::NoVendorKeys);
    }
    let jpd_id = read_jpd_id(&config.data_dir)?;
    let trust = read_trusted_keys(&config.airgap.vendor_public_keys)?;
    let expect = Expectations {
        kind: Some(Kind::Entitlements),
        jpd_id: Some(jpd_id.clone()),
        clock,
        history: Some(inbox.history.load()?),
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
    let manifest = verified.manifest().clone();
    Ok(Verified {
        entry: InboxEntry {
            bundle_id: manifest.bundle_id.clone(),
            sequence: manifest.sequence,
            sha256,
            entitlements,
        },
        manifest,
    })
}

/// Step 2, under the entitlements job's lock: re-checks the history against the disk, puts the
/// payload in the inbox, then commits the history. A bundle refused here changes nothing.
pub fn accept(inbox: &Inbox, verified: &Verified) -> Result<(), AirgapError> {
    let current = inbox.history.load()?;
    if current.imported_ids.contains(&verified.manifest.bundle_id) {
        return Err(BundleError::AlreadyImported(verified.manifest.bundle_id.clone()).into());
    }
    match current.last_sequence {
        Some(last) if verified.manifest.sequence < last => {
            return Err(BundleError::OlderSequence {
                sequence: verified.manifest.sequence,
                last,
            }
            .into())
        }
        Some(last) if verified.manifest.sequence == last => {
            return Err(BundleError::SameSequence(last).into())
        }
        _ => {}
    }
    crate::state::save(&inbox.path, &verified.entry)?;
    inbox.history.commit(&verified.manifest)?;
    Ok(())
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
    use std::sync::Arc;

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
    fn a_verified_bundle_lands_in_the_inbox_and_a_refusal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        keys_generate(&dir.path().join("vendor")).unwrap();
        let mut config = Config::defaults(dir.path().join("data"));
        config.airgap.vendor_public_keys = vec![dir.path().join("vendor.pub")];
        std::fs::create_dir_all(&config.data_dir).unwrap();
        std::fs::write(config.data_dir.join("jpd_id"), "jpd-imp-1").unwrap();
        let inbox = Inbox::from_config(&config);
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
        let v = verify(&config, &inbox, clock.clone(), &good).unwrap();
        assert_eq!(inbox.latest().unwrap(), None, "verifying writes nothing");
        accept(&inbox, &v).unwrap();
        let out = v.outcome(&clock);
        assert_eq!((out.entitlements, out.valid_now), (2, 1));
        let entry = inbox.latest().unwrap().unwrap();
        assert_eq!(entry.sequence, 3);
        assert_eq!(entry.entitlements.entitlements.len(), 2);
        assert!(entry.tag().starts_with("bundle-3-"), "{}", entry.tag());

        // Accepting the same verified bundle again (a second importer that verified before
        // the first committed) is refused under the lock.
        assert!(accept(&inbox, &v).is_err());

        // Signed by the vendor for this JPD, but the payload names another JPD: refused,
        // nothing stored, nothing committed.
        let history_before = std::fs::read(inbox.history_path()).unwrap();
        let wrong = bundle(dir.path(), "jpd-imp-1", "jpd-else", 4, vec![]);
        let err = verify(&config, &inbox, clock, &wrong).unwrap_err();
        assert!(err.to_string().contains("jpd-else"), "{err}");
        assert!(err.is_bad_input());
        assert_eq!(inbox.latest().unwrap().unwrap(), entry);
        assert_eq!(std::fs::read(inbox.history_path()).unwrap(), history_before);
    }
}
