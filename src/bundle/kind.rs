//! What a bundle carries: its kind, named in the manifest and the trusted comment. Its own file
//! so that the errors (which name an expected and an actual kind) and the manifest both use it
//! without importing each other.

use serde::{Deserialize, Serialize};

/// What a bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Usage files, JPD to vendor.
    Usage,
    /// Entitlements, vendor to JPD.
    Entitlements,
    /// A registration request, JPD to vendor.
    Registration,
}

impl Kind {
    /// The lower-case name used in the manifest and trusted comment.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Entitlements => "entitlements",
            Kind::Registration => "registration",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
