//! `jfconnect bundle inspect FILE`: what a bundle claims, without trusting it.
//!
//! Inspection needs no key, so nothing it shows is verified; the summary says so in its field
//! names and its `Display`. It still reads through the same capped, structure-checked path as
//! verification, so inspecting a hostile file is as safe as verifying it.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::entry;
use super::error::BundleError;
use super::limits::Limits;
use super::manifest::{Manifest, MANIFEST, SIGNATURE};
use super::minisign::MinisignSignature;
use super::zipdir::read_entries;

/// What a bundle claims about itself. NOT VERIFIED: no signature was checked.
#[derive(Debug, Clone, Serialize)]
pub struct BundleSummary {
    /// Always `false`: a reminder for JSON readers.
    pub verified: bool,
    /// The manifest as found (NOT VERIFIED).
    pub unverified_manifest: Manifest,
    /// Key id named by the signature, if there is one (NOT VERIFIED).
    pub unverified_signing_key_id: Option<String>,
    /// The signature's trusted comment, if any (NOT VERIFIED).
    pub unverified_trusted_comment: Option<String>,
    /// Number of zip entries.
    pub zip_entries: usize,
}

/// Reads a bundle's claims without a key; see [`BundleSummary`].
pub fn inspect_bundle(path: &Path) -> Result<BundleSummary, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io("open", path, e))?;
    let limits = Limits::default();
    let size = file
        .metadata()
        .map_err(|e| BundleError::io("read", path, e))?
        .len();
    if size > limits.max_file_bytes {
        return Err(BundleError::FileTooLarge {
            size,
            limit: limits.max_file_bytes,
        });
    }
    let entries = read_entries(&file, &limits)?;
    let find = |name: &str| entries.iter().find(|e| e.path == name);
    let manifest_entry = find(MANIFEST).ok_or(BundleError::MissingMetadata(MANIFEST))?;
    let manifest = Manifest::parse(&entry::read_all(&file, manifest_entry)?)?;
    let sig = match find(SIGNATURE) {
        Some(e) => String::from_utf8(entry::read_all(&file, e)?)
            .ok()
            .and_then(|t| MinisignSignature::parse(&t).ok()),
        None => None,
    };
    Ok(BundleSummary {
        verified: false,
        unverified_manifest: manifest,
        unverified_signing_key_id: sig.as_ref().map(|s| s.key_id.to_string()),
        unverified_trusted_comment: sig.map(|s| s.trusted_comment),
        zip_entries: entries.len(),
    })
}

impl std::fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.unverified_manifest;
        writeln!(
            f,
            "NOT VERIFIED: claims read without checking any signature"
        )?;
        writeln!(f, "  format           {}", m.format)?;
        writeln!(f, "  kind             {}", m.kind)?;
        writeln!(f, "  bundle id        {}", m.bundle_id)?;
        writeln!(f, "  JPD id           {}", m.jpd_id)?;
        writeln!(f, "  created          {}", m.created)?;
        writeln!(f, "  expires          {}", m.expires)?;
        writeln!(f, "  sequence         {}", m.sequence)?;
        writeln!(f, "  signing key id   {} (manifest)", m.signing_key_id)?;
        let sig_key = self
            .unverified_signing_key_id
            .as_deref()
            .unwrap_or("(unsigned)");
        writeln!(f, "  signature key id {sig_key}")?;
        writeln!(f, "  entries          {}", m.entries.len())?;
        for e in &m.entries {
            writeln!(
                f,
                "    {:>12}  {}  {}",
                e.size,
                &e.sha256[..16.min(e.sha256.len())],
                e.path
            )?;
        }
        Ok(())
    }
}
