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
