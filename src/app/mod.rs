//! The application: builds every part from a `Config` and wires them together.
//!
//! This is the one place that picks the transport (online or air-gapped) and the JPD client by
//! mode; everything below receives a trait object. [`crate::server::serve`] runs what is built
//! here.

mod airgap;
mod serve_lock;

pub(crate) use serve_lock::ServeLock;
pub mod cluster;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::entitlements::feed::{EntitlementsFeed, Source};
use crate::entitlements::{EntitlementsStore, LicenseSource};
use crate::jobs::entitlements::EntitlementsJob;
use crate::jobs::schedule::Backoff;
use crate::jobs::scheduler::{Job, Scheduler};
use crate::jobs::{JobError, JobName, JobReport};
use crate::secret::Secret;
use crate::state::{self, StateError};
use crate::transport::airgapped::AirGappedTransport;
use crate::transport::inbox::Inbox;
use crate::transport::online::OnlineTransport;
use crate::transport::outbox::Outbox;
use crate::transport::Transport;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors that stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The data folder or a file in it could not be used.
    #[error("cannot use the data folder {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The two scopes would be one: the admin token equals the API token.
    #[error("the admin token in {0} is the same as the API token; give the admin scope its own token (jfconnect.api.admin_token_file)")]
    SameTokens(PathBuf),
    /// The log folder (the audit log's) cannot be written.
    #[error(transparent)]
    Log(#[from] crate::logging::LogError),
    /// A state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The outbound HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::http::ClientError),
    /// The shared database could not be used (database mode).
    #[error("{0}")]
    Cluster(String),
    /// The HTTP server failed.
    #[error("the HTTP API failed: {0}")]
    Server(std::io::Error),
}

/// The built application: every part a mode needs, made once from a `Config`. Read through
/// its methods; what it holds is decided here and nowhere else.
pub struct App {
    config: Arc<Config>,
    jpd_id: String,
    api_token: Option<Secret>,
    admin_token: Option<Secret>,
    audit: Arc<crate::logging::AuditLog>,
    clock: SharedClock,
    entitlements: Arc<EntitlementsStore>,
    license: LicenseSource,
    scheduler: Option<Arc<Scheduler>>,
    store: Option<Arc<crate::store_proxy::StoreProxy>>,
    outbox: Option<Outbox>,
    inbox: Option<Inbox>,
    feed: Arc<EntitlementsFeed>,
    membership: Option<Arc<cluster::Membership>>,
}

impl App {
    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }
    /// This JPD's id.
    pub fn jpd_id(&self) -> &str {
        &self.jpd_id
    }
    /// The token products must present.
    /// `None` in a one-off command on a data folder that has none yet: only `serve` (and the
    /// demo, which serves) makes one, so a command that only reads never writes a token.
    pub fn api_token(&self) -> Option<&Secret> {
        self.api_token.as_ref()
    }
    /// The token that may also change state (`api.admin_token_file`); `None` as for
    /// [`App::api_token`].
    pub fn admin_token(&self) -> Option<&Secret> {
        self.admin_token.as_ref()
    }
    /// The audit log of state changes made through the API.
    pub(crate) fn audit_log(&self) -> &Arc<crate::logging::AuditLog> {
        &self.audit
    }
    /// Time.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }
    /// Registration and entitlements.
    pub fn entitlements(&self) -> &Arc<EntitlementsStore> {
        &self.entitlements
    }
    /// The entitlements as products see them (HTTP watch, gRPC).
    pub fn feed(&self) -> &Arc<EntitlementsFeed> {
        &self.feed
    }
    /// Where the license is read from.
    pub fn license(&self) -> &LicenseSource {
        &self.license
    }
    /// The jobs; `None` when the service is disabled.
    pub fn scheduler(&self) -> Option<&Arc<Scheduler>> {
        self.scheduler.as_ref()
    }
    /// This node's part in the cluster; `None` without `shared.database`, or while the node
    /// has not joined yet (the database was away at start: [`App::cluster_waiting`]).
    pub fn cluster(&self) -> Option<&Arc<crate::ha::cluster::Cluster>> {
        self.membership.as_ref().and_then(|m| m.cluster())
    }
    /// This node's membership in database mode (joined or still trying).
    pub fn membership(&self) -> Option<&Arc<cluster::Membership>> {
        self.membership.as_ref()
    }
    /// Why this node has not joined its cluster yet (the database is away); `None` when it
    /// has, or without `shared.database`.
    pub fn cluster_waiting(&self) -> Option<String> {
        self.membership.as_ref().and_then(|m| m.waiting())
    }
    /// The JFrog Store proxy; `None` when `store.url` is not set.
    pub fn store(&self) -> Option<&Arc<crate::store_proxy::StoreProxy>> {
        self.store.as_ref()
    }
    /// Air-gapped, before the first import: the registration bundle waiting in the outbox to
    /// be carried to the vendor (its absolute path). `None` once entitlements are imported, in
    /// online mode, or when no registration bundle was written.
    pub(crate) fn registration_to_carry(&self) -> Option<std::path::PathBuf> {
        if !self.config.airgap.enabled || self.entitlements.snapshot().current.is_some() {
            return None;
        }
        let bundle = crate::transport::outbox::Outbox::from_config(&self.config, &self.jpd_id)
            .newest(crate::bundle::Kind::Registration)?;
        Some(std::path::absolute(&bundle).unwrap_or(bundle))
    }
}

/// The state store an import uses: the cluster's database when this node joined one; the
/// database too for a one-off command (`bundle import`) in database mode, so an import on any
/// node is seen by all; else the data folder.
fn state_store(
    config: &Config,
    access: Access,
    cluster_node: Option<&cluster::Membership>,
) -> Result<Arc<dyn crate::state::StateStore>, AppError> {
    Ok(match (cluster_node, access) {
        (Some(m), _) => Arc::new(m.store().clone()),
        (None, Access::ReadWrite) if config.shared.database.settings.is_some() => Arc::new(
            cluster::open_store(config)?
                .ok_or_else(|| AppError::Cluster("shared.database is not set".into()))?,
        ),
        _ => Arc::new(crate::state::FileStore::new(&config.data_dir)),
    })
}

/// The store the scheduler keeps the schedules in, and its leases (database mode).
type ScheduleStore = (
    Arc<dyn crate::state::StateStore>,
    Arc<dyn crate::jobs::scheduler::JobLeases>,
);

/// Where the scheduler keeps the schedules and which jobs it runs under a lease: a cluster
/// node's are in the database, with its leases; a one-off command in database mode reads the
/// database's and holds no lease (so it runs no leased job); a single node keeps
/// `state/schedule.json` (`None` here). `status` falls back to the data folder when the
/// database cannot even be named (no master key): its cluster row says what is wrong.
fn schedule_store(
    config: &Config,
    access: Access,
    cluster_node: Option<&Arc<cluster::Membership>>,
) -> Result<Option<ScheduleStore>, AppError> {
    if let Some(m) = cluster_node {
        return Ok(Some((Arc::new(m.store().clone()), m.clone())));
    }
    match cluster::open_store(config) {
        Ok(Some(store)) => Ok(Some((Arc::new(store), Arc::new(cluster::NoLeases)))),
        Ok(None) => Ok(None),
        Err(_) if matches!(access, Access::ReadOnly) => Ok(None),
        Err(e) => Err(e),
    }
}

impl App {
    /// Sets the license through the API (`PUT /api/v1/license`): in database mode stored
    /// first in the database, sealed, as the JPD's license (every node writes it into its own
    /// `license.api`, [`cluster::run`]); then in this node's `license.api` (mode 0600), never
    /// the admin's `license.file`. Answers the file.
    pub(crate) async fn set_api_license(&self, license: &Secret) -> Result<PathBuf, AppError> {
        let path = self.license.api_path.clone().ok_or_else(|| {
            AppError::Cluster("no place to store a license set through the API".into())
        })?;
        if let Some(c) = self.cluster() {
            c.store()
                .set_license(Some(license))
                .await
                .map_err(|e| AppError::Cluster(e.to_string()))?;
        }
        state::write_private(&path, license.expose().as_bytes()).map_err(|source| {
            AppError::DataDir {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }
}

/// Whether building may create what is missing in the data folder.
#[derive(Clone, Copy)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// What a read-only view shows before the first start made a JPD id.
pub(crate) const NO_JPD_ID: &str = "(not assigned yet)";

/// Reads `<data_dir>/jpd_id` (checked against its grammar and checksum, the checksum added
/// when missing), making one on first start.
pub fn jpd_id(data_dir: &Path) -> Result<String, AppError> {
    Ok(state::open_jpd_id(data_dir, || {
        format!("jpd-{}", hex::encode(rand::random::<[u8; 8]>()))
    })?)
}

/// Reads `<data_dir>/jpd_id` (checked) without writing anything; `None` when there is none yet.
fn existing_jpd_id(data_dir: &Path) -> Result<Option<String>, AppError> {
    Ok(state::read_jpd_id(data_dir)?)
}

/// A token file jfconnect makes when none is configured, for one scope.
struct TokenFile<'a> {
    /// The token from the config file's key, when set.
    configured: Option<&'a Secret>,
    /// `<data_dir>/api.token` or `<data_dir>/admin.token`.
    path: PathBuf,
    /// "an API token", "an admin token", for the log line.
    what: &'static str,
}

impl TokenFile<'_> {
    fn api(config: &Config) -> TokenFile<'_> {
        TokenFile {
            configured: config.api.token.as_ref(),
            path: config.data_dir.join("api.token"),
            what: "an API token (reads)",
        }
    }

    fn admin(config: &Config) -> TokenFile<'_> {
        TokenFile {
            configured: config.api.admin_token.as_ref(),
            path: config.data_dir.join("admin.token"),
            what: "an admin token (state changes)",
        }
    }

    /// The configured token, or the one made before; never makes one.
    fn existing(&self) -> Result<Option<Secret>, AppError> {
        if let Some(t) = self.configured {
            return Ok(Some(t.clone()));
        }
        match Secret::from_file(&self.path) {
            Ok(s) if !s.is_empty() => Ok(Some(s)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(AppError::DataDir {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// The configured token, the one made before, or a new one written 0600. Its path is
    /// logged, never its value.
    fn get_or_make(&self) -> Result<Secret, AppError> {
        if let Some(t) = self.existing()? {
            return Ok(t);
        }
        let token = hex::encode(rand::random::<[u8; 32]>());
        state::write_private(&self.path, token.as_bytes()).map_err(|source| AppError::DataDir {
            path: self.path.clone(),
            source,
        })?;
        tracing::info!(file = %self.path.display(), "generated {}; clients read it from this file", self.what);
        Ok(Secret::new(token))
    }
}

/// The API token (reads): from `api.token_file`, or `<data_dir>/api.token` made on first start
/// (mode 0600).
pub fn api_token(config: &Config) -> Result<Secret, AppError> {
    TokenFile::api(config).get_or_make()
}

/// The API token if one is configured or was made before; never makes one.
pub(crate) fn existing_api_token(config: &Config) -> Result<Option<Secret>, AppError> {
    TokenFile::api(config).existing()
}

/// The admin token (every state change): from `api.admin_token_file`, or
/// `<data_dir>/admin.token` made on first start (mode 0600).
pub fn admin_token(config: &Config) -> Result<Secret, AppError> {
    TokenFile::admin(config).get_or_make()
}

/// The admin token if one is configured or was made before; never makes one.
pub(crate) fn existing_admin_token(config: &Config) -> Result<Option<Secret>, AppError> {
    TokenFile::admin(config).existing()
}

/// Where `PUT /api/v1/license` keeps a key in the data folder.
const API_LICENSE_FILE: &str = "license.api";

/// The license file: the configured one, or `<data_dir>/license` (where `PUT /api/v1/license`
/// writes when none is configured).
pub(crate) fn license_source(config: &Config) -> LicenseSource {
    LicenseSource {
        api_path: Some(config.data_dir.join(API_LICENSE_FILE)),
        path: Some(
            config
                .license
                .file
                .clone()
                .unwrap_or_else(|| config.data_dir.join("license")),
        ),
    }
}

struct EntitlementsTask {
    job: EntitlementsJob,
    interval: Duration,
    warn_before: Duration,
    expiry_warning: crate::entitlements::expiry::DailyWarning,
}

impl EntitlementsTask {
    /// One WARN line per entitlement ending within `warn_before`, at most once a day.
    fn warn_of_expiry(&self) {
        let Some(current) = self.job.store.snapshot().current else {
            return;
        };
        let now = self.job.clock.now();
        let soon = crate::entitlements::expiry::ending_within(
            &current.entitlements,
            now,
            self.warn_before,
        );
        if soon.is_empty() || !self.expiry_warning.due(now) {
            return;
        }
        for end in soon {
            tracing::warn!(
                product = %end.product,
                feature = %end.feature,
                valid_until = %end.valid_until.to_rfc3339(),
                "entitlement ends in {} days; renew the subscription before then",
                (end.valid_until - now).num_days()
            );
        }
    }
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
        let outcome = self.job.run().await;
        self.warn_of_expiry();
        outcome
    }
}

/// The transport the configuration asks for.
pub fn transport(config: &Config) -> Result<Arc<dyn Transport>, AppError> {
    let outbound = crate::http::build(config)?;
    Ok(Arc::new(OnlineTransport::new(
        outbound,
        config.jes.url.clone(),
        config.jcs.url.clone(),
    )))
}

impl App {
    /// Builds the service. `transport` overrides the one the configuration asks for (tests);
    /// `restart` lifts rejected blocks (true for `serve`, false for one-off commands).
    pub fn build(
        config: Config,
        clock: SharedClock,
        transport_override: Option<Arc<dyn Transport>>,
        restart: bool,
    ) -> Result<App, AppError> {
        App::build_in_cluster(config, clock, transport_override, restart, None)
    }

    /// [`App::build`] for a cluster node ([`cluster::join`]; it may still be joining, when the
    /// database was away at start): the entitlements job runs only while this node holds its
    /// lease.
    pub fn build_in_cluster(
        config: Config,
        clock: SharedClock,
        transport_override: Option<Arc<dyn Transport>>,
        restart: bool,
        cluster_node: Option<Arc<cluster::Membership>>,
    ) -> Result<App, AppError> {
        App::assemble(
            config,
            clock,
            transport_override,
            restart,
            Access::ReadWrite,
            cluster_node,
        )
    }

    /// Opens what exists, for read-only commands (`status`): never creates the data folder, a
    /// JPD id or an API token; what is missing reads as "not yet".
    pub(crate) fn open_read_only(config: Config, clock: SharedClock) -> Result<App, AppError> {
        App::assemble(config, clock, None, false, Access::ReadOnly, None)
    }

    fn assemble(
        config: Config,
        clock: SharedClock,
        transport_override: Option<Arc<dyn Transport>>,
        restart: bool,
        access: Access,
        cluster_node: Option<Arc<cluster::Membership>>,
    ) -> Result<App, AppError> {
        let data_dir = config.data_dir.clone();
        let (jpd_id, api_token, admin_token) = match access {
            Access::ReadWrite => {
                std::fs::create_dir_all(&data_dir).map_err(|source| AppError::DataDir {
                    path: data_dir.clone(),
                    source,
                })?;
                let (token, admin) = if restart {
                    (Some(api_token(&config)?), Some(admin_token(&config)?))
                } else {
                    (existing_api_token(&config)?, existing_admin_token(&config)?)
                };
                // A one-off command (an import) leaves an existing id as it is; the service
                // adds a missing checksum beside it.
                let existing = if restart {
                    None
                } else {
                    existing_jpd_id(&data_dir)?
                };
                let id = match existing {
                    Some(id) => id,
                    None => jpd_id(&data_dir)?,
                };
                (id, token, admin)
            }
            Access::ReadOnly => (
                existing_jpd_id(&data_dir)?.unwrap_or_else(|| NO_JPD_ID.into()),
                existing_api_token(&config)?,
                existing_admin_token(&config)?,
            ),
        };
        if api_token.is_some() && api_token == admin_token {
            let admin = TokenFile::admin(&config);
            return Err(AppError::SameTokens(
                config.api.admin_token_file.clone().unwrap_or(admin.path),
            ));
        }
        let audit = Arc::new(crate::logging::AuditLog::new(
            config.audit_log_dir(),
            config.log.max_bytes,
            config.log.max_files,
        ));
        let entitlements = Arc::new(EntitlementsStore::open(&config.state_dir())?);
        let license = license_source(&config);
        let (outbox, inbox) = if config.airgap.enabled {
            (
                Some(
                    Outbox::from_config(&config, &jpd_id).with_shared_sequence(
                        cluster_node
                            .as_deref()
                            .map(|m| cluster::shared_sequence(m.store())),
                    ),
                ),
                Some(Inbox::new(state_store(
                    &config,
                    access,
                    cluster_node.as_deref(),
                )?)),
            )
        } else {
            (None, None)
        };
        let scheduler = if config.enabled {
            let transport: Arc<dyn Transport> = match (transport_override, &outbox, &inbox) {
                (Some(t), _, _) => t,
                (None, Some(outbox), Some(inbox)) => Arc::new(AirGappedTransport::new(
                    outbox.clone(),
                    inbox.clone(),
                    entitlements.clone(),
                    clock.clone(),
                )),
                _ => transport(&config)?,
            };
            let pipeline_jobs = crate::jobs::usage::pipeline_jobs(
                &config,
                transport.clone(),
                entitlements.clone(),
                &jpd_id,
                Arc::new(crate::jpd::online::OnlineJpd::new(&config)?),
                clock.clone(),
                cluster_node.as_ref().map(|m| {
                    let joined = m.clone();
                    Arc::new(crate::pipeline::SharedLedger::joining(
                        m.store().db().clone(),
                        m.store().node().to_string(),
                        Arc::new(move || joined.cluster().map(|c| c.member().clone())),
                        config.ha.lease_ttl,
                    )) as Arc<dyn crate::pipeline::UsageLedger>
                }),
            );
            let mut entitlements_task: Arc<dyn Job> = Arc::new(EntitlementsTask {
                job: EntitlementsJob {
                    transport,
                    store: entitlements.clone(),
                    license: license.clone(),
                    jpd_id: jpd_id.clone(),
                    clock: clock.clone(),
                },
                interval: config.entitlements.interval,
                warn_before: config.entitlements.warn_before,
                expiry_warning: Default::default(),
            });
            if let Some(c) = &cluster_node {
                entitlements_task =
                    cluster::LeasedJob::wrap(entitlements_task, c.clone(), entitlements.clone());
            }
            let jobs: Vec<Arc<dyn Job>> = vec![entitlements_task];
            let jobs: Vec<Arc<dyn Job>> = jobs.into_iter().chain(pipeline_jobs).collect();
            let backoff = Backoff {
                initial: config.retry.initial,
                max: config.retry.max,
            };
            Some(Arc::new(
                match schedule_store(&config, access, cluster_node.as_ref())? {
                    Some((schedules, leases)) => Scheduler::open_on(
                        schedules,
                        Some(leases),
                        &data_dir,
                        jobs,
                        clock.clone(),
                        backoff,
                        restart,
                    ),
                    None => Scheduler::open(&data_dir, jobs, clock.clone(), backoff, restart)?,
                },
            ))
        } else {
            None
        };
        let store = match &config.store.url {
            Some(url) if config.enabled => Some(Arc::new(crate::store_proxy::StoreProxy::new(
                crate::http::build_store_client(&config)?,
                url.clone(),
                config.http.request_timeout,
                clock.clone(),
            ))),
            _ => None,
        };
        let source = if config.airgap.enabled {
            Source::AirGapped
        } else {
            Source::Connected
        };
        let feed = Arc::new(EntitlementsFeed::new(
            entitlements.clone(),
            clock.clone(),
            &jpd_id,
            source,
            config.enabled,
        ));
        Ok(App {
            feed,
            membership: cluster_node,
            store,
            outbox,
            inbox,
            config: Arc::new(config),
            jpd_id,
            api_token,
            admin_token,
            audit,
            clock,
            entitlements,
            license,
            scheduler,
        })
    }
}
