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
    Running::serve(service, dir).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Running {
    /// `serve` for `service` on a free loopback port until [`Running::shutdown`].
    async fn serve(service: Arc<App>, dir: tempfile::TempDir) -> Running {
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

impl Running {
    fn data(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }
    /// The admin token `serve` made in the data folder (none was configured).
    fn admin(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .expect("serve made <data_dir>/admin.token")
            .trim()
            .to_string()
    }
    /// Asks for a job run until the first scheduled run lets go of the job; the last status.
    async fn run_job(&self, job: &str, token: &str) -> u16 {
        let mut status = 0;
        for _ in 0..200 {
            let r = client()
                .post(self.url(&format!("/api/v1/jobs/{job}/run")))
                .bearer_auth(token)
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
        status
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
async fn admin_token_is_made_0600_at_start_differs_from_the_api_token_and_reads_too() {
    use std::os::unix::fs::PermissionsExt;
    let s = start(true).await;
    let meta = std::fs::metadata(s.data().join("admin.token")).expect("admin.token made");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let admin = s.admin();
    assert_eq!(admin.len(), 64, "32 random bytes in hex");
    assert_ne!(admin, TOKEN);
    assert_eq!(s.get("/api/v1/jobs", Some(&admin)).await.status(), 200);
    assert_eq!(s.get("/metrics", Some(&admin)).await.status(), 200);
    s.shutdown().await;
}

#[tokio::test]
async fn the_api_token_only_reads_and_gets_403_with_a_sentence_on_every_state_change() {
    let s = start(true).await;
    let c = client();
    let writes = [
        c.put(s.url("/api/v1/license")).body("JFL-READ-SCOPE-TRY"),
        c.post(s.url("/api/v1/jobs/entitlements/run")),
        c.post(s.url("/api/v1/jobs/usage/run")),
        c.get(s.url("/api/v1/offline/start_register")),
        c.post(s.url("/api/v1/offline/register")).body("x"),
    ];
    for w in writes {
        let r = w.bearer_auth(TOKEN).send().await.unwrap();
        let what = format!("{}", r.url());
        assert_eq!(r.status(), 403, "{what}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden", "{what}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("admin token") && message.contains("api.admin_token_file"),
            "{what}: {message}"
        );
    }
    assert!(
        !s.data().join("license.api").exists(),
        "the refused PUT wrote nothing"
    );
    let r = c
        .put(s.url("/api/v1/license"))
        .bearer_auth(s.admin())
        .body("JFL-ADMIN-SCOPE-SET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(s.run_job("entitlements", &s.admin()).await, 202);
    s.shutdown().await;
}

#[tokio::test]
async fn guarded_paths_answer_401_before_404_or_405() {
    let s = start(true).await;
    let c = client();
    let cases = [
        (reqwest::Method::GET, "/api/v1/nothing", 404),
        (reqwest::Method::GET, "/no/such/thing", 404),
        (reqwest::Method::DELETE, "/api/v1/entitlements", 405),
        (reqwest::Method::GET, "/api/v1/license", 405),
        (reqwest::Method::GET, "/api/v1/jobs/usage/run", 405),
        (reqwest::Method::POST, "/metrics", 405),
    ];
    for (method, path, with_token) in cases {
        let r = c.request(method.clone(), s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a token");
        assert_eq!(error_code(r).await, "unauthorized");
        let r = c
            .request(method.clone(), s.url(path))
            .bearer_auth("wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong token");
        let r = c
            .request(method.clone(), s.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), with_token, "{method} {path} with the API token");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn state_changes_are_audited_as_json_lines_without_secrets() {
    let s = start(true).await;
    let c = client();
    let admin = s.admin();
    let r = c
        .put(s.url("/api/v1/license"))
        .bearer_auth(&admin)
        .body("JFL-AUDITED-SECRET-LICENSE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .put(s.url("/api/v1/license"))
        .bearer_auth(TOKEN)
        .body("JFL-REFUSED-SECRET-LICENSE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(s.get("/api/v1/jobs", Some(TOKEN)).await.status(), 200);
    assert_eq!(s.run_job("entitlements", &admin).await, 202);
    let log = s.data().join("logs").join("jfconnect-audit.log");
    let text = std::fs::read_to_string(&log).expect("the audit log beside the other logs");
    s.shutdown().await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let license_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["path"] == "/api/v1/license")
        .collect();
    assert_eq!(license_lines.len(), 2, "{text}");
    let (set, refused) = (license_lines[0], license_lines[1]);
    assert_eq!(set["scope"], "admin");
    assert_eq!(set["method"], "PUT");
    assert_eq!(set["status"], 202);
    assert!(set["remote_address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert!(chrono::DateTime::parse_from_rfc3339(set["time"].as_str().unwrap()).is_ok());
    assert!(
        set["change"]
            .as_str()
            .is_some_and(|c| c.contains("license")),
        "{set}"
    );
    assert_eq!(refused["scope"], "read");
    assert_eq!(refused["status"], 403);
    assert!(refused["change"].is_null(), "nothing changed: {refused}");
    let run = lines
        .iter()
        .find(|l| l["status"] == 202 && l["path"] == "/api/v1/jobs/entitlements/run")
        .unwrap_or_else(|| panic!("the job run is audited: {text}"));
    assert!(run["change"]
        .as_str()
        .is_some_and(|c| c.contains("entitlements")));
    assert!(
        !lines.iter().any(|l| l["path"] == "/api/v1/jobs"),
        "reads are not audited: {text}"
    );
    for secret in [
        "JFL-AUDITED-SECRET-LICENSE",
        "JFL-REFUSED-SECRET-LICENSE",
        TOKEN,
        &admin,
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
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
        .bearer_auth(s.admin())
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
    let status = s.run_job("entitlements", &s.admin()).await;
    assert_eq!(status, 202);
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_body_and_bad_json_are_refused() {
    let s = start(true).await;
    let big = vec![b'a'; 2 * 1024 * 1024];
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(s.admin())
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "bad_body");
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(s.admin())
        .header("content-type", "application/json")
        .body("{\"license_key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_json");
    let r = client()
        .put(s.url("/api/v1/license"))
        .bearer_auth(s.admin())
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
        .bearer_auth(s.admin())
        .body("JFL-NEW-SECRET-LICENSE-77")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = s.admin();
    s.shutdown().await;
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(logs.contains("job"), "logs were captured: {logs}");
    for secret in [LICENSE, "JFL-NEW-SECRET-LICENSE-77", TOKEN, &admin] {
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
    let s = Running::serve(service, dir).await;
    let r = client()
        .get(s.url("/api/v1/store/api/v1/products?q=xray"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "store says hi");
    let r = client()
        .get(s.url("/api/v1/store/a/%252e%252e/b"))
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
    s.shutdown().await;
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
