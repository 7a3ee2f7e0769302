//! Writing a signed bundle, streaming, durably.
//!
//! Payload entries are copied into the zip one at a time through a hashing writer, so a bundle
//! of a million usage files never holds them in memory; only their (path, size, SHA-256) rows
//! are kept for the manifest. The file is written under a temp name, fsynced, renamed and the
//! folder fsynced: a bundle that exists under its final name is whole (promise 1 in docs/architecture.md
//! counts it as the receipt of the usage it holds).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::error::BundleError;
use super::kind::Kind;
use super::manifest::{
    check_path, format_time, sums_line, valid_id, Manifest, ManifestEntry, FORMAT_V1, MANIFEST,
    MAX_SEQUENCE, PAYLOAD_PREFIX, SIGNATURE, SUMS,
};
use super::minisign::SecretKey;

/// Untrusted comment written on every bundle signature.
pub const UNTRUSTED_COMMENT: &str = "jfconnect bundle signature (check the trusted comment)";

/// The header fields of a bundle to write.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// What it carries.
    pub kind: Kind,
    /// Unique id; see [`new_bundle_id`].
    pub bundle_id: String,
    /// The JPD it is from or for.
    pub jpd_id: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Expiry time.
    pub expires: DateTime<Utc>,
    /// Strictly increasing per signer and kind.
    pub sequence: u64,
}

/// Where a payload entry's bytes come from.
pub enum PayloadSource {
    /// A file on disk, opened when its turn comes.
    File(PathBuf),
    /// Bytes in memory (small entries: entitlements, registration request).
    Bytes(Vec<u8>),
    /// Any reader.
    Reader(Box<dyn Read + Send>),
}

/// One payload entry to write.
pub struct PayloadEntry {
    /// Path inside the bundle; must start with `payload/`.
    pub path: String,
    /// Its content.
    pub source: PayloadSource,
}

/// A fresh random bundle id (32 hex digits).
pub fn new_bundle_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn zip_err(e: zip::result::ZipError) -> io::Error {
    io::Error::other(e)
}

fn check_spec(spec: &BundleSpec) -> Result<(), BundleError> {
    let bad = |m: &str| Err(BundleError::InvalidSpec(m.to_string()));
    if !valid_id(&spec.bundle_id) {
        return bad("the bundle id is not a valid id (1-128 of A-Z a-z 0-9 . _ - : @)");
    }
    if !valid_id(&spec.jpd_id) {
        return bad("the JPD id is not a valid id (1-128 of A-Z a-z 0-9 . _ - : @)");
    }
    if spec.sequence > MAX_SEQUENCE {
        return bad("the sequence is larger than 2^53-1");
    }
    if spec.expires <= spec.created {
        return bad("expires must be after created");
    }
    Ok(())
}

/// Writes a signed bundle to `out` and returns its manifest (with every entry's SHA-256).
pub fn write_bundle(
    out: &Path,
    spec: &BundleSpec,
    payload: impl IntoIterator<Item = PayloadEntry>,
    key: &SecretKey,
) -> Result<Manifest, BundleError> {
    check_spec(spec)?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-bundle-")
        .tempfile_in(dir)
        .map_err(|e| BundleError::io("create a temp file in", dir, e))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| BundleError::io("write", tmp.path(), e))?;
    let manifest = write_zip(file, spec, payload, key, tmp.path())?;
    // A bundle is meant to be carried and read by others; the temp file starts owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| BundleError::io("set permissions of", tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| BundleError::io("fsync", tmp.path(), e))?;
    tmp.persist(out)
        .map_err(|e| BundleError::io("rename into place", out, e.error))?;
    crate::state::sync_dir(dir).map_err(|e| BundleError::io("fsync", dir, e))?;
    Ok(manifest)
}

fn write_zip(
    file: File,
    spec: &BundleSpec,
    payload: impl IntoIterator<Item = PayloadEntry>,
    key: &SecretKey,
    tmp_path: &Path,
) -> Result<Manifest, BundleError> {
    let io_err = |e: io::Error| BundleError::io("write", tmp_path, e);
    let t = spec.created;
    let mtime = zip::DateTime::from_date_and_time(
        u16::try_from(t.year().clamp(1980, 2107)).unwrap_or(1980),
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second().min(59) as u8,
    )
    .unwrap_or_default();
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644)
        .last_modified_time(mtime);
    let mut zip = ZipWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
    let mut entries = Vec::new();
    let mut seen = super::names::NameSet::default();
    for item in payload {
        let path = check_path(item.path.as_bytes())?.to_string();
        if !path.starts_with(PAYLOAD_PREFIX) {
            return Err(BundleError::InvalidSpec(format!(
                "payload path {path} does not start with {PAYLOAD_PREFIX}"
            )));
        }
        // Never write a pair of names that a reader refuses (bundle-format §1).
        seen.insert(&path)
            .map_err(|e| BundleError::InvalidSpec(format!("payload entry names: {e}")))?;
        zip.start_file(path.as_str(), opts)
            .map_err(|e| io_err(zip_err(e)))?;
        let mut w = HashingWriter {
            inner: &mut zip,
            hasher: Sha256::new(),
            size: 0,
        };
        match item.source {
            PayloadSource::File(p) => {
                let mut f = File::open(&p).map_err(|e| BundleError::io("read", &p, e))?;
                io::copy(&mut f, &mut w).map_err(|e| BundleError::io("copy", &p, e))?;
            }
            PayloadSource::Bytes(b) => w.write_all(&b).map_err(io_err)?,
            PayloadSource::Reader(mut r) => {
                io::copy(&mut r, &mut w).map_err(io_err)?;
            }
        }
        entries.push(ManifestEntry {
            path,
            size: w.size,
            sha256: hex::encode(w.hasher.finalize()),
        });
    }
    let manifest = Manifest {
        format: FORMAT_V1.into(),
        kind: spec.kind,
        bundle_id: spec.bundle_id.clone(),
        jpd_id: spec.jpd_id.clone(),
        created: format_time(spec.created),
        expires: format_time(spec.expires),
        sequence: spec.sequence,
        signing_key_id: key.id.to_string(),
        entries,
    };
    let mut manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| io_err(io::Error::other(e)))?;
    manifest_bytes.push(b'\n');
    let mut sums = sums_line(&hex::encode(Sha256::digest(&manifest_bytes)), MANIFEST);
    for e in &manifest.entries {
        sums.push_str(&sums_line(&e.sha256, &e.path));
    }
    let signature = key
        .sign(
            sums.as_bytes(),
            UNTRUSTED_COMMENT,
            &manifest.trusted_comment(),
        )
        .map_err(BundleError::InvalidSpec)?;
    for (name, bytes) in [
        (MANIFEST, manifest_bytes.as_slice()),
        (SUMS, sums.as_bytes()),
        (SIGNATURE, signature.as_bytes()),
    ] {
        zip.start_file(name, opts).map_err(|e| io_err(zip_err(e)))?;
        zip.write_all(bytes).map_err(io_err)?;
    }
    let buffered = zip.finish().map_err(|e| io_err(zip_err(e)))?;
    buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
    Ok(manifest)
}
