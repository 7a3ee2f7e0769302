//! One view of "how is jfconnect doing", built from the state files: used by `jfconnect
//! status`, `GET /api/v1/jobs` and `/metrics`, so the three never disagree.
//!
//! Architecture invariant: this module only reads state; it never changes it.

use crate::app::App;
use crate::entitlements::EntitlementsState;
use crate::jobs::schedule::{JobSchedule, Schedules};
use crate::jobs::{JobError, JobName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Registration and entitlements, as a person reads them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegistrationView {
    /// `registered`, `rejected` or `unregistered`.
    pub state: &'static str,
    /// The subscription, once registered.
    pub subscription_id: Option<String>,
    /// When the license was registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// Why the license was refused.
    pub message: Option<String>,
}

/// The entitlements being served.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntitlementsView {
    /// Subscription.
    pub subscription_id: String,
    /// Tier.
    pub subscription_type: String,
    /// How many entitlement lines.
    pub count: usize,
    /// When they last changed.
    pub fetched_at: DateTime<Utc>,
    /// When their source last confirmed them.
    pub confirmed_at: DateTime<Utc>,
    /// Seconds since their source last confirmed them.
    pub age_seconds: i64,
    /// Where they came from: `JES`, or the entitlements bundle they were imported from.
    pub source: String,
}

/// One job's state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    /// Job name.
    pub name: JobName,
    /// `running`, `scheduled`, `retrying`, `blocked` or `disabled`.
    pub state: &'static str,
    /// Last start.
    pub last_run: Option<DateTime<Utc>>,
    /// Last success.
    pub last_success: Option<DateTime<Utc>>,
    /// What the last success did.
    pub last_summary: Option<String>,
    /// Next planned run (absent when blocked or disabled).
    pub next_run: Option<DateTime<Utc>>,
    /// Consecutive failures.
    pub attempt: u32,
    /// Why the last run failed.
    pub last_error: Option<JobError>,
    /// How long the last run took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Runs so far.
    pub runs: u64,
    /// Failures by class.
    pub failures: BTreeMap<String, u64>,
}

/// Builds the registration view.
pub fn registration(state: &EntitlementsState) -> RegistrationView {
    match (&state.registration, &state.rejected) {
        (Some(r), _) => RegistrationView {
            state: "registered",
            subscription_id: Some(r.subscription_id.clone()),
            registered_at: Some(r.registered_at),
            message: None,
        },
        (None, Some(rej)) => RegistrationView {
            state: "rejected",
            subscription_id: None,
            registered_at: None,
            message: Some(rej.message.clone()),
        },
        (None, None) => RegistrationView {
            state: "unregistered",
            subscription_id: None,
            registered_at: None,
            message: None,
        },
    }
}

/// Builds the entitlements view, if any entitlements are known.
pub fn entitlements(
    state: &EntitlementsState,
    now: DateTime<Utc>,
    airgapped: bool,
) -> Option<EntitlementsView> {
    state.current.as_ref().map(|c| EntitlementsView {
        source: match (airgapped, &c.etag) {
            (false, _) => "JES".into(),
            (true, Some(tag)) => format!("entitlements bundle {tag}"),
            (true, None) => "an entitlements bundle".into(),
        },
        subscription_id: c.entitlements.subscription_id.clone(),
        subscription_type: c.entitlements.subscription_type.clone(),
        count: c.entitlements.entitlements.len(),
        fetched_at: c.fetched_at,
        confirmed_at: c.confirmed_at,
        age_seconds: (now - c.confirmed_at).num_seconds().max(0),
    })
}

/// Builds one view per job; `enabled` lists the jobs this mode runs, `running` those running.
pub fn jobs(schedules: &Schedules, enabled: &[JobName], running: &[JobName]) -> Vec<JobView> {
    JobName::ALL
        .iter()
        .map(|&name| {
            let s = schedules.jobs.get(&name).cloned().unwrap_or_default();
            let state = job_state(&s, enabled.contains(&name), running.contains(&name));
            JobView {
                name,
                state,
                last_run: s.last_run,
                last_success: s.last_success,
                last_summary: s.last_summary,
                next_run: if state == "blocked" || state == "disabled" {
                    None
                } else {
                    s.next_run
                },
                attempt: s.attempt,
                last_error: s.last_error,
                last_duration_ms: s.last_duration_ms,
                runs: s.runs,
                failures: s
                    .failures
                    .iter()
                    .map(|(c, n)| (c.as_str().to_string(), *n))
                    .collect(),
            }
        })
        .collect()
}

fn job_state(s: &JobSchedule, enabled: bool, running: bool) -> &'static str {
    if !enabled {
        "disabled"
    } else if running {
        "running"
    } else if s.blocked {
        "blocked"
    } else if s.attempt > 0 {
        "retrying"
    } else {
        "scheduled"
    }
}

/// Everything `status`, `GET /api/v1/jobs` and `/metrics` show.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    /// This JPD.
    pub jpd_id: String,
    /// False when `jfconnect.enabled: false`.
    pub enabled: bool,
    /// Registration with JES.
    pub registration: RegistrationView,
    /// The entitlements served, if any.
    pub entitlements: Option<EntitlementsView>,
    /// Each job.
    pub jobs: Vec<JobView>,
    /// The outbound proxies in effect and where each setting came from (password masked).
    pub proxies: Vec<crate::http::ProxyInfo>,
    /// Usage files by state: pending, uploaded, archived, quarantined; bytes archived.
    pub usage: crate::pipeline::Counts,
    /// Entitlements ending within `entitlements.warn_before`, soonest first.
    pub ending_soon: Vec<crate::entitlements::expiry::EntitlementEnd>,
    /// The end of every served entitlement that has one.
    pub entitlement_ends: Vec<crate::entitlements::expiry::EntitlementEnd>,
    /// Which license is in effect: the admin's file or the key set through the API.
    pub license: String,
    /// The config file in use and how it was found.
    pub config_file: String,
    /// The data folder in use.
    pub data_dir: String,
    /// This node (`shared.node.id`).
    pub node_id: String,
    /// Database mode: the cluster as `GET /api/v1/cluster` shows it ([`with_cluster`]).
    pub cluster: Option<ClusterStatus>,
}

/// The cluster part of the report (database mode).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterStatus {
    /// The shared database, without password.
    pub database: String,
    /// Nodes, leases and digest agreement, when the database answered.
    pub view: Option<crate::ha::cluster::ClusterView>,
    /// Why the database could not be read.
    pub error: Option<String>,
}

/// Adds the cluster rows to `report` (database mode; reads the database, writes nothing).
pub(crate) async fn with_cluster(mut report: StatusReport, s: &App) -> StatusReport {
    let joined = s.cluster().map(|c| c.as_ref());
    report.cluster = crate::app::cluster::status_view(s.config(), joined)
        .await
        .map(|(database, view)| match view {
            Ok(v) => ClusterStatus {
                database,
                view: Some(v),
                error: None,
            },
            Err(e) => ClusterStatus {
                database,
                view: None,
                error: Some(e),
            },
        });
    report
}

fn cluster_lines(c: &ClusterStatus, line: &mut impl FnMut(&str, String)) {
    let Some(v) = &c.view else {
        line(
            "cluster",
            format!(
                "{}: {}",
                c.database,
                c.error.as_deref().unwrap_or("not read")
            ),
        );
        return;
    };
    line(
        "cluster",
        format!(
            "{} of {} nodes live, entitlements {} ({})",
            v.live_nodes,
            v.nodes.len(),
            if v.entitlements_digest_consistent {
                "the same on every live node"
            } else {
                "NOT the same on every live node"
            },
            c.database
        ),
    );
    for n in &v.nodes {
        let digest = n
            .entitlements_digest
            .as_deref()
            .map_or("nothing yet".to_string(), |d| d.chars().take(12).collect());
        line(
            "cluster node",
            format!(
                "{}: heartbeat {} ago, serves {digest}{}{}{}",
                n.node_id,
                span(n.heartbeat_age_ms / 1000),
                n.address
                    .as_deref()
                    .map(|a| format!(", at {a}"))
                    .unwrap_or_default(),
                n.usage
                    .map(|u| format!(
                        ", usage {} pending, {} uploaded, {} archived, {} quarantined",
                        u.pending, u.uploaded, u.archived, u.quarantined
                    ))
                    .unwrap_or_default(),
                if n.node_id == v.node_id {
                    " (this node)"
                } else {
                    ""
                }
            ),
        );
    }
    for l in &v.leases {
        let left = if l.expires_in_ms > 0 {
            format!("{} left", span(l.expires_in_ms / 1000))
        } else {
            format!("expired {} ago", span(-l.expires_in_ms / 1000))
        };
        line(
            "lease",
            format!("{}: node {}, epoch {}, {left}", l.job, l.holder, l.epoch),
        );
    }
}

fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            // Milliseconds, so that a run that ended a moment ago is "80 ms ago", not "in 0s".
            let ms = (t - now).num_milliseconds();
            let rel = if ms > 0 {
                format!("in {}", span_ms(ms))
            } else {
                format!("{} ago", span_ms(-ms))
            };
            format!("{} ({rel})", t.format("%Y-%m-%d %H:%M:%SZ"))
        }
    }
}

/// Like [`span`], with milliseconds below a second.
fn span_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        span(ms / 1000)
    }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// How long a run took: milliseconds below 10 s, then seconds.
fn took(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{} s", ms / 1000)
    }
}

/// The report as a table for a person.
pub fn render_table(r: &StatusReport, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
    line("config file", r.config_file.clone());
    line("data folder", r.data_dir.clone());
    line("node", r.node_id.clone());
    line("license", r.license.clone());
    line("JPD id", r.jpd_id.clone());
    line(
        "service",
        if r.enabled {
            "enabled".into()
        } else {
            "disabled (jfconnect.enabled: false)".into()
        },
    );
    let reg = match (&r.registration.subscription_id, &r.registration.message) {
        (Some(sub), _) => format!("{} (subscription {sub})", r.registration.state),
        (None, Some(m)) => format!("{}: {m}", r.registration.state),
        _ => r.registration.state.to_string(),
    };
    line("registration", reg);
    let ents = match &r.entitlements {
        Some(e) => format!(
            "{}, {} ({}), confirmed by {} {} ago",
            crate::words::count(e.count as u64, "entitlement", "entitlements"),
            e.subscription_id,
            e.subscription_type,
            e.source,
            span(e.age_seconds)
        ),
        None => "none yet".into(),
    };
    line("entitlements", ents);
    if let Some(c) = &r.cluster {
        cluster_lines(c, &mut line);
    }
    for end in &r.ending_soon {
        line(
            "WARN",
            format!(
                "entitlement {}/{} ends {} (in {}); renew before then",
                end.product,
                end.feature,
                end.valid_until.format("%Y-%m-%d %H:%M UTC"),
                span((end.valid_until - now).num_seconds())
            ),
        );
    }
    line(
        "usage files",
        format!(
            "{} pending, {} uploaded, {} archived ({} bytes), {} quarantined",
            r.usage.pending,
            r.usage.uploaded,
            r.usage.archived,
            r.usage.bytes_archived,
            r.usage.quarantined
        ),
    );
    if r.proxies.is_empty() {
        line("proxy", "none (direct connections)".into());
    }
    for p in &r.proxies {
        let user = match (&p.username, p.password_set) {
            (Some(u), true) => format!(", user {u}, password ***"),
            (Some(u), false) => format!(", user {u}"),
            _ => String::new(),
        };
        let bypass = p
            .no_proxy
            .as_deref()
            .map(|n| format!(", bypassed for {n}"))
            .unwrap_or_default();
        line(
            "proxy",
            format!(
                "{} for {} requests (from {}{user}{bypass})",
                p.url, p.scope, p.source
            ),
        );
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<13} {:<10} {:<34} {:<34} {}\n",
        "JOB", "STATE", "LAST RUN", "NEXT RUN", "LAST OUTCOME"
    ));
    for j in &r.jobs {
        let outcome = match (&j.last_error, &j.last_summary) {
            (Some(e), _) => format!("failed ({}): {}", e.class, e.message),
            (None, Some(s)) => s.clone(),
            _ => "-".into(),
        };
        let outcome = match j.last_duration_ms {
            Some(ms) if outcome != "-" => format!("{outcome} (took {})", took(ms)),
            _ => outcome,
        };
        out.push_str(&format!(
            "{:<13} {:<10} {:<34} {:<34} {}\n",
            j.name.as_str(),
            j.state,
            when(j.last_run, now),
            if j.state == "scheduled" && j.next_run.is_none() {
                "due now".into()
            } else {
                when(j.next_run, now)
            },
            outcome
        ));
    }
    out
}

/// Builds the status report of `s`: the one builder, used by `jfconnect status`,
/// `GET /api/v1/jobs` and `/metrics`. Reads only.
pub async fn report(s: &App) -> StatusReport {
    build(s, &schedules(s).await)
}

/// The schedules the report shows: in database mode the shared ones (the JPD's for a leased
/// job, this node's for the others); none when they cannot be read (the cluster row says why).
pub(crate) async fn schedules(s: &App) -> Schedules {
    match s.scheduler() {
        Some(sch) => sch.snapshot().await.unwrap_or_default(),
        None => Schedules::default(),
    }
}

/// [`report`] from schedules already read (the rest reads the data folder: call it where
/// blocking is allowed).
pub(crate) fn build(s: &App, schedules: &Schedules) -> StatusReport {
    let enabled: Vec<JobName> = s.scheduler().map(|x| x.job_names()).unwrap_or_default();
    let running: Vec<JobName> = s
        .scheduler()
        .map(|x| {
            enabled
                .iter()
                .copied()
                .filter(|j| x.is_running(*j))
                .collect()
        })
        .unwrap_or_default();
    let ents = s.entitlements().snapshot();
    let (entitlement_ends, ending_soon) = match &ents.current {
        Some(c) => (
            crate::entitlements::expiry::ends(&c.entitlements),
            crate::entitlements::expiry::ending_within(
                &c.entitlements,
                s.clock().now(),
                s.config().entitlements.warn_before,
            ),
        ),
        None => Default::default(),
    };
    StatusReport {
        ending_soon,
        entitlement_ends,
        jpd_id: s.jpd_id().to_string(),
        enabled: s.config().enabled,
        registration: registration(&ents),
        entitlements: entitlements(&ents, s.clock().now(), s.config().airgap.enabled),
        jobs: jobs(schedules, &enabled, &running),
        proxies: crate::http::proxies_in_effect(s.config())
            .map(|v| v.into_iter().map(|(info, _, _)| info).collect())
            .unwrap_or_default(),
        usage: crate::pipeline::pipeline_counts(s.config()),
        license: s.license().describe(),
        config_file: s.config().file_description(),
        data_dir: s.config().data_dir.display().to_string(),
        node_id: s.config().shared.node.id.clone(),
        cluster: None,
    }
}
