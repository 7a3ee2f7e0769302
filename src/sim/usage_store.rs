//! The simulated JCS's store: checks each received usage file's bytes against its SHA-256,
//! keeps each distinct file once, and tells which ones it already had.
//!
//! The SHA-256 is the file's identity (promise 2 in docs/architecture.md), so the store is
//! content-addressed: the distinct files of one batch go into one pack,
//! `<data>/jcs/usage/<sequence>.pack`, a record `<sha256> <length>\n<bytes>\n` per file,
//! written to a temp file and renamed (atomic against a crash of the simulator, not fsynced:
//! the simulator stands in for a remote service and must stay fast). One file per batch, not
//! per usage file, so the simulator is never the limit of an upload benchmark. The set of known
//! digests is rebuilt from the packs on start (and from the `<ab>/<sha256>` files of older data
//! folders), and every duplicate received is appended to `duplicates.log`, so both counters in
//! `/_sim/stats` survive a restart.

use super::archive::parse_sha256;
use super::sync::lock;
use super::SimError;
use crate::protocol::{sha256_hex, UsageBatch, UsageBatchReceipt, UsageFileReceipt};
use base64::Engine;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Content-addressed store of received usage files.
pub(crate) struct UsageStore {
    dir: PathBuf,
    tmp: PathBuf,
    duplicate_log: PathBuf,
    /// Held for a whole batch, disk writes included.
    known: Mutex<Known>,
    /// Mirrors `known.digests.len()`, so `/_sim/stats` never waits for a batch being written.
    unique: AtomicU64,
    duplicates: AtomicU64,
}

/// The digests held, and the sequence number of the next pack.
struct Known {
    digests: HashSet<[u8; 32]>,
    next_pack: u64,
}

/// Why a batch was refused.
pub(crate) enum BatchError {
    /// The client sent something wrong (400).
    Bad(&'static str, String),
    /// The disk failed (500).
    Disk(std::io::Error),
}

impl UsageStore {
    /// Reads back the digests and the duplicate count of a previous run.
    pub fn load(jcs_dir: &Path, tmp: &Path) -> Result<UsageStore, SimError> {
        let dir = jcs_dir.join("usage");
        std::fs::create_dir_all(&dir).map_err(|e| SimError::io("create", &dir, e))?;
        let mut known = Known {
            digests: HashSet::new(),
            next_pack: 0,
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| SimError::io("read", &dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".pack")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let bytes = std::fs::read(&path).map_err(|e| SimError::io("read", &path, e))?;
                read_pack(&bytes, &mut known.digests)
                    .map_err(|reason| SimError::Corrupt { path, reason })?;
                known.next_pack = known.next_pack.max(seq + 1);
            } else if let Ok(files) = std::fs::read_dir(&path) {
                for file in files.flatten() {
                    if let Some(d) = file.file_name().to_str().and_then(parse_sha256) {
                        known.digests.insert(d);
                    }
                }
            }
        }
        let duplicate_log = jcs_dir.join("duplicates.log");
        let duplicates = match std::fs::read(&duplicate_log) {
            Ok(bytes) => bytes.iter().filter(|b| **b == b'\n').count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(SimError::io("read", &duplicate_log, e)),
        };
        Ok(UsageStore {
            dir,
            tmp: tmp.to_path_buf(),
            duplicate_log,
            unique: AtomicU64::new(known.digests.len() as u64),
            known: Mutex::new(known),
            duplicates: AtomicU64::new(duplicates),
        })
    }

    /// (distinct files held, duplicates received).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.unique.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
        )
    }

    /// Checks and keeps a batch; answers one receipt per file, in order. Blocking.
    pub(crate) fn receive(&self, batch: UsageBatch) -> Result<UsageBatchReceipt, BatchError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut decoded = Vec::with_capacity(batch.files.len());
        for f in &batch.files {
            let Some(digest) = parse_sha256(&f.sha256) else {
                return Err(BatchError::Bad(
                    "bad_sha256",
                    format!(
                        "file {:?} has a sha256 that is not 64 lower-case hex digits",
                        short(&f.name)
                    ),
                ));
            };
            let bytes = engine.decode(&f.content_base64).map_err(|_| {
                BatchError::Bad(
                    "bad_base64",
                    format!(
                        "file {:?} has content_base64 that is not standard base64",
                        short(&f.name)
                    ),
                )
            })?;
            if sha256_hex(&bytes) != f.sha256 {
                return Err(BatchError::Bad(
                    "sha256_mismatch",
                    format!("file {:?} does not match its sha256", short(&f.name)),
                ));
            }
            decoded.push((digest, f.sha256.as_str(), bytes));
        }
        // One lock for the whole batch: a file is checked and written before anyone else can
        // ask whether it is known.
        let mut known = lock(&self.known);
        let mut received = Vec::with_capacity(decoded.len());
        let mut duplicates = String::new();
        let mut duplicate_count = 0u64;
        let mut pack = Vec::new();
        let mut new_digests = Vec::new();
        for (digest, hex_digest, bytes) in decoded {
            let duplicate = !known.digests.insert(digest);
            if duplicate {
                duplicates.push_str(hex_digest);
                duplicates.push('\n');
                duplicate_count += 1;
            } else {
                let header = format!("{hex_digest} {}\n", bytes.len());
                pack.extend_from_slice(header.as_bytes());
                pack.extend_from_slice(&bytes);
                pack.push(b'\n');
                new_digests.push(digest);
            }
            received.push(UsageFileReceipt {
                sha256: hex_digest.to_string(),
                duplicate,
            });
        }
        if !new_digests.is_empty() {
            let seq = known.next_pack;
            if let Err(e) = self.write_pack(seq, &pack) {
                for d in &new_digests {
                    known.digests.remove(d);
                }
                return Err(BatchError::Disk(e));
            }
            known.next_pack += 1;
            self.unique
                .fetch_add(new_digests.len() as u64, Ordering::Relaxed);
        }
        if !duplicates.is_empty() {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.duplicate_log)
                .map_err(BatchError::Disk)?;
            log.write_all(duplicates.as_bytes())
                .map_err(BatchError::Disk)?;
            self.duplicates
                .fetch_add(duplicate_count, Ordering::Relaxed);
        }
        Ok(UsageBatchReceipt { received })
    }

    fn write_pack(&self, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix("usage-")
            .tempfile_in(&self.tmp)?;
        tmp.write_all(bytes)?;
        tmp.persist(self.dir.join(format!("{seq:08}.pack")))
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// Adds the digest of every record of a pack to `digests`; a record cut short or malformed is
/// an error (a pack is renamed into place whole, so that is damage).
fn read_pack(mut bytes: &[u8], digests: &mut HashSet<[u8; 32]>) -> Result<(), String> {
    while !bytes.is_empty() {
        let line_end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("a record header has no end")?;
        let header = std::str::from_utf8(&bytes[..line_end]).map_err(|e| e.to_string())?;
        let (hex_digest, len) = header
            .split_once(' ')
            .ok_or_else(|| format!("bad record header {header:?}"))?;
        let digest =
            parse_sha256(hex_digest).ok_or_else(|| format!("bad digest {hex_digest:?}"))?;
        let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
        let rest = &bytes[line_end + 1..];
        if rest.len() < len + 1 || rest[len] != b'\n' {
            return Err(format!("the record of {hex_digest} is cut short"));
        }
        digests.insert(digest);
        bytes = &rest[len + 1..];
    }
    Ok(())
}

/// A file name cut short for messages.
fn short(name: &str) -> String {
    name.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_gives_back_its_digests_and_a_cut_pack_is_damage() {
        let (a, b) = (sha256_hex(b"{}"), sha256_hex(b"x\ny"));
        let pack = format!("{a} 2\n{{}}\n{b} 3\nx\ny\n");
        let mut digests = HashSet::new();
        read_pack(pack.as_bytes(), &mut digests).unwrap();
        assert_eq!(digests.len(), 2);
        assert!(digests.contains(&parse_sha256(&b).unwrap()));
        for cut in [pack.len() - 1, pack.len() - 3, 68, 100] {
            let err = read_pack(&pack.as_bytes()[..cut], &mut HashSet::new()).unwrap_err();
            assert!(
                err.contains("cut short") || err.contains("no end"),
                "{cut}: {err}"
            );
        }
        let err = read_pack(b"nothex 2\n{}\n", &mut HashSet::new()).unwrap_err();
        assert!(err.contains("bad digest"), "{err}");
    }
}
