//! The one seam between the jobs and the outside world: register, fetch entitlements, upload
//! usage.
//!
//! Jobs hold an `Arc<dyn Transport>` and never know whether it speaks HTTPS to JES/JCS
//! ([`online`]), writes signed bundles (air-gapped mode) or lives in memory ([`memory`], for
//! tests). Errors are classified once, here at the edge, into [`ErrorClass`]: the scheduler's
//! retry policy branches on the class and nothing else.
//!
//! Architecture invariant: nothing outside `transport/` builds a request to JES or JCS.

pub mod memory;
pub mod online;

use crate::protocol::{Entitlements, RegisterRequest, RegisterResponse};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a failure should be treated by whoever retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The remote side said no (4xx). Retrying the same request will not help.
    Rejected,
    /// The remote side could not be reached or failed (5xx, timeout, refused, DNS, TLS).
    /// Retry with backoff.
    Unavailable,
    /// Something on this machine failed (disk, config).
    Local,
}

impl ErrorClass {
    /// The lower-case name used in status, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Rejected => "rejected",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Local => "local",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure with one sentence a person understands.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct TransportError {
    /// How to treat it.
    pub class: ErrorClass,
    /// HTTP status, when the remote answered.
    pub status: Option<u16>,
    /// What happened and what to do, in one sentence; never holds a secret.
    pub message: String,
}

impl TransportError {
    /// A rejected error.
    pub fn rejected(status: Option<u16>, message: impl Into<String>) -> Self {
        TransportError {
            class: ErrorClass::Rejected,
            status,
            message: message.into(),
        }
    }

    /// An unavailable error.
    pub fn unavailable(status: Option<u16>, message: impl Into<String>) -> Self {
        TransportError {
            class: ErrorClass::Unavailable,
            status,
            message: message.into(),
        }
    }

    /// A local error.
    pub fn local(message: impl Into<String>) -> Self {
        TransportError {
            class: ErrorClass::Local,
            status: None,
            message: message.into(),
        }
    }
}

/// The class of an HTTP status that is not a success: 4xx rejected, everything else
/// unavailable. 408 (request timeout) and 429 (too many requests) are the remote asking us to
/// come back later, so they are unavailable too.
pub fn class_of_status(status: u16) -> ErrorClass {
    match status {
        408 | 429 => ErrorClass::Unavailable,
        400..=499 => ErrorClass::Rejected,
        _ => ErrorClass::Unavailable,
    }
}

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
    fn unchanged(&self) -> &'static str {
        "entitlements unchanged (JES answered 304 Not Modified)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_follow_the_design() {
        assert_eq!(class_of_status(400), ErrorClass::Rejected);
        assert_eq!(class_of_status(401), ErrorClass::Rejected);
        assert_eq!(class_of_status(404), ErrorClass::Rejected);
        assert_eq!(class_of_status(429), ErrorClass::Unavailable);
        assert_eq!(class_of_status(500), ErrorClass::Unavailable);
        assert_eq!(class_of_status(503), ErrorClass::Unavailable);
    }
}
