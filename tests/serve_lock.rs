//! One `serve` per data folder: a second process is refused with a sentence naming the PID of
//! the one already serving; read-only `status` creates nothing in a folder that does not exist.

mod process_support;
use process_support::{free_port, wait_for_ping, Killed};

use std::path::Path;
use std::process::{Command, Stdio};

fn jfconnect(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    // Parallel tests must not all bind the default gRPC port.
    c.env("JF_JFCONNECT_GRPC_ENABLED", "false");
    c.current_dir(dir)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("JFCONNECT_CONFIG")
        .env_remove("JFROG_HOME");
    c
}

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let p = dir.join(format!("system-{port}.yaml"));
    std::fs::write(
        &p,
        format!(
            "jfconnect:\n  data_dir: {}\n  bind: 127.0.0.1\n  port: {port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_second_serve_on_the_same_data_folder_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first_port = free_port();
    let first = Killed(
        jfconnect(dir.path())
            .arg("--config")
            .arg(config(dir.path(), first_port))
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_ping(first_port);
    let second_port = free_port();
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(config(dir.path(), second_port))
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "(PID {}) is already serving the data folder",
            first.0.id()
        )),
        "{err}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", second_port)).is_err(),
        "the second serve never listened"
    );
}

#[test]
fn status_on_a_fresh_folder_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(config(dir.path(), free_port()))
        .arg("status")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(not assigned yet)"), "{stdout}");
    assert!(
        !dir.path().join("data").exists(),
        "status created the data folder"
    );
}

#[test]
fn status_after_serve_creates_no_token_or_id_it_did_not_find() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("state")).unwrap();
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(config(dir.path(), free_port()))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.join("jpd_id").exists());
    assert!(!data.join("api.token").exists());
}
