//! Secrets (license keys, tokens, passwords) wrapped so they cannot leak by accident.
//!
//! A `Secret` prints as `***` through both `Debug` and `Display`, so a secret that ends up in a
//! `tracing` field, an error message or a `{:?}` dump shows nothing. The value is reachable only
//! through [`Secret::expose`], which makes every place that really needs it easy to find.

use std::fmt;
use std::path::Path;

/// A secret string: printed as `***`, compared in constant time.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a secret from a file, trimming surrounding white space (a trailing newline is the
    /// usual shape of a token file).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Secret(text.trim().to_string()))
    }

    /// The value itself. Call only where the secret must leave the process (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `other` in time independent of where they differ.
    pub fn ct_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        let a = self.0.as_bytes();
        let b = other.as_bytes();
        // Length is not secret for tokens of fixed shape; content is.
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }

    /// A short, non-reversible fingerprint (first 16 hex digits of the SHA-256), used to notice
    /// that a license changed without storing or printing the license itself.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(&other.0)
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("LICENSE-KEY-123");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "LICENSE-KEY-123");
    }

    #[test]
    fn constant_time_compare_matches_only_equal_values() {
        let s = Secret::new("abc");
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
    }

    #[test]
    fn fingerprint_changes_with_value() {
        assert_ne!(
            Secret::new("a").fingerprint(),
            Secret::new("b").fingerprint()
        );
        assert_eq!(
            Secret::new("a").fingerprint(),
            Secret::new("a").fingerprint()
        );
    }
}
