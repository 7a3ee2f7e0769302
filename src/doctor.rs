//! `jfconnect doctor`: checks, in order, what jfconnect needs to work, one line each, with a fix
//! for each failure.
//!
//! Read-only: it creates no state (no data folder, no JPD id, no token, no lock). The only
//! bytes it writes are probe files it deletes at once, and the only requests it sends are
//! unauthenticated probes to JES and JCS (refused or answered, they change nothing remotely)
//! and the same token check and storage lookup the archival job makes.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::http::Outbound;
use crate::jpd::Jpd;
use crate::remote::Service;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Below this much free space the data folder check fails.
pub(crate) const MIN_FREE_BYTES: u64 = 100 * 1024 * 1024;
/// A clock further than this from the servers' `Date` fails the clock check.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(60);
/// How long each network probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Broken; `fix` says what to do.
    Fail,
    /// Not checked, because an earlier check it needs failed.
    Skip,
}

/// One check's line.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `JES TLS`.
    pub name: String,
    /// The outcome.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do (failures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no check failed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            outcome,
            detail: detail.into(),
            fix: None,
        });
    }
    fn ok(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Ok, detail);
    }
    fn skip(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Skip, detail);
    }
    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.ok = false;
        self.checks.push(Check {
            name: name.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    /// One line per check: `ok   NAME  detail`, failures followed by `fix: ...`.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            out.push_str(&format!("{mark}  {:<width$}  {}", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!(" -- fix: {fix}"));
            }
            out.push('\n');
        }
        out.push_str(if self.ok {
            "all checks passed\n"
        } else {
            "some checks failed\n"
        });
        out
    }
}

/// Runs every check for the configuration at `file` (as `--config` names it).
pub async fn run(file: Option<&Path>, clock: SharedClock) -> Report {
    let mut report = Report {
        ok: true,
        checks: Vec::new(),
    };
    let config = match Config::load(file) {
        Ok(c) => {
            report.ok("config", format!("valid: {}", c.file_description()));
            c
        }
        Err(e) => {
            report.fail(
                "config",
                e.to_string(),
                "correct the key or file named, then run doctor again",
            );
            return report;
        }
    };
    check_data_dir(&mut report, &config.data_dir);
    check_license(&mut report, &config);
    let outbound = match crate::http::build(&config) {
        Ok(o) => Some(o),
        Err(e) => {
            report.fail(
                "HTTP client",
                e.to_string(),
                "fix jfconnect.tls.ca_file or the proxy settings named",
            );
            None
        }
    };
    let mut dates = Vec::new();
    if let Some(outbound) = &outbound {
        if !config.airgap.enabled {
            let jes = probe_url(&config.jes.url, crate::protocol::JES_ENTITLEMENTS);
            let jcs = probe_url(&config.jcs.url, crate::protocol::JCS_USAGE);
            let checks = [(Service::Jes, jes, false), (Service::Jcs, jcs, true)];
            for (service, url, post) in checks {
                if let Some(d) = check_remote(&mut report, outbound, service, url, post).await {
                    dates.push(d);
                }
            }
        }
        check_jpd(&mut report, &config, outbound, &mut dates).await;
    }
    check_clock(&mut report, &dates, clock.now());
    if config.airgap.enabled {
        check_vendor_keys(&mut report, &config.airgap.vendor_public_keys);
        check_writable_dir(
            &mut report,
            "outbox",
            &config.airgap.outbox_dir,
            "jfconnect.airgap.outbox_dir",
        );
    }
    report
}

fn probe_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
    url
}

/// The nearest folder at or above `path` that exists, if that is a folder.
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists()).filter(|p| p.is_dir())
}

/// Writes and deletes a probe file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    tempfile::Builder::new()
        .prefix(".jfconnect-doctor-")
        .tempfile_in(dir)
        .map(drop)
}

fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

fn check_data_dir(report: &mut Report, dir: &Path) {
    let name = "data folder";
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        return report.fail(
            name,
            format!("{shown} is not a folder"),
            "point jfconnect.data_dir at a folder",
        );
    }
    let (probe, note) = if dir.is_dir() {
        (dir, String::new())
    } else {
        match existing_ancestor(dir) {
            Some(a) => (
                a,
                format!(" (does not exist yet; serve creates it in {})", a.display()),
            ),
            None => {
                return report.fail(
                    name,
                    format!("{shown} has no existing parent folder"),
                    "create it, or point jfconnect.data_dir elsewhere",
                )
            }
        }
    };
    if let Err(e) = probe_write(probe) {
        return report.fail(
            name,
            format!("cannot write in {}: {e}", probe.display()),
            "give the jfconnect user write access to it, or point jfconnect.data_dir elsewhere",
        );
    }
    match free_bytes(probe) {
        Ok(free) if free < MIN_FREE_BYTES => report.fail(
            name,
            format!("{shown}: only {} MiB free", free / (1024 * 1024)),
            "free space on that file system (usage files and archives wait here)",
        ),
        Ok(free) => report.ok(
            name,
            format!("{shown} writable, {} MiB free{note}", free / (1024 * 1024)),
        ),
        Err(e) => report.fail(
            name,
            format!("cannot read the free space of {}: {e}", probe.display()),
            "check the file system",
        ),
    }
}

fn check_license(report: &mut Report, config: &Config) {
    let source = crate::app::license_source(config);
    let path = source
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match source.read() {
        Ok(Some(_)) => report.ok("license", format!("present in {path}")),
        Ok(None) => report.fail(
            "license",
            format!("no license key at {path}"),
            "write the key to that file or set jfconnect.license.file, or PUT it to /api/v1/license",
        ),
        Err(e) => report.fail(
            "license",
            e.to_string(),
            "put the license key (one line) in that file, readable by jfconnect",
        ),
    }
}

/// DNS, TCP (or the proxy), TLS and HTTP to one remote; answers its `Date` when it answered.
async fn check_remote(
    report: &mut Report,
    outbound: &Outbound,
    service: Service,
    url: Url,
    post: bool,
) -> Option<DateTime<Utc>> {
    let key = service.url_key();
    let host = url.host_str().unwrap_or("").to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let https = url.scheme() == "https";
    let skip_rest = |report: &mut Report, from: usize| {
        let steps = ["DNS", "TCP", "TLS", "HTTP"];
        for step in &steps[from..] {
            if *step == "TLS" && !https {
                continue;
            }
            report.skip(
                format!("{service} {step}"),
                "not checked after the failure above",
            );
        }
    };
    if let Some(proxy) = outbound.proxy_for(&url) {
        let proxy_url = Url::parse(&proxy.url).ok();
        let (ph, pp) = proxy_url
            .as_ref()
            .map(|u| {
                (
                    u.host_str().unwrap_or("").to_string(),
                    u.port_or_known_default().unwrap_or(3128),
                )
            })
            .unwrap_or_default();
        match tcp(&ph, pp).await {
            Ok(_) => report.ok(
                format!("{service} proxy"),
                format!(
                    "{} reachable (from {}); DNS and TCP to {host} are the proxy's",
                    proxy.url, proxy.source
                ),
            ),
            Err(why) => {
                report.fail(
                    format!("{service} proxy"),
                    format!("the proxy {} cannot be reached: {why}", proxy.url),
                    format!("check {} and that the proxy runs", proxy.source),
                );
                skip_rest(report, 2);
                return None;
            }
        }
    } else {
        let addrs = match tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(a)) => a.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                report.fail(
                    format!("{service} DNS"),
                    format!("cannot resolve {host}: {e}"),
                    format!("check the host in {key} and this machine's DNS"),
                );
                skip_rest(report, 1);
                return None;
            }
            Err(_) => {
                report.fail(
                    format!("{service} DNS"),
                    format!("resolving {host} took over {} s", PROBE_TIMEOUT.as_secs()),
                    "check this machine's DNS servers",
                );
                skip_rest(report, 1);
                return None;
            }
        };
        let Some(first) = addrs.first() else {
            report.fail(
                format!("{service} DNS"),
                format!("{host} resolves to no address"),
                format!("check the host in {key}"),
            );
            skip_rest(report, 1);
            return None;
        };
        report.ok(
            format!("{service} DNS"),
            format!("{host} is {}", first.ip()),
        );
        if let Err(why) = tcp(&first.ip().to_string(), port).await {
            report.fail(
                format!("{service} TCP"),
                format!("cannot connect to {host}:{port}: {why}"),
                format!("check that {service} runs there and that {host}:{port} is allowlisted in your firewall (or set jfconnect.proxy.url)"),
            );
            skip_rest(report, 2);
            return None;
        }
        report.ok(
            format!("{service} TCP"),
            format!("connected to {host}:{port}"),
        );
    }
    let request = if post {
        outbound.post(&url).json(&serde_json::json!({}))
    } else {
        outbound.get(&url)
    };
    let answer = request.timeout(PROBE_TIMEOUT).send().await;
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            let classified = outbound.send_error(&e, service, &url);
            let tls = classified.message.contains("TLS certificate");
            if https && tls {
                report.fail(
                    format!("{service} TLS"),
                    classified.message.clone(),
                    "unknown issuer: add the CA to jfconnect.tls.ca_file; name mismatch: use the host name the certificate names",
                );
                report.skip(
                    format!("{service} HTTP"),
                    "not checked after the failure above",
                );
            } else {
                if https {
                    report.skip(format!("{service} TLS"), "no handshake result (see below)");
                }
                report.fail(
                    format!("{service} HTTP"),
                    classified.message,
                    format!("check {key}, the network path and the proxy settings"),
                );
            }
            return None;
        }
    };
    if https {
        report.ok(format!("{service} TLS"), "certificate trusted");
    }
    let status = resp.status().as_u16();
    let date = resp
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        .map(|d| d.with_timezone(&Utc));
    if status >= 500 || status == 407 {
        let classified = outbound.status_error(status, resp.headers(), service, &url, "");
        report.fail(
            format!("{service} HTTP"),
            classified.message,
            if status == 407 {
                "check jfconnect.proxy.username and proxy.password_file".to_string()
            } else {
                format!("{service} is failing; jfconnect retries on its own, check again later or ask JFrog support if it persists")
            },
        );
    } else {
        report.ok(
            format!("{service} HTTP"),
            format!(
                "{} answers (HTTP {status} to an unauthenticated probe)",
                crate::http::redact_url(&url)
            ),
        );
    }
    date
}

async fn tcp(host: &str, port: u16) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn check_jpd(
    report: &mut Report,
    config: &Config,
    outbound: &Outbound,
    dates: &mut Vec<DateTime<Utc>>,
) {
    let jpd = match crate::jpd::online::OnlineJpd::new(config) {
        Ok(j) => j,
        Err(e) => {
            return report.fail("Access", e.to_string(), "fix the setting named");
        }
    };
    let base = crate::http::redact_url(&config.jpd.url);
    match jpd.check_token().await {
        Ok(()) => report.ok("Access", format!("{base} accepts the token")),
        Err(e) => {
            report.fail(
                "Access",
                e.message,
                "set jfconnect.jpd.url to the JPD's base URL and jfconnect.jpd.token_file to a file holding a valid access token",
            );
            report.skip("Artifactory", "not checked after the failure above");
            return;
        }
    }
    match jpd
        .storage_info(&config.archival.repo, ".jfconnect-doctor-probe")
        .await
    {
        Ok(_) => report.ok(
            "Artifactory",
            format!("{base} answers storage lookups in {}", config.archival.repo),
        ),
        Err(e) => report.fail(
            "Artifactory",
            e.message,
            "check that Artifactory runs and the token may read jfconnect.archival.repo",
        ),
    }
    // The JPD's clock too, from any answer.
    let url = probe_url(&config.jpd.url, crate::protocol::ACCESS_TOKEN_CHECK);
    if let Ok(resp) = outbound.get(&url).timeout(PROBE_TIMEOUT).send().await {
        if let Some(d) = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        {
            dates.push(d.with_timezone(&Utc));
        }
    }
}

fn check_clock(report: &mut Report, dates: &[DateTime<Utc>], now: DateTime<Utc>) {
    let worst = dates
        .iter()
        .map(|d| (now - *d).num_seconds())
        .max_by_key(|s| s.abs());
    match worst {
        None => report.skip("clock", "no server answered with a Date header"),
        Some(s) if s.unsigned_abs() > MAX_SKEW.as_secs() => report.fail(
            "clock",
            format!(
                "this machine's clock is {} s {} the servers'",
                s.abs(),
                if s > 0 { "ahead of" } else { "behind" }
            ),
            "synchronise the clock (NTP: chrony or systemd-timesyncd); tokens and bundle dates depend on it",
        ),
        Some(s) => report.ok("clock", format!("within {} s of the servers'", s.abs().max(1))),
    }
}

fn check_vendor_keys(report: &mut Report, keys: &[PathBuf]) {
    if keys.is_empty() {
        return report.fail(
            "vendor keys",
            "no vendor public key is configured",
            "set jfconnect.airgap.vendor_public_keys to the vendor's .pub file(s)",
        );
    }
    for k in keys {
        if let Err(e) = crate::bundle::read_public_key(k) {
            return report.fail(
                "vendor keys",
                e.to_string(),
                "point jfconnect.airgap.vendor_public_keys at readable minisign public key files",
            );
        }
    }
    report.ok("vendor keys", format!("{} readable", keys.len()));
}

fn check_writable_dir(report: &mut Report, name: &str, dir: &Path, key: &str) {
    let target = existing_ancestor(dir);
    let Some(target) = target else {
        return report.fail(
            name,
            format!("{} is not a folder", dir.display()),
            format!("point {key} at a folder"),
        );
    };
    match probe_write(target) {
        Ok(()) => report.ok(name, format!("{} writable", dir.display())),
        Err(e) => report.fail(
            name,
            format!("cannot write in {}: {e}", target.display()),
            format!("give the jfconnect user write access, or point {key} elsewhere"),
        ),
    }
}
