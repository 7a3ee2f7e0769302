//! Fault injection on the simulator: statuses, resets, delays, checksum lies, counts, and the
//! run-time control endpoint; plus robustness against hostile bytes and clean shutdown.

mod sim_support;

use jfconnect::protocol::{sha256_hex, ErrorBody, StorageInfo, ACCESS_TOKEN_CHECK};
use jfconnect::sim::{self, parse_fault, SimOptions};
use jfconnect::transport::ErrorClass;
use sim_support::*;
use std::time::Duration;

#[tokio::test]
async fn status_fault_answers_that_status_with_a_json_error() {
    let sim = start_with(|o| o.faults = vec![parse_fault("register=503x1").unwrap()]).await;
    let resp = sim.register_raw(LICENSE, JPD).await;
    assert_eq!(resp.status(), 503);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "simulated_fault");
    assert_eq!(sim.register_raw(LICENSE, JPD).await.status(), 200);
}

#[tokio::test]
async fn counted_fault_expires_after_its_count() {
    let sim = start().await;
    let token = sim.register().await;
    assert_eq!(sim.set_faults(&["entitlements=500x3"]).await.status(), 200);
    for _ in 0..3 {
        assert_eq!(sim.entitlements(&token, None).await.status(), 500);
    }
    assert_eq!(sim.entitlements(&token, None).await.status(), 200);
    let stats = sim.stats().await;
    assert_eq!(stats.faults_fired, 3);
    assert_eq!(stats.entitlements_calls, 4);
}

#[tokio::test]
async fn reset_fault_cuts_the_connection_without_an_http_answer() {
    let sim = start().await;
    let token = sim.register().await;
    sim.set_faults(&["usage=resetx1"]).await;
    let url = sim.url(jfconnect::protocol::JCS_USAGE);
    let err = sim
        .http
        .post(&url)
        .bearer_auth(&token)
        .header(jfconnect::protocol::HEADER_JPD_ID, JPD)
        .json(&usage_batch(&[&usage_file(1)]))
        .send()
        .await
        .expect_err("a reset must not produce an HTTP answer");
    assert!(err.status().is_none());
    assert!(!err.is_timeout());
    let classified = jfconnect::http::classify_send_error(
        &err,
        jfconnect::remote::Service::Jcs,
        &url.parse().unwrap(),
    );
    assert_eq!(classified.class, ErrorClass::Unavailable, "{classified}");
    assert!(
        classified.message.contains("cut before an answer"),
        "{classified}"
    );
    // Spent: the next upload goes through.
    assert_eq!(
        sim.upload_usage(&token, &[&usage_file(1)]).await.status(),
        200
    );
}

#[tokio::test]
async fn reset_fault_on_deploy_cuts_an_upload_in_flight() {
    let sim = start_with(|o| o.faults = vec![parse_fault("deploy=reset").unwrap()]).await;
    let bytes = vec![7u8; 8 * 1024 * 1024];
    let err = sim
        .http
        .put(sim.url("/artifactory/r/a.zip"))
        .bearer_auth("t")
        .header("X-Checksum-Sha256", sha256_hex(&bytes))
        .body(bytes)
        .send()
        .await
        .expect_err("a reset must not produce an HTTP answer");
    assert!(err.status().is_none());
    assert!(!sim.dir.path().join("artifactory/r/a.zip").exists());
}

#[tokio::test]
async fn delay_fault_makes_a_short_client_timeout_fire() {
    let sim = start().await;
    sim.set_faults(&["token=delay:1500msx1"]).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = impatient
        .get(sim.url(ACCESS_TOKEN_CHECK))
        .bearer_auth("t")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let ok = impatient
        .get(sim.url(ACCESS_TOKEN_CHECK))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn mismatch_fault_makes_storage_info_lie_about_the_sha256() {
    let sim = start().await;
    let sha = sha256_hex(b"archive");
    sim.deploy("r/x.bin", b"archive".to_vec(), &sha).await;
    sim.set_faults(&["storage=mismatchx1"]).await;
    let info = |sim: &Sim| {
        sim.http
            .get(sim.url("/artifactory/api/storage/r/x.bin"))
            .bearer_auth("t")
            .send()
    };
    let lie: StorageInfo = info(&sim).await.unwrap().json().await.unwrap();
    assert_ne!(lie.checksums.sha256, sha);
    assert_eq!(lie.checksums.sha256.len(), 64);
    let truth: StorageInfo = info(&sim).await.unwrap().json().await.unwrap();
    assert_eq!(truth.checksums.sha256, sha);
}

#[tokio::test]
async fn runtime_faults_can_be_listed_replaced_and_cleared() {
    let sim = start().await;
    let resp = sim.set_faults(&["any=503", "register=400x2"]).await;
    let listed: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        listed["faults"],
        serde_json::json!(["any=503", "register=400x2"])
    );
    assert_eq!(sim.register_raw(LICENSE, JPD).await.status(), 503);
    let token_check = sim
        .http
        .get(sim.url(ACCESS_TOKEN_CHECK))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(token_check.status(), 503);

    let cleared = sim
        .http
        .delete(sim.url("/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(sim.register_raw(LICENSE, JPD).await.status(), 200);
    let now: serde_json::Value = sim
        .http
        .get(sim.url("/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["faults"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_runtime_fault_is_400_with_a_sentence_and_changes_nothing() {
    let sim = start().await;
    sim.set_faults(&["usage=500"]).await;
    let resp = sim.set_faults(&["usage=500", "usage=teapot"]).await;
    assert_eq!(resp.status(), 400);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "bad_fault");
    assert!(
        body.error.message.contains("unknown action"),
        "{}",
        body.error.message
    );
    let now: serde_json::Value = sim
        .http
        .get(sim.url("/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["faults"], serde_json::json!(["usage=500"]));
}

#[tokio::test]
async fn hostile_bytes_never_take_the_sim_down() {
    let sim = start().await;
    let long_header = format!(
        "GET /_sim/stats HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    for junk in [
        "\x00\x01\x02garbage\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "PUT /artifactory/r/a HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "POST /jcs/api/v1/usage HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        long_header.as_str(),
    ] {
        let _ = raw_request(&sim, junk).await;
    }
    let unknown = sim.http.get(sim.url("/nowhere")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let body: ErrorBody = unknown.json().await.unwrap();
    assert_eq!(body.error.code, "not_found");
    let wrong_method = sim
        .http
        .delete(sim.url("/jes/api/v1/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(sim.stats().await.register_calls, 0);
}

#[tokio::test]
async fn run_serves_until_the_shutdown_future_completes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sim::run(
        listener,
        SimOptions::new(dir.path()),
        async move {
            let _ = rx.await;
        },
    ));
    let http = client();
    let url = format!("http://{addr}/_sim/stats");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("run did not stop")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn reset_fault_closes_with_a_tcp_reset_not_a_fin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start_with(|o| o.faults = vec![parse_fault("token=reset").unwrap()]).await;
    let mut s = tokio::net::TcpStream::connect(sim.handle.addr())
        .await
        .unwrap();
    s.write_all(
        b"GET /access/api/v1/tokens/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the sim neither answered nor closed");
    let err = read.expect_err("a reset connection must not read cleanly (not even EOF)");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}
