//! `jfconnect serve` as a process: the client cache keeps answering while it is killed and
//! restarted, then converges; a gRPC port already in use exits 2 naming the key.

mod process_support;
mod sim_support;

use process_support::{free_port, Killed};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "process-test-token";
const ADMIN: &str = "process-test-admin-token";

fn serve(dir: &Path, sim: &sim_support::Sim, http: u16, grpc: u16) -> Command {
    std::fs::write(dir.join("license"), sim_support::LICENSE).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(dir.join("admin-token"), ADMIN).unwrap();
    let base = sim.handle.base_url();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    cmd.arg("serve")
        .env_clear()
        .env("JF_JFCONNECT_BIND", "127.0.0.1")
        .env("JF_JFCONNECT_PORT", http.to_string())
        .env("JF_JFCONNECT_GRPC_PORT", grpc.to_string())
        .env("JF_JFCONNECT_DATA_DIR", dir.join("data"))
        .env("JF_JFCONNECT_LICENSE_FILE", dir.join("license"))
        .env("JF_JFCONNECT_API_TOKEN_FILE", dir.join("token"))
        .env("JF_JFCONNECT_API_ADMIN_TOKEN_FILE", dir.join("admin-token"))
        .env("JF_JFCONNECT_JES_URL", &base)
        .env("JF_JFCONNECT_JCS_URL", &base)
        .env("JF_JFCONNECT_JPD_URL", &base)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Asks the service to fetch entitlements now, retrying while it starts.
async fn fetch_now(http: u16) {
    let base = format!("http://127.0.0.1:{http}");
    process_support::start_job_run(&sim_support::client(), &base, "entitlements", ADMIN).await;
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{what} within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_answers_while_serve_is_killed_and_restarted_then_converges() {
    let sim = sim_support::start().await;
    sim.set_xray_features(&["scan"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    let quiet = |mut c: Command| c.stderr(Stdio::null()).spawn().unwrap();
    let first = Killed(quiet(serve(dir.path(), &sim, http, grpc)));
    fetch_now(http).await;
    let client = jfconnect_client::Client::builder(TOKEN)
        .grpc(format!("http://127.0.0.1:{grpc}"))
        .http(format!("http://127.0.0.1:{http}"))
        .cache_file(dir.path().join("client-cache.json"))
        .backoff(jfconnect_client::Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        })
        .first_answer_wait(Duration::from_secs(10))
        // A restart can find the HTTP port first; the client goes back to gRPC this often.
        .grpc_retry(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    until(
        "the client has the entitlements",
        Duration::from_secs(10),
        || client.is_entitled("xray", "scan"),
    )
    .await;

    drop(first); // kill -9
    until(
        "the client sees jfconnect gone",
        Duration::from_secs(5),
        || client.link() == jfconnect_client::Link::Down,
    )
    .await;
    for _ in 0..25 {
        assert!(
            client.is_entitled("xray", "scan"),
            "answers while jfconnect is down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    sim.set_xray_features(&["scan", "sbom"]).await;
    let _second = Killed(quiet(serve(dir.path(), &sim, http, grpc)));
    fetch_now(http).await;
    until("the client converges", Duration::from_secs(10), || {
        client.is_entitled("xray", "sbom")
    })
    .await;
    until(
        "the client is back on gRPC",
        Duration::from_secs(10),
        || client.link() == jfconnect_client::Link::Grpc,
    )
    .await;
    sim.stop().await;
}

#[tokio::test]
async fn a_grpc_port_in_use_exits_2_naming_the_key() {
    let sim = sim_support::start().await;
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc = taken.local_addr().unwrap().port();
    let mut child = Killed(serve(dir.path(), &sim, free_port(), grpc).spawn().unwrap());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    });
    let (status, stderr) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("serve exits")
        .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("jfconnect.grpc.port"), "{stderr}");
    assert!(stderr.contains("JF_JFCONNECT_GRPC_PORT"), "{stderr}");
    assert!(!stderr.contains(TOKEN));
    drop(taken);
    sim.stop().await;
}
