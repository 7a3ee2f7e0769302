//! `jfconnect sim answer`: the vendor portal's side of the gap, for the demo and tests.
//!
//! A usage or registration bundle comes in; a signed entitlements bundle for that JPD goes
//! out. The incoming bundle is signed by the JPD's own key, which the vendor learns from the
//! bundle's registration record the first time it sees that JPD id and pins from then on
//! (trust on first use, `<state>/pins.json`): a later bundle for the same JPD with another key
//! is refused. Usage files are recorded once each by SHA-256 (`<state>/usage/<sha256>.json`),
//! so a bundle carried twice, or a retry after a crash, counts nothing twice.
//!
//! The one read of unverified content in this module is the registration record of a JPD seen
//! for the first time, through `bundle::verify_self_signed`: after the strict structural
//! checks, the record (capped at 64 KiB) names the key, the whole bundle is then verified with
//! that key, and the record read again from the verified bundle must carry that same key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bundle::{
    inspect_bundle, new_bundle_id, read_secret_key, verify_bundle, verify_self_signed,
    write_bundle, BundleError, BundleSpec, Expectations, Kind, Limits, PayloadEntry, PayloadSource,
    PublicKey, TrustedKeys, VerifiedBundle,
};
use crate::clock::SharedClock;
use crate::protocol::{Entitlement, Entitlements};
use crate::transport::airgapped::AirgapError;
use crate::transport::payload::{
    usage_sha_of, RegistrationRecord, ENTITLEMENTS_PATH, MAX_REGISTRATION_BYTES, REGISTRATION_PATH,
};

/// How long an answered entitlements bundle stays importable.
pub(crate) const ANSWER_VALIDITY: chrono::Duration = chrono::Duration::days(30);

/// What answering a bundle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOutcome {
    /// The JPD that sent the bundle.
    pub jpd_id: String,
    /// The incoming bundle's kind.
    pub incoming_kind: Kind,
    /// The incoming bundle's sequence.
    pub incoming_sequence: u64,
    /// True when this JPD's key was pinned by this bundle.
    pub first_contact: bool,
    /// The pinned key id.
    pub jpd_key_id: String,
    /// Usage files in the bundle the vendor had not seen.
    pub usage_unique: u64,
    /// Usage files in the bundle the vendor already had.
    pub usage_duplicate: u64,
    /// The entitlements bundle written.
    pub answer: PathBuf,
    /// Its sequence.
    pub answer_sequence: u64,
}

impl std::fmt::Display for AnswerOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verified {} bundle {} of JPD {} with its key {} ({})",
            self.incoming_kind,
            self.incoming_sequence,
            self.jpd_id,
            self.jpd_key_id,
            if self.first_contact {
                "pinned now: first contact"
            } else {
                "pinned earlier"
            }
        )?;
        if self.incoming_kind == Kind::Usage {
            writeln!(
                f,
                "usage files recorded: {} unique, {} duplicate",
                self.usage_unique, self.usage_duplicate
            )?;
        }
        write!(
            f,
            "wrote entitlements bundle {} (sequence {})",
            self.answer.display(),
            self.answer_sequence
        )
    }
}

/// One pinned JPD key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pin {
    key_id: String,
    public_key: String,
    pinned_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    last: u64,
}

/// Cumulative counts across answers (`<state>/stats.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct VendorStats {
    /// Distinct usage files received.
    pub usage_received_unique: u64,
    /// Usage files received again.
    pub usage_received_duplicate: u64,
}

/// Reads the vendor's cumulative counts.
pub(crate) fn vendor_stats(state_dir: &Path) -> Result<VendorStats, AirgapError> {
    Ok(crate::state::load(&state_dir.join("stats.json"))?.unwrap_or_default())
}

/// The fixed demo subscription the vendor portal answers with (like the simulator's JES).
pub fn demo_entitlements(jpd_id: &str, now: DateTime<Utc>) -> Entitlements {
    let line = |product: &str, feature: &str| Entitlement {
        product: product.into(),
        feature: feature.into(),
        valid_from: None,
        valid_until: None,
    };
    Entitlements {
        subscription_id: "sub-airgap-0001".into(),
        subscription_type: "enterprise_plus".into(),
        jpd_id: jpd_id.into(),
        issued_at: crate::bundle::format_time(now),
        entitlements: vec![
            line("artifactory", "ha"),
            line("artifactory", "federation"),
            line("xray", "scan"),
            line("distribution", "edge"),
        ],
    }
}

/// Answers the bundle `input` with an entitlements bundle at `out`, signed by the vendor's
/// secret key `vendor_key`; the vendor's pins, usage and counters live in `state_dir`.
pub fn answer_bundle(
    state_dir: &Path,
    vendor_key: &Path,
    input: &Path,
    out: &Path,
    clock: SharedClock,
) -> Result<AnswerOutcome, AirgapError> {
    let key = read_secret_key(vendor_key)?;
    let claimed = inspect_bundle(input)?.unverified_manifest;
    if claimed.kind == Kind::Entitlements {
        return Err(AirgapError::NotAnswerable(claimed.kind));
    }
    let pins_path = state_dir.join("pins.json");
    let mut pins: BTreeMap<String, Pin> = crate::state::load(&pins_path)?.unwrap_or_default();
    let pinned = match pins.get(&claimed.jpd_id) {
        Some(pin) if pin.key_id != claimed.signing_key_id => {
            return Err(AirgapError::KeyChanged {
                jpd_id: claimed.jpd_id,
                pinned: pin.key_id.clone(),
                presented: claimed.signing_key_id,
                pins: pins_path,
            })
        }
        Some(pin) => Some(
            PublicKey::parse(&pin.public_key).map_err(|r| AirgapError::Payload {
                path: pins_path.display().to_string(),
                reason: r,
            })?,
        ),
        None => None,
    };
    let first_contact = pinned.is_none();
    let expect = Expectations {
        kind: Some(claimed.kind),
        jpd_id: Some(claimed.jpd_id.clone()),
        clock: clock.clone(),
        history: None,
    };
    let limits = Limits::default();
    let (verified, jpd_key) = match pinned {
        Some(key) => {
            let trust = TrustedKeys::new(vec![key.clone()]);
            (verify_bundle(input, &trust, &expect, &limits)?, key)
        }
        None => {
            // Trust on first use: the key is the one the bundle's own registration record
            // names, and the bundle must then verify with it.
            let mut located = None;
            let verified = verify_self_signed(
                input,
                REGISTRATION_PATH,
                MAX_REGISTRATION_BYTES,
                |bytes| {
                    let key = registration_key(bytes)?;
                    located = Some(key.clone());
                    Ok::<_, AirgapError>(key)
                },
                &expect,
                &limits,
            )?;
            let key = located.ok_or_else(|| AirgapError::Payload {
                path: REGISTRATION_PATH.into(),
                reason: "no key was found in it".into(),
            })?;
            (verified, key)
        }
    };
    let m = verified.manifest().clone();
    let record = read_registration(&verified)?;
    if record.jpd_id != m.jpd_id || record.public_key().ok().as_ref() != Some(&jpd_key) {
        return Err(AirgapError::Payload {
            path: REGISTRATION_PATH.into(),
            reason: format!(
                "it does not name JPD {} and the key {} that signed the bundle",
                m.jpd_id, jpd_key.id
            ),
        });
    }
    let now = clock.now();
    if first_contact {
        pins.insert(
            m.jpd_id.clone(),
            Pin {
                key_id: jpd_key.id.to_string(),
                public_key: record.jpd_public_key.clone(),
                pinned_at: crate::bundle::format_time(now),
            },
        );
        crate::state::save(&pins_path, &pins)?;
    }
    let (unique, duplicate) = record_usage(state_dir, &verified)?;

    let seq_path = state_dir.join("sequence.json");
    let counter: Counter = crate::state::load(&seq_path)?.unwrap_or_default();
    let sequence = counter.last + 1;
    crate::state::save(&seq_path, &Counter { last: sequence })?;
    let entitlements = demo_entitlements(&m.jpd_id, now);
    let body = serde_json::to_vec_pretty(&entitlements)
        .map_err(|e| AirgapError::Job(format!("cannot encode the entitlements: {e}")))?;
    let spec = BundleSpec {
        kind: Kind::Entitlements,
        bundle_id: new_bundle_id(),
        jpd_id: m.jpd_id.clone(),
        created: now,
        expires: now + ANSWER_VALIDITY,
        sequence,
    };
    let payload = vec![PayloadEntry {
        path: ENTITLEMENTS_PATH.into(),
        source: PayloadSource::Bytes(body),
    }];
    write_bundle(out, &spec, payload, &key)?;
    Ok(AnswerOutcome {
        jpd_id: m.jpd_id,
        incoming_kind: m.kind,
        incoming_sequence: m.sequence,
        first_contact,
        jpd_key_id: jpd_key.id.to_string(),
        usage_unique: unique,
        usage_duplicate: duplicate,
        answer: out.to_path_buf(),
        answer_sequence: sequence,
    })
}

/// The key a first-contact bundle's registration record names (see the module doc); `None`
/// when the bundle carries no record.
fn registration_key(bytes: Option<&[u8]>) -> Result<PublicKey, AirgapError> {
    let bad = |reason: String| AirgapError::Payload {
        path: REGISTRATION_PATH.into(),
        reason,
    };
    let bytes = bytes.ok_or_else(|| bad("the bundle carries no registration record, so its JPD key is unknown; send a registration bundle first".into()))?;
    let record = RegistrationRecord::parse(bytes).map_err(bad)?;
    record.public_key().map_err(bad)
}

fn read_registration(verified: &VerifiedBundle) -> Result<RegistrationRecord, AirgapError> {
    let bad = |reason: String| AirgapError::Payload {
        path: REGISTRATION_PATH.into(),
        reason,
    };
    let listed = verified
        .manifest()
        .entries
        .iter()
        .find(|e| e.path == REGISTRATION_PATH)
        .ok_or_else(|| BundleError::MissingEntry(REGISTRATION_PATH.into()))?;
    if listed.size > MAX_REGISTRATION_BYTES {
        return Err(bad(format!("it is over {MAX_REGISTRATION_BYTES} bytes")));
    }
    RegistrationRecord::parse(&verified.read_entry(REGISTRATION_PATH)?).map_err(bad)
}

/// Stores each usage file of the bundle once by SHA-256; answers (unique, duplicate).
fn record_usage(state_dir: &Path, verified: &VerifiedBundle) -> Result<(u64, u64), AirgapError> {
    let dir = state_dir.join("usage");
    std::fs::create_dir_all(&dir).map_err(|e| AirgapError::io("create", &dir, e))?;
    let (mut unique, mut duplicate) = (0u64, 0u64);
    for e in &verified.manifest().entries {
        let Some(sha) = usage_sha_of(&e.path) else {
            continue;
        };
        if sha != e.sha256 {
            return Err(AirgapError::Payload {
                path: e.path.clone(),
                reason: "its name is not the SHA-256 of its content".into(),
            });
        }
        let dest = dir.join(format!("{sha}.json"));
        if dest.exists() {
            duplicate += 1;
            continue;
        }
        let mut reader = verified.open_entry(&e.path)?;
        // The folder is fsynced once, below, before anything is counted.
        let how = crate::state::Durably {
            sync_folder: false,
            ..Default::default()
        };
        crate::state::write_durably(&dest, &mut reader, how)
            .map_err(|err| AirgapError::io(err.step, err.path, err.source))?;
        unique += 1;
    }
    crate::state::sync_dir(&dir).map_err(|e| AirgapError::io("fsync", &dir, e))?;
    let stats_path = state_dir.join("stats.json");
    let mut stats = vendor_stats(state_dir)?;
    stats.usage_received_unique += unique;
    stats.usage_received_duplicate += duplicate;
    crate::state::save(&stats_path, &stats)?;
    Ok((unique, duplicate))
}
