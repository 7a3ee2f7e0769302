//! The cluster as this node sees it (database mode): `GET /api/v1/cluster`, the cluster part of
//! `/metrics`, and the answer to "run this job" on a node that does not hold its lease.

use super::{ApiError, ApiState};
use crate::ha::cluster::ClusterView;
use crate::jobs::JobName;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::fmt::Write;
use std::sync::Arc;

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        e.to_string(),
    )
}

/// `GET /api/v1/cluster`: nodes with heartbeat age and served digest, leaseholder and epoch
/// per job, and whether every live node serves the same entitlements.
pub async fn cluster(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let Some(c) = s.cluster() else {
        if let Some(reason) = s.cluster_waiting() {
            return Err(unavailable(format!(
                "this node has not joined the cluster yet: {reason}"
            )));
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this node runs alone: shared.database is not set",
        ));
    };
    let view = c.view().await.map_err(unavailable)?;
    Ok(Json(view).into_response())
}

/// `None` when `job` may run here now; otherwise the 409 naming the node that holds its lease.
pub(crate) async fn refuse_unless_holder(s: &ApiState, job: JobName) -> Option<ApiError> {
    let c = s.cluster()?;
    let keeper = c.lease(job.as_str())?;
    if keeper.current().is_some() {
        return None;
    }
    let holder = match c.view().await {
        Ok(v) => v
            .holder(job.as_str())
            .map(|l| format!("node {} (lease epoch {})", l.holder, l.epoch)),
        Err(_) => None,
    };
    Some(ApiError::new(
        StatusCode::CONFLICT,
        "not_leaseholder",
        match holder {
            Some(h) => format!("the {job} job runs on {h}; ask that node"),
            None => format!("no node holds the {job} lease right now; try again in a few seconds"),
        },
    ))
}

/// The cluster gauges appended to `/metrics` (nothing without a cluster).
pub async fn metrics(s: &ApiState) -> String {
    let Some(c) = s.cluster() else {
        return String::new();
    };
    match c.view().await {
        Ok(view) => render(&view, |job| c.fence(job).is_some()),
        Err(_) => String::new(),
    }
}

fn render(view: &ClusterView, held_here: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP jfconnect_cluster_nodes Nodes of this JPD with a fresh heartbeat.\n# TYPE jfconnect_cluster_nodes gauge\njfconnect_cluster_nodes {}", view.live_nodes);
    let _ = writeln!(out, "# HELP jfconnect_lease_held 1 when this node holds the job's lease.\n# TYPE jfconnect_lease_held gauge");
    for l in &view.leases {
        let _ = writeln!(
            out,
            "jfconnect_lease_held{{job=\"{}\"}} {}",
            l.job,
            u8::from(held_here(&l.job))
        );
    }
    let _ = writeln!(out, "# HELP jfconnect_cluster_usage_files Usage files of each node by state, as of its last heartbeat.\n# TYPE jfconnect_cluster_usage_files gauge");
    for n in &view.nodes {
        let Some(u) = n.usage else { continue };
        for (state, v) in [
            ("pending", u.pending),
            ("uploaded", u.uploaded),
            ("archived", u.archived),
            ("quarantined", u.quarantined),
        ] {
            let _ = writeln!(
                out,
                "jfconnect_cluster_usage_files{{node=\"{}\",state=\"{state}\"}} {v}",
                super::labels::escape_label(&n.node_id)
            );
        }
    }
    let _ = writeln!(out, "# HELP jfconnect_entitlements_digest_consistent 1 when every live node serves the same entitlements.\n# TYPE jfconnect_entitlements_digest_consistent gauge\njfconnect_entitlements_digest_consistent {}", u8::from(view.entitlements_digest_consistent));
    out
}

/// `Some(reason)` when the shared database is away (readiness "degraded": the last good
/// entitlements are still served).
pub fn degraded(s: &ApiState) -> Option<String> {
    if let Some(reason) = s.cluster_waiting() {
        return Some(format!(
            "{reason}; serving this node's last good entitlements until it joins the cluster"
        ));
    }
    let c = s.cluster()?;
    let f = c.followed();
    let f = f.borrow();
    (!f.connected).then(|| {
        f.last_error
            .clone()
            .unwrap_or_else(|| "the shared database has not answered yet".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::lease::LeaseView;

    #[test]
    fn metrics_name_each_lease_and_the_digest_agreement() {
        let view = ClusterView {
            node_id: "a".into(),
            nodes: vec![crate::ha::nodes::NodeView {
                node_id: "b\"1".into(),
                heartbeat_age_ms: 10,
                address: None,
                entitlements_digest: None,
                usage: Some(crate::ha::nodes::NodeUsage {
                    pending: 4,
                    uploaded: 3,
                    archived: 2,
                    quarantined: 1,
                }),
            }],
            leases: vec![LeaseView {
                job: "entitlements".into(),
                holder: "a".into(),
                epoch: 2,
                expires_in_ms: 9000,
            }],
            live_nodes: 3,
            entitlements_digest_consistent: true,
        };
        let text = render(&view, |j| j == "entitlements");
        assert!(text.contains("jfconnect_cluster_nodes 3\n"), "{text}");
        assert!(
            text.contains("jfconnect_lease_held{job=\"entitlements\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("jfconnect_entitlements_digest_consistent 1\n"),
            "{text}"
        );
        for (state, n) in [
            ("pending", 4),
            ("uploaded", 3),
            ("archived", 2),
            ("quarantined", 1),
        ] {
            let line =
                format!("jfconnect_cluster_usage_files{{node=\"b\\\"1\",state=\"{state}\"}} {n}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        let text = render(&view, |_| false);
        assert!(
            text.contains("jfconnect_lease_held{job=\"entitlements\"} 0\n"),
            "{text}"
        );
    }
}
