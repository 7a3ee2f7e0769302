//! The simulated Artifactory's disk: placing a checked upload at `<data>/artifactory/<repo>/<path>`,
//! its size and SHA-256 beside it, and the book of stored archives with their verdicts.
//!
//! An upload arrives in a temp file whose digest is already known; it is renamed into place, so
//! a reader never sees half an artifact. Archives (`*.zip`) are then checked against their
//! index (see `archive`), and the verdict is written to `<data>/archives/`, one file per
//! artifact path; on start the book is rebuilt from those files, so `archived_usage_files`
//! survives a restart without re-reading every archive. All functions here block: call them
//! from `spawn_blocking`.

use super::archive::{verify_archive, ArchiveVerdict};
use super::archive_book::ArchiveRecord;
use super::paths::ArtifactPath;
use super::state::SimState;
use super::sync::lock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
