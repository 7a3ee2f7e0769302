//! The pipeline's one error type, and how each kind becomes a classified [`JobError`].

use crate::remote::{ErrorClass, TransportError};
use crate::state::StateError;
use std::io;
use std::path::{Path, PathBuf};

/// Why a usage or archival run stopped. Nothing is deleted after any of these.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A read, write, rename or delete failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The disk filled up while writing.
    #[error("the disk holding {} is full (no space left while writing {what}); free space there and the run will be retried — nothing was deleted", dir.display())]
    DiskFull {
        /// The folder that could not be written.
        dir: PathBuf,
        /// What was being written.
        what: &'static str,
    },
    /// An fsync failed: the disk may have lost data, so the run stops and is not retried over.
    #[error("fsync of {} failed ({source}); the run stopped and nothing more was deleted — check the disk", path.display())]
    Fsync {
        /// What was being synced.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// JCS, Artifactory or Access failed or refused.
    #[error(transparent)]
    Remote(#[from] TransportError),
    /// Artifactory stored something other than what was sent.
    #[error("Artifactory stored {path} with SHA-256 {stored} and size {stored_size}, but the archive has {expected} and size {size}; nothing was deleted, it will be retried")]
    ChecksumMismatch {
        /// Repo path of the archive.
        path: String,
        /// What Artifactory reports.
        stored: String,
        /// Its size as reported.
        stored_size: String,
        /// What we sent.
        expected: String,
        /// Our size.
        size: u64,
    },
    /// A plan on disk is unreadable; it is kept for a person to look at.
    #[error("the archive plan {} is damaged ({reason}); move it aside to start a new plan — no usage file was deleted", path.display())]
    BadPlan {
        /// The plan file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The single node's usage ledger on disk is damaged; it is kept for a person to look at.
    #[error("the usage ledger {} is damaged ({reason}); move it aside and the next run goes on: the files it records as uploaded are sent once more (JCS counts them as duplicates) — no usage file was deleted", path.display())]
    BadLedger {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another run holds the pipeline lock for too long.
    #[error("another usage or archival run holds {}; this run will be retried", lock.display())]
    Busy {
        /// The lock file.
        lock: PathBuf,
    },
    /// The shared usage ledger (database mode) failed or refused; nothing was marked or
    /// deleted on its account.
    #[error("the shared usage ledger: {0}; nothing was deleted")]
    Ledger(#[from] crate::ha::db::DbError),
    /// A test failpoint stopped the run.
    #[error("failpoint {0} stopped the run")]
    Failpoint(&'static str),
}

impl PipelineError {
    /// An I/O error on `path`, turned into [`PipelineError::DiskFull`] when the disk is full.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        if is_disk_full(&source) {
            return PipelineError::DiskFull {
                dir: path.parent().unwrap_or(path).to_path_buf(),
                what: action,
            };
        }
        PipelineError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A failed fsync of `path`.
    pub fn fsync(path: &Path, source: io::Error) -> Self {
        PipelineError::Fsync {
            path: path.to_path_buf(),
            source,
        }
    }

    /// How the scheduler treats it.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Remote(e) => e.class,
            PipelineError::ChecksumMismatch { .. } | PipelineError::Busy { .. } => {
                ErrorClass::Unavailable
            }
            PipelineError::Ledger(e) if e.is_unavailable() => ErrorClass::Unavailable,
            _ => ErrorClass::Local,
        }
    }
}

/// True when `e` means "no space left on device".
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
}
