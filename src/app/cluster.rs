//! Database mode (`shared.database` set): this node joins the JPD's cluster before the app is
//! built, and the pieces built from the config are wired to it.
//!
//! - Identity: the data folder's JPD id, signing key pair and generated API token are offered
//!   to the database; the first node's win and are written back into every node's data folder,
//!   so everything that reads those files (bundles, the API) uses the one identity of the JPD.
//!   A data folder of a former single node whose database is empty is thereby imported once,
//!   registration and entitlements included, and the node does not register again.
//! - The entitlements job runs only on the node holding its lease ([`LeasedJob`]); its result
//!   is written to the shared store with the lease's epoch, and a refused write steps it down.
//! - Every node copies the shared entitlements into its local store as they change (LISTEN,
//!   with polling), so it serves them within a second and keeps the last good copy on disk and
//!   in memory while the database is away.

use super::AppError;
use crate::config::Config;
use crate::entitlements::{EntitlementsState, EntitlementsStore};
use crate::ha::cluster::{Cluster, ClusterError, ClusterOptions, ClusterView};
use crate::ha::db::{Db, DbError};
use crate::ha::lease::{Fence, LeaseTiming};
use crate::ha::nodes::NodeUsage;
use crate::ha::sealing::MasterKey;
use crate::ha::store::{entitlements_digest, Identity, PgStore, TokenScope};
use crate::jobs::scheduler::{Job, JobLeases, Scheduler};
use crate::jobs::{JobError, JobName, JobReport};
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// The job whose lease decides who talks to JES.
pub(crate) const ENTITLEMENTS_JOB: JobName = JobName::Entitlements;

/// How often a node polls the shared entitlements besides LISTEN.
const POLL_EVERY: Duration = Duration::from_secs(1);

fn db_error(e: impl std::fmt::Display) -> AppError {
    AppError::Cluster(e.to_string())
}

/// This node's place in the cluster: joined, or still trying because the database did not
/// answer when `serve` started. Until it joins, the node serves the last good entitlements its
/// data folder holds, readiness says "degraded" with the reason, and it runs no leased job.
pub struct Membership {
    store: PgStore,
    config: Config,
    address: Option<String>,
    joined: std::sync::OnceLock<Arc<Cluster>>,
    waiting: std::sync::Mutex<Option<String>>,
}

impl JobLeases for Membership {
    fn leased(&self, job: JobName) -> bool {
        job == ENTITLEMENTS_JOB
    }

    fn watch(&self, job: JobName) -> Option<tokio::sync::watch::Receiver<Option<Fence>>> {
        Some(self.cluster()?.lease(job.as_str())?.subscribe())
    }

    fn step_down(&self, job: JobName) {
        if let Some(l) = self.cluster().and_then(|c| c.lease(job.as_str())) {
            l.step_down();
        }
    }
}

/// The leases of a process that takes no part in them (a one-off command in database mode):
/// it reads the JPD's schedule of a leased job and never runs or writes it.
pub(crate) struct NoLeases;

impl JobLeases for NoLeases {
    fn leased(&self, job: JobName) -> bool {
        job == ENTITLEMENTS_JOB
    }

    fn watch(&self, _job: JobName) -> Option<tokio::sync::watch::Receiver<Option<Fence>>> {
        None
    }

    fn step_down(&self, _job: JobName) {}
}

/// Why a join attempt failed: the database is away (keep trying), or it refused (a sentence
/// to act on).
enum JoinError {
    Away(String),
    Refused(AppError),
}

/// First wait between two join attempts, doubled up to [`MAX_JOIN_BACKOFF`].
const JOIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(5);

impl Membership {
    /// The cluster, once joined.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.joined.get()
    }

    /// The shared store (usable before the node joined: an import goes straight to it).
    pub(crate) fn store(&self) -> &PgStore {
        &self.store
    }

    /// Why the node has not joined yet; `None` once joined.
    pub fn waiting(&self) -> Option<String> {
        if self.joined.get().is_some() {
            return None;
        }
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One attempt: migrate, join, adopt the JPD's identity. Answers whether the data folder's
    /// identity was replaced.
    async fn try_join(&self) -> Result<bool, JoinError> {
        let config = &self.config;
        let cluster = Cluster::start(
            self.store.clone(),
            ClusterOptions {
                address: self.address.clone(),
                timing: LeaseTiming {
                    ttl: config.ha.lease_ttl,
                    renew_every: config.ha.lease_renew,
                },
                jobs: vec![ENTITLEMENTS_JOB.as_str().to_string()],
                poll_every: POLL_EVERY,
            },
        )
        .await
        .map_err(|e| match e {
            ClusterError::Db(d) if d.is_unavailable() => JoinError::Away(d.to_string()),
            other => JoinError::Refused(db_error(other)),
        })?;
        match adopt_identity(config, &self.store).await {
            Ok(replaced) => {
                let _ = self.joined.set(Arc::new(cluster));
                Ok(replaced)
            }
            Err(e) => {
                // Leave, so the next attempt is not refused as a second process of this node.
                cluster.shutdown().await;
                Err(JoinError::Refused(e))
            }
        }
    }

    /// The cluster once joined: tries again with backoff (1 s doubling to 5 s) until it
    /// joins; `None` when `stop` turns true first.
    async fn until_joined(
        &self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Arc<Cluster>> {
        let mut backoff = JOIN_BACKOFF;
        loop {
            if let Some(c) = self.joined.get() {
                return Some(c.clone());
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return None,
            }
            backoff = (backoff * 2).min(MAX_JOIN_BACKOFF);
            let reason = match self.try_join().await {
                Ok(replaced) => {
                    if replaced {
                        tracing::error!("this node started before it could reach the shared database and its data folder held another identity than the JPD's; it now holds the JPD's id and tokens: restart this node to serve with them");
                    }
                    continue;
                }
                Err(JoinError::Away(reason)) => reason,
                Err(JoinError::Refused(e)) => e.to_string(),
            };
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.as_deref() != Some(reason.as_str()) {
                tracing::debug!(%reason, "cannot join the cluster yet; trying again");
                *waiting = Some(reason);
            }
        }
    }
}

/// Joins the cluster named by `config.shared` and brings the data folder's identity in line
/// with the JPD's. `None` when no database is configured (a single node, as before). When the
/// database is away, the node is not refused: it logs one line saying why, and `serve` keeps
/// trying in the background ([`run`]) while it serves its last good copy, degraded. A database
/// that refuses (login, master key, a node id in use) is an error, as before.
pub async fn join(
    config: &Config,
    address: Option<String>,
) -> Result<Option<Arc<Membership>>, AppError> {
    let Some(settings) = &config.shared.database.settings else {
        return Ok(None);
    };
    if settings.plaintext_password_in_file {
        tracing::warn!("shared.database.password is written in the configuration file; prefer password_file or JF_SHARED_DATABASE_PASSWORD");
    }
    let Some(store) = open_store(config)? else {
        return Ok(None);
    };
    let membership = Membership {
        store,
        config: config.clone(),
        address,
        joined: std::sync::OnceLock::new(),
        waiting: std::sync::Mutex::new(None),
    };
    match membership.try_join().await {
        Ok(_) => {}
        Err(JoinError::Away(reason)) => {
            tracing::warn!(%reason, "the shared database is unreachable, so this node starts degraded: it serves the last good entitlements its data folder holds and joins the cluster as soon as the database answers");
            *membership.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        }
        Err(JoinError::Refused(e)) => return Err(e),
    }
    Ok(Some(Arc::new(membership)))
}

/// The shared store named by `config.shared` (connecting lazily), without joining the
/// cluster: what `serve` joins with, and what a one-off command (`bundle import`) records its
/// import in. `None` without `shared.database`; refused without a master key.
pub fn open_store(config: &Config) -> Result<Option<PgStore>, AppError> {
    let Some(settings) = &config.shared.database.settings else {
        return Ok(None);
    };
    let key_file = config
        .shared
        .security
        .master_key_file
        .as_deref()
        .ok_or_else(|| {
            db_error("shared.security.masterKeyFile is required when shared.database is set")
        })?;
    let key = Arc::new(MasterKey::from_file(key_file).map_err(db_error)?);
    let node_id = &config.shared.node.id;
    let db = Db::new(settings, config.tls.ca_file.as_deref(), node_id).map_err(db_error)?;
    Ok(Some(PgStore::new(db, key, node_id)))
}

/// The cluster as `status` shows it: `None` without `shared.database`; else the database's URL
/// (no password) and the view, read through `joined` when this process takes part, else read
/// without joining (no migration, nothing written), or why it could not be read.
pub(crate) async fn status_view(
    config: &Config,
    joined: Option<&Cluster>,
) -> Option<(String, Result<ClusterView, String>)> {
    let settings = config.shared.database.settings.as_ref()?;
    let url = settings.display_url();
    let view = match joined {
        Some(c) => c.view().await.map_err(|e| e.to_string()),
        None => match Db::new(
            settings,
            config.tls.ca_file.as_deref(),
            &config.shared.node.id,
        ) {
            Ok(db) => crate::ha::cluster::peek(&db, &config.shared.node.id, config.ha.lease_ttl)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    Some((url, view))
}

/// Answers true when the data folder's JPD id or a token file was replaced by the JPD's.
async fn adopt_identity(config: &Config, store: &PgStore) -> Result<bool, AppError> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| AppError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let jpd_id = super::jpd_id(data_dir)?;
    let prefix = crate::transport::outbox::jpd_key_prefix(data_dir);
    let sk = crate::bundle::load_or_generate(&prefix).map_err(db_error)?;
    // A token this node generated (no token file configured) is the JPD's: offered, and
    // replaced by the JPD's when another node stored one first.
    let generated = |configured: bool, token: Secret| (!configured).then_some(token);
    let api_token = generated(config.api.token.is_some(), super::api_token(config)?);
    let admin_token = generated(
        config.api.admin_token.is_some(),
        super::admin_token(config)?,
    );
    let local = Identity {
        jpd_id,
        signing_public: sk.public().to_file_string(),
        signing_secret: Secret::new(sk.to_file_string()),
        api_token: api_token.clone(),
        admin_token: admin_token.clone(),
        // A former single node's license set through the API becomes the JPD's.
        license: api_license(config)?,
        origin: format!("data folder of node {}", store.node()),
        created_by: store.node().to_string(),
    };
    let (shared, created) = store.ensure_identity(&local).await.map_err(db_error)?;
    let entitlements = EntitlementsStore::open(&config.state_dir())?;
    if created {
        let state = entitlements.snapshot();
        if state != EntitlementsState::default() {
            let imported = store
                .import_entitlements_if_empty(&state)
                .await
                .map_err(db_error)?;
            if imported {
                tracing::info!("imported this data folder's registration and entitlements into the shared database");
            }
        }
        return Ok(false);
    }
    let mut replaced = shared.jpd_id != local.jpd_id;
    if replaced {
        tracing::info!(jpd_id = %shared.jpd_id, "adopting the JPD identity from the shared database");
    }
    let io = |path: std::path::PathBuf| move |source| AppError::DataDir { path, source };
    if let Some(license) = &shared.license {
        let (_, refused) = store.license_stamp().await.map_err(db_error)?;
        follow_jpd_license(config, license, refused.as_deref())?;
    }
    crate::state::adopt_jpd_id(data_dir, &shared.jpd_id)?;
    let sk = crate::bundle::SecretKey::parse(shared.signing_secret.expose()).map_err(db_error)?;
    crate::bundle::write_secret_key(&prefix.with_extension("key"), &sk).map_err(db_error)?;
    crate::bundle::write_public_key(&prefix.with_extension("pub"), &sk.public())
        .map_err(db_error)?;
    for (scope, mine, file) in [
        (TokenScope::Api, api_token, "api.token"),
        (TokenScope::Admin, admin_token, "admin.token"),
    ] {
        let Some(mine) = mine else { continue };
        let jpd = store.fill_token(scope, &mine).await.map_err(db_error)?;
        if jpd != mine {
            let path = data_dir.join(file);
            crate::state::write_private(&path, jpd.expose().as_bytes())
                .map_err(io(path.clone()))?;
            replaced = true;
        }
    }
    Ok(replaced)
}

/// This node's license set through the API (`license.api`), if any.
fn api_license(config: &Config) -> Result<Option<Secret>, AppError> {
    let path = config.data_dir.join(super::API_LICENSE_FILE);
    match Secret::from_file(&path) {
        Ok(s) if !s.is_empty() => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(AppError::DataDir {
            path,
            source: std::io::Error::other(e),
        }),
    }
}

/// Writes the JPD's license (set through the API on any node) into this node's `license.api`
/// when it holds another; true when it wrote. The license watcher then registers again.
fn keep_api_license(config: &Config, license: &Secret) -> Result<bool, AppError> {
    if api_license(config)?.as_ref() == Some(license) {
        return Ok(false);
    }
    let path = config.data_dir.join(super::API_LICENSE_FILE);
    crate::state::write_private(&path, license.expose().as_bytes())
        .map_err(|source| AppError::DataDir { path, source })?;
    tracing::info!("the license set through the API for this JPD is in effect on this node");
    Ok(true)
}

/// Brings this node's `license.api` in line with the JPD's license set through the API:
/// written when it differs, unless JES refused it (`refused` is its fingerprint); then a copy
/// this node holds is set aside (`license.api.refused`), as on the leaseholder, so this node
/// does not register it again when it takes the lease.
fn follow_jpd_license(
    config: &Config,
    license: &Secret,
    refused: Option<&str>,
) -> Result<(), AppError> {
    if refused != Some(license.fingerprint().as_str()) {
        return keep_api_license(config, license).map(|_| ());
    }
    if api_license(config)?.as_ref() == Some(license) {
        let aside = super::license_source(config)
            .set_aside_refused_api_key()
            .map_err(|source| AppError::DataDir {
                path: config.data_dir.join(super::API_LICENSE_FILE),
                source,
            })?;
        if let Some(aside) = aside {
            tracing::warn!(kept = %aside.display(), "JES refused the license set through the API for this JPD; this node set its copy aside too, so no node registers it again until a license is set anew");
        }
    }
    Ok(())
}

/// The entitlements job as run by a cluster node: only the leaseholder runs it, and what it
/// stored is written to the shared store with the lease's epoch.
pub(crate) struct LeasedJob {
    inner: Arc<dyn Job>,
    membership: Arc<Membership>,
    entitlements: Arc<EntitlementsStore>,
}

impl LeasedJob {
    /// Wraps `inner`.
    pub(crate) fn wrap(
        inner: Arc<dyn Job>,
        membership: Arc<Membership>,
        entitlements: Arc<EntitlementsStore>,
    ) -> Arc<dyn Job> {
        Arc::new(LeasedJob {
            inner,
            membership,
            entitlements,
        })
    }
}

#[async_trait::async_trait]
impl Job for LeasedJob {
    fn name(&self) -> JobName {
        self.inner.name()
    }
    fn interval(&self) -> Duration {
        self.inner.interval()
    }
    async fn run(&self) -> Result<JobReport, JobError> {
        let job = self.inner.name();
        let Some(cluster) = self.membership.cluster() else {
            return Ok(JobReport {
                summary: format!(
                    "this node has not joined the cluster yet (the shared database is away), so it does not run the {job} job; it serves its last good entitlements"
                ),
            });
        };
        let Some(fence) = cluster.fence(job.as_str()) else {
            return Ok(JobReport {
                summary: format!(
                    "another node holds the {job} lease and runs it; this node serves its results"
                ),
            });
        };
        let api_key = api_license(&self.membership.config).ok().flatten();
        let outcome = self.inner.run().await;
        if let (Err(e), Some(key)) = (&outcome, &api_key) {
            // JES refused the license set through the API and the job set it aside: so must
            // every other node, or the next leaseholder registers it again.
            let set_aside = api_license(&self.membership.config)
                .ok()
                .flatten()
                .is_none();
            if e.class == crate::remote::ErrorClass::Rejected && set_aside {
                if let Err(err) = cluster
                    .store()
                    .refuse_license(&fence, &key.fingerprint())
                    .await
                {
                    tracing::warn!(error = %err, "cannot record the refused license for the other nodes");
                }
            }
        }
        let state = self.entitlements.snapshot();
        match cluster.store().save_entitlements(&fence, &state).await {
            Ok(_) => outcome,
            Err(DbError::Fenced(f)) => {
                tracing::warn!(error = %f, "stepping down: another node took the lease while this one ran");
                if let Some(l) = cluster.lease(job.as_str()) {
                    l.step_down();
                }
                if let Ok(Some(shared)) = cluster.store().entitlements().await {
                    let _ = self.entitlements.update(|s| *s = shared.state.clone());
                }
                Err(JobError::local(f.to_string()))
            }
            Err(e) => Err(JobError {
                class: if e.is_unavailable() {
                    crate::remote::ErrorClass::Unavailable
                } else {
                    crate::remote::ErrorClass::Local
                },
                message: format!("the result could not be shared with the other nodes: {e}"),
            }),
        }
    }
}

/// Background work of a cluster node until `stop`: joins first when the database was away at
/// start (trying again with backoff), then copies shared entitlements changes into the
/// local store, reports the served digest, runs the entitlements job at once when this node
/// holds its lease and an import waits in the shared inbox (looked at when it takes the lease
/// too), and takes a license set through
/// the API on another node into its `license.api`: both at once on the database's
/// notification, and every [`FALLBACK_EVERY`] in case one was lost; and hands the node's usage
/// counters to the heartbeat every [`USAGE_COUNTS_EVERY`].
pub async fn run(
    membership: Arc<Membership>,
    config: Arc<Config>,
    entitlements: Arc<EntitlementsStore>,
    scheduler: Option<Arc<Scheduler>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(cluster) = membership.until_joined(&mut stop).await else {
        return;
    };
    let mut followed = cluster.followed();
    let mut lease = cluster
        .lease(ENTITLEMENTS_JOB.as_str())
        .map(|l| l.subscribe());
    let mut fallback = tokio::time::interval(FALLBACK_EVERY);
    fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pending = None;
    let mut license_stamp = None;
    let (mut imports_seen, mut license_seen) = (0, 0);
    let mut count_tick = tokio::time::interval(USAGE_COUNTS_EVERY);
    loop {
        let (mut imports, mut license) = (false, false);
        let lease_taken = async {
            let Some(l) = lease.as_mut() else {
                return std::future::pending().await;
            };
            if l.changed().await.is_err() {
                return std::future::pending().await;
            }
            l.borrow().is_some()
        };
        tokio::select! {
            _ = stop.changed() => return,
            r = followed.changed() => {
                if r.is_err() {
                    return;
                }
                let now = followed.borrow_and_update().clone();
                if let Some(shared) = now.current {
                    if entitlements.snapshot() != shared.state {
                        if let Err(e) = entitlements.update(|s| *s = shared.state.clone()) {
                            tracing::error!(error = %e, "cannot keep the shared entitlements in the local store");
                        }
                    }
                }
                imports = std::mem::replace(&mut imports_seen, now.imports) != now.imports;
                license = std::mem::replace(&mut license_seen, now.license) != now.license;
            }
            // An import may have waited for a leaseholder: look once this node is one.
            taken = lease_taken => imports = taken,
            _ = fallback.tick() => (imports, license) = (true, true),
            _ = count_tick.tick() => {
                let c = config.clone();
                if let Ok(counts) =
                    tokio::task::spawn_blocking(move || crate::pipeline::pipeline_counts(&c)).await
                {
                    cluster.set_usage(NodeUsage {
                        pending: counts.pending,
                        uploaded: counts.uploaded,
                        archived: counts.archived,
                        quarantined: counts.quarantined,
                    });
                }
            }
        }
        if imports {
            if let Some(s) = &scheduler {
                apply_pending_import(&cluster, s, &mut last_pending).await;
            }
        }
        if license {
            follow_license(&cluster, &config, &mut license_stamp).await;
        }
        cluster.set_served_digest(Some(entitlements_digest(&entitlements.snapshot())));
    }
}

/// How often a node looks for a waiting import and a new license without a notification.
const FALLBACK_EVERY: Duration = Duration::from_secs(30);

/// On the entitlements leaseholder: runs the job when the shared inbox holds an import not
/// applied yet, once per import (a failed run is retried by the scheduler, not at every look).
async fn apply_pending_import(cluster: &Cluster, scheduler: &Scheduler, last: &mut Option<String>) {
    if cluster.fence(ENTITLEMENTS_JOB.as_str()).is_none() {
        return;
    }
    match cluster
        .store()
        .pending_import(crate::transport::inbox::KIND)
        .await
    {
        Ok(Some(tag)) if last.as_ref() != Some(&tag) => {
            tracing::info!(%tag, "an imported entitlements bundle waits in the shared inbox; applying it");
            scheduler.trigger(ENTITLEMENTS_JOB);
            *last = Some(tag);
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read the shared import inbox"),
    }
}

/// Writes the JPD's license into this node's `license.api` when it was set (on any node) since
/// the last look, or sets this node's copy aside when JES refused it since; the license watcher
/// of `serve` then registers again if this node runs the entitlements job.
async fn follow_license(
    cluster: &Cluster,
    config: &Config,
    stamp: &mut Option<crate::ha::store::LicenseStamp>,
) {
    let store = cluster.store();
    let now = match store.license_stamp().await {
        Ok(now) => now,
        Err(e) => return tracing::debug!(error = %e, "cannot read when the license was set"),
    };
    if now.0.is_none() || Some(&now) == stamp.as_ref() {
        return;
    }
    let license = match store.identity().await {
        Ok(identity) => identity.and_then(|i| i.license),
        Err(e) => return tracing::debug!(error = %e, "cannot read the JPD's license"),
    };
    let refused = now.1.clone();
    match license
        .map(|l| follow_jpd_license(config, &l, refused.as_deref()))
        .transpose()
    {
        Ok(_) => *stamp = Some(now),
        Err(e) => tracing::error!(error = %e, "cannot keep the JPD's license on this node"),
    }
}

/// The JPD's outgoing bundle sequences in the shared database, for this node's outbox.
/// Usable before the node joined: a statement that cannot reach the database fails, and the
/// outbox writes nothing.
pub fn shared_sequence(store: &PgStore) -> Arc<dyn crate::transport::outbox::SharedSequence> {
    Arc::new(PgSequence {
        db: store.db().clone(),
        node: store.node().to_string(),
        rt: tokio::runtime::Handle::current(),
    })
}

struct PgSequence {
    db: Db,
    node: String,
    rt: tokio::runtime::Handle,
}

/// How long an outbox writer waits for the shared sequence.
const SEQUENCE_WAIT: Duration = Duration::from_secs(30);

impl crate::transport::outbox::SharedSequence for PgSequence {
    fn next(&self, kind: crate::bundle::Kind, local_last: u64) -> Result<u64, String> {
        // Called on a blocking thread: the statement runs on the runtime and this thread waits.
        let (tx, rx) = std::sync::mpsc::channel();
        let (db, node, kind) = (self.db.clone(), self.node.clone(), kind.to_string());
        self.rt.spawn(async move {
            let _ = tx.send(crate::ha::sequences::next(&db, &node, &kind, local_last).await);
        });
        match rx.recv_timeout(SEQUENCE_WAIT) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "the database gave no answer within {} s",
                SEQUENCE_WAIT.as_secs()
            )),
        }
    }
}

/// How often a node reads its usage counters for the cluster view.
const USAGE_COUNTS_EVERY: Duration = Duration::from_secs(2);
