//! The simulated Artifactory's disk: placing a checked upload at `<data>/artifactory/<repo>/<path>`,
//! its size and SHA-256 beside it, and the book of stored archives with their verdicts.
//!
//! An upload arrives in a temp file whose digest is already known; it is renamed into place, so
//! a reader never sees half an artifact. Archives (`*.zip`) are then checked against their
//! index (see `archive`), and the verdict is written to `<data>/archives/`, one file per
//! artifact path; on start the book is rebuilt from those files, so `archived_usage_files`
//! survives a restart without re-reading every archive. All functions here block: call them
//! from `spawn_blocking`.

use super::archive::{parse_sha256, verify_archive, ArchiveVerdict};
use super::paths::ArtifactPath;
use super::state::{lock, SimState};
use super::SimError;
use crate::protocol::sha256_hex;
use crate::state::write_atomic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// Size and SHA-256 of a stored artifact (`<meta>/<repo>/<path>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ArtifactMeta {
    pub size: u64,
    pub sha256: String,
}

/// An upload fully received into a temp file.
pub(crate) struct Upload {
    /// The temp file; deleted when dropped unless placed.
    pub temp: tempfile::TempPath,
    /// Its size.
    pub size: u64,
    /// Its lower-case hex SHA-256.
    pub sha256: String,
}

/// Why an upload could not be placed.
pub(crate) enum PlaceError {
    /// The path collides with an existing folder or file (409).
    Conflict(String),
    /// The disk failed (500).
    Io(io::Error),
}

/// Puts `upload` at `path`, records its metadata and, for an archive, its verdict.
pub(crate) fn place(
    state: &SimState,
    path: &ArtifactPath,
    upload: Upload,
) -> Result<ArtifactMeta, PlaceError> {
    let target = path.under(&state.dirs.artifactory);
    let meta_file = meta_path(state, path);
    // One placement at a time: the rename, the metadata and the archive verdict of one deploy
    // are not interleaved with another deploy to the same path.
    let _placing = lock(&state.placing);
    if target.is_dir() {
        return Err(PlaceError::Conflict(format!("{} is a folder", path.rel())));
    }
    for dir in [target.parent(), meta_file.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists | ErrorKind::NotADirectory => {
                PlaceError::Conflict(format!("a parent of {} is a file", path.rel()))
            }
            _ => PlaceError::Io(e),
        })?;
    }
    // Stale metadata goes first: if we stop half-way, it is recomputed rather than wrong.
    match std::fs::remove_file(&meta_file) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(PlaceError::Io(e)),
        _ => {}
    }
    let meta = ArtifactMeta {
        size: upload.size,
        sha256: upload.sha256,
    };
    upload
        .temp
        .persist(&target)
        .map_err(|e| PlaceError::Io(e.error))?;
    write_meta(state, &meta_file, &meta).map_err(PlaceError::Io)?;
    if path.is_archive() {
        let file = std::fs::File::open(&target).map_err(PlaceError::Io)?;
        let verdict = verify_archive(io::BufReader::new(file));
        if let ArchiveVerdict::Invalid(reason) = &verdict {
            tracing::info!(path = %path.rel(), %reason, "simulated Artifactory stored an invalid archive");
        }
        let record = ArchiveRecord::new(path, &meta.sha256, verdict);
        lock(&state.archives)
            .record(record)
            .map_err(PlaceError::Io)?;
    }
    Ok(meta)
}

/// Size and SHA-256 of the artifact at `path`, or `None` when there is no such file.
pub(crate) fn meta(state: &SimState, path: &ArtifactPath) -> io::Result<Option<ArtifactMeta>> {
    let target = path.under(&state.dirs.artifactory);
    let size = match std::fs::metadata(&target) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let meta_file = meta_path(state, path);
    if let Ok(bytes) = std::fs::read(&meta_file) {
        if let Ok(meta) = serde_json::from_slice::<ArtifactMeta>(&bytes) {
            if meta.size == size {
                return Ok(Some(meta));
            }
        }
    }
    // Missing or stale metadata (a stop between rename and write): compute it again.
    let mut file = std::fs::File::open(&target)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let meta = ArtifactMeta {
        size: total,
        sha256: hex::encode(hasher.finalize()),
    };
    if let Some(dir) = meta_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_meta(state, &meta_file, &meta)?;
    Ok(Some(meta))
}

fn meta_path(state: &SimState, path: &ArtifactPath) -> PathBuf {
    let mut p = path.under(&state.dirs.artifactory_meta);
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".json");
    p.set_file_name(name);
    p
}

fn write_meta(state: &SimState, file: &Path, meta: &ArtifactMeta) -> io::Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut tmp = tempfile::Builder::new()
        .prefix("meta-")
        .tempfile_in(&state.dirs.tmp)?;
    tmp.write_all(&bytes)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// The verdict on one stored archive, as kept in `<data>/archives/`.
#[derive(Debug, Serialize, Deserialize)]
struct ArchiveRecord {
    repo: String,
    path: String,
    artifact_sha256: String,
    valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    usage_sha256: Vec<String>,
}

impl ArchiveRecord {
    fn new(path: &ArtifactPath, artifact_sha256: &str, verdict: ArchiveVerdict) -> Self {
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

    fn record(&mut self, record: ArchiveRecord) -> io::Result<()> {
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
