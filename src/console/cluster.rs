//! The cluster page (database mode): the nodes of this JPD with the age of their heartbeat
//! and the entitlements digest each serves, and who holds each job's lease at which epoch.
//! The data is the one `GET /api/v1/cluster` answers (`ha::cluster`). A node that runs alone
//! says so.

use super::auth::Admin;
use super::layout::{self, Frame, Nav};
use super::Console;
use crate::ha::cluster::ClusterView;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use std::sync::Arc;

/// `GET /ui/cluster`.
pub async fn page(State(console): State<Arc<Console>>, admin: Admin) -> Response {
    let body = match console.app.cluster() {
        None => html! {
            p.empty #single-node {
                "Single node: this jfconnect runs alone (" code { "shared.database" }
                " is not set), so there is no cluster to show."
            }
        },
        Some(c) => match c.view().await {
            Ok(view) => render(&view, console.app.config().ha.lease_ttl),
            Err(e) => html! {
                p.flash.bad role="alert" {
                    "The shared database did not answer (" (e) "); the last good entitlements are still served."
                }
            },
        },
    };
    let node = console.app.config().shared.node.id.clone();
    let frame = Frame {
        nav: Nav::Cluster,
        mode: super::overview::mode(&console),
        node: &node,
        csrf: &admin.csrf,
        flash: admin.flash.as_ref(),
        clustered: console.app.cluster().is_some(),
    };
    layout::page("Cluster", &frame, body).into_response()
}

fn render(view: &ClusterView, ttl: std::time::Duration) -> Markup {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let short = |d: &str| d.get(..16).unwrap_or(d).to_string();
    html! {
        p #cluster-summary {
            (view.live_nodes) " of " (crate::words::count(view.nodes.len() as u64, "node", "nodes")) " live; "
            @if view.entitlements_digest_consistent {
                span.pill.ok { "entitlements the same on every live node" }
            } @else {
                span.pill.bad { "the live nodes serve different entitlements" }
            }
        }
        section {
            h2 { "Nodes" }
            table #nodes {
                thead { tr { th { "Node" } th { "Address" } th { "Heartbeat" } th { "Entitlements digest" } } }
                tbody {
                    @for n in &view.nodes {
                        tr {
                            td.mono {
                                (n.node_id)
                                @if n.node_id == view.node_id { " (this node)" }
                            }
                            td.mono { (n.address.as_deref().unwrap_or("—")) }
                            td {
                                (layout::span(n.heartbeat_age_ms.max(0) / 1000)) " ago "
                                @if n.heartbeat_age_ms < ttl_ms { span.pill.ok { "live" } }
                                @else { span.pill.bad { "gone" } }
                            }
                            td.mono title=[n.entitlements_digest.as_deref()] {
                                @match &n.entitlements_digest {
                                    Some(d) => { (short(d)) "…" }
                                    None => { "none yet" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Job leases" }
            @if view.leases.is_empty() {
                p.empty { "No lease taken yet." }
            } @else {
                table #leases {
                    thead { tr { th { "Job" } th { "Leaseholder" } th { "Epoch" } th { "Lease" } } }
                    tbody {
                        @for l in &view.leases {
                            tr {
                                td { (l.job) }
                                td.mono { (l.holder) }
                                td.num { (l.epoch) }
                                td {
                                    @if l.expires_in_ms > 0 {
                                        "ends in " (layout::span(l.expires_in_ms / 1000)) ", renewed while held"
                                    } @else {
                                        span.bad { "expired " (layout::span(-l.expires_in_ms / 1000)) " ago" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
