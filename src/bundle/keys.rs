//! Key files on disk: `jfconnect keys generate --out PREFIX` and loading keys to sign or trust.
//!
//! The formats are minisign's (see `minisign.rs`); this module only moves them to and from disk,
//! durably, with the secret key readable by its owner alone (mode 0600).

use std::fs;
use std::path::{Path, PathBuf};

use super::error::BundleError;
use super::minisign::{generate_keypair, PublicKey, SecretKey, TrustedKeys};

/// Key files are tiny; anything larger is not a key and is not read whole.
const MAX_KEY_FILE: u64 = 4096;

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes a fresh key pair to `PREFIX.pub` and `PREFIX.key` (mode 0600); refuses to overwrite.
pub fn keys_generate(prefix: &Path) -> Result<SecretKey, BundleError> {
    let pub_path = with_suffix(prefix, ".pub");
    let key_path = with_suffix(prefix, ".key");
    for p in [&pub_path, &key_path] {
        if p.exists() {
            return Err(BundleError::io(
                "create",
                p,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "it already exists"),
            ));
        }
    }
    let sk = generate_keypair();
    write_secret_key(&key_path, &sk)?;
    write_public_key(&pub_path, &sk.public())?;
    Ok(sk)
}

/// Writes a secret key file, owner-only.
pub(crate) fn write_secret_key(path: &Path, sk: &SecretKey) -> Result<(), BundleError> {
    crate::state::write_private(path, sk.to_file_string().as_bytes())
        .map_err(|e| BundleError::io("write", path, e))
}

/// Writes a public key file.
pub(crate) fn write_public_key(path: &Path, pk: &PublicKey) -> Result<(), BundleError> {
    crate::state::write_atomic(path, pk.to_file_string().as_bytes())
        .map_err(|e| BundleError::io("write", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .map_err(|e| BundleError::io("set permissions of", path, e))?;
    }
    Ok(())
}

fn read_small(path: &Path) -> Result<String, BundleError> {
    use crate::secret::{read_limited, FileError};
    let bytes = read_limited(path, MAX_KEY_FILE).map_err(|e| match e {
        FileError::Io(e) => BundleError::io("read", path, e),
        FileError::TooLarge(_) => key_err(path, "it is far too large to be a minisign key"),
        other => key_err(path, other.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| key_err(path, "it is not text"))
}

fn key_err(path: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::KeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a minisign public key file.
pub fn read_public_key(path: &Path) -> Result<PublicKey, BundleError> {
    PublicKey::parse(&read_small(path)?).map_err(|r| key_err(path, r))
}

/// Reads an unencrypted minisign secret key file.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, BundleError> {
    SecretKey::parse(&read_small(path)?).map_err(|r| key_err(path, r))
}

/// Reads each public key file (e.g. `airgap.vendor_public_keys`) into a trust set.
pub fn read_trusted_keys(paths: &[PathBuf]) -> Result<TrustedKeys, BundleError> {
    let keys = paths
        .iter()
        .map(|p| read_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustedKeys::new(keys))
}

/// Loads the key pair at `PREFIX.{pub,key}`, making it first if neither file exists (the JPD's
/// own key at `<data_dir>/keys/jpd`).
pub fn load_or_generate(prefix: &Path) -> Result<SecretKey, BundleError> {
    let key_path = with_suffix(prefix, ".key");
    if key_path.exists() {
        read_secret_key(&key_path)
    } else {
        if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| BundleError::io("create", dir, e))?;
        }
        keys_generate(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_key_is_owner_only_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("k");
        let sk = keys_generate(&prefix).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("k.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let pk = read_public_key(&dir.path().join("k.pub")).unwrap();
        assert_eq!(pk, sk.public());
        assert_eq!(load_or_generate(&prefix).unwrap().public(), pk);
        assert!(keys_generate(&prefix).is_err(), "must not overwrite");
    }
}
