//! The JPD client: the two things jfconnect asks of the JFrog Platform Deployment it serves —
//! check that its token is good (Access), and store usage archives (Artifactory) and read back
//! what was stored.
//!
//! The archival job holds a `&dyn Jpd` and never knows whether it talks HTTP ([`online`]) or to
//! the in-memory fake ([`memory`]) that tests use to inject failures. Errors are classified here,
//! at the edge, with the same [`TransportError`] as JES/JCS: 401/403 is *rejected* (fix the
//! token), 5xx, 507 and network trouble are *unavailable* (retry with backoff).
//!
//! Architecture invariant: nothing outside `jpd/` builds a request to Artifactory or Access.

pub mod memory;
pub mod online;

use crate::protocol::StorageInfo;
use crate::remote::TransportError;
use std::path::Path;

/// The sentence added to every 401/403 from the JPD: which setting to fix.
pub(crate) const TOKEN_HINT: &str = "check the token in the file named by jfconnect.jpd.token_file";

/// Talks to the JPD's Access and Artifactory.
#[async_trait::async_trait]
pub trait Jpd: Send + Sync {
    /// Checks that the configured token is accepted (`GET /access/api/v1/tokens/me`).
    async fn check_token(&self) -> Result<(), TransportError>;

    /// Deploys `file` to `repo`/`path` (`PUT /artifactory/{repo}/{path}`), streaming its body
    /// with the `X-Checksum-Sha256` header; answers what Artifactory says it stored.
    async fn deploy(
        &self,
        repo: &str,
        path: &str,
        file: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<StorageInfo, TransportError>;

    /// Reads back what is stored at `repo`/`path`; `None` when nothing is there (HTTP 404).
    async fn storage_info(
        &self,
        repo: &str,
        path: &str,
    ) -> Result<Option<StorageInfo>, TransportError>;

    /// A short description for status output ("JPD at http://host:8082").
    fn describe(&self) -> String;
}
