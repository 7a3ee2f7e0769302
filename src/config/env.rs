//! The process environment, read once when the configuration loads.
//!
//! Other parts never call `std::env::var`: what they need from the environment (the standard
//! proxy variables, the spool settle window the tests and the demo shorten) is captured here and
//! travels inside the [`Config`](super::Config).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Variables read besides the `JF_JFCONNECT_*` overrides.
const CAPTURED: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    SETTLE_ENV,
    CONFIG_ENV,
    "JFROG_HOME",
    "HOSTNAME",
    "NO_COLOR",
];

/// Environment variable naming the config file when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "JFCONNECT_CONFIG";

/// Environment variable overriding the spool settle window, in milliseconds (tests, demo).
pub(crate) const SETTLE_ENV: &str = "JFCONNECT_SPOOL_SETTLE_MS";

/// A snapshot of the environment variables jfconnect reads.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProcessEnv {
    vars: BTreeMap<String, String>,
}

impl ProcessEnv {
    /// Reads this process's environment (the only place that does).
    pub(crate) fn capture() -> ProcessEnv {
        ProcessEnv {
            vars: std::env::vars()
                .filter(|(k, _)| is_override(k) || CAPTURED.contains(&k.as_str()))
                .collect(),
        }
    }

    /// An environment made of `vars` (tests).
    pub(crate) fn from_vars(vars: BTreeMap<String, String>) -> ProcessEnv {
        ProcessEnv { vars }
    }

    /// The value of `name`, if set.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// The `JF_JFCONNECT_*` and `JF_SHARED_*` overrides.
    pub(crate) fn overrides(&self) -> impl Iterator<Item = (&String, &String)> {
        self.vars.iter().filter(|(k, _)| is_override(k))
    }

    /// True when `NO_COLOR` is set to anything but the empty string (no colour in logs).
    pub(crate) fn no_color(&self) -> bool {
        self.vars.get("NO_COLOR").is_some_and(|v| !v.is_empty())
    }

    /// The spool settle window set by [`SETTLE_ENV`], if any.
    pub(crate) fn spool_settle(&self) -> Option<Duration> {
        self.vars
            .get(SETTLE_ENV)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
    }
}

impl fmt::Debug for ProcessEnv {
    /// Names only: a proxy variable may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

fn is_override(name: &str) -> bool {
    name.starts_with(super::ENV_PREFIX) || name.starts_with(super::shared::SHARED_ENV_PREFIX)
}
