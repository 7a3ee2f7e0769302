//! The simulated JCS's store: checks each received usage file's bytes against its SHA-256,
//! keeps each distinct file once, and tells which ones it already had.
//!
//! The SHA-256 is the file's identity (promise 2 in docs/architecture.md), so the store is content-addressed:
//! `<data>/jcs/usage/<first two hex digits>/<sha256>`. The set of known digests is rebuilt from
//! those names on start, and every duplicate received is appended to `duplicates.log`, so both
//! counters in `/_sim/stats` survive a restart. Files are written to a temp file and renamed
//! (atomic against a crash of the simulator); they are not fsynced, as the simulator stands in
//! for a remote service and must stay fast.

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
    digests: Mutex<HashSet<[u8; 32]>>,
    /// Mirrors `digests.len()`, so `/_sim/stats` never waits for a batch being written.
    unique: AtomicU64,
    duplicates: AtomicU64,
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
        let mut digests = HashSet::new();
        let shards = std::fs::read_dir(&dir).map_err(|e| SimError::io("read", &dir, e))?;
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                if let Some(d) = file.file_name().to_str().and_then(parse_sha256) {
                    digests.insert(d);
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
            unique: AtomicU64::new(digests.len() as u64),
            digests: Mutex::new(digests),
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
        let mut known = lock(&self.digests);
        let mut received = Vec::with_capacity(decoded.len());
        let mut duplicates = String::new();
        let mut duplicate_count = 0u64;
        for (digest, hex_digest, bytes) in decoded {
            let duplicate = known.contains(&digest);
            if duplicate {
                duplicates.push_str(hex_digest);
                duplicates.push('\n');
                duplicate_count += 1;
            } else {
                self.write_file(hex_digest, &bytes)
                    .map_err(BatchError::Disk)?;
                known.insert(digest);
                self.unique.fetch_add(1, Ordering::Relaxed);
            }
            received.push(UsageFileReceipt {
                sha256: hex_digest.to_string(),
                duplicate,
            });
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

    fn write_file(&self, hex_digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let shard = self.dir.join(&hex_digest[..2]);
        std::fs::create_dir_all(&shard)?;
        let mut tmp = tempfile::Builder::new()
            .prefix("usage-")
            .tempfile_in(&self.tmp)?;
        tmp.write_all(bytes)?;
        tmp.persist(shard.join(hex_digest)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// A file name cut short for messages.
fn short(name: &str) -> String {
    name.chars().take(80).collect()
}
