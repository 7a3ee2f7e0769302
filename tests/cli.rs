//! The binary's edges: exit codes 0/1/2 with one clear line on stderr, `status --json` for
//! scripts, `enabled: false` that never fails startup, and SIGTERM that stops `serve` cleanly.

mod process_support;
use process_support::{free_port, sigterm_and_wait, wait_for_ping};

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn jfconnect(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    // Parallel tests must not all bind the default gRPC port.
    c.env("JF_JFCONNECT_GRPC_ENABLED", "false");
    c.current_dir(dir)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY");
    c
}

fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("system.yaml");
    std::fs::write(
        &p,
        format!(
            "jfconnect:\n  data_dir: {}\n{body}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "  usage:\n    interval: often\n");
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("jfconnect.usage.interval"), "{err}");
}

#[test]
fn unknown_job_is_bad_usage_and_failed_job_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = jfconnect(dir.path())
        .args(["jobs", "run", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let cfg = config(dir.path(), "");
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["jobs", "run", "entitlements"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no license is configured"), "{err}");
}

#[test]
fn status_json_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["registration"]["state"], "unregistered");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3);
    assert!(v["usage"]["pending"].is_u64());
}

#[test]
fn serve_stops_on_sigterm_with_exit_0_within_10_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &format!("  port: {port}\n  bind: 127.0.0.1\n  jes:\n    url: http://127.0.0.1:9\n"),
    );
    let mut child = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_ping(port);
    let (code, took) = sigterm_and_wait(&mut child);
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn disabled_service_starts_even_with_other_keys_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("system.yaml");
    // usage.interval is wrong; a disabled service must start all the same, on the port and
    // address it was given.
    std::fs::write(
        &cfg,
        "jfconnect:\n  enabled: false\n  usage:\n    interval: whenever\n",
    )
    .unwrap();
    let mut child = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env("JF_JFCONNECT_PORT", port.to_string())
        .env("JF_JFCONNECT_BIND", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_ping(port);
    let (code, _) = sigterm_and_wait(&mut child);
    assert_eq!(code, Some(0));
}

#[test]
fn sim_serve_with_tls_prints_an_https_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sim");
    let mut child = process_support::Killed(
        jfconnect(dir.path())
            .args(["sim", "serve", "--listen", "127.0.0.1:0", "--tls", "--data"])
            .arg(&data)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stderr.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("sim serve printed its address");
    assert!(line.contains("https://localhost:"), "{line}");
    assert!(!line.contains("http://"), "{line}");
    assert!(
        line.contains(&data.join("tls").join("ca.pem").display().to_string()),
        "names the CA to trust: {line}"
    );
}

#[test]
fn status_shows_usage_counts_and_how_long_the_last_run_took() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let run = |args: &[&str]| {
        jfconnect(dir.path())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["jobs", "run", "archival"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["status"]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let usage = table
        .lines()
        .find(|l| l.starts_with("usage files "))
        .unwrap_or_else(|| panic!("no usage row:\n{table}"));
    for what in ["0 pending", "0 uploaded", "0 archived", "0 quarantined"] {
        assert!(usage.contains(what), "{usage}");
    }
    let archival = table
        .lines()
        .find(|l| l.starts_with("archival "))
        .unwrap_or_else(|| panic!("no archival row:\n{table}"));
    assert!(!archival.contains("(in 0s)"), "a past run: {archival}");
    assert!(
        archival.contains(" ms ago") || archival.contains("s ago"),
        "{archival}"
    );
    assert!(
        archival.contains("(took ") && archival.contains(" ms)"),
        "a run of milliseconds says so: {archival}"
    );
}

#[test]
fn jobs_run_help_lists_the_job_names() {
    let dir = tempfile::tempdir().unwrap();
    let o = jfconnect(dir.path())
        .args(["jobs", "run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{help}");
    assert!(
        help.contains("[possible values: entitlements, usage, archival]"),
        "{help}"
    );
}
