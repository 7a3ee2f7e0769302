//! Which config file is read when `--config` is absent: `$JFCONNECT_CONFIG`, then
//! `$JFROG_HOME/jfconnect/var/etc/system.yaml` when `JFROG_HOME` is set and that file exists,
//! then none (built-in defaults and variables only).

use super::env::CONFIG_ENV;
use super::{ConfigError, ProcessEnv};
use std::fmt;
use std::path::{Path, PathBuf};

/// The config file read, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file.
    pub path: PathBuf,
    /// `--config`, `$JFCONNECT_CONFIG` or `$JFROG_HOME`.
    pub found_by: &'static str,
}

impl ConfigFile {
    /// The file given with `--config`.
    pub(crate) fn given(path: &Path) -> ConfigFile {
        ConfigFile {
            path: path.to_path_buf(),
            found_by: "--config",
        }
    }

    /// The file to read: `explicit`, else the first of the lookup that applies; `None` when no
    /// file is read.
    pub(crate) fn locate(
        explicit: Option<&Path>,
        env: &ProcessEnv,
    ) -> Result<Option<ConfigFile>, ConfigError> {
        if let Some(path) = explicit {
            return Ok(Some(ConfigFile::given(path)));
        }
        let set = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
        if let Some(path) = set(CONFIG_ENV) {
            return Ok(Some(ConfigFile {
                path: PathBuf::from(path),
                found_by: "$JFCONNECT_CONFIG",
            }));
        }
        if let Some(home) = set("JFROG_HOME") {
            let path = Path::new(&home).join("jfconnect/var/etc/system.yaml");
            if path.is_file() {
                return Ok(Some(ConfigFile {
                    path,
                    found_by: "$JFROG_HOME",
                }));
            }
        }
        Ok(None)
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.path.display(), self.found_by)
    }
}
