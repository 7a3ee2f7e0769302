//! The keys jfconnect reads from the `shared:` section of a JFrog `system.yaml`. Only these are
//! checked; every other key under `shared:` (and every `JF_SHARED_*` variable not named here)
//! belongs to other services and is ignored.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Prefix of the environment overrides of `shared:` keys.
pub(crate) const SHARED_ENV_PREFIX: &str = "JF_SHARED_";

/// `shared.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Shared {
    /// `shared.node.*`
    pub node: Node,
    /// `shared.database.*`: set, the shared state of the JPD's nodes lives in PostgreSQL.
    pub database: Database,
    /// `shared.security.*`
    pub security: Security,
}

/// `shared.node.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    /// This node's name in status, logs, metrics and archive names (empty in the file: the
    /// host name, filled in by validation).
    pub id: String,
}

/// `shared.database.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Database {
    /// Database type, e.g. `postgresql`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Driver name (JFrog's key; informative here).
    pub driver: Option<String>,
    /// Connection URL.
    pub url: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password written in the file (JFrog's form); prefer `password_file`.
    pub password: Option<Secret>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Where and how to connect, checked by validation; `None` without a database.
    #[serde(skip)]
    pub settings: Option<super::DatabaseSettings>,
}

/// `shared.security.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// The JPD's master key file.
    #[serde(rename = "masterKeyFile")]
    pub master_key_file: Option<PathBuf>,
}
