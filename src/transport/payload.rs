//! The payload files of air-gapped bundles and the names of bundle files: pure, no I/O.
//!
//! `docs/bundle-format.md` §9 is the normative description of these JSON shapes; this file and
//! that section change together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bundle::{Kind, PublicKey};

/// Path of the registration request in registration and usage bundles.
pub(crate) const REGISTRATION_PATH: &str = "payload/registration.json";
/// Path of the entitlements in an entitlements bundle.
pub const ENTITLEMENTS_PATH: &str = "payload/entitlements.json";
/// Folder of the usage files in a usage bundle (`payload/usage/<sha256>.json`).
pub(crate) const USAGE_PREFIX: &str = "payload/usage/";
/// `format` of a registration record.
pub(crate) const REGISTRATION_FORMAT: &str = "jfconnect-registration/v1";
/// Largest registration record read (it is a few hundred bytes).
#[cfg(feature = "sim")] // only the simulator uses it
pub(crate) const MAX_REGISTRATION_BYTES: u64 = 64 * 1024;
/// Largest entitlements payload read.
pub(crate) const MAX_ENTITLEMENTS_BYTES: u64 = 16 * 1024 * 1024;

/// `payload/registration.json`: who the JPD is and the public key its bundles are signed
/// with. The vendor pins that key on first contact (trust on first use). Holds the license's
/// fingerprint, never the license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRecord {
    /// Always [`REGISTRATION_FORMAT`].
    pub format: String,
    /// The JPD's id.
    pub jpd_id: String,
    /// First 16 hex digits of the SHA-256 of the license key (`Secret::fingerprint`).
    pub license_fingerprint: String,
    /// jfconnect's version.
    pub jfconnect_version: String,
    /// The JPD's public key, the whole minisign `.pub` file.
    pub jpd_public_key: String,
    /// Its key id (16 upper-case hex digits), as in the bundle's `signing_key_id`.
    pub jpd_key_id: String,
    /// When the record was made (RFC 3339, UTC).
    pub requested_at: String,
}

impl RegistrationRecord {
    /// The record for this JPD, its license fingerprint and its public key.
    pub fn new(
        jpd_id: &str,
        license_fingerprint: &str,
        key: &PublicKey,
        now: DateTime<Utc>,
    ) -> Self {
        RegistrationRecord {
            format: REGISTRATION_FORMAT.into(),
            jpd_id: jpd_id.into(),
            license_fingerprint: license_fingerprint.into(),
            jfconnect_version: env!("CARGO_PKG_VERSION").into(),
            jpd_public_key: key.to_file_string(),
            jpd_key_id: key.id.to_string(),
            requested_at: crate::bundle::format_time(now),
        }
    }

    /// Parses a record; any other shape is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let r: RegistrationRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.format != REGISTRATION_FORMAT {
            return Err(format!(
                "format is {:?}, not {REGISTRATION_FORMAT}",
                r.format
            ));
        }
        Ok(r)
    }

    /// The public key the record carries.
    #[cfg(feature = "sim")] // only the simulator uses it
    pub(crate) fn public_key(&self) -> Result<PublicKey, String> {
        let key = PublicKey::parse(&self.jpd_public_key)?;
        if key.id.to_string() != self.jpd_key_id {
            return Err(format!(
                "jpd_key_id {} is not the id of the key it carries ({})",
                self.jpd_key_id, key.id
            ));
        }
        Ok(key)
    }

    /// Pretty JSON with a final LF.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Path of a usage file inside a usage bundle.
pub fn usage_path(sha256: &str) -> String {
    format!("{USAGE_PREFIX}{sha256}.json")
}

/// The SHA-256 a usage payload path names, if it is one.
pub fn usage_sha_of(path: &str) -> Option<&str> {
    let sha = path.strip_prefix(USAGE_PREFIX)?.strip_suffix(".json")?;
    (sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(sha)
}

/// `<kind>-<UTC yyyymmddThhmmssZ>-<seq>.jfbundle` (sequence zero-padded to 6 digits so names
/// sort in the order they were written).
pub(crate) fn bundle_file_name(kind: Kind, created: DateTime<Utc>, sequence: u64) -> String {
    format!(
        "{kind}-{}-{sequence:06}.jfbundle",
        created.format("%Y%m%dT%H%M%SZ")
    )
}

/// The kind and sequence a bundle file name written by [`bundle_file_name`] carries.
pub(crate) fn parse_bundle_file_name(name: &str) -> Option<(Kind, u64)> {
    let stem = name.strip_suffix(".jfbundle")?;
    let (kind, rest) = stem.split_once('-')?;
    let kind = match kind {
        "usage" => Kind::Usage,
        "registration" => Kind::Registration,
        "entitlements" => Kind::Entitlements,
        _ => return None,
    };
    let (_, seq) = rest.rsplit_once('-')?;
    Some((kind, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bundle_file_names_carry_kind_time_and_sequence_and_parse_back() {
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        let n = bundle_file_name(Kind::Usage, t, 42);
        assert_eq!(n, "usage-20260304T050607Z-000042.jfbundle");
        assert_eq!(parse_bundle_file_name(&n), Some((Kind::Usage, 42)));
        assert_eq!(parse_bundle_file_name("usage-x.zip"), None);
        assert_eq!(parse_bundle_file_name("other-1-2.jfbundle"), None);
    }

    #[test]
    fn registration_record_round_trips_and_checks_its_key_id() {
        let sk = crate::bundle::generate_keypair();
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        let r = RegistrationRecord::new("jpd-1", "0011223344556677", &sk.public(), t);
        let back = RegistrationRecord::parse(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.public_key().unwrap(), sk.public());
        let mut lying = r.clone();
        lying.jpd_key_id = "0000000000000000".into();
        assert!(lying.public_key().is_err());
        assert!(RegistrationRecord::parse(br#"{"format":"x"}"#).is_err());
    }

    #[test]
    fn usage_paths_name_their_sha256() {
        let sha = "ab".repeat(32);
        assert_eq!(usage_sha_of(&usage_path(&sha)), Some(sha.as_str()));
        assert_eq!(usage_sha_of("payload/usage/../x.json"), None);
        assert_eq!(usage_sha_of(REGISTRATION_PATH), None);
    }
}
