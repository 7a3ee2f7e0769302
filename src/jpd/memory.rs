//! An in-memory JPD for tests of the archival job: stores deployed archives in a map and can be
//! told to fail the next call of an operation, to refuse the token, or to lie about the
//! checksum it stored (the "checksum mismatch on read-back" fault).

use super::{Jpd, TOKEN_HINT};
use crate::protocol::{Checksums, StorageInfo};
use crate::remote::TransportError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

/// Which operation a queued failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpdOperation {
    /// `check_token`.
    CheckToken,
    /// `deploy`.
    Deploy,
    /// `storage_info`.
    StorageInfo,
}

#[derive(Default)]
struct Inner {
    failures: Vec<(JpdOperation, VecDeque<TransportError>)>,
    artifacts: BTreeMap<(String, String), Stored>,
    token_refused: bool,
    corrupt_readback: bool,
    discard_bodies: bool,
    deploys: usize,
}

#[derive(Clone)]
struct Stored {
    sha256: String,
    size: u64,
    bytes: Vec<u8>,
}

/// A scripted, in-memory Artifactory + Access.
#[derive(Default)]
pub struct MemoryJpd {
    inner: Mutex<Inner>,
}

impl MemoryJpd {
    /// An empty JPD that accepts the token.
    pub fn new() -> Self {
        MemoryJpd::default()
    }

    /// A JPD that keeps only the checksum and size of what it stores, not the bytes
    /// (for benchmarks, so memory stays flat).
    pub fn discarding() -> Self {
        let jpd = MemoryJpd::default();
        jpd.lock().discard_bodies = true;
        jpd
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next call of `op` fail with `error` (queued after earlier ones).
    pub fn fail_next(&self, op: JpdOperation, error: TransportError) {
        let mut inner = self.lock();
        if let Some((_, q)) = inner.failures.iter_mut().find(|(o, _)| *o == op) {
            q.push_back(error);
        } else {
            inner.failures.push((op, VecDeque::from([error])));
        }
    }

    /// From now on every call answers 401 (`true`) or works again (`false`).
    pub fn refuse_token(&self, refuse: bool) {
        self.lock().token_refused = refuse;
    }

    /// From now on storage info reports a wrong SHA-256 (`true`) or the right one (`false`).
    pub fn corrupt_readback(&self, corrupt: bool) {
        self.lock().corrupt_readback = corrupt;
    }

    /// Every stored artifact: `(repo, path, bytes)` (bytes empty when discarding).
    pub fn artifacts(&self) -> Vec<(String, String, Vec<u8>)> {
        self.lock()
            .artifacts
            .iter()
            .map(|((r, p), s)| (r.clone(), p.clone(), s.bytes.clone()))
            .collect()
    }

    /// How many deploys succeeded.
    pub fn deploys(&self) -> usize {
        self.lock().deploys
    }

    fn begin(&self, op: JpdOperation) -> Result<(), TransportError> {
        let mut inner = self.lock();
        if inner.token_refused {
            return Err(TransportError::rejected(
                Some(401),
                format!("the JPD refused the token (HTTP 401); {TOKEN_HINT}"),
            ));
        }
        if let Some((_, q)) = inner.failures.iter_mut().find(|(o, _)| *o == op) {
            if let Some(e) = q.pop_front() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn info(repo: &str, path: &str, stored: &Stored, corrupt: bool) -> StorageInfo {
        let sha256 = if corrupt {
            "0".repeat(64)
        } else {
            stored.sha256.clone()
        };
        StorageInfo {
            repo: repo.to_string(),
            path: path.to_string(),
            size: stored.size.to_string(),
            checksums: Checksums { sha256 },
        }
    }
}

#[async_trait::async_trait]
impl Jpd for MemoryJpd {
    async fn check_token(&self) -> Result<(), TransportError> {
        self.begin(JpdOperation::CheckToken)
    }

    async fn deploy(
        &self,
        repo: &str,
        path: &str,
        file: &Path,
        sha256: &str,
        _size: u64,
    ) -> Result<StorageInfo, TransportError> {
        self.begin(JpdOperation::Deploy)?;
        let discard = self.lock().discard_bodies;
        let (actual, size, bytes) = read_and_hash(file, discard)
            .map_err(|e| TransportError::local(format!("cannot read {}: {e}", file.display())))?;
        if actual != sha256 {
            return Err(TransportError::rejected(
                Some(409),
                format!("Artifactory refused {repo}/{path}: checksum header does not match the body (HTTP 409)"),
            ));
        }
        let stored = Stored {
            sha256: actual,
            size,
            bytes,
        };
        let mut inner = self.lock();
        inner.deploys += 1;
        let info = Self::info(repo, path, &stored, false);
        inner
            .artifacts
            .insert((repo.to_string(), path.to_string()), stored);
        Ok(info)
    }

    async fn storage_info(
        &self,
        repo: &str,
        path: &str,
    ) -> Result<Option<StorageInfo>, TransportError> {
        self.begin(JpdOperation::StorageInfo)?;
        let inner = self.lock();
        Ok(inner
            .artifacts
            .get(&(repo.to_string(), path.to_string()))
            .map(|s| Self::info(repo, path, s, inner.corrupt_readback)))
    }

    fn describe(&self) -> String {
        "in-memory JPD".into()
    }
}

fn read_and_hash(file: &Path, discard: bool) -> std::io::Result<(String, u64, Vec<u8>)> {
    let mut f = std::fs::File::open(file)?;
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        if !discard {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    Ok((hex::encode(hasher.finalize()), size, kept))
}
