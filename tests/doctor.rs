//! `jfconnect doctor` against the simulator: all good, then each fault it must name (with a
//! fix), and never any state left behind.

mod sim_support;

use jfconnect::clock::{ManualClock, SharedClock, SystemClock};
use jfconnect::doctor::{self, Outcome, Report};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config whose JES, JCS and JPD are `remote`, with a license and a JPD token; `extra` is
/// more YAML under `jfconnect:`.
fn setup(remote: &str, extra: &str) -> (TempDir, PathBuf) {
    setup_with(remote, extra, true)
}

/// As [`setup`]; without `license`, no `license.file` is set (so none is found).
fn setup_with(remote: &str, extra: &str, license: bool) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("license"), sim_support::LICENSE).unwrap();
    std::fs::write(dir.path().join("jpd.token"), "jpd-token").unwrap();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {d}/data\n{lic}  jes:\n    url: {remote}\n  jcs:\n    url: {remote}\n  jpd:\n    url: {remote}\n    token_file: {d}/jpd.token\n{extra}",
            d = dir.path().display(),
            lic = if license {
                format!("  license:\n    file: {}/license\n", dir.path().display())
            } else {
                String::new()
            }
        ),
    )
    .unwrap();
    (dir, cfg)
}

async fn doctor_at(cfg: &Path) -> Report {
    doctor::run(Some(cfg), Arc::new(SystemClock)).await
}

fn outcome(r: &Report, name: &str) -> Outcome {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in\n{}", r.render()))
        .outcome
}

/// `name` failed with a fix, and every check before it passed.
fn fails_at(r: &Report, name: &str) {
    assert!(!r.ok, "{}", r.render());
    let at = r
        .checks
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in\n{}", r.render()));
    let c = &r.checks[at];
    assert_eq!(c.outcome, Outcome::Fail, "{}", r.render());
    assert!(c.fix.as_deref().is_some_and(|f| !f.is_empty()));
    for before in &r.checks[..at] {
        if before.name != "license" {
            assert_eq!(before.outcome, Outcome::Ok, "{}", r.render());
        }
    }
}

#[tokio::test]
async fn all_good_against_the_simulator_and_nothing_is_created() {
    let sim = sim_support::start().await;
    let (dir, cfg) = setup(&sim.handle.base_url(), "");
    let r = doctor_at(&cfg).await;
    assert!(r.ok, "{}", r.render());
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "config",
            "data folder",
            "license",
            "JES DNS",
            "JES TCP",
            "JES HTTP",
            "JCS DNS",
            "JCS TCP",
            "JCS HTTP",
            "Access",
            "Artifactory",
            "clock"
        ]
    );
    assert!(r.checks.iter().all(|c| c.outcome == Outcome::Ok));
    assert!(!dir.path().join("data").exists(), "doctor created state");
    sim.stop().await;
}

#[tokio::test]
async fn each_simulator_fault_is_named_with_a_fix() {
    for (fault, check) in [
        ("entitlements=500", "JES HTTP"),
        ("usage=503", "JCS HTTP"),
        ("token=401", "Access"),
        ("storage=500", "Artifactory"),
        ("any=reset", "JES HTTP"),
    ] {
        let sim = sim_support::start_with(|o| {
            o.faults.push(jfconnect::sim::parse_fault(fault).unwrap());
        })
        .await;
        let (_dir, cfg) = setup(&sim.handle.base_url(), "");
        let r = doctor_at(&cfg).await;
        fails_at(&r, check);
        sim.stop().await;
    }
}

#[tokio::test]
async fn dns_tcp_and_proxy_failures_are_told_apart() {
    let sim = sim_support::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("license"), sim_support::LICENSE).unwrap();
    std::fs::write(dir.path().join("jpd.token"), "jpd-token").unwrap();
    let make = |name: &str, jes: &str, extra: &str| {
        let cfg = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "jfconnect:\n  data_dir: {d}/data\n  license:\n    file: {d}/license\n  jes:\n    url: {jes}\n  jcs:\n    url: {remote}\n  jpd:\n    url: {remote}\n    token_file: {d}/jpd.token\n{extra}",
                d = dir.path().display(),
                remote = sim.handle.base_url()
            ),
        )
        .unwrap();
        cfg
    };
    let r = doctor_at(&make("dns", "http://doctor-test.invalid/", "")).await;
    fails_at(&r, "JES DNS");
    assert_eq!(outcome(&r, "JES HTTP"), Outcome::Skip);
    let closed = format!("http://127.0.0.1:{}/", closed_port());
    let r = doctor_at(&make("tcp", &closed, "")).await;
    fails_at(&r, "JES TCP");
    let proxy = format!("  proxy:\n    url: http://127.0.0.1:{}\n", closed_port());
    let r = doctor_at(&make("proxy", &sim.handle.base_url(), &proxy)).await;
    fails_at(&r, "JES proxy");
    sim.stop().await;
}

#[tokio::test]
async fn tls_is_checked_with_the_configured_ca() {
    let sim = sim_support::start_with(|o| o.tls = true).await;
    let base = sim.handle.base_url();
    assert!(base.starts_with("https://"), "{base}");
    let (_d, cfg) = setup(&base, "");
    let r = doctor_at(&cfg).await;
    fails_at(&r, "JES TLS");
    assert!(r.checks.iter().any(|c| c
        .fix
        .as_deref()
        .is_some_and(|f| f.contains("jfconnect.tls.ca_file"))));
    let ca = sim.handle.ca_file().unwrap().display().to_string();
    let (_d, cfg) = setup(&base, &format!("  tls:\n    ca_file: {ca}\n"));
    let r = doctor_at(&cfg).await;
    assert!(r.ok, "{}", r.render());
    assert_eq!(outcome(&r, "JES TLS"), Outcome::Ok);
    sim.stop().await;
}

#[tokio::test]
async fn clock_skew_missing_license_and_airgap_keys_and_outbox() {
    let sim = sim_support::start().await;
    let (dir, cfg) = setup(&sim.handle.base_url(), "");
    let ahead: SharedClock = Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::hours(1),
    ));
    let r = doctor::run(Some(&cfg), ahead).await;
    fails_at(&r, "clock");
    assert!(r.render().contains("ahead of"), "{}", r.render());

    let (_d, no_license) = setup_with(&sim.handle.base_url(), "", false);
    let r = doctor_at(&no_license).await;
    assert!(!r.ok);
    assert_eq!(outcome(&r, "license"), Outcome::Fail);
    assert!(r.render().contains("no license key at"), "{}", r.render());

    // Air-gapped: no JES/JCS checks; vendor keys and the outbox instead.
    std::fs::write(dir.path().join("a-file"), "x").unwrap();
    std::fs::write(dir.path().join("garbage.pub"), "not a minisign key\n").unwrap();
    let (_d, cfg) = setup(
        &sim.handle.base_url(),
        &format!(
            "  airgap:\n    enabled: true\n    outbox_dir: {}\n    vendor_public_keys: [{}]\n",
            dir.path().join("a-file").join("outbox").display(),
            dir.path().join("garbage.pub").display()
        ),
    );
    let r = doctor_at(&cfg).await;
    assert!(!r.ok);
    assert!(r.checks.iter().all(|c| !c.name.starts_with("JES")));
    assert_eq!(outcome(&r, "vendor keys"), Outcome::Fail);
    assert_eq!(outcome(&r, "outbox"), Outcome::Fail);

    jfconnect::bundle::keys_generate(&dir.path().join("vendor")).unwrap();
    let (_d, cfg) = setup(
        &sim.handle.base_url(),
        &format!(
            "  airgap:\n    enabled: true\n    vendor_public_keys: [{}]\n",
            dir.path().join("vendor.pub").display()
        ),
    );
    let r = doctor_at(&cfg).await;
    assert!(r.ok, "{}", r.render());
    assert_eq!(outcome(&r, "outbox"), Outcome::Ok);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_exits_0_or_1_and_prints_json() {
    let sim = sim_support::start().await;
    let (dir, cfg) = setup(&sim.handle.base_url(), "");
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"));
        c.arg("--config").arg(&cfg).args(args);
        c.env_remove("HTTPS_PROXY").env_remove("HTTP_PROXY");
        c.output().unwrap()
    };
    let out = tokio::task::block_in_place(|| run(&["doctor"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .all(|l| l.starts_with("ok  ") || l == "all checks passed"),
        "{text}"
    );
    let (_d, no_license) = setup_with(&sim.handle.base_url(), "", false);
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
            .arg("--config")
            .arg(&no_license)
            .args(["doctor", "--json"])
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .output()
            .unwrap()
    });
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let license = &v["checks"][2];
    assert_eq!(license["name"], "license");
    assert_eq!(license["outcome"], "fail");
    assert!(license["fix"].as_str().unwrap().contains("license.file"));
    assert!(!dir.path().join("data").exists());
    sim.stop().await;
}
