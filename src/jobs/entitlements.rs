//! The entitlements job: register the license with JES, then fetch the subscription's
//! entitlements and keep the last good copy.
//!
//! The last good entitlements are stored durably and keep being served while JES is
//! unreachable; their age is shown. A register refused with 400 is remembered against the
//! license's fingerprint (never the license itself), and the scheduler holds the job back until
//! a restart or a license change.

use super::{JobError, JobReport};
use crate::clock::SharedClock;
use crate::entitlements::{
    EntitlementsStore, LicenseSource, Registration, Rejection, StoredEntitlements,
};
use crate::protocol::RegisterRequest;
use crate::remote::ErrorClass;
use crate::secret::Secret;
use crate::state::StateError;
use crate::transport::{EntitlementsFetch, Transport};
use std::sync::Arc;

/// The entitlements job.
pub(crate) struct EntitlementsJob {
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
        let current = self
            .license
            .current()
            .map_err(|e| JobError::local(e.to_string()))?
            .ok_or_else(|| JobError::local(self.license.none_found()))?;
        let (license, from_api) = (current.key, current.from_api);
        let fingerprint = license.fingerprint();
        let snapshot = self.store.snapshot();
        let mut registered_now = false;
        let token = match snapshot.registration {
            Some(r) if r.license_fingerprint == fingerprint => r.token,
            _ => {
                registered_now = true;
                match self.register(license, &fingerprint).await {
                    Err(e) if from_api && e.class == ErrorClass::Rejected => {
                        return Err(self.refused_api_key(e))
                    }
                    other => other?,
                }
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
                    summary: format!("{prefix}{}", self.transport.unchanged()),
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
                    summary: format!(
                        "{prefix}fetched {} of subscription {sub}",
                        crate::words::count(n as u64, "entitlement", "entitlements")
                    ),
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

    /// JES refused the key set through the API: set it aside so the admin's file is in effect
    /// again on the next run (the entitlements served so far stay served).
    fn refused_api_key(&self, e: JobError) -> JobError {
        match self.license.set_aside_refused_api_key() {
            Ok(Some(kept)) => JobError {
                class: e.class,
                message: format!(
                    "{}; the key set through the API is kept at {} and the license file is in effect again",
                    e.message,
                    kept.display()
                ),
            },
            Ok(None) => e,
            Err(io) => JobError {
                class: e.class,
                message: format!("{}; and it could not be set aside: {io}", e.message),
            },
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

#[cfg(test)]
mod tests;
