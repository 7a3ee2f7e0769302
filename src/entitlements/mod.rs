//! What jfconnect knows about its registration and entitlements, and where the license comes
//! from.
//!
//! [`EntitlementsStore`] is the durable `state/entitlements.json` with an in-memory copy the API
//! reads without touching disk. The entitlements job is its only writer; the API, status and
//! the air-gapped transport read it.

pub mod diff;
pub mod expiry;

use crate::protocol::Entitlements;
use crate::secret::Secret;
use crate::state::{self, StateError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

pub mod feed;

/// Why the license could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    /// The file exists and is empty.
    #[error("the license file {} is empty; put the license key in it", .0.display())]
    Empty(PathBuf),
    /// The file could not be read.
    #[error("cannot read the license file {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::secret::FileError,
    },
}

/// What jfconnect knows about its registration and entitlements; `state/entitlements.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntitlementsState {
    /// The current registration, if the license was accepted.
    pub registration: Option<Registration>,
    /// The last good entitlements.
    pub current: Option<StoredEntitlements>,
    /// The last refusal of the license, if the current license was refused.
    pub rejected: Option<Rejection>,
}

/// A license accepted by JES.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    /// Bearer token for JES and JCS (the state file is mode 0600).
    pub token: Secret,
    /// The subscription the license belongs to.
    pub subscription_id: String,
    /// Fingerprint of the license that was registered.
    pub license_fingerprint: String,
    /// When.
    pub registered_at: DateTime<Utc>,
}

/// Entitlements as last received.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredEntitlements {
    /// ETag JES gave them.
    pub etag: Option<String>,
    /// When they were last received changed.
    pub fetched_at: DateTime<Utc>,
    /// When JES last confirmed them (a 200 or a 304).
    pub confirmed_at: DateTime<Utc>,
    /// The entitlements.
    pub entitlements: Entitlements,
}

/// A license JES refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejection {
    /// Fingerprint of the refused license.
    pub license_fingerprint: String,
    /// JES's answer, as a sentence.
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The durable entitlements state with an in-memory copy the API reads without touching disk.
pub struct EntitlementsStore {
    path: PathBuf,
    current: RwLock<EntitlementsState>,
    version: tokio::sync::watch::Sender<u64>,
}

impl EntitlementsStore {
    /// Opens `state/entitlements.json` under `state_dir`; a damaged file is set aside (the job
    /// registers again, which is safe).
    pub fn open(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join("entitlements.json");
        let current = state::load_or_set_aside(&path)?.unwrap_or_default();
        if path.exists() {
            state::set_private(&path).map_err(|source| StateError::Io {
                action: "protect",
                path: path.clone(),
                source,
            })?;
        }
        Ok(EntitlementsStore {
            path,
            current: RwLock::new(current),
            version: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes whenever the state changes (for caches of derived views).
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A receiver woken after each change (its value is [`EntitlementsStore::version`]).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> EntitlementsState {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `change`, writes it durably (mode 0600: it holds the registration token), then
    /// makes it visible.
    pub fn update(&self, change: impl FnOnce(&mut EntitlementsState)) -> Result<(), StateError> {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut next = guard.clone();
        change(&mut next);
        state::save(&self.path, &next)?;
        state::set_private(&self.path).map_err(|source| StateError::Io {
            action: "protect",
            path: self.path.clone(),
            source,
        })?;
        *guard = next;
        drop(guard);
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }
}

/// The start of every "no license" sentence.
pub(crate) const NO_LICENSE: &str = "no license is configured";

/// Where the license is read from: the admin's file, and the key set through
/// `PUT /api/v1/license`, which jfconnect keeps apart so it never overwrites the admin's file.
/// The API key is in effect while it exists; when JES refuses it, it is set aside
/// (`.refused`) and the admin's file is in effect again.
#[derive(Debug, Clone, Default)]
pub struct LicenseSource {
    /// The admin's license file (`license.file`, or `<data_dir>/license`); never written.
    pub path: Option<PathBuf>,
    /// Where `PUT /api/v1/license` stores a key (`<data_dir>/license.api`, mode 0600).
    pub api_path: Option<PathBuf>,
}

/// The license in effect and the file it came from.
#[derive(Debug, Clone)]
pub struct License {
    /// The key.
    pub key: Secret,
    /// The file it was read from.
    pub file: PathBuf,
    /// True when it was set through the API.
    pub from_api: bool,
}

impl LicenseSource {
    /// Reads the license in effect; `Ok(None)` when none is configured.
    pub fn read(&self) -> Result<Option<Secret>, LicenseError> {
        Ok(self.current()?.map(|l| l.key))
    }

    /// The license in effect: the API key when one is stored, else the admin's file.
    pub fn current(&self) -> Result<Option<License>, LicenseError> {
        for (path, from_api) in [(&self.api_path, true), (&self.path, false)] {
            let Some(path) = path else { continue };
            if let Some(key) = read_key(path)? {
                return Ok(Some(License {
                    key,
                    file: path.clone(),
                    from_api,
                }));
            }
        }
        Ok(None)
    }

    /// Sets a refused API key aside (to `<api_path>.refused`), so the admin's file is in effect
    /// again; answers where it went.
    pub(crate) fn set_aside_refused_api_key(&self) -> std::io::Result<Option<PathBuf>> {
        let Some(api) = &self.api_path else {
            return Ok(None);
        };
        let mut refused = api.clone().into_os_string();
        refused.push(".refused");
        let refused = PathBuf::from(refused);
        std::fs::rename(api, &refused)?;
        Ok(Some(refused))
    }

    /// The sentence for "no license": which files were looked at and how to set one. Starts
    /// with [`NO_LICENSE`], which callers match on to tell the expected first-start state.
    pub(crate) fn none_found(&self) -> String {
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let looked: Vec<String> = [
            shown(&self.api_path).map(|p| format!("{p} (set through PUT /api/v1/license)")),
            shown(&self.path).map(|p| format!("{p} (jfconnect.license.file)")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let file = shown(&self.path).unwrap_or_else(|| "a file".into());
        format!(
            "{NO_LICENSE}: no key in {}; put the license key in {file} (or point jfconnect.license.file at the file that holds it), or PUT it to /api/v1/license",
            if looked.is_empty() { "any file".to_string() } else { looked.join(" nor in ") }
        )
    }

    /// How `status` names the license in effect.
    pub fn describe(&self) -> String {
        match self.current() {
            Ok(Some(l)) if l.from_api => format!("set through the API ({})", l.file.display()),
            Ok(Some(l)) => format!("file {}", l.file.display()),
            Ok(None) => "none".into(),
            Err(e) => e.to_string(),
        }
    }
}

fn read_key(path: &Path) -> Result<Option<Secret>, LicenseError> {
    match Secret::from_file(path) {
        Ok(s) if s.is_empty() => Err(LicenseError::Empty(path.to_path_buf())),
        Ok(s) => Ok(Some(s)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(source) => Err(LicenseError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Filters entitlements to those valid at `now` (a window that starts later is kept but not
/// served until then).
pub(crate) fn valid_at(entitlements: &Entitlements, now: DateTime<Utc>) -> Entitlements {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut out = entitlements.clone();
    out.entitlements.retain(|e| {
        parse(&e.valid_from).is_none_or(|from| from <= now)
            && parse(&e.valid_until).is_none_or(|until| now < until)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_is_in_effect_until_set_aside_then_the_admins_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let source = LicenseSource {
            path: Some(dir.path().join("admin")),
            api_path: Some(dir.path().join("license.api")),
        };
        assert!(source.current().unwrap().is_none());
        assert_eq!(source.describe(), "none");
        std::fs::write(dir.path().join("admin"), "ADMIN").unwrap();
        assert_eq!(source.read().unwrap().unwrap().expose(), "ADMIN");
        std::fs::write(dir.path().join("license.api"), "API").unwrap();
        let l = source.current().unwrap().unwrap();
        assert!(l.from_api);
        assert_eq!(l.key.expose(), "API");
        assert!(source.describe().starts_with("set through the API"));
        let kept = source.set_aside_refused_api_key().unwrap().unwrap();
        assert_eq!(kept, dir.path().join("license.api.refused"));
        assert_eq!(source.read().unwrap().unwrap().expose(), "ADMIN");
        assert_eq!(std::fs::read_to_string(kept).unwrap(), "API");
    }
}
