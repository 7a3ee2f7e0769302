//! Failpoints: named stops at each step of the durability order, so tests can prove that a
//! crash between any two steps loses nothing.
//!
//! Only with the `failpoints` cargo feature (off by default; the crash drill turns it on): the
//! binary reads `JFCONNECT_FAILPOINT=<name>` and aborts the process (like kill -9) when it
//! reaches that step; in-process tests set `Failpoints::error_at` and get an error back
//! instead, with everything on disk exactly as a crash would leave it. Without the feature
//! every failpoint compiles to nothing and no environment variable is read.

use super::PipelineError;

/// Environment variable naming the step at which the process aborts.
pub const FAILPOINT_ENV: &str = "JFCONNECT_FAILPOINT";

/// Every failpoint, in durability order.
pub const ALL: &[&str] = &[
    "usage-after-upload",
    "usage-after-ledger",
    "ledger-after-index",
    "quarantine-after-reason",
    "after-plan",
    "after-archive-write",
    "after-deploy",
    "after-verify",
    "after-delete-one",
    "after-delete",
    "after-archive-done",
];

/// Environment variable (read only with the `failpoints` feature) that lowers the number of
/// ledger records between compactions, so the crash drill kills compactions too.
pub const LEDGER_COMPACT_ENV: &str = "JFCONNECT_LEDGER_COMPACT_AT";

/// The ledger's compaction threshold set by [`LEDGER_COMPACT_ENV`]; always `None` without the
/// `failpoints` feature.
pub(crate) fn ledger_compact_at() -> Option<usize> {
    #[cfg(feature = "failpoints")]
    if let Some(n) = std::env::var(LEDGER_COMPACT_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(n);
    }
    None
}

#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Off,
    Abort(String),
    Error(String),
}

/// Which failpoint, if any, is armed for a run. Without the `failpoints` cargo feature it holds
/// nothing and every method is a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints {
    #[cfg(feature = "failpoints")]
    mode: Mode,
}

impl Failpoints {
    /// No failpoint.
    pub fn off() -> Self {
        Failpoints::default()
    }

    /// Abort the process at the step named by `JFCONNECT_FAILPOINT`, if set; without the
    /// `failpoints` feature the variable is not read at all.
    pub(crate) fn from_env() -> Self {
        #[cfg(feature = "failpoints")]
        if let Ok(v) = std::env::var(FAILPOINT_ENV) {
            if !v.trim().is_empty() {
                return Failpoints {
                    mode: Mode::Abort(v.trim().to_string()),
                };
            }
        }
        Failpoints::default()
    }

    /// Return [`PipelineError::Failpoint`] at step `name`.
    #[cfg(feature = "failpoints")]
    pub fn error_at(name: &str) -> Self {
        Failpoints {
            mode: Mode::Error(name.to_string()),
        }
    }

    /// Called at step `name`: aborts or errors when armed for it.
    #[inline]
    pub(crate) fn hit(&self, name: &'static str) -> Result<(), PipelineError> {
        #[cfg(feature = "failpoints")]
        match &self.mode {
            Mode::Abort(n) if n == name => {
                eprintln!("failpoint {name}: aborting");
                std::process::abort();
            }
            Mode::Error(n) if n == name => return Err(PipelineError::Failpoint(name)),
            _ => {}
        }
        let _ = name;
        Ok(())
    }

    /// Like [`Failpoints::hit`] for I/O: at step `name`, fails with "no space left on device"
    /// (error mode) so tests can see how a full disk is handled.
    #[inline]
    pub fn io(&self, name: &'static str) -> std::io::Result<()> {
        #[cfg(feature = "failpoints")]
        match &self.mode {
            Mode::Error(n) if n == name => {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            }
            Mode::Abort(n) if n == name => std::process::abort(),
            _ => {}
        }
        let _ = name;
        Ok(())
    }
}
