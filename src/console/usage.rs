//! The usage page: counts by state, a chart of the last 30 days, the archives written and the
//! quarantine with each file's reason.

use super::auth::Admin;
use super::chart;
use super::layout::{self, Frame, Nav};
use super::Console;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use std::sync::Arc;

/// Days in the chart.
const CHART_DAYS: i64 = 30;
/// Quarantined files listed.
const QUARANTINE_LISTED: usize = 200;

/// `GET /ui/usage`.
pub async fn page(State(console): State<Arc<Console>>, admin: Admin) -> Response {
    let config = console.app.config().clone();
    let read = tokio::task::spawn_blocking(move || {
        let layout = crate::pipeline::Layout::new(&config);
        (
            crate::pipeline::pipeline_counts(&config),
            crate::pipeline::history::load(&config),
            crate::pipeline::spool::list_quarantined(&layout.quarantine, QUARANTINE_LISTED),
        )
    })
    .await;
    let Ok((counts, history, quarantined)) = read else {
        return layout::bare(
            "Usage",
            html! { p.flash.bad { "The usage records could not be read." } },
        )
        .into_response();
    };
    let now = console.app.clock().now();
    let days = history.last_days(now.date_naive(), CHART_DAYS);
    let mut archives = history.archives.clone();
    archives.reverse();
    let body = html! {
        section.cards #usage-counts {
            div.card { h2 { "Pending" } p.big #count-pending { (counts.pending) } p.muted { "in the spool, not yet sent" } }
            div.card { h2 { "Uploaded" } p.big #count-uploaded { (counts.uploaded) } p.muted { "acknowledged, not yet archived" } }
            div.card { h2 { "Archived" } p.big #count-archived { (counts.archived) } p.muted { (layout::bytes(counts.bytes_archived)) " in the JPD" } }
            div.card { h2 { "Quarantined" } p.big #count-quarantined { (counts.quarantined) } p.muted { "refused, kept for a person" } }
        }
        p.muted { "Pending and uploaded are as of the last usage or archival run." }
        section {
            h2 { "Usage files per day and product, last " (CHART_DAYS) " days" }
            (chart::usage_chart(&days))
        }
        section {
            h2 { "Archives written to the JPD" }
            @if archives.is_empty() {
                p.empty { "No archive written yet." }
            } @else {
                table #archives {
                    thead { tr { th { "Archive" } th { "Files" } th { "Size" } th { "SHA-256" } th { "When" } } }
                    tbody {
                        @for a in &archives {
                            tr {
                                td.mono { (a.repo) "/" (a.name) }
                                td.num { (a.files) }
                                td.num { (layout::bytes(a.bytes)) }
                                td.mono title=(a.sha256) { (a.sha256.get(..16).unwrap_or(&a.sha256)) "…" }
                                td { (layout::when(Some(a.done_at), now)) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Quarantine" }
            @if quarantined.is_empty() {
                p.empty { "No file in quarantine." }
            } @else {
                p.muted { "Files that are not usage files are kept here, never deleted; newest first"
                    @if quarantined.len() == QUARANTINE_LISTED { " (the first " (QUARANTINE_LISTED) " shown)" } "." }
                table #quarantine {
                    thead { tr { th { "File" } th { "Reason" } th { "Size" } th { "When" } } }
                    tbody {
                        @for q in &quarantined {
                            tr {
                                td.mono { (q.name) }
                                td { (q.reason) }
                                td.num { (layout::bytes(q.size)) }
                                td { (layout::when(q.modified, now)) }
                            }
                        }
                    }
                }
            }
        }
    };
    let node = console.app.config().shared.node.id.clone();
    let frame = Frame {
        nav: Nav::Usage,
        mode: super::overview::mode(&console),
        node: &node,
        csrf: &admin.csrf,
        flash: admin.flash.as_ref(),
        clustered: console.app.cluster().is_some(),
    };
    layout::page("Usage", &frame, body).into_response()
}
