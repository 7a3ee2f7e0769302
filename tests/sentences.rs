//! The sentences an admin reads at the binary's edge point the right way: a TLS name mismatch
//! is not blamed on the CA, a refused connection names the URL with its port and the key that
//! holds it, a missing license names the files looked at, and a bad value says what the key
//! takes instead of serde's words ("expected u16").

mod process_support;
mod sim_support;

use process_support::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn jfconnect(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    c.current_dir(dir)
        .env("JF_JFCONNECT_GRPC_ENABLED", "false")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("JFCONNECT_CONFIG")
        .env_remove("JFROG_HOME");
    c
}

/// `dir/system.yaml` with `data_dir` under `dir` and `body` (indented under `jfconnect:`).
fn config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("system.yaml");
    std::fs::write(
        &p,
        format!(
            "jfconnect:\n  data_dir: {}\n  http:\n    connect_timeout: 5s\n    request_timeout: 10s\n{body}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

fn run(dir: &Path, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = jfconnect(dir);
    c.arg("--config").arg(cfg).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the binary off the async runtime, which serves the simulator meanwhile.
async fn run_async(dir: &Path, cfg: &Path, args: &[&str]) -> Output {
    let (dir, cfg) = (dir.to_path_buf(), cfg.to_path_buf());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, &cfg, &args, &[])
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_name_mismatch_says_the_certificate_does_not_match_the_host_name() {
    let sim = sim_support::start_with(|o| o.tls = true).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("license"), sim_support::LICENSE).unwrap();
    // The simulator's certificate names `localhost`; the URL names 127.0.0.1. The CA is trusted.
    let url = format!("https://127.0.0.1:{}", sim.handle.addr().port());
    let cfg = config(
        dir.path(),
        &format!(
            "  license:\n    file: {}\n  jes:\n    url: {url}\n  tls:\n    ca_file: {}\n",
            dir.path().join("license").display(),
            sim.handle.ca_file().unwrap().display()
        ),
    );
    let o = run_async(dir.path(), &cfg, &["jobs", "run", "entitlements"]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not issued for the host name 127.0.0.1 in jfconnect.jes.url"),
        "{err}"
    );
    assert!(
        !err.contains("add your CA"),
        "the CA is not at fault: {err}"
    );
}

#[test]
fn a_refused_connection_names_the_url_with_its_port_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("license"), "JFL-SENTENCES-0001").unwrap();
    std::fs::write(dir.path().join("token"), "a-token").unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "  license:\n    file: {lic}\n  jes:\n    url: http://127.0.0.1:{port}\n  jcs:\n    url: http://127.0.0.1:{port}\n  jpd:\n    url: http://localhost:{port}\n    token_file: {tok}\n",
            lic = dir.path().join("license").display(),
            tok = dir.path().join("token").display()
        ),
    );
    let o = run(dir.path(), &cfg, &["jobs", "run", "entitlements"], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "JES at http://127.0.0.1:{port} refused the connection"
        )) && err.contains("jfconnect.jes.url")
            && err.contains(&format!("127.0.0.1:{port} is allowlisted")),
        "{err}"
    );
    // The Access check of `doctor` goes to jpd.url.
    let o = run(dir.path(), &cfg, &["doctor"], &[]);
    let out = stdout(&o);
    let access = out
        .lines()
        .find(|l| l.contains(" Access "))
        .unwrap_or_else(|| panic!("no Access line: {out}"));
    assert!(
        access.contains(&format!(
            "Access at http://localhost:{port} refused the connection"
        )) && access.contains("jfconnect.jpd.url")
            && access.contains(&format!("localhost:{port} is allowlisted")),
        "{access}"
    );
}

#[test]
fn no_license_names_the_files_it_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    // No license.file: the default, <data_dir>/license, is looked at.
    let lic = dir.path().join("data").join("license");
    let cfg = config(dir.path(), "");
    let o = run(dir.path(), &cfg, &["jobs", "run", "entitlements"], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let api = dir.path().join("data").join("license.api");
    assert!(
        err.contains("no license is configured")
            && err.contains(&lic.display().to_string())
            && err.contains(&api.display().to_string()),
        "names license.file and <data_dir>/license.api: {err}"
    );
}

/// Each bad value and the sentence it must give; none may show serde's type names.
#[test]
fn bad_values_say_what_the_key_takes() {
    let dir = tempfile::tempdir().unwrap();
    let file_cases: &[(&str, &str)] = &[
        ("  port: 99999\n", "port must be a number from 1 to 65535"),
        ("  port: abc\n", "port must be a number from 1 to 65535"),
        ("  port: 0\n", "port must be a number from 1 to 65535"),
        ("  port: 80.5\n", "port must be a number from 1 to 65535"),
        (
            "  grpc:\n    port: -3\n",
            "port must be a number from 1 to 65535",
        ),
        ("  enabled: maybe\n", "must be true or false"),
        ("  usage:\n    batch_size: lots\n", "must be a whole number"),
        ("  usage:\n    batch_size: -1\n", "must be a whole number"),
        ("  usage:\n    interval: 5\n", "has no unit"),
        (
            "  usage:\n    spool_dir: [a, b]\n",
            "must be one value, not a list",
        ),
        ("  airgap:\n    vendor_public_keys: abc\n", "must be a list"),
        ("  jes: 5\n", "is a section"),
        ("  log:\n    format: xml\n", "must be one of text, json"),
    ];
    let jargon = [
        "expected u16",
        "expected usize",
        "expected a boolean",
        "expected a string",
        "expected path string",
        "expected struct",
        "expected a sequence",
        "invalid type",
        "invalid value",
        "unknown variant",
    ];
    for (body, want) in file_cases {
        let cfg = config(dir.path(), body);
        let o = run(dir.path(), &cfg, &["config", "check"], &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(want), "{body}: wanted {want:?}, got {err}");
        for j in jargon {
            assert!(!err.contains(j), "{body}: serde's words {j:?} in {err}");
        }
    }
    let cfg = config(dir.path(), "");
    for (var, value, want) in [
        (
            "JF_JFCONNECT_PORT",
            "70000",
            "port must be a number from 1 to 65535",
        ),
        (
            "JF_JFCONNECT_PORT",
            "abc",
            "port must be a number from 1 to 65535",
        ),
        ("JF_JFCONNECT_ENABLED", "maybe", "must be true or false"),
    ] {
        let o = run(dir.path(), &cfg, &["config", "check"], &[(var, value)]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{var}={value}: {err}");
        assert!(
            err.contains(want),
            "{var}={value}: wanted {want:?}, got {err}"
        );
        assert!(err.contains(var), "{err}");
        for j in jargon {
            assert!(
                !err.contains(j),
                "{var}={value}: serde's words {j:?} in {err}"
            );
        }
    }
}

/// A mistyped key or variable points to a README section, and that section exists.
#[test]
fn a_mistyped_key_or_variable_points_to_a_readme_section_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "  prot: 8030\n");
    let in_file = stderr(&run(dir.path(), &cfg, &["config", "check"], &[]));
    let cfg = config(dir.path(), "");
    let in_env = stderr(&run(
        dir.path(),
        &cfg,
        &["config", "check"],
        &[("JF_JFCONNECT_PROT", "1")],
    ));
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for err in [in_file, in_env] {
        assert!(err.contains("jfconnect.prot"), "{err}");
        assert!(err.contains("did you mean jfconnect.port"), "{err}");
        let section = err
            .split("see the ")
            .nth(1)
            .and_then(|s| s.split(" section of README.md").next())
            .unwrap_or_else(|| panic!("no README section named: {err}"));
        assert!(
            readme
                .lines()
                .any(|l| l.trim_start_matches('#').trim() == section && l.starts_with('#')),
            "README.md has no section {section:?}: {err}"
        );
    }
}
