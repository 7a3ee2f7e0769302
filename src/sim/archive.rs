//! Checking a usage archive deployed to the simulated Artifactory against its `index.json`.
//!
//! promise 1 in docs/architecture.md says a usage file may be deleted only once an archive holding it is in
//! the JPD and checked. The simulator is the witness for that promise: `archived_usage_files`
//! in `/_sim/stats` counts only usage files whose size and SHA-256 were found, matching the
//! index, inside a stored archive. So the archive is read the strict way: every listed entry
//! present with the listed size and digest, nothing unlisted, no links, and reads capped at the
//! listed size so a zip bomb cannot run away.
//!
//! Architecture invariant: this module only reads the archive it is given; it opens no files.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek};

/// Name of the index inside an archive.
pub(crate) const INDEX_NAME: &str = "index.json";
/// Largest accepted `index.json`, in bytes.
const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// The archive index: `{"format":1,"entries":[{"path","size","sha256"}]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveIndex {
    format: u32,
    entries: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexEntry {
    path: String,
    size: u64,
    sha256: String,
}

/// The outcome of checking an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArchiveVerdict {
    /// Every entry matched its index line; these are the entries' SHA-256 digests.
    Valid(Vec<[u8; 32]>),
    /// The archive cannot be trusted, for this reason (one sentence).
    Invalid(String),
}

/// Checks an archive read from `reader`. Never fails: a damaged or lying archive is a verdict.
pub(crate) fn verify_archive<R: Read + Seek>(reader: R) -> ArchiveVerdict {
    match check(reader) {
        Ok(digests) => ArchiveVerdict::Valid(digests),
        Err(reason) => ArchiveVerdict::Invalid(reason),
    }
}

fn check<R: Read + Seek>(reader: R) -> Result<Vec<[u8; 32]>, String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip: {e}"))?;
    let index = read_index(&mut zip)?;
    let mut listed: HashMap<&str, (&IndexEntry, [u8; 32])> = HashMap::new();
    for e in &index.entries {
        check_entry_path(&e.path)?;
        let digest = parse_sha256(&e.sha256)
            .ok_or_else(|| format!("index entry {} has a malformed sha256", e.path))?;
        if listed.insert(e.path.as_str(), (e, digest)).is_some() {
            return Err(format!("index lists {} twice", e.path));
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut folded: HashSet<String> = HashSet::new();
    for i in 0..zip.len() {
        let mut file = zip
            .by_index(i)
            .map_err(|e| format!("entry #{i} cannot be read: {e}"))?;
        let name = file.name().to_string();
        if !seen.insert(name.clone()) {
            return Err(format!("the zip holds {name} twice"));
        }
        if !folded.insert(name.to_lowercase()) {
            return Err(format!(
                "the zip holds {name} twice (names equal after case folding)"
            ));
        }
        if file.is_symlink() {
            return Err(format!("entry {name} is a link"));
        }
        if name == INDEX_NAME || (file.is_dir() && file.size() == 0) {
            continue;
        }
        let Some((entry, digest)) = listed.get(name.as_str()) else {
            return Err(format!("entry {name} is not listed in the index"));
        };
        let (size, actual) = hash_capped(&mut file, entry.size)
            .map_err(|e| format!("entry {name} cannot be read: {e}"))?;
        if size != entry.size {
            return Err(format!(
                "entry {name} is {size} bytes, the index says {}",
                entry.size
            ));
        }
        if actual != *digest {
            return Err(format!(
                "entry {name} does not match its sha256 in the index"
            ));
        }
    }
    if let Some(missing) = index.entries.iter().find(|e| !seen.contains(&e.path)) {
        return Err(format!(
            "index lists {} but the zip does not hold it",
            missing.path
        ));
    }
    Ok(listed.values().map(|(_, d)| *d).collect())
}

fn read_index<R: Read + Seek>(zip: &mut zip::ZipArchive<R>) -> Result<ArchiveIndex, String> {
    let file = zip
        .by_name(INDEX_NAME)
        .map_err(|_| format!("the archive has no {INDEX_NAME}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{INDEX_NAME} cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(format!(
            "{INDEX_NAME} is larger than {MAX_INDEX_BYTES} bytes"
        ));
    }
    let index: ArchiveIndex = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{INDEX_NAME} is not a valid index: {e}"))?;
    if index.format != 1 {
        return Err(format!(
            "{INDEX_NAME} has format {}, only format 1 is known",
            index.format
        ));
    }
    Ok(index)
}

/// Entry paths are `YYYY-MM-DD/<product>/<file>`: three plain segments, a real date first.
fn check_entry_path(path: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains('\\')
            && !s.chars().any(char::is_control)
    };
    if parts.len() != 3 || !parts.iter().all(|s| plain(s)) {
        return Err(format!(
            "index entry path {path:?} is not YYYY-MM-DD/<product>/<file>"
        ));
    }
    if chrono::NaiveDate::parse_from_str(parts[0], "%Y-%m-%d").is_err() || parts[0].len() != 10 {
        return Err(format!(
            "index entry path {path:?} does not start with a YYYY-MM-DD date"
        ));
    }
    Ok(())
}

/// Parses 64 lower-case hex digits.
pub(crate) fn parse_sha256(hex_text: &str) -> Option<[u8; 32]> {
    if hex_text.len() != 64 || hex_text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

/// Reads at most `cap + 1` bytes, hashing them; returns the count read and the digest.
fn hash_capped<R: Read>(reader: R, cap: u64) -> io::Result<(u64, [u8; 32])> {
    let mut limited = reader.take(cap.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = limited.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sha256_hex;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    fn build(entries: &[(&str, &[u8])], index: &str) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default();
        for (name, bytes) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.start_file(INDEX_NAME, opts).unwrap();
        w.write_all(index.as_bytes()).unwrap();
        w.finish().unwrap().into_inner()
    }

    fn index_for(entries: &[(&str, &[u8])]) -> String {
        let lines: Vec<String> = entries
            .iter()
            .map(|(p, b)| {
                format!(
                    r#"{{"path":"{p}","size":{},"sha256":"{}"}}"#,
                    b.len(),
                    sha256_hex(b)
                )
            })
            .collect();
        format!(r#"{{"format":1,"entries":[{}]}}"#, lines.join(","))
    }

    const A: (&str, &[u8]) = ("2024-05-01/artifactory/a.json", b"{\"a\":1}");
    const B: (&str, &[u8]) = ("2024-05-01/xray/b.json", b"{\"b\":2}");

    fn verdict(zip: Vec<u8>) -> ArchiveVerdict {
        verify_archive(Cursor::new(zip))
    }

    fn reason(zip: Vec<u8>) -> String {
        match verdict(zip) {
            ArchiveVerdict::Invalid(r) => r,
            v => panic!("expected invalid, got {v:?}"),
        }
    }

    #[test]
    fn archive_matching_its_index_yields_every_digest() {
        let zip = build(&[A, B], &index_for(&[A, B]));
        let ArchiveVerdict::Valid(mut digests) = verdict(zip) else {
            panic!("invalid");
        };
        digests.sort();
        let mut want = vec![
            parse_sha256(&sha256_hex(A.1)).unwrap(),
            parse_sha256(&sha256_hex(B.1)).unwrap(),
        ];
        want.sort();
        assert_eq!(digests, want);
    }

    #[test]
    fn wrong_digest_wrong_size_missing_and_unlisted_entries_are_invalid() {
        let lying = index_for(&[A, B]).replace(&sha256_hex(B.1), &sha256_hex(b"other"));
        assert!(reason(build(&[A, B], &lying)).contains("does not match its sha256"));

        let wrong_size = index_for(&[A]).replace("\"size\":7", "\"size\":3");
        assert!(reason(build(&[A], &wrong_size)).contains("index says 3"));

        assert!(reason(build(&[A], &index_for(&[A, B]))).contains("does not hold it"));
        assert!(reason(build(&[A, B], &index_for(&[A]))).contains("not listed"));
    }

    #[test]
    fn missing_or_malformed_index_is_invalid() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file(A.0, SimpleFileOptions::default()).unwrap();
        w.write_all(A.1).unwrap();
        let no_index = w.finish().unwrap().into_inner();
        assert!(reason(no_index).contains("no index.json"));
        assert!(reason(build(&[A], "{not json")).contains("not a valid index"));
        let v2 = index_for(&[A]).replace("\"format\":1", "\"format\":2");
        assert!(reason(build(&[A], &v2)).contains("format 2"));
        assert!(reason(b"garbage".to_vec()).contains("not a readable zip"));
    }

    #[test]
    fn entry_paths_must_be_date_product_file() {
        let bad = ("../x/a.json", A.1);
        assert!(reason(build(&[bad], &index_for(&[bad]))).contains("YYYY-MM-DD"));
        let no_date = ("today/artifactory/a.json", A.1);
        assert!(reason(build(&[no_date], &index_for(&[no_date]))).contains("date"));
    }
}
