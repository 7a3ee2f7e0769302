//! Secrets at rest in the shared database, sealed with JFrog's master key.
//!
//! Every HA node of a JPD has the same `master.key` (JFrog's own file: 32 or 64 hex digits), so
//! a secret sealed by one node opens on every other, and a database dump alone reveals no token
//! or key. The AES-256-GCM key is derived from the master key with HKDF-SHA256, so the master
//! key itself is never used directly as a cipher key. Each sealed value is bound to its purpose
//! (the associated data names the column), so a value copied into another column does not open.
//!
//! Sealed layout: `0x01` (format), 12-byte random nonce, ciphertext with its 16-byte tag.

use crate::secret::Secret;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

const FORMAT: u8 = 1;
const HKDF_SALT: &[u8] = b"jfconnect shared state";
const HKDF_INFO: &[u8] = b"jfconnect secrets aes-256-gcm v1";
/// A master key file is tiny; anything larger is not one.
const MAX_KEY_FILE: u64 = 4096;

/// Why a master key cannot be used or a sealed value does not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The master key file could not be read.
    #[error("cannot read the master key file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file does not hold a master key.
    #[error("the master key file {path} does not hold a master key ({reason})")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A sealed value did not open: another master key sealed it, or it was changed.
    #[error("the stored {purpose} cannot be opened: it was sealed with another master key, or it was changed")]
    WrongKeyOrDamaged {
        /// What the value is.
        purpose: String,
    },
    /// The random source failed (never expected).
    #[error("the system random source failed")]
    Random,
}

/// The cipher key derived from JFrog's master key.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl MasterKey {
    /// Reads JFrog's `master.key` file (hex digits, at least 128 bits; white space trimmed).
    pub(crate) fn from_file(path: &Path) -> Result<MasterKey, SealError> {
        let shown = path.display().to_string();
        let unreadable = |reason: String| SealError::Unreadable {
            path: shown.clone(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
        if meta.len() > MAX_KEY_FILE {
            return Err(SealError::Malformed {
                path: shown,
                reason: format!("{} bytes is too large for a key", meta.len()),
            });
        }
        let text = Secret::from_file(path).map_err(|e| unreadable(e.to_string()))?;
        MasterKey::from_hex(text.expose()).map_err(|reason| SealError::Malformed {
            path: shown,
            reason,
        })
    }

    /// A master key from its hex text.
    pub fn from_hex(text: &str) -> Result<MasterKey, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "expected hex digits".to_string())?;
        if bytes.len() < 16 {
            return Err(format!(
                "{} bits is too short; expected 128 or 256",
                bytes.len() * 8
            ));
        }
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
        let mut derived = [0u8; 32];
        salt.extract(&bytes)
            .expand(&[HKDF_INFO], Len32)
            .and_then(|okm| okm.fill(&mut derived))
            .map_err(|_| "key derivation failed".to_string())?;
        let key = UnboundKey::new(&AES_256_GCM, &derived)
            .map_err(|_| "key derivation failed".to_string())?;
        // An id that tells keys apart in logs without revealing anything about them.
        let id = {
            use sha2::{Digest, Sha256};
            hex::encode(&Sha256::digest([b"id".as_slice(), &derived].concat())[..4])
        };
        Ok(MasterKey {
            key: LessSafeKey::new(key),
            id,
        })
    }

    /// A short public id of the key (for "which key sealed this" in logs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for `purpose` (the name of the column it goes to).
    pub(crate) fn seal(&self, purpose: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let refused = || SealError::WrongKeyOrDamaged {
            purpose: purpose.to_string(),
        };
        let (&format, rest) = sealed.split_first().ok_or_else(refused)?;
        if format != FORMAT || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(refused());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut body)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }

    /// Seals a secret string.
    pub(crate) fn seal_secret(&self, purpose: &str, secret: &Secret) -> Result<Vec<u8>, SealError> {
        self.seal(purpose, secret.expose().as_bytes())
    }

    /// Opens a sealed secret string.
    pub(crate) fn open_secret(&self, purpose: &str, sealed: &[u8]) -> Result<Secret, SealError> {
        let plain = self.open(purpose, sealed)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SealError::WrongKeyOrDamaged {
                purpose: purpose.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "8c1a2d9f4e3b7a6c5d0e1f2a3b4c5d6e";
    const K2: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn sealed_secret_opens_with_the_same_key_only() {
        let a = MasterKey::from_hex(K1).unwrap();
        let again = MasterKey::from_hex(&format!("{K1}\n")).unwrap();
        let other = MasterKey::from_hex(K2).unwrap();
        let sealed = a.seal_secret("api_token", &Secret::new("tok-123")).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"tok-123"));
        assert_eq!(
            again.open_secret("api_token", &sealed).unwrap().expose(),
            "tok-123"
        );
        let err = other.open_secret("api_token", &sealed).unwrap_err();
        assert!(err.to_string().contains("another master key"), "{err}");
    }

    #[test]
    fn sealed_value_is_bound_to_its_purpose_and_to_its_bytes() {
        let k = MasterKey::from_hex(K1).unwrap();
        let sealed = k.seal("api_token", b"x").unwrap();
        assert!(k.open("admin_token", &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(k.open("api_token", &flipped).is_err());
        assert!(k.open("api_token", &sealed[..10]).is_err());
        assert!(k.open("api_token", &[]).is_err());
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let k = MasterKey::from_hex(K1).unwrap();
        assert_ne!(k.seal("p", b"same").unwrap(), k.seal("p", b"same").unwrap());
    }

    #[test]
    fn bad_master_key_files_are_refused_with_a_sentence() {
        assert!(MasterKey::from_hex("not hex").unwrap_err().contains("hex"));
        assert!(MasterKey::from_hex("0011")
            .unwrap_err()
            .contains("too short"));
        let dir = tempfile::tempdir().unwrap();
        let err = MasterKey::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the master key file"),
            "{err}"
        );
        let p = dir.path().join("master.key");
        std::fs::write(&p, "zz").unwrap();
        let err = MasterKey::from_file(&p).unwrap_err();
        assert!(
            err.to_string().contains("does not hold a master key"),
            "{err}"
        );
        std::fs::write(&p, format!("{K2}\n")).unwrap();
        let k = MasterKey::from_file(&p).unwrap();
        assert!(!format!("{k:?}").contains(K2));
    }
}
