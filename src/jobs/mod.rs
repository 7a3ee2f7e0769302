//! The three jobs (entitlements, usage, archival) and the scheduler that runs them.
//!
//! A job is one async function that does its work once and answers a [`JobReport`] or a
//! [`JobError`]; when and how often it runs is the scheduler's business, never the job's.
//!
//! Architecture invariant: jobs reach JES/JCS only through `Transport` and the JPD only through
//! `Jpd`; they never know which transport they hold.

use crate::remote::{ErrorClass, TransportError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The name of a job, as used on the command line, in the API and in state files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobName {
    /// Register the license and keep entitlements current.
    Entitlements,
    /// Upload usage files to JCS (or into a bundle).
    Usage,
    /// Archive uploaded usage files into the JPD and delete the originals.
    Archival,
}

impl JobName {
    /// All jobs, in the order they are shown.
    pub const ALL: [JobName; 3] = [JobName::Entitlements, JobName::Usage, JobName::Archival];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Entitlements => "entitlements",
            JobName::Usage => "usage",
            JobName::Archival => "archival",
        }
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobName::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| format!("unknown job {s:?}; the jobs are entitlements, usage, archival"))
    }
}

/// A failed run: its class decides the retry, its message is shown to a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct JobError {
    /// How the scheduler treats it.
    pub class: ErrorClass,
    /// One sentence: what happened and what to do.
    pub message: String,
}

/// The start of the entitlements job's failure when no license is set yet.
pub(crate) use crate::entitlements::NO_LICENSE;
/// The usage job's failure before the license is registered.
pub(crate) const NOT_REGISTERED: &str = "the license is not registered yet, so usage cannot be sent to JCS; it will be retried after the entitlements job registers";
/// The one line logged (INFO) for the expected first-start state.
pub(crate) const SETUP_PENDING_HINT: &str = "no license yet: set jfconnect.license.file (or JF_JFCONNECT_LICENSE_FILE) to a file holding the license key, or PUT it to /api/v1/license; jfconnect registers as soon as one is set and sends usage after that";

impl JobError {
    /// True for the expected state of a first start (no license yet, hence not registered),
    /// which is logged once at INFO instead of as a failure.
    pub(crate) fn is_setup_pending(&self) -> bool {
        self.message.starts_with(NO_LICENSE) || self.message.starts_with(NOT_REGISTERED)
    }

    /// A local failure (disk, config).
    pub fn local(message: impl Into<String>) -> Self {
        JobError {
            class: ErrorClass::Local,
            message: message.into(),
        }
    }
}

impl From<TransportError> for JobError {
    fn from(e: TransportError) -> Self {
        JobError {
            class: e.class,
            message: e.message,
        }
    }
}

/// What a successful run did, in one line for a person, plus counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// One line, e.g. "uploaded 200 usage files to JCS (3 already there)".
    pub summary: String,
}

pub mod entitlements;
pub mod schedule;
pub mod scheduler;
pub mod usage;
