//! `GET /metrics` in the Prometheus text format, written by hand (a handful of gauges and
//! counters do not need a metrics library).

use super::labels::escape_label;
use super::ApiState;
use crate::status::report;
use crate::status::StatusReport;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::Arc;

/// The metrics page.
pub async fn metrics(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    let mut page = render(&report(&s).await);
    page.push_str(&super::cluster::metrics(&s).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page)
}

struct Page(String);

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Renders the report as Prometheus text.
pub fn render(r: &StatusReport) -> String {
    let mut p = Page(String::new());
    p.family(
        "jfconnect_enabled",
        "gauge",
        "1 when jfconnect runs its jobs, 0 when disabled.",
    );
    p.sample("jfconnect_enabled", &[], u8::from(r.enabled));
    p.family(
        "jfconnect_registered",
        "gauge",
        "1 when the license is registered with JES.",
    );
    p.sample(
        "jfconnect_registered",
        &[],
        u8::from(r.registration.state == "registered"),
    );
    p.family(
        "jfconnect_entitlements_age_seconds",
        "gauge",
        "Seconds since JES last confirmed the served entitlements (-1 if none).",
    );
    p.sample(
        "jfconnect_entitlements_age_seconds",
        &[],
        r.entitlements.as_ref().map_or(-1, |e| e.age_seconds),
    );
    p.family(
        "jfconnect_entitlement_expiry_timestamp_seconds",
        "gauge",
        "Unix time each served entitlement ends (entitlements without an end are absent).",
    );
    for end in &r.entitlement_ends {
        p.sample(
            "jfconnect_entitlement_expiry_timestamp_seconds",
            &[("product", &end.product), ("feature", &end.feature)],
            end.valid_until.timestamp(),
        );
    }
    p.family("jfconnect_job_runs_total", "counter", "Runs of each job.");
    for j in &r.jobs {
        p.sample(
            "jfconnect_job_runs_total",
            &[("job", j.name.as_str())],
            j.runs,
        );
    }
    p.family(
        "jfconnect_job_failures_total",
        "counter",
        "Failed runs of each job, by error class.",
    );
    for j in &r.jobs {
        for class in ["rejected", "unavailable", "local"] {
            let n = j.failures.get(class).copied().unwrap_or(0);
            p.sample(
                "jfconnect_job_failures_total",
                &[("job", j.name.as_str()), ("class", class)],
                n,
            );
        }
    }
    p.family(
        "jfconnect_job_last_success_timestamp_seconds",
        "gauge",
        "Unix time of each job's last success (0 if never).",
    );
    for j in &r.jobs {
        let t = j.last_success.map_or(0, |t| t.timestamp());
        p.sample(
            "jfconnect_job_last_success_timestamp_seconds",
            &[("job", j.name.as_str())],
            t,
        );
    }
    p.family("jfconnect_job_running", "gauge", "1 while the job runs.");
    for j in &r.jobs {
        p.sample(
            "jfconnect_job_running",
            &[("job", j.name.as_str())],
            u8::from(j.state == "running"),
        );
    }
    p.family("jfconnect_usage_files", "gauge", "Usage files by state (pending, uploaded, archived since the data folder was made, quarantined).");
    let u = &r.usage;
    for (state, n) in [
        ("pending", u.pending),
        ("uploaded", u.uploaded),
        ("archived", u.archived),
        ("quarantined", u.quarantined),
    ] {
        p.sample("jfconnect_usage_files", &[("state", state)], n);
    }
    p.family(
        "jfconnect_archived_bytes_total",
        "counter",
        "Bytes of usage archives uploaded to the JPD.",
    );
    p.sample("jfconnect_archived_bytes_total", &[], u.bytes_archived);
    p.0
}
