//! Verifying a bundle before anything in it is believed (promise 4 in docs/architecture.md).
//!
//! The checks run in the order `docs/bundle-format.md` fixes: caps and zip structure (from the
//! raw directory, before any entry is inflated), the signature over `SHA256SUMS` by a trusted
//! key, the trusted comment against the manifest, `SHA256SUMS` against the manifest and the zip,
//! the policy (kind, JPD, expiry, clock, replay, sequence), and last every payload entry's size
//! and SHA-256 while streaming it. Verification writes nothing; the import history changes only
//! through [`VerifiedBundle::commit`].

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::entry;
use super::error::BundleError;
use super::import_state::{check_policy, Expectations, ImportStore};
use super::keys::read_public_key;
use super::kind::Kind;
use super::limits::Limits;
use super::manifest::{parse_sums, Manifest, FORMAT_V1, MANIFEST, SIGNATURE, SUMS};
use super::minisign::{MinisignSignature, PublicKey, TrustedKeys};
use super::zipdir::{read_entries, SliceSource, Source, ZipEntry};
use crate::clock::SystemClock;

/// A bundle that passed every check; its payload can be streamed (each entry re-checked).
#[derive(Debug)]
pub struct VerifiedBundle {
    manifest: Manifest,
    file: File,
    path: PathBuf,
    entries: HashMap<String, ZipEntry>,
}

/// Runs every check over `src`; returns the manifest and the zip entries by path.
fn check_all(
    src: &dyn Source,
    trust: &TrustedKeys,
    expect: &Expectations,
    limits: &Limits,
) -> Result<(Manifest, HashMap<String, ZipEntry>), BundleError> {
    let entries = structure(src, limits)?;
    let manifest = check_entries(src, &entries, trust, expect)?;
    Ok((manifest, entries))
}

/// The caps and the zip structure, from the raw directory, before any entry is inflated.
fn structure(src: &dyn Source, limits: &Limits) -> Result<HashMap<String, ZipEntry>, BundleError> {
    let size = src.len();
    if size > limits.max_file_bytes {
        return Err(BundleError::FileTooLarge {
            size,
            limit: limits.max_file_bytes,
        });
    }
    Ok(read_entries(src, limits)?
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect())
}

/// Every check after the structure's: signature, manifest, sums, policy, payload bytes.
fn check_entries(
    src: &dyn Source,
    entries: &HashMap<String, ZipEntry>,
    trust: &TrustedKeys,
    expect: &Expectations,
) -> Result<Manifest, BundleError> {
    let sig_entry = entries.get(SIGNATURE).ok_or(BundleError::Unsigned)?;
    let sums_entry = entries
        .get(SUMS)
        .ok_or(BundleError::MissingMetadata(SUMS))?;
    let manifest_entry = entries
        .get(MANIFEST)
        .ok_or(BundleError::MissingMetadata(MANIFEST))?;

    // Signature over SHA256SUMS, by a trusted key.
    let sig_text = String::from_utf8(entry::read_all(src, sig_entry)?)
        .map_err(|_| BundleError::MalformedSignature("it is not UTF-8".into()))?;
    let sig = MinisignSignature::parse(&sig_text)?;
    let key = trust
        .get(sig.key_id)
        .ok_or_else(|| untrusted(&sig, expect))?;
    let sums_bytes = entry::read_all(src, sums_entry)?;
    sig.verify(key, &sums_bytes)?;
    if !sig.trusted_comment.starts_with(&format!("{FORMAT_V1} ")) {
        return Err(BundleError::MalformedTrustedComment(sig.trusted_comment));
    }

    // The manifest, through its signed hash.
    let sums = parse_sums(&sums_bytes)?;
    drop(sums_bytes);
    let mut signed: HashMap<&str, &str> = HashMap::with_capacity(sums.len());
    for (hash, path) in &sums {
        if signed.insert(path, hash).is_some() {
            return Err(BundleError::SumsMismatch(format!("{path} is listed twice")));
        }
    }
    let manifest_hash = signed
        .get(MANIFEST)
        .ok_or_else(|| BundleError::SumsMismatch("manifest.json is not listed".into()))?;
    let manifest_bytes = entry::read_all(src, manifest_entry)?;
    if hex::encode(entry::sha256(&manifest_bytes)) != *manifest_hash {
        return Err(BundleError::HashMismatch(MANIFEST.into()));
    }
    let manifest = Manifest::parse(&manifest_bytes)?;
    drop(manifest_bytes);
    let expected_comment = manifest.trusted_comment();
    if sig.trusted_comment != expected_comment {
        return Err(BundleError::TrustedCommentMismatch {
            signed: sig.trusted_comment,
            manifest: expected_comment,
        });
    }
    if manifest.signing_key_id != sig.key_id.to_string() {
        return Err(BundleError::SigningKeyMismatch {
            manifest: manifest.signing_key_id,
            signature: sig.key_id.to_string(),
        });
    }

    // SHA256SUMS lists exactly manifest.json and the manifest's entries, with the same hashes.
    if signed.len() != manifest.entries.len() + 1 {
        return Err(BundleError::SumsMismatch(format!(
            "it lists {} files, but manifest.json and its {} entries make {}",
            signed.len(),
            manifest.entries.len(),
            manifest.entries.len() + 1
        )));
    }
    for e in &manifest.entries {
        match signed.get(e.path.as_str()) {
            Some(h) if *h == e.sha256 => {}
            Some(_) => {
                return Err(BundleError::SumsMismatch(format!(
                    "{} has another hash than in the manifest",
                    e.path
                )))
            }
            None => {
                return Err(BundleError::SumsMismatch(format!(
                    "{} is not listed",
                    e.path
                )))
            }
        }
    }

    // The zip holds exactly the listed entries, of the listed sizes.
    let listed: HashMap<&str, u64> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.size))
        .collect();
    let mut zip_paths: Vec<&String> = entries.keys().collect();
    zip_paths.sort();
    for path in zip_paths {
        if ![MANIFEST, SUMS, SIGNATURE].contains(&path.as_str())
            && !listed.contains_key(path.as_str())
        {
            return Err(BundleError::UnlistedEntry(path.clone()));
        }
    }
    for e in &manifest.entries {
        let z = entries
            .get(&e.path)
            .ok_or_else(|| BundleError::MissingEntry(e.path.clone()))?;
        if z.size != e.size {
            return Err(BundleError::SizeMismatch {
                path: e.path.clone(),
                expected: e.size,
                actual: z.size,
            });
        }
    }

    check_policy(&manifest, expect)?;

    // Last, the expensive part: every payload byte against its signed size and SHA-256.
    let mut buf = vec![0u8; 256 * 1024];
    for e in &manifest.entries {
        if let Some(z) = entries.get(&e.path) {
            entry::check(src, z, decode_sha(&e.sha256)?, &mut buf)?;
        }
    }
    Ok(manifest)
}

/// A signature by a key not trusted here. When entitlements are expected and the (unverified)
/// signed comment says the bundle is of another kind, the refusal says that instead: a JPD's
/// own usage or registration bundle was given to import.
fn untrusted(sig: &MinisignSignature, expect: &Expectations) -> BundleError {
    let claimed = sig
        .trusted_comment
        .split(' ')
        .find_map(|field| field.strip_prefix("kind="))
        .filter(|k| {
            [Kind::Usage, Kind::Registration]
                .iter()
                .any(|x| x.as_str() == *k)
        });
    match (expect.kind, claimed) {
        (Some(Kind::Entitlements), Some(claimed)) => BundleError::NotForImport {
            claimed: claimed.to_string(),
        },
        _ => BundleError::UnknownKey(sig.key_id.to_string()),
    }
}

fn decode_sha(hex_text: &str) -> Result<[u8; 32], BundleError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| BundleError::MalformedManifest("a sha256 is not hex".into()))?;
    Ok(out)
}

/// Verifies the bundle at `path`; see the module doc for the checks and their order.
pub fn verify_bundle(
    path: &Path,
    trust: &TrustedKeys,
    expect: &Expectations,
    limits: &Limits,
) -> Result<VerifiedBundle, BundleError> {
    let file = open_regular(path)?;
    let (manifest, entries) = check_all(&file, trust, expect, limits)?;
    Ok(VerifiedBundle {
        manifest,
        file,
        path: path.to_path_buf(),
        entries,
    })
}

/// Verifies a bundle that names its own signing key (a first contact: the reader has no key
/// for its sender yet). The structure is checked first; then the entry `key_entry`, at most
/// `max_key_entry` bytes, is read through the size cap and handed to `locate_key` (`None` when
/// the bundle has no such entry), which finds the key in it; then every check of
/// [`verify_bundle`] runs with that key alone, so the entry the key came from is itself
/// checked against the signed `SHA256SUMS` before anything else in the bundle is believed.
pub fn verify_self_signed<E: From<BundleError>>(
    path: &Path,
    key_entry: &str,
    max_key_entry: u64,
    locate_key: impl FnOnce(Option<&[u8]>) -> Result<PublicKey, E>,
    expect: &Expectations,
    limits: &Limits,
) -> Result<VerifiedBundle, E> {
    let file = open_regular(path)?;
    let entries = structure(&file, limits)?;
    let key = match entries.get(key_entry) {
        None => locate_key(None)?,
        Some(z) if z.size > max_key_entry => {
            return Err(BundleError::MetadataTooLarge {
                path: key_entry.to_string(),
                size: z.size,
                limit: max_key_entry,
            }
            .into())
        }
        Some(z) => locate_key(Some(&entry::read_all(&file, z)?))?,
    };
    let trust = TrustedKeys::new(vec![key]);
    let manifest = check_entries(&file, &entries, &trust, expect)?;
    Ok(VerifiedBundle {
        manifest,
        file,
        path: path.to_path_buf(),
        entries,
    })
}

fn open_regular(path: &Path) -> Result<File, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| BundleError::io("read", path, e))?;
    if !meta.is_file() {
        return Err(BundleError::NotAZip("it is not a regular file".into()));
    }
    Ok(file)
}

/// Verifies a bundle held in memory; returns its manifest. Same checks as [`verify_bundle`].
pub fn verify_bytes(
    bytes: &[u8],
    trust: &TrustedKeys,
    expect: &Expectations,
    limits: &Limits,
) -> Result<Manifest, BundleError> {
    check_all(&SliceSource(bytes), trust, expect, limits).map(|(m, _)| m)
}

/// `jfconnect bundle verify FILE --pubkey KEY`: signature, structure, hashes and expiry, with
/// the one public key given, no kind or JPD expectation and no import history.
pub fn verify_file_with_pubkey(path: &Path, pubkey: &Path) -> Result<Manifest, BundleError> {
    let trust = TrustedKeys::new(vec![read_public_key(pubkey)?]);
    let expect = Expectations {
        kind: None,
        jpd_id: None,
        clock: std::sync::Arc::new(SystemClock),
        history: None,
    };
    verify_bundle(path, &trust, &expect, &Limits::default()).map(|v| v.manifest)
}

impl VerifiedBundle {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Streams the payload entry `path` (e.g. `payload/entitlements.json`). The reader fails
    /// with an `InvalidData` error at its end if the bytes no longer match the signed SHA-256
    /// (the file changed on disk since verification).
    pub fn open_entry(&self, path: &str) -> Result<impl Read + Send + '_, BundleError> {
        let listed = self
            .manifest
            .entries
            .iter()
            .find(|e| e.path == path)
            .ok_or_else(|| BundleError::MissingEntry(path.to_string()))?;
        let z = self
            .entries
            .get(path)
            .ok_or_else(|| BundleError::MissingEntry(path.to_string()))?;
        Ok(entry::open_checked(
            &self.file,
            z,
            decode_sha(&listed.sha256)?,
        ))
    }

    /// Reads a payload entry whole, re-checking its size and SHA-256.
    pub fn read_entry(&self, path: &str) -> Result<Vec<u8>, BundleError> {
        let z = self
            .entries
            .get(path)
            .ok_or_else(|| BundleError::MissingEntry(path.to_string()))?;
        let mut out = Vec::new();
        self.open_entry(path)?
            .read_to_end(&mut out)
            .map_err(|e| entry::read_error(z, z.size, e))?;
        Ok(out)
    }

    /// Records the bundle as imported in `store`. Call only after the bundle was applied;
    /// until then a refused or failed import leaves the history unchanged.
    pub fn commit(&self, store: &ImportStore) -> Result<(), BundleError> {
        store.commit(&self.manifest)
    }
}
