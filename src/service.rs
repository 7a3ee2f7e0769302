//! The running service: builds the parts from the configuration and wires them together.
//!
//! `serve` takes an already-bound listener and a shutdown future (mini-redis style), so tests
//! bind `127.0.0.1:0` and read the real port back. The binary is a thin shell around it.

use crate::api;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::jobs::entitlements::{EntitlementsJob, EntitlementsStore, LicenseSource};
use crate::jobs::schedule::Backoff;
use crate::jobs::scheduler::{Job, Scheduler};
use crate::jobs::{JobError, JobName, JobReport};
use crate::secret::Secret;
use crate::state::{self, StateError};
use crate::transport::online::OnlineTransport;
use crate::transport::Transport;
use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Errors that stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The data folder or a file in it could not be used.
    #[error("cannot use the data folder {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The outbound HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::http::ClientError),
    /// The HTTP server failed.
    #[error("the HTTP API failed: {0}")]
    Server(std::io::Error),
}

/// Everything the API handlers and the jobs share.
pub struct Service {
    /// The configuration.
    pub config: Arc<Config>,
    /// This JPD's id.
    pub jpd_id: String,
    /// Token products must present.
    pub api_token: Secret,
    /// Time.
    pub clock: SharedClock,
    /// Registration and entitlements.
    pub entitlements: Arc<EntitlementsStore>,
    /// Where the license is read from.
    pub license: LicenseSource,
    /// The jobs; `None` when the service is disabled.
    pub scheduler: Option<Arc<Scheduler>>,
    /// The JFrog Store proxy; `None` when `store.url` is not set.
    pub store: Option<Arc<crate::store_proxy::StoreProxy>>,
    /// The last rendered entitlements answer.
    pub entitlements_body: crate::api::EntitlementsBody,
}

/// Reads `<data_dir>/jpd_id`, making one on first start.
pub fn jpd_id(data_dir: &Path) -> Result<String, ServiceError> {
    let path = data_dir.join("jpd_id");
    let err = |source| ServiceError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(err(std::io::Error::other("the file is empty"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("jpd-{}", hex::encode(rand::random::<[u8; 8]>()));
            state::write_atomic(&path, id.as_bytes()).map_err(err)?;
            Ok(id)
        }
        Err(e) => Err(err(e)),
    }
}

/// The API token: from `api.token_file`, or `<data_dir>/api.token` made on first start (mode
/// 0600). Its path is logged, never its value.
pub fn api_token(config: &Config) -> Result<Secret, ServiceError> {
    if let Some(t) = &config.api_token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join("api.token");
    let err = |source| ServiceError::DataDir {
        path: path.clone(),
        source,
    };
    let generate = || {
        let token = hex::encode(rand::random::<[u8; 32]>());
        state::write_private(&path, token.as_bytes()).map_err(err)?;
        tracing::info!(file = %path.display(), "generated an API token; products read it from this file");
        Ok(Secret::new(token))
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
        Ok(_) => generate(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(),
        Err(e) => Err(err(e)),
    }
}

/// The license file: the configured one, or `<data_dir>/license` (where `PUT /api/v1/license`
/// writes when none is configured).
pub fn license_source(config: &Config) -> LicenseSource {
    LicenseSource {
        path: Some(
            config
                .license_file
                .clone()
                .unwrap_or_else(|| config.data_dir.join("license")),
        ),
    }
}

struct EntitlementsTask {
    job: EntitlementsJob,
    interval: Duration,
}

#[async_trait::async_trait]
impl Job for EntitlementsTask {
    fn name(&self) -> JobName {
        JobName::Entitlements
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run(&self) -> Result<JobReport, JobError> {
        self.job.run().await
    }
}

/// The transport the configuration asks for.
pub fn transport(config: &Config) -> Result<Arc<dyn Transport>, ServiceError> {
    let outbound = crate::http::build(config)?;
    Ok(Arc::new(OnlineTransport::new(
        outbound,
        config.jes_url.clone(),
        config.jcs_url.clone(),
    )))
}

impl Service {
    /// Builds the service. `transport` overrides the one the configuration asks for (tests);
    /// `restart` lifts rejected blocks (true for `serve`, false for one-off commands).
    pub fn build(
        config: Config,
        clock: SharedClock,
        transport_override: Option<Arc<dyn Transport>>,
        restart: bool,
    ) -> Result<Service, ServiceError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| ServiceError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let jpd_id = jpd_id(&data_dir)?;
        let api_token = api_token(&config)?;
        let entitlements = Arc::new(EntitlementsStore::open(&config.state_dir())?);
        let license = license_source(&config);
        let scheduler = if config.enabled {
            let transport = match transport_override {
                Some(t) => t,
                None if config.airgap_enabled => Arc::new(crate::airgap::AirGappedTransport::new(
                    crate::airgap::Outbox::from_config(&config, &jpd_id),
                    entitlements.clone(),
                    clock.clone(),
                )),
                None => transport(&config)?,
            };
            let pipeline_jobs = crate::jobs::usage::pipeline_jobs(
                &config,
                transport.clone(),
                entitlements.clone(),
                &jpd_id,
            )?;
            let jobs: Vec<Arc<dyn Job>> = vec![Arc::new(EntitlementsTask {
                job: EntitlementsJob {
                    transport,
                    store: entitlements.clone(),
                    license: license.clone(),
                    jpd_id: jpd_id.clone(),
                    clock: clock.clone(),
                },
                interval: config.entitlements_interval,
            })];
            let jobs: Vec<Arc<dyn Job>> = jobs.into_iter().chain(pipeline_jobs).collect();
            let backoff = Backoff {
                initial: config.retry_initial,
                max: config.retry_max,
            };
            Some(Arc::new(Scheduler::open(
                &data_dir,
                jobs,
                clock.clone(),
                backoff,
                restart,
            )?))
        } else {
            None
        };
        let store = match &config.store_url {
            Some(url) if config.enabled => Some(Arc::new(crate::store_proxy::StoreProxy::new(
                crate::http::build_for_store(&config)?.client,
                url.clone(),
                config.request_timeout,
            ))),
            _ => None,
        };
        Ok(Service {
            store,
            entitlements_body: Default::default(),
            config: Arc::new(config),
            jpd_id,
            api_token,
            clock,
            entitlements,
            license,
            scheduler,
        })
    }
}

/// How long running jobs get to finish after a shutdown signal, and the HTTP server to drain.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Serves the API on `listener` and runs the jobs until `shutdown` completes; then stops
/// accepting, lets running jobs finish or checkpoint, and returns within ~10 s.
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    if let Some(s) = &service.scheduler {
        background.spawn(s.clone().run_forever(stop_rx.clone(), SHUTDOWN_GRACE));
        background.spawn(watch_license(service.clone(), stop_rx.clone()));
    } else {
        tracing::warn!("jfconnect is disabled (jfconnect.enabled: false): answering health checks only, running no job");
    }
    let app = api::router(service.clone());
    let mut server_stop = stop_rx.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|s| *s).await;
    })
    .into_future();
    tokio::pin!(server);
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut server => return r.map_err(ServiceError::Server),
        _ = &mut shutdown => {}
    }
    tracing::info!("shutting down: no new requests; letting running jobs finish or checkpoint");
    let _ = stop_tx.send(true);
    let drain = async {
        let _ = (&mut server).await;
        while background.join_next().await.is_some() {}
    };
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; stopping now");
    }
    Ok(())
}

/// How often the license file is checked for a change.
pub const LICENSE_POLL: Duration = Duration::from_secs(5);

async fn watch_license(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let Some(scheduler) = service.scheduler.clone() else {
        return;
    };
    let fingerprint = |s: &Service| s.license.read().ok().flatten().map(|l| l.fingerprint());
    let mut last = fingerprint(&service);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LICENSE_POLL) => {}
            _ = stop.changed() => return,
        }
        let now = fingerprint(&service);
        if now != last {
            last = now;
            tracing::info!("the license changed; registering again");
            if let Err(e) = scheduler.unblock(JobName::Entitlements) {
                tracing::error!(error = %e, "cannot reschedule the entitlements job");
            }
        }
    }
}
