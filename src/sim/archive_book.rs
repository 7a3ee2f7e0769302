//! The book of archives stored in the simulated Artifactory: each one's verdict, one file per
//! artifact path in `<data>/archives/`, and how many valid archives hold each usage file; on
//! start it is rebuilt from those files, so `archived_usage_files` survives a restart.

use super::archive::{parse_sha256, ArchiveVerdict};
use super::paths::ArtifactPath;
use super::SimError;
use crate::protocol::sha256_hex;
use crate::state::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// The verdict on one stored archive, as kept in `<data>/archives/`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchiveRecord {
    repo: String,
    path: String,
    artifact_sha256: String,
    valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    usage_sha256: Vec<String>,
}

impl ArchiveRecord {
    pub fn new(path: &ArtifactPath, artifact_sha256: &str, verdict: ArchiveVerdict) -> Self {
        let (valid, reason, digests) = match verdict {
            ArchiveVerdict::Valid(d) => (true, None, d),
            ArchiveVerdict::Invalid(r) => (false, Some(r), Vec::new()),
        };
        ArchiveRecord {
            repo: path.repo.clone(),
            path: path.rel(),
            artifact_sha256: artifact_sha256.to_string(),
            valid,
            reason,
            usage_sha256: digests.iter().map(hex::encode).collect(),
        }
    }

    fn key(&self) -> String {
        sha256_hex(format!("{}/{}", self.repo, self.path).as_bytes())
    }

    fn digests(&self) -> Vec<[u8; 32]> {
        self.usage_sha256
            .iter()
            .filter_map(|h| parse_sha256(h))
            .collect()
    }
}

/// Every stored archive's verdict, and how many archives hold each usage file.
pub(crate) struct ArchiveBook {
    dir: PathBuf,
    /// Artifact key → (valid, usage digests).
    archives: HashMap<String, (bool, Vec<[u8; 32]>)>,
    /// Usage digest → number of valid archives holding it.
    holders: HashMap<[u8; 32], u32>,
}

impl ArchiveBook {
    /// Rebuilds the book from `<data>/archives/*.json`.
    pub fn load(dir: &Path) -> Result<ArchiveBook, SimError> {
        let mut book = ArchiveBook {
            dir: dir.to_path_buf(),
            archives: HashMap::new(),
            holders: HashMap::new(),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| SimError::io("read", dir, e))?;
        for entry in entries.flatten() {
            let file = entry.path();
            if file.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let bytes = std::fs::read(&file).map_err(|e| SimError::io("read", &file, e))?;
            let record: ArchiveRecord =
                serde_json::from_slice(&bytes).map_err(|e| SimError::Corrupt {
                    path: file.clone(),
                    reason: e.to_string(),
                })?;
            book.apply(&record);
        }
        Ok(book)
    }

    /// (distinct usage files archived, archives stored, archives invalid).
    pub fn counts(&self) -> (u64, u64, u64) {
        let invalid = self.archives.values().filter(|(valid, _)| !valid).count();
        (
            self.holders.len() as u64,
            self.archives.len() as u64,
            invalid as u64,
        )
    }

    /// Writes `record` to `<data>/archives/` and puts it in the book.
    pub fn record(&mut self, record: ArchiveRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        write_atomic(&self.dir.join(format!("{}.json", record.key())), &bytes)?;
        self.apply(&record);
        Ok(())
    }

    /// Puts `record` in the book, replacing an earlier archive at the same path.
    fn apply(&mut self, record: &ArchiveRecord) {
        if let Some((_, old)) = self.archives.remove(&record.key()) {
            for d in old {
                if let Some(n) = self.holders.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        self.holders.remove(&d);
                    }
                }
            }
        }
        let digests = if record.valid {
            record.digests()
        } else {
            Vec::new()
        };
        for d in &digests {
            *self.holders.entry(*d).or_insert(0) += 1;
        }
        self.archives.insert(record.key(), (record.valid, digests));
    }
}
