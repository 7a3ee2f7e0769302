//! An in-process transport for unit tests of the jobs: a scripted JES and JCS in memory.
//!
//! Failures are queued per operation, so a test says "the next two registers fail with 500"
//! and watches the job retry.

use super::{EntitlementsFetch, Transport, TransportError, UsageReceipt, UsageUpload};
use crate::protocol::{Entitlements, RegisterRequest, RegisterResponse};
use crate::secret::Secret;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Which operation a queued failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `register`.
    Register,
    /// `fetch_entitlements`.
    Entitlements,
    /// `upload_usage`.
    Usage,
}

#[derive(Default)]
struct Inner {
    failures: Vec<(Operation, VecDeque<TransportError>)>,
    valid_licenses: HashSet<String>,
    entitlements: Option<(String, Entitlements)>,
    received: HashSet<String>,
    duplicates: usize,
    calls: Vec<Operation>,
    /// (files, bytes of the JCS request body) of every usage batch received.
    batches: Vec<(usize, usize)>,
}

/// A scripted, in-memory JES + JCS.
#[derive(Default)]
pub struct MemoryTransport {
    inner: Mutex<Inner>,
}

impl MemoryTransport {
    /// A transport that accepts `license` and serves `entitlements` under ETag `etag`.
    pub fn new(license: &str, etag: &str, entitlements: Entitlements) -> Self {
        let t = MemoryTransport::default();
        {
            let mut inner = t.lock();
            inner.valid_licenses.insert(license.to_string());
            inner.entitlements = Some((etag.to_string(), entitlements));
        }
        t
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next call of `op` fail with `error` (queued after earlier ones).
    pub fn fail_next(&self, op: Operation, error: TransportError) {
        let mut inner = self.lock();
        if let Some((_, q)) = inner.failures.iter_mut().find(|(o, _)| *o == op) {
            q.push_back(error);
        } else {
            inner.failures.push((op, VecDeque::from([error])));
        }
    }

    /// Replaces the served entitlements.
    #[cfg(test)]
    pub(crate) fn set_entitlements(&self, etag: &str, entitlements: Entitlements) {
        self.lock().entitlements = Some((etag.to_string(), entitlements));
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Operation> {
        self.lock().calls.clone()
    }

    /// SHA-256 of every usage file received, and how many arrived again.
    pub fn usage_received(&self) -> (HashSet<String>, usize) {
        let inner = self.lock();
        (inner.received.clone(), inner.duplicates)
    }

    /// (files, bytes of the body the online transport would send) of every usage batch
    /// received, in order.
    pub fn usage_batches(&self) -> Vec<(usize, usize)> {
        self.lock().batches.clone()
    }

    fn begin(&self, op: Operation) -> Result<(), TransportError> {
        let mut inner = self.lock();
        inner.calls.push(op);
        if let Some((_, q)) = inner.failures.iter_mut().find(|(o, _)| *o == op) {
            if let Some(e) = q.pop_front() {
                return Err(e);
            }
        }
        Ok(())
    }
}

const TOKEN_PREFIX: &str = "mem-token-";

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, TransportError> {
        self.begin(Operation::Register)?;
        let inner = self.lock();
        if !inner.valid_licenses.contains(req.license_key.expose()) {
            return Err(TransportError::rejected(
                Some(400),
                "JES rejected the license (HTTP 400); fix the license, then restart or update it",
            ));
        }
        Ok(RegisterResponse {
            registration_token: Secret::new(format!("{TOKEN_PREFIX}{}", req.jpd_id)),
            subscription_id: "sub-memory".into(),
        })
    }

    async fn fetch_entitlements(
        &self,
        _jpd_id: &str,
        token: &Secret,
        etag: Option<&str>,
    ) -> Result<EntitlementsFetch, TransportError> {
        self.begin(Operation::Entitlements)?;
        if !token.expose().starts_with(TOKEN_PREFIX) {
            return Err(TransportError::rejected(
                Some(401),
                "JES did not accept the registration token (HTTP 401)",
            ));
        }
        let inner = self.lock();
        match &inner.entitlements {
            Some((tag, _)) if Some(tag.as_str()) == etag => Ok(EntitlementsFetch::NotModified),
            Some((tag, ents)) => Ok(EntitlementsFetch::Updated {
                etag: Some(tag.clone()),
                entitlements: ents.clone(),
            }),
            None => Err(TransportError::rejected(
                Some(404),
                "JES has no entitlements for this JPD (HTTP 404)",
            )),
        }
    }

    async fn upload_usage(
        &self,
        jpd_id: &str,
        _token: &Secret,
        batch: &[UsageUpload],
    ) -> Result<UsageReceipt, TransportError> {
        self.begin(Operation::Usage)?;
        let files = batch
            .iter()
            .map(|f| (f.sha256.as_str(), f.name.as_str(), &f.content[..]));
        let body = crate::protocol::usage_batch_body(jpd_id, files)
            .map_err(|e| TransportError::local(e.to_string()))?;
        let mut inner = self.lock();
        inner.batches.push((batch.len(), body.len()));
        let mut receipt = UsageReceipt::default();
        for file in batch {
            if !inner.received.insert(file.sha256.clone()) {
                inner.duplicates += 1;
                receipt.duplicates += 1;
            }
            receipt.acknowledged.push(file.sha256.clone());
        }
        Ok(receipt)
    }

    fn describe(&self) -> String {
        "in-memory".into()
    }
}
