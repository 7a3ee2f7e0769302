//! The classes of a failure that came from outside the process (JES, JCS, the JPD, a proxy),
//! shared by every client so that `http`, `transport` and `jpd` classify the same way and never
//! import each other.
//!
//! Errors are classified once, at the edge, into [`ErrorClass`]: *rejected* (the remote said
//! no; retrying the same request will not help), *unavailable* (retry with backoff) and *local*
//! (this machine). The scheduler's retry policy branches on the class and nothing else.

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

/// A remote service jfconnect calls, named in sentences together with the key that holds its
/// URL, so that a failure points at the setting to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// JFrog Entitlements Service (`jfconnect.jes.url`).
    Jes,
    /// JFrog Consumption Service (`jfconnect.jcs.url`).
    Jcs,
    /// The JPD's Access (`jfconnect.jpd.url`).
    Access,
    /// The JPD's Artifactory (`jfconnect.jpd.url`).
    Artifactory,
    /// The JFrog Store behind the store proxy (`jfconnect.store.url`).
    Store,
}

impl Service {
    /// Its name in sentences.
    pub fn name(self) -> &'static str {
        match self {
            Service::Jes => "JES",
            Service::Jcs => "JCS",
            Service::Access => "Access",
            Service::Artifactory => "Artifactory",
            Service::Store => "JFrog Store",
        }
    }

    /// The config key that holds its URL.
    pub(crate) fn url_key(self) -> &'static str {
        match self {
            Service::Jes => "jfconnect.jes.url",
            Service::Jcs => "jfconnect.jcs.url",
            Service::Access | Service::Artifactory => "jfconnect.jpd.url",
            Service::Store => "jfconnect.store.url",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    /// The typed cause's source chain as text, outermost first, for logs (never in the
    /// sentence); `None` when the error did not come from a failed send.
    pub chain: Option<String>,
}

impl TransportError {
    /// The same error, keeping `chain` (the cause's source chain) for logs.
    pub(crate) fn with_chain(mut self, chain: String) -> Self {
        self.chain = Some(chain);
        self
    }

    /// A rejected error.
    pub fn rejected(status: Option<u16>, message: impl Into<String>) -> Self {
        TransportError {
            class: ErrorClass::Rejected,
            status,
            message: message.into(),
            chain: None,
        }
    }

    /// An unavailable error.
    pub fn unavailable(status: Option<u16>, message: impl Into<String>) -> Self {
        TransportError {
            class: ErrorClass::Unavailable,
            status,
            message: message.into(),
            chain: None,
        }
    }

    /// A local error.
    pub fn local(message: impl Into<String>) -> Self {
        TransportError {
            class: ErrorClass::Local,
            status: None,
            message: message.into(),
            chain: None,
        }
    }
}

/// The class of an HTTP status that is not a success: 4xx rejected, everything else
/// unavailable. 408 (request timeout) and 429 (too many requests) are the remote asking us to
/// come back later, so they are unavailable too.
pub(crate) fn class_of_status(status: u16) -> ErrorClass {
    match status {
        408 | 429 => ErrorClass::Unavailable,
        400..=499 => ErrorClass::Rejected,
        _ => ErrorClass::Unavailable,
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
