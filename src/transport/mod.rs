//! The one seam between the jobs and the outside world: register, fetch entitlements, upload
//! usage.
//!
//! Jobs hold an `Arc<dyn Transport>` and never know whether it speaks HTTPS to JES/JCS
//! ([`online`]), writes signed bundles (air-gapped mode) or lives in memory ([`memory`], for
//! tests). Errors are classified once, here at the edge, into [`ErrorClass`]: the scheduler's
//! retry policy branches on the class and nothing else.
//!
//! Architecture invariant: nothing outside `transport/` builds a request to JES or JCS.

pub(crate) mod airgap_error;
pub mod airgapped;
pub(crate) mod inbox;
pub mod memory;
pub mod online;
pub mod outbox;
pub mod payload;

use crate::protocol::{Entitlements, RegisterRequest, RegisterResponse};
pub use crate::remote::{ErrorClass, TransportError};

/// Result of fetching entitlements with a cached ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntitlementsFetch {
    /// Unchanged since the ETag we sent (HTTP 304).
    NotModified,
    /// New or changed entitlements.
    Updated {
        /// Their ETag, to send next time.
        etag: Option<String>,
        /// The entitlements.
        entitlements: Entitlements,
    },
}

/// One usage file to upload: its bytes and its identity.
#[derive(Debug, Clone)]
pub struct UsageUpload {
    /// Lower-case hex SHA-256 of `content`.
    pub sha256: String,
    /// The file's name in the spool.
    pub name: String,
    /// The file's bytes, unchanged.
    pub content: bytes::Bytes,
}

/// What the consumption side acknowledged for a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageReceipt {
    /// SHA-256 of every file acknowledged (new or duplicate).
    pub acknowledged: Vec<String>,
    /// How many of them the remote had already seen.
    pub duplicates: usize,
}

/// Talks to the entitlements and consumption side, whichever way it is reached.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Registers the license; answers the registration token.
    async fn register(&self, request: &RegisterRequest)
        -> Result<RegisterResponse, TransportError>;

    /// Fetches entitlements; with `etag`, an unchanged subscription answers `NotModified`.
    async fn fetch_entitlements(
        &self,
        jpd_id: &str,
        registration_token: &crate::secret::Secret,
        etag: Option<&str>,
    ) -> Result<EntitlementsFetch, TransportError>;

    /// Uploads a batch of usage files; `Ok` only once the remote acknowledged them.
    async fn upload_usage(
        &self,
        jpd_id: &str,
        registration_token: &crate::secret::Secret,
        batch: &[UsageUpload],
    ) -> Result<UsageReceipt, TransportError>;

    /// A short description for status output ("online: https://jes.example.com").
    fn describe(&self) -> String;

    /// What an unchanged subscription means on this transport, for the job's report.
    fn unchanged(&self) -> String {
        "entitlements unchanged (JES answered 304 Not Modified)".into()
    }

    /// How many usage files to hand `upload_usage` at once, given the configured batch size.
    fn batch_size(&self, configured: usize) -> usize {
        configured
    }

    /// Air-gapped: the outbox usage files are streamed into one at a time (signed bundles)
    /// instead of being handed to [`Transport::upload_usage`] in batches; `None`, the default,
    /// for transports that send.
    fn usage_outbox(&self) -> Option<outbox::UsageOutbox> {
        None
    }
}
