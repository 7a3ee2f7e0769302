//! A client no one here wrote: Python's grpcio, with stubs that protoc and grpc's Python
//! plugin generate from the proto, calls Get, Check and Watch across a change, and is refused
//! without the right token. scripts/install-test-tools installs python3-grpcio,
//! protobuf-compiler and protobuf-compiler-grpc.

mod grpc_support;

use grpc_support::{served, start, TOKEN};
use jfconnect::grpc::Limits;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The first Python that has grpcio (Debian's lives in /usr/bin, ahead of any other on PATH).
fn python() -> String {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = std::process::Command::new(candidate)
            .args(["-c", "import grpc, google.protobuf"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate.to_string();
        }
    }
    panic!("no python3 with grpcio; run scripts/install-test-tools (python3-grpcio)");
}

fn generate_stubs(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plugin = "/usr/bin/grpc_python_plugin";
    assert!(
        Path::new(plugin).exists(),
        "{plugin} is missing; run scripts/install-test-tools (protobuf-compiler-grpc)"
    );
    let status = std::process::Command::new("protoc")
        .arg(format!("-I{}", root.join("proto").display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_out={}", out.display()))
        .arg(format!("--plugin=protoc-gen-grpc={plugin}"))
        .arg(root.join("proto/jfconnect/v1/entitlements.proto"))
        .status()
        .expect("protoc runs; run scripts/install-test-tools (protobuf-compiler)");
    assert!(status.success(), "protoc failed on the proto");
}

#[tokio::test]
async fn python_grpcio_gets_checks_and_watches_across_a_change() {
    let stubs = tempfile::tempdir().unwrap();
    generate_stubs(stubs.path());
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpc_client.py");
    let mut child = tokio::process::Command::new(python())
        .arg(&script)
        .arg(stubs.path())
        .arg(server.addr.to_string())
        .arg(TOKEN)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("watch-first") {
                server.publish(served(&["scan", "sbom"], 0));
            }
            seen.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the Python client finishes within 30 s");
    let output = seen.join("\n");
    assert!(status.success(), "the Python client failed:\n{output}");
    let first_version = seen[1].split(' ').nth(1).unwrap().to_string();
    assert_eq!(seen[0], "unauthenticated");
    assert_eq!(
        seen[1],
        format!("get {first_version} jpd-test SOURCE_CONNECTED scan")
    );
    assert_eq!(seen[2], "check True 2099-01-01T00:00:00Z False");
    assert_eq!(seen[3], format!("watch-first {first_version}"));
    assert!(
        seen[4].starts_with("watch-next ") && seen[4].ends_with(" scan,sbom"),
        "{output}"
    );
    assert!(!seen[4].contains(&first_version), "{output}");
    assert_eq!(seen[5], "resume DEADLINE_EXCEEDED", "{output}");
    server.stop().await;
}
