//! minisign-compatible keys and signatures, as pure functions over text and bytes.
//!
//! Operators check bundles with the real `minisign` binary, so our key and signature files are
//! byte-for-byte minisign's formats (see `docs/bundle-format.md` and minisign's `minisign.h`):
//! public keys `"Ed" || keynum(8) || pk(32)`, unencrypted secret keys (KDF `\0\0`, checksum
//! BLAKE2b-256 over `sig_alg || keynum || sk`), and signatures in the prehashed `ED` form only:
//! ed25519 over BLAKE2b-512 of the data. The legacy `Ed` form signs the raw data and leaves the
//! algorithm tag outside the signature, so we refuse it with its own error. Reading and writing
//! the files lives in `keys.rs`; this module does no I/O.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::error::BundleError;

const SIGALG: &[u8; 2] = b"Ed";
const SIGALG_HASHED: &[u8; 2] = b"ED";
const KDF_NONE: &[u8; 2] = b"\0\0";
const KDF_SCRYPT: &[u8; 2] = b"Sc";
const CHKALG: &[u8; 2] = b"B2";
const COMMENT_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
const SIG_LEN: usize = 2 + 8 + 64;
/// minisign's limit on a trusted comment (TRUSTEDCOMMENTMAXBYTES less its prefix).
pub(crate) const TRUSTED_COMMENT_MAX: usize = 8192 - TRUSTED_PREFIX.len() - 2;

/// The 8-byte key number that names a minisign key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    /// As minisign prints it: the bytes read as a little-endian u64, 16 upper-case hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl KeyId {
    /// Parses the 16-hex-digit form printed by [`KeyId`]'s `Display`.
    pub fn parse(text: &str) -> Option<KeyId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16)
            .ok()
            .map(|n| KeyId(n.to_le_bytes()))
    }
}

/// A minisign public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Its key id.
    pub id: KeyId,
    key: VerifyingKey,
}

/// A minisign secret key (held unencrypted in memory).
pub struct SecretKey {
    /// Its key id.
    pub id: KeyId,
    signing: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}, ***)", self.id)
    }
}

/// Makes a fresh key pair with a random key id.
pub fn generate_keypair() -> SecretKey {
    let mut rng = rand::rngs::OsRng;
    let mut id = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rng, &mut id);
    SecretKey {
        id: KeyId(id),
        signing: SigningKey::generate(&mut rng),
    }
}

impl PublicKey {
    /// Parses the base64 line of a public key (what `minisign -P` takes).
    pub(crate) fn from_base64(line: &str) -> Result<PublicKey, String> {
        let bytes = B64
            .decode(line.trim())
            .map_err(|_| "the key line is not base64".to_string())?;
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(format!(
                "the key is {} bytes, a minisign public key is {PUBLIC_KEY_LEN}",
                bytes.len()
            ));
        }
        if &bytes[..2] != SIGALG {
            return Err("the key algorithm is not Ed25519 ('Ed')".into());
        }
        let id = KeyId(bytes[2..10].try_into().map_err(|_| "short key id")?);
        let pk: [u8; 32] = bytes[10..].try_into().map_err(|_| "short key")?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| "not a valid Ed25519 point")?;
        Ok(PublicKey { id, key })
    }

    /// Parses a public key file: an `untrusted comment:` line, then the base64 line.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if !first.starts_with(COMMENT_PREFIX) {
            return Err(format!(
                "the first line does not start with {COMMENT_PREFIX:?}"
            ));
        }
        PublicKey::from_base64(lines.next().unwrap_or_default())
    }

    /// The base64 line.
    pub(crate) fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LEN);
        bytes.extend_from_slice(SIGALG);
        bytes.extend_from_slice(&self.id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        B64.encode(bytes)
    }

    /// The whole public key file, as `minisign -G` writes it.
    pub fn to_file_string(&self) -> String {
        // minisign prints the id here with `%" PRIX64`: no leading zeros, so a key whose id
        // starts with 0 must be written the same way for the files to match byte for byte.
        format!(
            "{COMMENT_PREFIX}minisign public key {:X}\n{}\n",
            u64::from_le_bytes(self.id.0),
            self.to_base64()
        )
    }
}

fn blake2b256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

impl SecretKey {
    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.signing.verifying_key(),
        }
    }

    fn sk64(&self) -> [u8; 64] {
        self.signing.to_keypair_bytes()
    }

    /// Parses an unencrypted minisign secret key file (`minisign -G -W`, or ours).
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if !first.starts_with(COMMENT_PREFIX) {
            return Err(format!(
                "the first line does not start with {COMMENT_PREFIX:?}"
            ));
        }
        let bytes = B64
            .decode(lines.next().unwrap_or_default().trim())
            .map_err(|_| "the key line is not base64".to_string())?;
        if bytes.len() != SECRET_KEY_LEN {
            return Err("the key has the wrong length for a minisign secret key".into());
        }
        if &bytes[..2] != SIGALG {
            return Err("the key algorithm is not Ed25519 ('Ed')".into());
        }
        if &bytes[4..6] != CHKALG {
            return Err("the checksum algorithm is not BLAKE2b ('B2')".into());
        }
        match &bytes[2..4] {
            kdf if kdf == KDF_NONE => {}
            kdf if kdf == KDF_SCRYPT => {
                return Err(
                    "it is password-protected; jfconnect needs an unencrypted key \
                            (remove the password with `minisign -C -W`)"
                        .into(),
                )
            }
            _ => return Err("its key derivation function is unknown".into()),
        }
        let keynum_sk = &bytes[54..];
        let id = KeyId(keynum_sk[..8].try_into().map_err(|_| "short key id")?);
        let sk: [u8; 64] = keynum_sk[8..72].try_into().map_err(|_| "short key")?;
        let chk = &keynum_sk[72..104];
        // minisign -W leaves the checksum zero; ours is filled in. A wrong one is damage.
        if chk != [0u8; 32] && chk != blake2b256(&[SIGALG, &id.0, &sk]) {
            return Err("its checksum does not match; the file is damaged".into());
        }
        let signing = SigningKey::from_keypair_bytes(&sk)
            .map_err(|_| "its public half does not match its secret half".to_string())?;
        Ok(SecretKey { id, signing })
    }

    /// The whole unencrypted secret key file.
    pub fn to_file_string(&self) -> String {
        let sk = self.sk64();
        let mut bytes = Vec::with_capacity(SECRET_KEY_LEN);
        bytes.extend_from_slice(SIGALG);
        bytes.extend_from_slice(KDF_NONE);
        bytes.extend_from_slice(CHKALG);
        bytes.extend_from_slice(&[0u8; 32 + 8 + 8]);
        bytes.extend_from_slice(&self.id.0);
        bytes.extend_from_slice(&sk);
        bytes.extend_from_slice(&blake2b256(&[SIGALG, &self.id.0, &sk]));
        format!(
            "{COMMENT_PREFIX}minisign secret key {} (unencrypted)\n{}\n",
            self.id,
            B64.encode(bytes)
        )
    }

    /// Signs `data` in minisign's prehashed `ED` form; returns the `.minisig` file text.
    /// The trusted comment must be one line of printable ASCII.
    pub fn sign(&self, data: &[u8], untrusted: &str, trusted: &str) -> Result<String, String> {
        self.sign_digest(&Blake2b512::digest(data).into(), untrusted, trusted)
    }

    /// Like [`SecretKey::sign`], given the BLAKE2b-512 of the data (for streamed data).
    pub(crate) fn sign_digest(
        &self,
        digest: &[u8; 64],
        untrusted: &str,
        trusted: &str,
    ) -> Result<String, String> {
        if !printable(trusted) || trusted.len() > TRUSTED_COMMENT_MAX {
            return Err("the trusted comment must be one line of printable ASCII".into());
        }
        if untrusted.contains(['\n', '\r']) {
            return Err("the untrusted comment must be one line".into());
        }
        let sig = self.signing.sign(digest).to_bytes();
        let mut sig_struct = Vec::with_capacity(SIG_LEN);
        sig_struct.extend_from_slice(SIGALG_HASHED);
        sig_struct.extend_from_slice(&self.id.0);
        sig_struct.extend_from_slice(&sig);
        let mut global = sig.to_vec();
        global.extend_from_slice(trusted.as_bytes());
        let global_sig = self.signing.sign(&global).to_bytes();
        Ok(format!(
            "{COMMENT_PREFIX}{untrusted}\n{}\n{TRUSTED_PREFIX}{trusted}\n{}\n",
            B64.encode(sig_struct),
            B64.encode(global_sig)
        ))
    }
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A parsed `.minisig` file, not yet verified.
#[derive(Debug, Clone)]
pub struct MinisignSignature {
    /// The key id the signature names.
    pub key_id: KeyId,
    /// The trusted comment (without its prefix).
    pub trusted_comment: String,
    sig: [u8; 64],
    global_sig: [u8; 64],
}

impl MinisignSignature {
    /// Parses a `.minisig` file. The legacy `Ed` algorithm is refused here, before any use.
    pub fn parse(text: &str) -> Result<MinisignSignature, BundleError> {
        let bad = |m: &str| BundleError::MalformedSignature(m.to_string());
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().unwrap_or_default();
        if !first.starts_with(COMMENT_PREFIX) {
            return Err(bad("the first line is not an untrusted comment"));
        }
        let sig_struct = B64
            .decode(lines.next().unwrap_or_default())
            .map_err(|_| bad("the signature line is not base64"))?;
        if sig_struct.len() != SIG_LEN {
            return Err(bad("the signature line has the wrong length"));
        }
        match &sig_struct[..2] {
            a if a == SIGALG_HASHED => {}
            a if a == SIGALG => return Err(BundleError::LegacySignature),
            _ => return Err(bad("the signature algorithm is unknown")),
        }
        let trusted = lines
            .next()
            .and_then(|l| l.strip_prefix(TRUSTED_PREFIX))
            .ok_or_else(|| bad("the third line is not a trusted comment"))?;
        if !printable(trusted) || trusted.len() > TRUSTED_COMMENT_MAX {
            return Err(bad("the trusted comment is not printable ASCII"));
        }
        let global = B64
            .decode(lines.next().unwrap_or_default())
            .map_err(|_| bad("the global signature line is not base64"))?;
        if lines.any(|l| !l.is_empty()) {
            return Err(bad("it has extra lines"));
        }
        Ok(MinisignSignature {
            key_id: KeyId(sig_struct[2..10].try_into().map_err(|_| bad("short"))?),
            trusted_comment: trusted.to_string(),
            sig: sig_struct[10..].try_into().map_err(|_| bad("short"))?,
            global_sig: global
                .as_slice()
                .try_into()
                .map_err(|_| bad("the global signature has the wrong length"))?,
        })
    }

    /// Checks the signature over data whose BLAKE2b-512 is `digest`, then the trusted comment.
    pub(crate) fn verify_digest(
        &self,
        key: &PublicKey,
        digest: &[u8; 64],
    ) -> Result<(), BundleError> {
        if key.id != self.key_id {
            return Err(BundleError::UnknownKey(self.key_id.to_string()));
        }
        let sig = ed25519_dalek::Signature::from_bytes(&self.sig);
        key.key
            .verify_strict(digest, &sig)
            .map_err(|_| BundleError::BadSignature)?;
        let mut global = self.sig.to_vec();
        global.extend_from_slice(self.trusted_comment.as_bytes());
        let global_sig = ed25519_dalek::Signature::from_bytes(&self.global_sig);
        key.key
            .verify_strict(&global, &global_sig)
            .map_err(|_| BundleError::BadTrustedCommentSignature)
    }

    /// Checks the signature over `data`.
    pub fn verify(&self, key: &PublicKey, data: &[u8]) -> Result<(), BundleError> {
        self.verify_digest(key, &Blake2b512::digest(data).into())
    }
}

/// The public keys trusted to sign bundles; the signature's key id selects one (rotation).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<PublicKey>);

impl TrustedKeys {
    /// A set of trusted keys.
    pub fn new(keys: Vec<PublicKey>) -> TrustedKeys {
        TrustedKeys(keys)
    }

    /// The key with id `id`, if trusted.
    pub fn get(&self, id: KeyId) -> Option<&PublicKey> {
        self.0.iter().find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_signature_verifies_and_rejects_other_data() {
        let sk = generate_keypair();
        let text = sk.sign(b"hello", "c", "t c").unwrap();
        let sig = MinisignSignature::parse(&text).unwrap();
        assert_eq!(sig.trusted_comment, "t c");
        sig.verify(&sk.public(), b"hello").unwrap();
        assert!(matches!(
            sig.verify(&sk.public(), b"hellO"),
            Err(BundleError::BadSignature)
        ));
    }

    #[test]
    fn edited_trusted_comment_is_refused() {
        let sk = generate_keypair();
        let text = sk.sign(b"x", "c", "kind=usage").unwrap();
        let sig = MinisignSignature::parse(&text.replace("kind=usage", "kind=entit")).unwrap();
        assert!(matches!(
            sig.verify(&sk.public(), b"x"),
            Err(BundleError::BadTrustedCommentSignature)
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let sk = generate_keypair();
        let back = SecretKey::parse(&sk.to_file_string()).unwrap();
        assert_eq!(back.public(), sk.public());
        let pk = PublicKey::parse(&sk.public().to_file_string()).unwrap();
        assert_eq!(pk, sk.public());
        assert_eq!(KeyId::parse(&sk.id.to_string()), Some(sk.id));
    }

    #[test]
    fn damaged_secret_key_checksum_is_detected() {
        let sk = generate_keypair();
        let text = sk.to_file_string();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut raw = B64.decode(&lines[1]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        lines[1] = B64.encode(raw);
        let err = SecretKey::parse(&lines.join("\n")).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn legacy_algorithm_is_refused_with_its_own_error() {
        let sk = generate_keypair();
        let text = sk.sign(b"x", "c", "t").unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut raw = B64.decode(&lines[1]).unwrap();
        raw[1] = b'd';
        lines[1] = B64.encode(raw);
        assert!(matches!(
            MinisignSignature::parse(&lines.join("\n")),
            Err(BundleError::LegacySignature)
        ));
    }
}

#[cfg(test)]
mod key_file_comment_tests {
    use super::*;

    #[test]
    fn public_key_comment_prints_the_id_like_minisign_without_leading_zeros() {
        let mut pk = generate_keypair().public();
        pk.id = KeyId(0x003C_D2FC_D01F_2B5Au64.to_le_bytes());
        let text = pk.to_file_string();
        assert!(
            text.starts_with("untrusted comment: minisign public key 3CD2FCD01F2B5A\n"),
            "{text}"
        );
        assert_eq!(
            PublicKey::parse(&text).unwrap().id,
            pk.id,
            "the id comes from the key, not the comment"
        );
    }
}
