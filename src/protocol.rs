//! The wire protocol jfconnect speaks with JES, JCS and the JPD: paths, headers and bodies.
//!
//! Both sides use these types: the online transport and the JPD client send them, the simulator
//! answers them. `docs/protocol.md` is the prose version of this file and the two change
//! together.
//!
//! Architecture invariant: this module does no I/O; it only names and shapes messages.

use serde::{Deserialize, Serialize};

/// `POST` here registers a license with JES.
pub const JES_REGISTER: &str = "/jes/api/v1/register";
/// `GET` here fetches the subscription's entitlements (ETag / If-None-Match).
pub const JES_ENTITLEMENTS: &str = "/jes/api/v1/entitlements";
/// `POST` here uploads a batch of usage files to JCS.
pub const JCS_USAGE: &str = "/jcs/api/v1/usage";
/// `GET` here checks that the JPD token is valid (Access).
pub const ACCESS_TOKEN_CHECK: &str = "/access/api/v1/tokens/me";
/// Prefix of Artifactory deploy (`PUT /artifactory/{repo}/{path}`).
pub(crate) const ARTIFACTORY_PREFIX: &str = "/artifactory";
/// Prefix of Artifactory storage info (`GET /artifactory/api/storage/{repo}/{path}`).
pub(crate) const ARTIFACTORY_STORAGE: &str = "/artifactory/api/storage";
/// Header carrying the JPD id on every call to JES and JCS.
pub const HEADER_JPD_ID: &str = "X-JFrog-JPD-Id";
/// Header carrying the SHA-256 of a deployed artifact.
pub const HEADER_CHECKSUM_SHA256: &str = "X-Checksum-Sha256";

/// Body of `POST /jes/api/v1/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The JPD's id.
    pub jpd_id: String,
    /// The license key, as read from the license file.
    pub license_key: crate::secret::Secret,
    /// jfconnect's version, for the vendor's support.
    pub jfconnect_version: String,
}

/// Answer of a successful register.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterResponse {
    /// Bearer token for later calls to JES and JCS.
    pub registration_token: crate::secret::Secret,
    /// The subscription the license belongs to.
    pub subscription_id: String,
}

/// The entitlements of a subscription, as JES serves them and jfconnect re-serves them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entitlements {
    /// The subscription.
    pub subscription_id: String,
    /// Subscription tier, e.g. `enterprise_plus`.
    pub subscription_type: String,
    /// The JPD these entitlements were issued for.
    pub jpd_id: String,
    /// When JES issued this version (RFC 3339).
    pub issued_at: String,
    /// One line per product feature.
    pub entitlements: Vec<Entitlement>,
}

/// One entitlement: a product feature with an optional validity window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entitlement {
    /// Product, e.g. `artifactory`, `xray`.
    pub product: String,
    /// Feature within the product, e.g. `ha`, `federation`.
    pub feature: String,
    /// Start of validity (RFC 3339); absent means "now".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// End of validity (RFC 3339); absent means "no end".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// Body of `POST /jcs/api/v1/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// The JPD's id.
    pub jpd_id: String,
    /// The usage files of this batch.
    pub files: Vec<UsageFileWire>,
}

/// One usage file on the wire: its bytes, unchanged, in base64, named by their SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageFileWire {
    /// Lower-case hex SHA-256 of the file's bytes: the file's identity (dedupe key).
    pub sha256: String,
    /// The file's name in the spool, for the vendor's support.
    pub name: String,
    /// The file's bytes, standard base64.
    pub content_base64: String,
}

/// The bytes one usage file of `content_len` bytes named `name` adds to a usage batch's body
/// (its name's JSON escapes aside): its SHA-256, name and base64 bytes, and their frame.
pub(crate) fn usage_wire_len(name: &str, content_len: usize) -> usize {
    const FRAME: usize = r#"{"sha256":"","name":"","content_base64":""},"#.len();
    FRAME + 64 + name.len() + 4 * content_len.div_ceil(3)
}

/// The JSON of a [`UsageBatch`] of `files` (SHA-256, name, bytes), written straight into one
/// buffer sized up front: each file's bytes are base64-encoded in place, never held as a
/// `String` of their own. The same bytes as `serde_json::to_vec` of the `UsageBatch` (unit
/// test), so the server reads it with the strict type.
pub(crate) fn usage_batch_body<'a>(
    jpd_id: &str,
    files: impl Iterator<Item = (&'a str, &'a str, &'a [u8])> + Clone,
) -> std::io::Result<Vec<u8>> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let size = files
        .clone()
        .fold(64 + jpd_id.len(), |n, (_, name, content)| {
            n + usage_wire_len(name, content.len())
        });
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(br#"{"jpd_id":"#);
    serde_json::to_writer(&mut body, jpd_id)?;
    body.extend_from_slice(br#","files":["#);
    for (i, (sha, name, content)) in files.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"sha256":"#);
        serde_json::to_writer(&mut body, sha)?;
        body.extend_from_slice(br#","name":"#);
        serde_json::to_writer(&mut body, name)?;
        body.extend_from_slice(br#","content_base64":""#);
        let start = body.len();
        body.resize(start + 4 * content.len().div_ceil(3), 0);
        let written = engine
            .encode_slice(content, &mut body[start..])
            .map_err(std::io::Error::other)?;
        body.truncate(start + written);
        body.extend_from_slice(b"\"}");
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// Answer of `POST /jcs/api/v1/usage`: one receipt per file received.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageBatchReceipt {
    /// The files acknowledged.
    pub received: Vec<UsageFileReceipt>,
}

/// JCS's acknowledgement of one usage file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageFileReceipt {
    /// The file's SHA-256.
    pub sha256: String,
    /// True when JCS had this file already (a retry after a crash).
    pub duplicate: bool,
}

/// Answer of Artifactory's storage info and deploy (`size` is a string, as Artifactory sends it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StorageInfo {
    /// Repository key.
    pub repo: String,
    /// Path inside the repository, no leading slash.
    pub path: String,
    /// Size in bytes, as a decimal string.
    pub size: String,
    /// Checksums Artifactory computed.
    pub checksums: Checksums,
}

/// Checksums of a stored artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checksums {
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// The JSON error body used by jfconnect's API and the simulator: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and sentence of an error body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_license`.
    pub code: String,
    /// One sentence for a person.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_batch_body_is_what_serde_writes_for_the_batch() {
        let files: Vec<(String, String, Vec<u8>)> = vec![
            (
                "ab".repeat(32),
                "a \"quoted\" \\ name\n.json".into(),
                b"{}".to_vec(),
            ),
            (
                "cd".repeat(32),
                "\u{e9}t\u{e9}.json".into(),
                (0..=255u8).collect(),
            ),
            ("ef".repeat(32), "empty".into(), Vec::new()),
        ];
        let body = usage_batch_body(
            "jpd-\"1\"",
            files
                .iter()
                .map(|(s, n, c)| (s.as_str(), n.as_str(), c.as_slice())),
        )
        .unwrap();
        let batch = UsageBatch {
            jpd_id: "jpd-\"1\"".into(),
            files: files
                .iter()
                .map(|(s, n, c)| UsageFileWire {
                    sha256: s.clone(),
                    name: n.clone(),
                    content_base64: base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        c,
                    ),
                })
                .collect(),
        };
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            serde_json::to_string(&batch).unwrap()
        );
        let none = usage_batch_body("j", std::iter::empty()).unwrap();
        assert_eq!(none, br#"{"jpd_id":"j","files":[]}"#);
    }
}
