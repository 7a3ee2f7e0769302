//! `POST /api/v1/jobs/{name}/run` answers 202 only when the job really started, and 409 naming
//! the holder (another process by its PID, or this process) while the job runs.

mod process_support;
mod sim_support;

use process_support::InProcess;

use jfconnect::app::App;
use jfconnect::clock::{SharedClock, SystemClock};
use jfconnect::config::Config;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-api-token-0123456789";
const ADMIN: &str = "test-admin-token-0123456789";

async fn post_run(client: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let r = client
        .post(format!("{base}/api/v1/jobs/entitlements/run"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_answers_409_with_the_holder_while_the_job_runs() {
    // Every simulator answer takes 2 s, so a run holds its lock that long.
    let sim = sim_support::start_with(|o| {
        o.faults
            .push(jfconnect::sim::parse_fault("any=delay:2s").unwrap());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("license"), sim_support::LICENSE).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN).unwrap();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {}\n  license:\n    file: {}\n  api:\n    token_file: {}\n    admin_token_file: {}\n  jes:\n    url: {}\n",
            data.display(),
            dir.path().join("license").display(),
            dir.path().join("token").display(),
            dir.path().join("admin-token").display(),
            sim.handle.base_url()
        ),
    )
    .unwrap();

    // A CLI `jobs run` takes the job's lock first.
    let mut cli = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .arg("--config")
        .arg(&cfg)
        .args(["jobs", "run", "entitlements"])
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = data.join("locks").join("entitlements.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&lock).ok().as_deref() != Some(&cli.id().to_string()) {
        assert!(Instant::now() < deadline, "the CLI never took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The service on the same data folder.
    let config = Config::load(Some(&cfg)).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let app = Arc::new(App::build(config, clock, None, true).unwrap());
    let server = InProcess::start(app).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let (status, body) = post_run(&client, &base).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "job_running");
    assert_eq!(body["holder"]["pid"], cli.id());
    assert_eq!(body["holder"]["this_process"], false);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("another jfconnect process (PID {})", cli.id())),
        "{message}"
    );

    let code = tokio::task::spawn_blocking(move || cli.wait().unwrap().code())
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    // Free now: it really starts, and while it runs a second request names this process.
    let (status, body) = post_run(&client, &base).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "started");
    let (status, body) = post_run(&client, &base).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["holder"]["pid"], std::process::id());
    assert_eq!(body["holder"]["this_process"], true);

    server.stop().await;
    sim.stop().await;
}
