//! The entitlements job: register the license with JES, then fetch the subscription's
//! entitlements and keep the last good copy.
//!
//! The last good entitlements are stored durably and keep being served while JES is
//! unreachable; their age is shown. A register refused with 400 is remembered against the
//! license's fingerprint (never the license itself), and the scheduler holds the job back until
//! a restart or a license change.

use super::{JobError, JobReport};
use crate::clock::SharedClock;
use crate::protocol::{Entitlements, RegisterRequest};
use crate::secret::Secret;
use crate::state::{self, StateError};
use crate::transport::{EntitlementsFetch, ErrorClass, Transport};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

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
    version: std::sync::atomic::AtomicU64,
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
            version: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A number that changes whenever the state changes (for caches of derived views).
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
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
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// Where the license is read from.
#[derive(Debug, Clone)]
pub struct LicenseSource {
    /// The license file (configured, or `<data_dir>/license` when set through the API).
    pub path: Option<PathBuf>,
}

impl LicenseSource {
    /// Reads the license; `Ok(None)` when none is configured.
    pub fn read(&self) -> Result<Option<Secret>, JobError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        match Secret::from_file(path) {
            Ok(s) if s.is_empty() => Err(JobError::local(format!(
                "the license file {} is empty; put the license key in it",
                path.display()
            ))),
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JobError::local(format!(
                "cannot read the license file {}: {e}",
                path.display()
            ))),
        }
    }
}

/// The entitlements job.
pub struct EntitlementsJob {
    /// How JES is reached.
    pub transport: Arc<dyn Transport>,
    /// Durable state shared with the API.
    pub store: Arc<EntitlementsStore>,
    /// The license.
    pub license: LicenseSource,
    /// This JPD's id.
    pub jpd_id: String,
    /// Time.
    pub clock: SharedClock,
}

fn local(e: StateError) -> JobError {
    JobError::local(e.to_string())
}

impl EntitlementsJob {
    /// Registers if needed, then fetches entitlements (a 304 when unchanged).
    pub async fn run(&self) -> Result<JobReport, JobError> {
        let license = self.license.read()?.ok_or_else(|| {
            JobError::local(
                "no license is configured; set jfconnect.license.file or PUT /api/v1/license",
            )
        })?;
        let fingerprint = license.fingerprint();
        let snapshot = self.store.snapshot();
        let mut registered_now = false;
        let token = match snapshot.registration {
            Some(r) if r.license_fingerprint == fingerprint => r.token,
            _ => {
                registered_now = true;
                self.register(license, &fingerprint).await?
            }
        };
        let etag = snapshot.current.as_ref().and_then(|c| c.etag.clone());
        let now = self.clock.now();
        let fetched = self
            .transport
            .fetch_entitlements(&self.jpd_id, &token, etag.as_deref())
            .await;
        let prefix = if registered_now {
            "registered the license; "
        } else {
            ""
        };
        match fetched {
            Ok(EntitlementsFetch::NotModified) => {
                self.store
                    .update(|s| {
                        if let Some(c) = s.current.as_mut() {
                            c.confirmed_at = now;
                        }
                    })
                    .map_err(local)?;
                Ok(JobReport {
                    summary: format!(
                        "{prefix}entitlements unchanged (JES answered 304 Not Modified)"
                    ),
                })
            }
            Ok(EntitlementsFetch::Updated { etag, entitlements }) => {
                let n = entitlements.entitlements.len();
                let sub = entitlements.subscription_id.clone();
                self.store
                    .update(|s| {
                        s.current = Some(StoredEntitlements {
                            etag,
                            fetched_at: now,
                            confirmed_at: now,
                            entitlements,
                        })
                    })
                    .map_err(local)?;
                Ok(JobReport {
                    summary: format!("{prefix}fetched {n} entitlements of subscription {sub}"),
                })
            }
            Err(e) if e.status == Some(401) => {
                // The token is no longer good: forget it and register again on the next try.
                self.store
                    .update(|s| s.registration = None)
                    .map_err(local)?;
                Err(JobError {
                    class: ErrorClass::Unavailable,
                    message: "JES no longer accepts this JPD's registration (HTTP 401); jfconnect will register again on the next try".into(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn register(&self, license: Secret, fingerprint: &str) -> Result<Secret, JobError> {
        let request = RegisterRequest {
            jpd_id: self.jpd_id.clone(),
            license_key: license,
            jfconnect_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let now = self.clock.now();
        match self.transport.register(&request).await {
            Ok(resp) => {
                let token = resp.registration_token.clone();
                self.store
                    .update(|s| {
                        s.registration = Some(Registration {
                            token: resp.registration_token,
                            subscription_id: resp.subscription_id,
                            license_fingerprint: fingerprint.to_string(),
                            registered_at: now,
                        });
                        s.rejected = None;
                    })
                    .map_err(local)?;
                Ok(token)
            }
            Err(e) => {
                if e.class == ErrorClass::Rejected {
                    self.store
                        .update(|s| {
                            s.registration = None;
                            s.rejected = Some(Rejection {
                                license_fingerprint: fingerprint.to_string(),
                                message: e.message.clone(),
                                at: now,
                            });
                        })
                        .map_err(local)?;
                }
                Err(e.into())
            }
        }
    }
}

/// Filters entitlements to those valid at `now` (a window that starts later is kept but not
/// served until then).
pub fn valid_at(entitlements: &Entitlements, now: DateTime<Utc>) -> Entitlements {
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
mod tests;
