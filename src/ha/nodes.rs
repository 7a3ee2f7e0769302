//! Node membership: each running jfconnect has one row, refreshed by its heartbeat.
//!
//! A node joins under its `shared.node.id` with a random instance id of its own process. A row
//! with the same node id but another instance whose heartbeat is fresh means another jfconnect
//! runs under that name: the join is refused with a sentence, never silently shared. A stale row
//! (the previous run of this node crashed) is taken over.

use super::db::{Db, DbError};
use std::time::Duration;

/// A node as seen by `GET /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    /// `shared.node.id`.
    pub node_id: String,
    /// Milliseconds since its last heartbeat (database time).
    pub heartbeat_age_ms: i64,
    /// Where its HTTP API listens, as it reported.
    pub address: Option<String>,
    /// Digest of the entitlements it serves.
    pub entitlements_digest: Option<String>,
    /// Its usage counters as of its last heartbeat.
    pub usage: Option<NodeUsage>,
}

/// A node's usage counters, sent with its heartbeat (shown by `GET /api/v1/cluster`, `status`
/// and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeUsage {
    /// Valid files in the node's spool not yet acknowledged (as of its last run).
    pub pending: u64,
    /// Acknowledged, not yet archived (as of its last run).
    pub uploaded: u64,
    /// Archived (and deleted) by this node.
    pub archived: u64,
    /// In the node's quarantine.
    pub quarantined: u64,
}

/// Why a node may not (or may no longer) use its node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Another running jfconnect uses the id.
    #[error("node id {node_id} is already used by another running jfconnect (its last heartbeat was {age_ms} ms ago); give every node its own shared.node.id")]
    DuplicateNodeId {
        /// The id.
        node_id: String,
        /// Age of the other process's heartbeat.
        age_ms: i64,
    },
    /// This node's row was taken over by another process while this one was paused.
    #[error("node id {node_id} was taken over by another jfconnect process while this one was not heartbeating")]
    TakenOver {
        /// The id.
        node_id: String,
    },
}

/// This process's membership.
#[derive(Debug, Clone)]
pub struct Member {
    /// `shared.node.id`.
    pub node_id: String,
    /// Random id of this process.
    pub instance_id: String,
}

impl Member {
    /// A membership for `node_id` with a fresh random instance id.
    pub fn new(node_id: &str) -> Member {
        use rand::Rng;
        let bytes: [u8; 16] = rand::thread_rng().gen();
        Member {
            node_id: node_id.to_string(),
            instance_id: hex::encode(bytes),
        }
    }
}

/// Joins the cluster; refused while another process heartbeats under the same node id within
/// `stale_after`.
pub async fn join(
    db: &Db,
    me: &Member,
    address: Option<&str>,
    stale_after: Duration,
) -> Result<Result<(), MembershipError>, DbError> {
    let client = db.client().await?;
    let stale_secs = stale_after.as_secs_f64();
    let joined = client
        .query_opt(
            "INSERT INTO jfconnect.nodes AS n (node_id, instance_id, started_at, heartbeat_at, address)
             VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3)
             ON CONFLICT (node_id) DO UPDATE SET
                 instance_id = EXCLUDED.instance_id, started_at = EXCLUDED.started_at,
                 heartbeat_at = EXCLUDED.heartbeat_at, address = EXCLUDED.address,
                 entitlements_digest = NULL
             WHERE n.instance_id = EXCLUDED.instance_id
                OR n.heartbeat_at < clock_timestamp() - make_interval(secs => $4)
             RETURNING node_id",
            &[&me.node_id, &me.instance_id, &address, &stale_secs],
        )
        .await
        .map_err(|e| db.fail("join the cluster", e))?;
    if joined.is_some() {
        return Ok(Ok(()));
    }
    let age_ms: i64 = client
        .query_opt(
            "SELECT (extract(epoch FROM (clock_timestamp() - heartbeat_at)) * 1000)::bigint
             FROM jfconnect.nodes WHERE node_id = $1",
            &[&me.node_id],
        )
        .await
        .map_err(|e| db.fail("read a node", e))?
        .map_or(0, |r| r.get(0));
    Ok(Err(MembershipError::DuplicateNodeId {
        node_id: me.node_id.clone(),
        age_ms,
    }))
}

/// Refreshes this node's heartbeat, the digest of what it serves and its usage counters.
pub async fn heartbeat(
    db: &Db,
    me: &Member,
    entitlements_digest: Option<&str>,
    usage: Option<&NodeUsage>,
) -> Result<Result<(), MembershipError>, DbError> {
    let client = db.client().await?;
    let usage = usage.and_then(|u| serde_json::to_value(u).ok());
    let n = client
        .execute(
            "UPDATE jfconnect.nodes SET heartbeat_at = clock_timestamp(), entitlements_digest = $3,
                 usage_counts = coalesce($4, usage_counts)
             WHERE node_id = $1 AND instance_id = $2",
            &[&me.node_id, &me.instance_id, &entitlements_digest, &usage],
        )
        .await
        .map_err(|e| db.fail("send a heartbeat", e))?;
    Ok(if n == 1 {
        Ok(())
    } else {
        Err(MembershipError::TakenOver {
            node_id: me.node_id.clone(),
        })
    })
}

/// Leaves the cluster (clean shutdown).
pub async fn leave(db: &Db, me: &Member) -> Result<(), DbError> {
    let client = db.client().await?;
    client
        .execute(
            "DELETE FROM jfconnect.nodes WHERE node_id = $1 AND instance_id = $2",
            &[&me.node_id, &me.instance_id],
        )
        .await
        .map_err(|e| db.fail("leave the cluster", e))?;
    Ok(())
}

/// Every node with the age of its heartbeat.
pub async fn nodes(db: &Db) -> Result<Vec<NodeView>, DbError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT node_id,
                    (extract(epoch FROM (clock_timestamp() - heartbeat_at)) * 1000)::bigint,
                    address, entitlements_digest, usage_counts
             FROM jfconnect.nodes ORDER BY node_id",
            &[],
        )
        .await
        .map_err(|e| db.fail("read the nodes", e))?;
    Ok(rows
        .iter()
        .map(|r| NodeView {
            node_id: r.get(0),
            heartbeat_age_ms: r.get(1),
            address: r.get(2),
            entitlements_digest: r.get(3),
            usage: r
                .get::<_, Option<serde_json::Value>>(4)
                .and_then(|v| serde_json::from_value(v).ok()),
        })
        .collect())
}
