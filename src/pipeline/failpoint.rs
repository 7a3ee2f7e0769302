//! Failpoints: named stops at each step of the durability order, so tests can prove that a
//! crash between any two steps loses nothing.
//!
//! The real binary reads `JFCONNECT_FAILPOINT=<name>` and aborts the process (like kill -9) when
//! it reaches that step; in-process tests set [`Failpoints::error_at`] and get an error back
//! instead, with everything on disk exactly as a crash would leave it. Unset, a failpoint costs
//! one comparison.

use super::PipelineError;

/// Environment variable naming the step at which the process aborts.
pub const FAILPOINT_ENV: &str = "JFCONNECT_FAILPOINT";

/// Every failpoint, in durability order.
pub const ALL: &[&str] = &[
    "usage-after-upload",
    "usage-after-ledger",
    "quarantine-after-reason",
    "after-plan",
    "after-archive-write",
    "after-deploy",
    "after-verify",
    "after-delete-one",
    "after-delete",
    "after-archive-done",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Off,
    Abort(String),
    Error(String),
}

/// Which failpoint, if any, is armed for a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints(Mode);

impl Failpoints {
    /// No failpoint.
    pub fn off() -> Self {
        Failpoints(Mode::Off)
    }

    /// Abort the process at the step named by `JFCONNECT_FAILPOINT`, if set.
    pub fn from_env() -> Self {
        match std::env::var(FAILPOINT_ENV) {
            Ok(v) if !v.trim().is_empty() => Failpoints(Mode::Abort(v.trim().to_string())),
            _ => Failpoints(Mode::Off),
        }
    }

    /// Return [`PipelineError::Failpoint`] at step `name`.
    pub fn error_at(name: &str) -> Self {
        Failpoints(Mode::Error(name.to_string()))
    }

    /// Called at step `name`: aborts or errors when armed for it.
    pub fn hit(&self, name: &'static str) -> Result<(), PipelineError> {
        match &self.0 {
            Mode::Abort(n) if n == name => {
                eprintln!("failpoint {name}: aborting");
                std::process::abort();
            }
            Mode::Error(n) if n == name => Err(PipelineError::Failpoint(name)),
            _ => Ok(()),
        }
    }
}

impl Failpoints {
    /// Like [`Failpoints::hit`] for I/O: at step `name`, fails with "no space left on device"
    /// (error mode) so tests can see how a full disk is handled.
    pub fn io(&self, name: &'static str) -> std::io::Result<()> {
        match &self.0 {
            Mode::Error(n) if n == name => {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            }
            Mode::Abort(n) if n == name => std::process::abort(),
            _ => Ok(()),
        }
    }
}
