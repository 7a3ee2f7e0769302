//! The signed metadata of a bundle: `manifest.json`, `SHA256SUMS` and the trusted comment.
//!
//! Pure functions over bytes and structs, shared by the writer and the verifier so that what
//! one writes is exactly what the other accepts. `docs/bundle-format.md` is the normative text.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::error::{BundleError, PathProblem};
use super::kind::Kind;

/// The manifest's `format` value for this version.
pub const FORMAT_V1: &str = "jfconnect-bundle/v1";
/// Fixed entry names.
pub const MANIFEST: &str = "manifest.json";
/// Fixed entry names.
pub const SUMS: &str = "SHA256SUMS";
/// Fixed entry names.
pub const SIGNATURE: &str = "SHA256SUMS.minisig";
/// Every payload entry's path starts with this.
pub(crate) const PAYLOAD_PREFIX: &str = "payload/";
/// The largest sequence number (fits a JSON number exactly in every language).
pub(crate) const MAX_SEQUENCE: u64 = (1 << 53) - 1;
const MAX_PATH: usize = 512;

/// One payload file as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Path inside the zip, starting with `payload/`.
    pub path: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// SHA-256 of the uncompressed bytes, 64 lower-case hex digits.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_V1`].
    pub format: String,
    /// What the bundle carries.
    pub kind: Kind,
    /// Unique id of this bundle.
    pub bundle_id: String,
    /// The JPD the bundle comes from (usage, registration) or is for (entitlements).
    pub jpd_id: String,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// After this instant it is refused (RFC 3339, UTC).
    pub expires: String,
    /// Strictly increasing per signer and kind.
    pub sequence: u64,
    /// Key id of the signing key, as minisign prints it.
    pub signing_key_id: String,
    /// Every payload entry.
    pub entries: Vec<ManifestEntry>,
}

/// Formats a time as the manifest does: RFC 3339, UTC, whole seconds, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, BundleError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| BundleError::MalformedManifest(format!("{field} is not an RFC 3339 time")))
}

/// Checks an id (bundle id, JPD id): 1–128 of `A-Z a-z 0-9 . _ - : @`, first alphanumeric.
pub(crate) fn valid_id(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b".-_:@".contains(&b);
    !s.is_empty() && s.len() <= 128 && s.as_bytes()[0].is_ascii_alphanumeric() && s.bytes().all(ok)
}

/// Checks that a zip entry name is a safe relative path.
pub(crate) fn check_path(name: &[u8]) -> Result<&str, BundleError> {
    let lossy = || String::from_utf8_lossy(name).into_owned();
    let fail = |problem| BundleError::UnsafePath {
        path: lossy(),
        problem,
    };
    let s = std::str::from_utf8(name).map_err(|_| fail(PathProblem::BadCharacters))?;
    if s.len() > MAX_PATH {
        return Err(fail(PathProblem::TooLong));
    }
    if s.chars().any(char::is_control) {
        return Err(fail(PathProblem::BadCharacters));
    }
    if s.contains('\\') {
        return Err(fail(PathProblem::Backslash));
    }
    if s.starts_with('/') {
        return Err(fail(PathProblem::Absolute));
    }
    let b = s.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(fail(PathProblem::DriveLetter));
    }
    for seg in s.split('/') {
        if seg.is_empty() {
            return Err(fail(PathProblem::EmptySegment));
        }
        if seg == "." || seg == ".." {
            return Err(fail(PathProblem::DotSegment));
        }
    }
    Ok(s)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Parses and validates `manifest.json` (types, ids, times, entry paths, no duplicates).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        #[derive(Deserialize)]
        struct FormatOnly {
            format: serde_json::Value,
        }
        if let Ok(f) = serde_json::from_slice::<FormatOnly>(bytes) {
            if f.format != FORMAT_V1 {
                let shown = f
                    .format
                    .as_str()
                    .map_or_else(|| f.format.to_string(), String::from);
                return Err(BundleError::UnsupportedFormat(shown));
            }
        }
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::MalformedManifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every field's content, as [`Manifest::parse`] does.
    pub(crate) fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::MalformedManifest(m));
        if self.format != FORMAT_V1 {
            return Err(BundleError::UnsupportedFormat(self.format.clone()));
        }
        if !valid_id(&self.bundle_id) {
            return bad("bundle_id is not a valid id".into());
        }
        if !valid_id(&self.jpd_id) {
            return bad("jpd_id is not a valid id".into());
        }
        if self.sequence > MAX_SEQUENCE {
            return bad("sequence is larger than 2^53-1".into());
        }
        if super::minisign::KeyId::parse(&self.signing_key_id).is_none() {
            return bad("signing_key_id is not 16 hex digits".into());
        }
        if self.created()? >= self.expires()? {
            return bad("expires is not after created".into());
        }
        let mut seen = super::names::NameSet::default();
        for e in &self.entries {
            let path = check_path(e.path.as_bytes())?;
            if !path.starts_with(PAYLOAD_PREFIX) {
                return bad(format!("entry {path} is not under {PAYLOAD_PREFIX}"));
            }
            if !is_hex64(&e.sha256) {
                return bad(format!("entry {path} has a malformed sha256"));
            }
            seen.insert(path)?;
        }
        Ok(())
    }

    /// `created` as a time.
    pub fn created(&self) -> Result<DateTime<Utc>, BundleError> {
        parse_time("created", &self.created)
    }

    /// `expires` as a time.
    pub fn expires(&self) -> Result<DateTime<Utc>, BundleError> {
        parse_time("expires", &self.expires)
    }

    /// The trusted comment a signature over this bundle must carry, exactly.
    pub fn trusted_comment(&self) -> String {
        format!(
            "{FORMAT_V1} bundle_id={} kind={} jpd_id={} sequence={}",
            self.bundle_id, self.kind, self.jpd_id, self.sequence
        )
    }
}

/// One line of `SHA256SUMS`: `<64 hex>  <path>\n` (two spaces, `sha256sum` text mode).
pub fn sums_line(sha256_hex: &str, path: &str) -> String {
    format!("{sha256_hex}  {path}\n")
}

/// Parses `SHA256SUMS` strictly (bundle-format §3): UTF-8, every line exactly
/// `<64 lower-case hex><two spaces><path>` ended by one LF, no CR anywhere, no blank line, no
/// path listed twice. Anything `sha256sum -c` would read differently is refused.
pub(crate) fn parse_sums(text: &[u8]) -> Result<Vec<(String, String)>, BundleError> {
    let bad = |line: usize, m: &str| BundleError::MalformedSums(format!("line {line} {m}"));
    let text = std::str::from_utf8(text)
        .map_err(|_| BundleError::MalformedSums("it is not UTF-8".into()))?;
    let Some(body) = text.strip_suffix('\n') else {
        return Err(BundleError::MalformedSums(
            "it does not end with a line feed".into(),
        ));
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        if line.contains('\r') {
            return Err(bad(n, "holds a carriage return; lines end with LF only"));
        }
        let (hash, rest) = (line.get(..64), line.get(64..));
        let (Some(hash), Some(rest)) = (hash, rest) else {
            return Err(bad(n, "is not `<sha256>  <path>`"));
        };
        if !is_hex64(hash) {
            return Err(bad(n, "does not start with 64 lower-case hex digits"));
        }
        let path = rest
            .strip_prefix("  ")
            .filter(|p| !p.starts_with([' ', '*', '\t']) && !p.ends_with([' ', '\t']))
            .ok_or_else(|| bad(n, "is not `<sha256><two spaces><path>`"))?;
        check_path(path.as_bytes())?;
        if !seen.insert(path) {
            return Err(bad(n, "lists a path a second time"));
        }
        out.push((hash.to_string(), path.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_named_for_what_is_wrong() {
        let cases: &[(&[u8], PathProblem)] = &[
            (b"/etc/passwd", PathProblem::Absolute),
            (b"payload/../../x", PathProblem::DotSegment),
            (b"payload\\x", PathProblem::Backslash),
            (b"C:x", PathProblem::DriveLetter),
            (b"payload//x", PathProblem::EmptySegment),
            (b"payload/", PathProblem::EmptySegment),
            (b"pay\nload", PathProblem::BadCharacters),
            (b"\xff", PathProblem::BadCharacters),
        ];
        for (name, want) in cases {
            match check_path(name) {
                Err(BundleError::UnsafePath { problem, .. }) => assert_eq!(problem, *want),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(check_path(b"payload/usage/a.json").is_ok());
    }

    #[test]
    fn sums_lines_parse_back() {
        let h = "a".repeat(64);
        let text = sums_line(&h, "manifest.json") + &sums_line(&h, "payload/x");
        let parsed = parse_sums(text.as_bytes()).unwrap();
        assert_eq!(parsed[1], (h, "payload/x".to_string()));
        assert!(parse_sums(b"abc  x\n").is_err());
    }

    #[test]
    fn ids_allow_jpd_like_names_but_no_spaces() {
        assert!(valid_id("jfrt@01hx9z"));
        assert!(!valid_id("a b"));
        assert!(!valid_id("kind=usage"));
        assert!(!valid_id(""));
    }
}
