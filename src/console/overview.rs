//! The overview: mode, identity, registration, the entitlements valid now and coming, expiry
//! warnings, and each job with a "run now" button.

use super::auth::{Admin, CsrfForm, Posted};
use super::layout::{self, Frame, Nav};
use super::session::Flash;
use super::Console;
use crate::jobs::scheduler::StartError;
use crate::jobs::JobName;
use crate::protocol::Entitlement;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use std::sync::Arc;

/// "connected" or "air-gapped".
pub fn mode(console: &Console) -> &'static str {
    if console.app.config().airgap.enabled {
        "air-gapped"
    } else {
        "connected"
    }
}

fn parse(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Where an entitlement stands at `now`: its tone and a few words.
fn standing(e: &Entitlement, now: DateTime<Utc>, warn: chrono::Duration) -> (&'static str, String) {
    let (from, until) = (parse(&e.valid_from), parse(&e.valid_until));
    match (from, until) {
        (Some(f), _) if f > now => (
            "warn",
            format!("starts in {}", layout::span((f - now).num_seconds())),
        ),
        (_, Some(u)) if u <= now => ("bad", "ended".into()),
        (_, Some(u)) if u - now <= warn => (
            "warn",
            format!("ends in {}", layout::span((u - now).num_seconds())),
        ),
        _ => ("ok", "valid now".into()),
    }
}

fn entitlements_table(console: &Console, now: DateTime<Utc>) -> Markup {
    let snapshot = console.app.entitlements().snapshot();
    let Some(current) = snapshot.current else {
        return html! { p.empty { "No entitlements yet." } };
    };
    let warn = chrono::Duration::from_std(console.app.config().entitlements.warn_before)
        .unwrap_or(chrono::Duration::MAX);
    let mut lines = current.entitlements.entitlements.clone();
    lines.sort_by(|a, b| (&a.product, &a.feature).cmp(&(&b.product, &b.feature)));
    html! {
        table #entitlements {
            thead { tr { th { "Product" } th { "Feature" } th { "Valid from" } th { "Valid until" } th { "Now" } } }
            tbody {
                @for e in &lines {
                    @let (tone, words) = standing(e, now, warn);
                    tr {
                        td { (e.product) }
                        td.feature { (e.feature) }
                        td { (e.valid_from.as_deref().unwrap_or("—")) }
                        td { (e.valid_until.as_deref().unwrap_or("no end")) }
                        td { span class=(format!("pill {tone}")) { (words) } }
                    }
                }
            }
        }
    }
}

/// `GET /ui/`.
pub async fn page(State(console): State<Arc<Console>>, admin: Admin) -> Response {
    let app = console.app.clone();
    let schedules = crate::status::schedules(&app).await;
    let report = tokio::task::spawn_blocking(move || crate::status::build(&app, &schedules)).await;
    let Ok(r) = report else {
        return layout::bare(
            "Overview",
            html! { p.flash.bad { "The status report could not be built." } },
        )
        .into_response();
    };
    let now = console.app.clock().now();
    let reg = &r.registration;
    let body = html! {
        section.cards {
            div.card { h2 { "Mode" } p.big { (mode(&console)) } }
            div.card { h2 { "JPD id" } p.big.mono { (r.jpd_id) } }
            div.card {
                h2 { "Registration" }
                p.big #registration { (reg.state) }
                @if let Some(s) = &reg.subscription_id { p.muted { "subscription " (s) } }
                @if let Some(m) = &reg.message { p.muted { (m) } }
            }
            div.card {
                h2 { "Entitlements" }
                @match &r.entitlements {
                    Some(e) => {
                        p.big #entitlement-count { (e.count) }
                        p.muted { (e.subscription_id) " (" (e.subscription_type) "), from " (e.source)
                            ", confirmed " (layout::span(e.age_seconds)) " ago" }
                    }
                    None => { p.big #entitlement-count { "0" } p.muted { "none yet" } }
                }
            }
        }
        @if !r.ending_soon.is_empty() {
            section.warnings {
                @for end in &r.ending_soon {
                    p.flash.warn {
                        "Entitlement " (end.product) " / " (end.feature) " ends "
                        (layout::when(Some(end.valid_until), now)) "; renew before then."
                    }
                }
            }
        }
        section {
            h2 { "Entitlements" }
            (entitlements_table(&console, now))
        }
        section {
            h2 { "Jobs" }
            table #jobs {
                thead { tr { th { "Job" } th { "State" } th { "Last run" } th { "Next run" } th { "Last outcome" } th {} } }
                tbody {
                    @for j in &r.jobs {
                        tr id=(format!("job-{}", j.name)) {
                            td { (j.name) }
                            td { span class=(format!("pill {}", job_tone(j.state, j.last_error.is_some()))) { (j.state) } }
                            td { (layout::when(j.last_run, now)) }
                            td { @if j.state == "scheduled" && j.next_run.is_none() { "due now" } @else { (layout::when(j.next_run, now)) } }
                            td.outcome {
                                @match (&j.last_error, &j.last_summary) {
                                    (Some(e), _) => { span.bad { "failed (" (e.class) "): " } (e.message) }
                                    (None, Some(s)) => { (s) }
                                    _ => { "—" }
                                }
                            }
                            td {
                                @if j.state != "disabled" {
                                    form method="post" action=(format!("/ui/jobs/{}/run", j.name)) {
                                        input type="hidden" name="csrf" value=(admin.csrf);
                                        button type="submit" { "Run now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.facts {
            h2 { "This node" }
            dl {
                dt { "Config file" } dd.mono { (r.config_file) }
                dt { "Data folder" } dd.mono { (r.data_dir) }
                dt { "License" } dd { (r.license) }
            }
        }
    };
    let frame = Frame {
        nav: Nav::Overview,
        mode: mode(&console),
        node: &r.node_id,
        csrf: &admin.csrf,
        flash: admin.flash.as_ref(),
        clustered: console.app.cluster().is_some(),
    };
    layout::page("Overview", &frame, body).into_response()
}

fn job_tone(state: &str, failed: bool) -> &'static str {
    match state {
        "blocked" => "bad",
        "retrying" => "warn",
        _ if failed => "warn",
        "disabled" => "muted",
        _ => "ok",
    }
}

/// `POST /ui/jobs/{name}/run`: starts a job, as `POST /api/v1/jobs/{name}/run` does; the
/// answer (started, or already running and by whom) comes back as the page's message.
pub async fn run_job(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Posted { admin, .. }: Posted<CsrfForm>,
) -> Response {
    let (flash, change) = match (name.parse::<JobName>(), console.app.scheduler()) {
        (Err(e), _) => (Flash::bad(e), None),
        (Ok(_), None) => (
            Flash::bad("jfconnect is disabled (jfconnect.enabled: false); no job runs."),
            None,
        ),
        (Ok(job), Some(scheduler)) => match scheduler.start(job).await {
            Ok(()) => (
                Flash::ok(format!(
                    "The {job} job started; reload this page to see its outcome."
                )),
                Some(format!("started the {job} job")),
            ),
            Err(e @ StartError::Running { .. }) => {
                (Flash::warn(format!("Not started (409): {e}.")), None)
            }
            Err(e) => (Flash::bad(format!("Not started: {e}.")), None),
        },
    };
    admin.flash(&console, flash);
    let response = Redirect::to("/ui/").into_response();
    match change {
        Some(c) => super::noted(response, c),
        None => response,
    }
}
