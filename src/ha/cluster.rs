//! One node's part in the cluster: it migrates the schema, joins under its node id, heartbeats
//! (reporting the digest of the entitlements it serves), keeps the leases of its jobs and follows
//! the shared entitlements. [`ClusterView`] is what `GET /api/v1/cluster`, `status` and
//! `/metrics` show.

use super::db::DbError;
use super::keeper::{self, LeaseHandle};
use super::lease::{self, Fence, LeaseTiming, LeaseView};
use super::migrate;
use super::nodes::{self, Member, MembershipError, NodeUsage, NodeView};
use super::store::PgStore;
use super::watch::{self, Followed};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a node takes part.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where this node's API listens (shown to the others).
    pub address: Option<String>,
    /// Lease TTL and renewal; heartbeats use the renewal interval, and a node whose heartbeat is
    /// older than the TTL counts as gone.
    pub timing: LeaseTiming,
    /// Jobs whose lease this node competes for.
    pub jobs: Vec<String>,
    /// How often the entitlements version is polled besides LISTEN.
    pub poll_every: Duration,
}

/// Why a node cannot take part.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database failed or refused.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The node id is in use.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    /// The node answering.
    pub node_id: String,
    /// Every node, with the age of its heartbeat and the digest it serves.
    pub nodes: Vec<NodeView>,
    /// Every lease: holder and epoch.
    pub leases: Vec<LeaseView>,
    /// Nodes whose heartbeat is younger than the lease TTL.
    pub live_nodes: usize,
    /// True when every live node serves the same entitlements digest.
    pub entitlements_digest_consistent: bool,
}

impl ClusterView {
    /// Builds the view: a node is live when its heartbeat is younger than `ttl`.
    pub fn new(node_id: &str, nodes: Vec<NodeView>, leases: Vec<LeaseView>, ttl: Duration) -> Self {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let live: Vec<&NodeView> = nodes
            .iter()
            .filter(|n| n.heartbeat_age_ms < ttl_ms)
            .collect();
        let first = live.first().and_then(|n| n.entitlements_digest.clone());
        let consistent = first.is_some() && live.iter().all(|n| n.entitlements_digest == first);
        ClusterView {
            node_id: node_id.to_string(),
            live_nodes: live.len(),
            entitlements_digest_consistent: consistent,
            nodes,
            leases,
        }
    }

    /// The node holding `job`'s live lease.
    pub fn holder(&self, job: &str) -> Option<&LeaseView> {
        self.leases
            .iter()
            .find(|l| l.job == job && l.expires_in_ms > 0)
    }
}

/// The cluster as read by a process that takes no part in it (`jfconnect status`): no
/// migration, no join, nothing written.
pub(crate) async fn peek(
    db: &super::db::Db,
    node_id: &str,
    ttl: Duration,
) -> Result<ClusterView, DbError> {
    Ok(ClusterView::new(
        node_id,
        nodes::nodes(db).await?,
        lease::leases(db).await?,
        ttl,
    ))
}

/// A running member of the cluster.
pub struct Cluster {
    store: PgStore,
    member: Member,
    timing: LeaseTiming,
    leases: BTreeMap<String, LeaseHandle>,
    followed: tokio::sync::watch::Receiver<Followed>,
    served_digest: Arc<Mutex<Option<String>>>,
    usage: Arc<Mutex<Option<NodeUsage>>>,
    stop: tokio::sync::watch::Sender<bool>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Cluster {
    /// Migrates, joins (refused when another running process has this node id), then starts
    /// heartbeats, lease keepers and the entitlements follower.
    pub async fn start(store: PgStore, opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        migrate::migrate(store.db()).await?;
        let member = Member::new(store.node());
        nodes::join(
            store.db(),
            &member,
            opts.address.as_deref(),
            opts.timing.ttl,
        )
        .await??;
        tracing::info!(node = %member.node_id, "joined the cluster");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let served_digest = Arc::new(Mutex::new(None));
        let usage = Arc::new(Mutex::new(None));
        let heartbeat = tokio::spawn(heartbeat_loop(
            store.clone(),
            member.clone(),
            opts.timing.renew_every,
            (served_digest.clone(), usage.clone()),
            stop_rx.clone(),
        ));
        let leases = opts
            .jobs
            .iter()
            .map(|job| {
                (
                    job.clone(),
                    keeper::keep(store.db().clone(), job, &member.node_id, opts.timing),
                )
            })
            .collect();
        let followed = watch::follow(store.clone(), opts.poll_every, stop_rx);
        Ok(Cluster {
            store,
            member,
            timing: opts.timing,
            leases,
            followed,
            served_digest,
            usage,
            stop,
            heartbeat: Mutex::new(Some(heartbeat)),
        })
    }

    /// The store.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// This process's membership (what the usage ledger's claims are fenced with).
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.member.node_id
    }

    /// The lease this node holds for `job` now, if any.
    pub fn fence(&self, job: &str) -> Option<Fence> {
        self.leases.get(job).and_then(|l| l.current())
    }

    /// The keeper of `job`'s lease.
    pub fn lease(&self, job: &str) -> Option<&LeaseHandle> {
        self.leases.get(job)
    }

    /// The shared entitlements as followed.
    pub fn followed(&self) -> tokio::sync::watch::Receiver<Followed> {
        self.followed.clone()
    }

    /// Records the digest of what this node serves (sent with the next heartbeat).
    pub fn set_served_digest(&self, digest: Option<String>) {
        *self.served_digest.lock().unwrap_or_else(|e| e.into_inner()) = digest;
    }

    /// Records this node's usage counters (sent with the next heartbeat).
    pub fn set_usage(&self, usage: NodeUsage) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
    }

    /// The cluster as seen now.
    pub async fn view(&self) -> Result<ClusterView, DbError> {
        let db = self.store.db();
        Ok(ClusterView::new(
            &self.member.node_id,
            nodes::nodes(db).await?,
            lease::leases(db).await?,
            self.timing.ttl,
        ))
    }

    /// Stops, releases the leases and leaves, so the others take over at once.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        for l in self.leases.values() {
            l.shutdown().await;
        }
        let heartbeat = self
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = heartbeat {
            let _ = h.await;
        }
        if let Err(e) = nodes::leave(self.store.db(), &self.member).await {
            tracing::warn!(error = %e, "could not leave the cluster; the node row goes stale on its own");
        }
    }
}

/// What the heartbeat reports besides being alive: the served digest and the usage counters.
type Reported = (Arc<Mutex<Option<String>>>, Arc<Mutex<Option<NodeUsage>>>);

async fn heartbeat_loop(
    store: PgStore,
    member: Member,
    every: Duration,
    (digest, usage): Reported,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let d = digest.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let u = *usage.lock().unwrap_or_else(|e| e.into_inner());
        match nodes::heartbeat(store.db(), &member, d.as_deref(), u.as_ref()).await {
            Ok(Ok(())) => failing = false,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "this node's id was taken over; stop this process or give it another shared.node.id");
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot send the heartbeat; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, age: i64, digest: Option<&str>) -> NodeView {
        NodeView {
            node_id: id.into(),
            heartbeat_age_ms: age,
            address: None,
            entitlements_digest: digest.map(String::from),
            usage: None,
        }
    }

    #[test]
    fn digests_are_consistent_only_when_every_live_node_serves_the_same() {
        let ttl = Duration::from_secs(15);
        let same = ClusterView::new(
            "a",
            vec![node("a", 10, Some("d")), node("b", 20, Some("d"))],
            vec![],
            ttl,
        );
        assert!(same.entitlements_digest_consistent);
        assert_eq!(same.live_nodes, 2);
        let differ = ClusterView::new(
            "a",
            vec![node("a", 10, Some("d")), node("b", 20, Some("e"))],
            vec![],
            ttl,
        );
        assert!(!differ.entitlements_digest_consistent);
        let unknown = ClusterView::new(
            "a",
            vec![node("a", 10, Some("d")), node("b", 20, None)],
            vec![],
            ttl,
        );
        assert!(!unknown.entitlements_digest_consistent);
        // A node gone silent does not count, whatever it served.
        let stale = ClusterView::new(
            "a",
            vec![node("a", 10, Some("d")), node("b", 60_000, Some("e"))],
            vec![],
            ttl,
        );
        assert!(stale.entitlements_digest_consistent);
        assert_eq!(stale.live_nodes, 1);
        assert!(!ClusterView::new("a", vec![], vec![], ttl).entitlements_digest_consistent);
    }

    #[test]
    fn only_a_live_lease_names_a_holder() {
        let lease = |job: &str, ms| LeaseView {
            job: job.into(),
            holder: "b".into(),
            epoch: 3,
            expires_in_ms: ms,
        };
        let v = ClusterView::new(
            "a",
            vec![],
            vec![lease("entitlements", 4000), lease("usage", -5)],
            Duration::from_secs(15),
        );
        assert_eq!(
            v.holder("entitlements").map(|l| l.holder.as_str()),
            Some("b")
        );
        assert!(v.holder("usage").is_none());
        assert!(v.holder("archival").is_none());
    }
}
