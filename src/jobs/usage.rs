//! The usage and archival jobs: thin adapters from the scheduler to the usage pipeline
//! ([`crate::pipeline`]), which does the work and keeps the promises.
//!
//! The usage job needs the registration token from the entitlements job; until the license is
//! registered it fails as *unavailable* and is retried with backoff. The archival job needs
//! only the JPD. Progress goes to a bar when stderr is a terminal (`jfconnect jobs run`), and to
//! log lines otherwise.

use super::scheduler::Job;
use super::{JobError, JobName, JobReport};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::entitlements::EntitlementsStore;
use crate::jpd::Jpd;
use crate::pipeline::{
    archive_uploaded_with, console_progress, upload_pending_with, RunOptions, UsageLedger,
};
use crate::transport::{ErrorClass, Transport};
use std::sync::Arc;
use std::time::Duration;

/// Uploads pending usage files to JCS.
pub(crate) struct UsageTask {
    /// The configuration.
    pub config: Arc<Config>,
    /// JCS (or the bundle outbox).
    pub transport: Arc<dyn Transport>,
    /// Where the registration token is.
    pub store: Arc<EntitlementsStore>,
    /// This JPD's id.
    pub jpd_id: String,
    /// The pipeline's clock.
    pub clock: SharedClock,
    /// The shared usage ledger in database mode (`None`: the data folder's).
    pub ledger: Option<Arc<dyn UsageLedger>>,
}

#[async_trait::async_trait]
impl Job for UsageTask {
    fn name(&self) -> JobName {
        JobName::Usage
    }
    fn interval(&self) -> Duration {
        self.config.usage.interval
    }
    async fn run(&self) -> Result<JobReport, JobError> {
        let token = self
            .store
            .snapshot()
            .registration
            .map(|r| r.token)
            .ok_or_else(|| JobError {
                class: ErrorClass::Unavailable,
                message: super::NOT_REGISTERED.into(),
            })?;
        let progress = console_progress(self.clock.clone());
        let opts = RunOptions::from_config(&self.config, self.clock.clone())
            .with_ledger(self.ledger.clone());
        let out = upload_pending_with(
            &self.config,
            self.transport.as_ref(),
            &self.jpd_id,
            &token,
            progress.as_ref(),
            &opts,
        )
        .await?;
        Ok(JobReport {
            summary: out.summary(),
        })
    }
}

/// Archives uploaded usage files into the JPD and deletes the originals.
pub(crate) struct ArchivalTask {
    /// The configuration.
    pub config: Arc<Config>,
    /// The JPD.
    pub jpd: Arc<dyn Jpd>,
    /// The pipeline's clock.
    pub clock: SharedClock,
    /// The shared usage ledger in database mode (`None`: the data folder's).
    pub ledger: Option<Arc<dyn UsageLedger>>,
}

#[async_trait::async_trait]
impl Job for ArchivalTask {
    fn name(&self) -> JobName {
        JobName::Archival
    }
    fn interval(&self) -> Duration {
        self.config.archival.interval
    }
    async fn run(&self) -> Result<JobReport, JobError> {
        let progress = console_progress(self.clock.clone());
        let opts = RunOptions::from_config(&self.config, self.clock.clone())
            .with_ledger(self.ledger.clone());
        let out = archive_uploaded_with(&self.config, self.jpd.as_ref(), progress.as_ref(), &opts)
            .await?;
        Ok(JobReport {
            summary: out.summary(),
        })
    }
}

/// The usage and archival jobs for `config`, sending usage through `transport` and archives
/// to `jpd`, keeping per-file state in `ledger` (`None`: the data folder's ledger).
pub(crate) fn pipeline_jobs(
    config: &Config,
    transport: Arc<dyn Transport>,
    store: Arc<EntitlementsStore>,
    jpd_id: &str,
    jpd: Arc<dyn Jpd>,
    clock: SharedClock,
    ledger: Option<Arc<dyn UsageLedger>>,
) -> Vec<Arc<dyn Job>> {
    let config = Arc::new(config.clone());
    vec![
        Arc::new(UsageTask {
            config: config.clone(),
            transport,
            store,
            jpd_id: jpd_id.to_string(),
            clock: clock.clone(),
            ledger: ledger.clone(),
        }),
        Arc::new(ArchivalTask {
            config,
            jpd,
            clock,
            ledger,
        }),
    ]
}

impl From<crate::pipeline::PipelineError> for JobError {
    fn from(e: crate::pipeline::PipelineError) -> Self {
        JobError {
            class: e.class(),
            message: e.to_string(),
        }
    }
}
