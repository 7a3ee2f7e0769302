//! Hostile files where jfconnect expects a secret, a key, a CA bundle or its config: a FIFO
//! (would hang a blocking open), `/dev/zero` (would be read until memory runs out), a Unix
//! socket, a directory and a regular file over the size cap. Each must be refused quickly, with
//! exit code 2 and one line naming the key (or the config file) and what is wrong.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A hostile file of one kind at `path`; the returned guard keeps a socket listening.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    Fifo,
    DevZero,
    Socket,
    Directory,
    Oversized(u64),
}

fn make(kind: Hostile, path: &Path) -> Option<UnixListener> {
    match kind {
        Hostile::Fifo => {
            let st = Command::new("mkfifo").arg(path).status().unwrap();
            assert!(st.success());
            None
        }
        Hostile::DevZero => {
            std::os::unix::fs::symlink("/dev/zero", path).unwrap();
            None
        }
        Hostile::Socket => Some(UnixListener::bind(path).unwrap()),
        Hostile::Directory => {
            std::fs::create_dir(path).unwrap();
            None
        }
        Hostile::Oversized(n) => {
            std::fs::write(path, vec![b'a'; n as usize]).unwrap();
            None
        }
    }
}

/// Runs the binary with a wall-clock limit and an address-space cap, so that a regression
/// (a hang, an unbounded read) fails the test instead of the machine.
fn run_bounded(dir: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jfconnect {args:?} hung for 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
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

/// Config lines that point `key` at `file`.
fn config_for(key: &str, file: &Path) -> String {
    let f = file.display();
    match key {
        "api.token_file" => format!("  api:\n    token_file: {f}\n"),
        "license.file" => format!("  license:\n    file: {f}\n"),
        "jpd.token_file" => format!("  jpd:\n    token_file: {f}\n"),
        "proxy.password_file" => format!(
            "  proxy:\n    url: http://127.0.0.1:9\n    username: u\n    password_file: {f}\n"
        ),
        "tls.ca_file" => format!("  tls:\n    ca_file: {f}\n"),
        "airgap.vendor_public_keys" => {
            format!("  airgap:\n    enabled: true\n    vendor_public_keys: [{f}]\n")
        }
        other => panic!("no config line for {other}"),
    }
}

const SECRET_CAP: u64 = 64 * 1024;
const CA_CAP: u64 = 1024 * 1024;

fn kinds(cap: u64) -> [Hostile; 5] {
    [
        Hostile::Fifo,
        Hostile::DevZero,
        Hostile::Socket,
        Hostile::Directory,
        Hostile::Oversized(cap + 1),
    ]
}

fn expect_refused(out: &Output, key: &str, file: &Path, kind: Hostile) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{key} as {kind:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{key} as {kind:?}: {err}");
    assert!(err.contains(key), "{key} as {kind:?} not named: {err}");
    assert!(
        err.contains(&file.display().to_string()),
        "{key} as {kind:?}: file not named: {err}"
    );
    let why = match kind {
        Hostile::Oversized(_) => "larger than",
        _ => "not a regular file",
    };
    assert!(err.contains(why), "{key} as {kind:?}: {err}");
}

fn hostile_key(key: &str, cap: u64) {
    for kind in kinds(cap) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hostile");
        let _guard = make(kind, &file);
        let cfg = write_config(dir.path(), &config_for(key, &file));
        let out = run_bounded(dir.path(), &["--config", cfg.to_str().unwrap(), "status"]);
        expect_refused(&out, &format!("jfconnect.{key}"), &file, kind);
    }
}

#[test]
fn hostile_api_token_file_is_refused_naming_the_key() {
    hostile_key("api.token_file", SECRET_CAP);
}

#[test]
fn hostile_license_file_is_refused_naming_the_key() {
    hostile_key("license.file", SECRET_CAP);
}

#[test]
fn hostile_jpd_token_file_is_refused_naming_the_key() {
    hostile_key("jpd.token_file", SECRET_CAP);
}

#[test]
fn hostile_proxy_password_file_is_refused_naming_the_key() {
    hostile_key("proxy.password_file", SECRET_CAP);
}

#[test]
fn hostile_ca_file_is_refused_naming_the_key() {
    hostile_key("tls.ca_file", CA_CAP);
}

#[test]
fn hostile_vendor_public_key_is_refused_naming_the_key() {
    hostile_key("airgap.vendor_public_keys", SECRET_CAP);
}

#[test]
fn hostile_config_file_is_refused_naming_the_file() {
    for kind in kinds(CA_CAP) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("system.yaml");
        let _guard = make(kind, &file);
        let out = run_bounded(dir.path(), &["--config", file.to_str().unwrap(), "status"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind:?}: {err}");
        assert!(err.contains(&file.display().to_string()), "{kind:?}: {err}");
        let why = match kind {
            Hostile::Oversized(_) => "larger than",
            _ => "not a regular file",
        };
        assert!(err.contains(why), "{kind:?}: {err}");
    }
}

#[test]
fn a_secret_at_the_cap_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "t".repeat(SECRET_CAP as usize)).unwrap();
    let cfg = write_config(dir.path(), &config_for("api.token_file", &file));
    let out = run_bounded(dir.path(), &["--config", cfg.to_str().unwrap(), "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
