//! The HTTP API end to end: auth, errors, caps, metrics, graceful shutdown, secrets in logs.

use jfconnect::app::{self as service, App};
use jfconnect::clock::{ManualClock, SharedClock};
use jfconnect::config::Config;
use jfconnect::protocol::{Entitlement, Entitlements};
use jfconnect::transport::memory::MemoryTransport;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const LICENSE: &str = "JFL-API-TEST-LICENSE-42";
const TOKEN: &str = "test-api-token-0123456789";

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), service::AppError>>,
    service: Arc<App>,
    _dir: tempfile::TempDir,
}

fn entitlements() -> Entitlements {
    Entitlements {
        subscription_id: "sub-api".into(),
        subscription_type: "enterprise_plus".into(),
        jpd_id: "x".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        entitlements: vec![Entitlement {
            product: "xray".into(),
            feature: "scan".into(),
            valid_from: None,
            valid_until: None,
        }],
    }
}

async fn start(enabled: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(dir.path().join("data"));
    config.enabled = enabled;
    let lic = dir.path().join("license");
    std::fs::write(&lic, LICENSE).unwrap();
    config.license.file = Some(lic);
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    let transport = Arc::new(MemoryTransport::new(LICENSE, "\"e1\"", entitlements()));
    let clock: SharedClock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let service = Arc::new(App::build(config, clock, Some(transport), true).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(jfconnect::server::serve(
        service.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        stop: Some(tx),
        done,
        service,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = client().get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }
    async fn wait_for_entitlements(&self) {
        for _ in 0..200 {
            if self.service.entitlements().snapshot().current.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("entitlements never arrived");
    }
    async fn shutdown(mut self) -> Duration {
        let t = std::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), &mut self.done)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        t.elapsed()
    }
}

async fn error_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.expect("JSON error body");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    v["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn ping_liveness_readiness_need_no_token() {
    let s = start(true).await;
    let r = s.get("/api/v1/system/ping", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");
    assert_eq!(s.get("/api/v1/system/liveness", None).await.status(), 200);
    let r = s.get("/api/v1/system/readiness", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn guarded_routes_refuse_missing_and_wrong_tokens() {
    let s = start(true).await;
    for path in [
        "/api/v1/entitlements",
        "/api/v1/jobs",
        "/metrics",
        "/api/v1/system/jpd_id",
    ] {
        let r = s.get(path, None).await;
        assert_eq!(r.status(), 401, "{path} without token");
        assert_eq!(error_code(r).await, "unauthorized");
        assert_eq!(
            s.get(path, Some("wrong-token")).await.status(),
            401,
            "{path} wrong token"
        );
    }
    let r = s.get("/api/v1/system/jpd_id", Some(TOKEN)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), s.service.jpd_id());
    s.shutdown().await;
}

#[tokio::test]
async fn entitlements_are_served_after_the_job_runs() {
    let s = start(true).await;
    s.wait_for_entitlements().await;
    let r = s.get("/api/v1/entitlements", Some(TOKEN)).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["subscription_id"], "sub-api");
    assert_eq!(v["entitlements"][0]["product"], "xray");
    assert!(v["age_seconds"].as_i64().is_some());
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_route_unknown_job_and_wrong_method_are_json_errors() {
    let s = start(true).await;
    let r = s.get("/api/v1/nothing", Some(TOKEN)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
    let r = client()
        .post(s.url("/api/v1/jobs/nope/run"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "unknown_job");
    let r = client()
        .delete(s.url("/api/v1/entitlements"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // The first scheduled run may still hold the job: 409 naming this process until it ends.
    let mut status = 0;
    for _ in 0..200 {
        let r = client()
            .post(s.url("/api/v1/jobs/entitlements/run"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status != 409 {
            break;
        }
        assert_eq!(error_code(r).await, "job_running");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 202);
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_body_and_bad_json_are_refused() {
    let s = start(true).await;
    let big = vec![b'a'; 2 * 1024 * 1024];
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "bad_body");
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"license_key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_json");
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(TOKEN)
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.shutdown().await;
}

#[tokio::test]
async fn metrics_show_job_runs_and_entitlements_age() {
    let s = start(true).await;
    s.wait_for_entitlements().await;
    let mut text = String::new();
    for _ in 0..100 {
        text = s.get("/metrics", Some(TOKEN)).await.text().await.unwrap();
        if text.contains("jfconnect_job_runs_total{job=\"entitlements\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text.contains("jfconnect_job_runs_total{job=\"entitlements\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("jfconnect_job_failures_total{job=\"entitlements\",class=\"rejected\"} 0"),
        "{text}"
    );
    assert!(text.contains("jfconnect_registered 1"), "{text}");
    assert!(
        text.contains("jfconnect_entitlements_age_seconds 0"),
        "{text}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn disabled_service_answers_health_and_runs_nothing() {
    let s = start(false).await;
    assert_eq!(s.get("/api/v1/system/ping", None).await.status(), 200);
    let r = s.get("/api/v1/system/readiness", None).await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "disabled"
    );
    let r = s.get("/api/v1/entitlements", Some(TOKEN)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "disabled");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.service.entitlements().snapshot().registration.is_none(),
        "no job ran"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_within_ten_seconds_with_an_open_connection() {
    let s = start(true).await;
    let c = client();
    assert_eq!(
        c.get(s.url("/api/v1/system/ping"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // `c` keeps its keep-alive connection open while the server shuts down.
    let took = s.shutdown().await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(c);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn license_and_token_never_appear_in_logs() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = start(true).await;
    s.wait_for_entitlements().await;
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(TOKEN)
        .body("JFL-NEW-SECRET-LICENSE-77")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.shutdown().await;
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(logs.contains("job"), "logs were captured: {logs}");
    for secret in [LICENSE, "JFL-NEW-SECRET-LICENSE-77", TOKEN] {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
    }
}

#[tokio::test]
async fn store_proxy_is_off_without_a_store_url() {
    let s = start(true).await;
    let r = s.get("/api/v1/store/api/v1/products", Some(TOKEN)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "store_not_configured");
    assert_eq!(
        s.get("/api/v1/store/x", None).await.status(),
        401,
        "needs the token like every route"
    );
    s.shutdown().await;
}

/// What the test store received: URI, Authorization, X-Forwarded-For.
type Forwarded = (String, Option<String>, Option<String>);

#[tokio::test]
async fn store_proxy_in_the_service_forwards_without_our_token() {
    use axum::routing::get;
    let seen: Arc<Mutex<Vec<Forwarded>>> = Arc::default();
    let record = seen.clone();
    let upstream = axum::Router::new().route(
        "/{*rest}",
        get(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let record = record.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    record.lock().unwrap().push((
                        uri.to_string(),
                        h("authorization"),
                        h("x-forwarded-for"),
                    ));
                    "store says hi"
                }
            },
        ),
    );
    let ul = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uaddr = ul.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(ul, upstream).await });

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(dir.path().join("data"));
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.store.url = Some(format!("http://{uaddr}/store").parse().unwrap());
    let clock: SharedClock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let service = Arc::new(
        App::build(
            config,
            clock,
            Some(Arc::new(MemoryTransport::default())),
            true,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(jfconnect::server::serve(
        service.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    let r = client()
        .get(format!("http://{addr}/api/v1/store/api/v1/products?q=xray"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "store says hi");
    let r = client()
        .get(format!("http://{addr}/api/v1/store/a/%252e%252e/b"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "the path trick never reached the store: {seen:?}"
    );
    assert_eq!(seen[0].0, "/store/api/v1/products?q=xray");
    assert_eq!(seen[0].1, None, "our API token is never forwarded");
    assert_eq!(seen[0].2.as_deref(), Some("127.0.0.1"));
    let _ = tx.send(());
    done.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_change_of_entitlements_is_served_at_once_not_from_a_stale_cache() {
    let s = start(true).await;
    s.wait_for_entitlements().await;
    let first: serde_json::Value = s
        .get("/api/v1/entitlements", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["subscription_id"], "sub-api");
    s.service
        .entitlements()
        .update(|st| {
            if let Some(c) = st.current.as_mut() {
                c.entitlements.subscription_id = "sub-changed".into();
            }
        })
        .unwrap();
    let second: serde_json::Value = s
        .get("/api/v1/entitlements", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["subscription_id"], "sub-changed");
    s.shutdown().await;
}
