//! Dynamic entitlements end to end: a change made at the simulator reaches an HTTP long-poll,
//! a gRPC watch and the client cache within a second of the entitlements job storing it; a
//! thousand watchers at once; shutdown with held requests; `enabled: false` on the gRPC port.

mod grpc_support;
mod process_support;
mod sim_support;

use jfconnect::app::App;
use jfconnect::clock::SystemClock;
use jfconnect::config::Config;
use jfconnect::server::Listeners;
use jfconnect_client::proto::WatchRequest;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const TOKEN: &str = "dynamic-entitlements-token";
const ADMIN: &str = "dynamic-entitlements-admin-token";

struct Service {
    http: SocketAddr,
    grpc: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), jfconnect::app::AppError>>,
    _dir: tempfile::TempDir,
}

async fn start(sim: Option<&sim_support::Sim>, enabled: bool) -> Service {
    start_with(sim, |c, _| c.enabled = enabled).await
}

async fn start_with(
    sim: Option<&sim_support::Sim>,
    tune: impl FnOnce(&mut Config, &Path),
) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(dir.path().join("data"));
    tune(&mut config, dir.path());
    std::fs::write(dir.path().join("license"), sim_support::LICENSE).unwrap();
    config.license.file = Some(dir.path().join("license"));
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.api.admin_token = Some(jfconnect::secret::Secret::new(ADMIN));
    if let Some(sim) = sim {
        let base: url::Url = sim.handle.base_url().parse().unwrap();
        config.jes.url = base.clone();
        config.jcs.url = base.clone();
        config.jpd.url = base;
    }
    let app = Arc::new(App::build(config, Arc::new(SystemClock), None, true).unwrap());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(jfconnect::server::serve(
        app.clone(),
        Listeners {
            http,
            grpc: Some(grpc),
        },
        async move {
            let _ = rx.await;
        },
    ));
    Service {
        http: http_addr,
        grpc: grpc_addr,
        app,
        stop: Some(tx),
        done,
        _dir: dir,
    }
}

impl Service {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Asks for a run now; a 409 means a run (the first scheduled one) holds the job, so ask
    /// again until one starts (bounded).
    async fn run_entitlements_job(&self, http: &reqwest::Client) {
        process_support::start_job_run(
            http,
            &format!("http://{}", self.http),
            "entitlements",
            ADMIN,
        )
        .await;
    }

    /// The current ETag, waiting (bounded) for the first entitlements.
    async fn etag(&self, http: &reqwest::Client) -> String {
        for _ in 0..200 {
            let r = http
                .get(self.url("/api/v1/entitlements"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return r.headers()["etag"].to_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no entitlements within 5 s");
    }

    /// Waits (bounded) until `n` more requests than `base` hold the feed.
    async fn until_held(&self, base: usize, n: usize) {
        let feed = self.app.feed();
        for _ in 0..1500 {
            if feed.receivers() >= base + n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "only {} of {n} watchers are held",
            feed.receivers().saturating_sub(base)
        );
    }

    /// Opens `n` long-polls in batches of 100 (a thousand connects in one instant would overflow
    /// the listen backlog on a loaded machine), each batch held before the next.
    async fn hold(
        &self,
        http: &reqwest::Client,
        etag: &str,
        base: usize,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<(u16, String, tokio::time::Instant)>> {
        let mut polls = Vec::new();
        while polls.len() < n {
            for _ in 0..100.min(n - polls.len()) {
                polls.push(long_poll(
                    http,
                    self.url("/api/v1/entitlements"),
                    etag,
                    "60s",
                ));
            }
            self.until_held(base, polls.len()).await;
        }
        polls
    }

    /// Waits (bounded) until no more than `base` receivers hold the feed.
    async fn until_released(&self, base: usize) {
        for _ in 0..500 {
            if self.app.feed().receivers() <= base {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("watchers did not let go of the feed");
    }

    async fn stop(mut self) -> Duration {
        let started = tokio::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(12), &mut self.done)
            .await
            .expect("serve returns within the shutdown promise")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(70))
        .pool_max_idle_per_host(2000)
        // Below the API's idle timeout (30 s), as jfconnect's own clients do.
        .pool_idle_timeout(jfconnect::http::POOL_IDLE_TIMEOUT)
        .build()
        .unwrap()
}

/// The simulator serving `xray/scan`, a service that fetched it, a client and the ETag.
async fn serving_xray_scan() -> (sim_support::Sim, Service, reqwest::Client, String) {
    let sim = sim_support::start().await;
    sim.set_xray_features(&["scan"]).await;
    let service = start(Some(&sim), true).await;
    let http = http_client();
    service.run_entitlements_job(&http).await;
    let etag = service.etag(&http).await;
    (sim, service, http, etag)
}

/// A long-poll held with the current ETag; resolves to (status, ETag, elapsed since start).
fn long_poll(
    http: &reqwest::Client,
    url: String,
    etag: &str,
    wait: &str,
) -> tokio::task::JoinHandle<(u16, String, tokio::time::Instant)> {
    let request = http
        .get(format!("{url}?wait={wait}"))
        .bearer_auth(TOKEN)
        .header("if-none-match", etag);
    tokio::spawn(async move {
        // As a product would: a connection lost before any answer is tried again.
        let mut tries = 0;
        let r = loop {
            match request.try_clone().unwrap().send().await {
                Ok(r) => break r,
                Err(e) if tries < 3 && e.is_request() => tries += 1,
                Err(e) => panic!("long-poll failed: {e}"),
            }
        };
        let tag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), tag, tokio::time::Instant::now())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_the_simulator_reaches_every_kind_of_watcher_within_a_second() {
    let (sim, service, http, etag) = serving_xray_scan().await;

    // Without a wait, a matching If-None-Match is 304 at once.
    let r = http
        .get(service.url("/api/v1/entitlements"))
        .bearer_auth(TOKEN)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let held = long_poll(&http, service.url("/api/v1/entitlements"), &etag, "30s");
    let mut grpc = grpc_support::client(service.grpc, Some(TOKEN)).await;
    let mut stream = grpc
        .watch_entitlements(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(
        format!("\"{}\"", first.version),
        etag,
        "one version for both APIs"
    );
    let client = jfconnect_client::Client::connect(&format!("http://{}", service.grpc), TOKEN)
        .await
        .unwrap();
    let http_client_cache = jfconnect_client::Client::builder(TOKEN)
        .http(format!("http://{}", service.http))
        .connect()
        .await
        .unwrap();
    assert!(client.is_entitled("xray", "scan") && http_client_cache.is_entitled("xray", "scan"));
    assert!(!client.is_entitled("xray", "sbom"));
    tokio::time::sleep(Duration::from_millis(100)).await;

    sim.set_xray_features(&["scan", "sbom"]).await;
    let mut changes = service.app.entitlements().changes();
    service.run_entitlements_job(&http).await;
    changes.changed().await.unwrap();
    let stored = tokio::time::Instant::now();

    let (status, new_etag, at) = held.await.unwrap();
    assert_eq!(status, 200);
    assert_ne!(new_etag, etag);
    assert!(at.saturating_duration_since(stored) < Duration::from_secs(1));
    let next = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the gRPC watcher hears within 1 s")
        .unwrap()
        .unwrap();
    assert_eq!(format!("\"{}\"", next.version), new_etag);
    for c in [&client, &http_client_cache] {
        let mut rx = c.subscribe();
        tokio::time::timeout(
            Duration::from_secs(1).saturating_sub(stored.elapsed()),
            rx.wait_for(|s| {
                s.as_ref()
                    .is_some_and(|s| format!("\"{}\"", s.version) == new_etag)
            }),
        )
        .await
        .expect("the client cache hears within 1 s of the store")
        .unwrap();
        assert!(c.is_entitled("xray", "sbom"));
    }
    assert_eq!(http_client_cache.link(), jfconnect_client::Link::Http);

    let check = http
        .get(service.url("/api/v1/entitlements/check?product=xray&feature=sbom"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
    let body: serde_json::Value = check.json().await.unwrap();
    assert_eq!(body["entitled"], true);
    assert_eq!(body["source"], "connected");
    assert!(body["age_seconds"].as_i64().unwrap() >= 0);
    let bad = http
        .get(service.url("/api/v1/entitlements/check?product=xray"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // A long-poll with nothing new answers 304 at its deadline.
    let quiet = long_poll(&http, service.url("/api/v1/entitlements"), &new_etag, "1s");
    let (status, _, _) = quiet.await.unwrap();
    assert_eq!(status, 304);

    drop((client, http_client_cache));
    service.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_hear_a_change_and_shutdown_still_takes_under_ten_seconds() {
    let (sim, service, http, etag) = serving_xray_scan().await;
    const EACH: usize = 500;
    let idle = service.app.feed().receivers();
    let base = idle;
    let polls = service.hold(&http, &etag, base, EACH).await;
    let (tx, mut heard) = tokio::sync::mpsc::channel::<tokio::time::Instant>(2 * EACH);
    let mut streams = Vec::new();
    for chunk in 0..(EACH / 100) {
        let grpc = grpc_support::client(service.grpc, Some(TOKEN)).await;
        for _ in 0..100 {
            let mut c = grpc.clone();
            let mut s = c
                .watch_entitlements(WatchRequest::default())
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap();
            let tx = tx.clone();
            streams.push(tokio::spawn(async move {
                if let Ok(Some(_)) = s.message().await {
                    let _ = tx.send(tokio::time::Instant::now()).await;
                }
            }));
        }
        let _ = chunk;
    }
    service.until_held(base, 2 * EACH).await;
    sim.set_xray_features(&["scan", "sbom"]).await;
    let mut changes = service.app.entitlements().changes();
    service.run_entitlements_job(&http).await;
    changes.changed().await.unwrap();
    let stored = tokio::time::Instant::now();
    let mut lags = Vec::new();
    for p in polls {
        let (status, _, at) = p.await.unwrap();
        assert_eq!(status, 200);
        lags.push(at.saturating_duration_since(stored));
    }
    for _ in 0..EACH {
        let at = tokio::time::timeout(Duration::from_secs(2), heard.recv())
            .await
            .expect("every gRPC watcher hears")
            .unwrap();
        lags.push(at.saturating_duration_since(stored));
    }
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100];
    eprintln!(
        "fan-out to {} watchers: p50 {:?}, p99 {p99:?}, max {:?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    // Unoptimized and sharing two cores with its own thousand clients, the test only checks
    // that everyone hears; the 1 s p99 is measured on a release build (docs/benchmarks.md).
    assert!(
        lags[lags.len() - 1] < Duration::from_secs(5),
        "slowest {:?}",
        lags[lags.len() - 1]
    );

    // A thousand held long-polls, then shutdown.
    let etag = service.etag(&http).await;
    // Fresh connections; the finished gRPC watches let go of the feed first.
    let http = http_client();
    for s in streams {
        s.await.unwrap();
    }
    drop(tx);
    service.until_released(idle).await;
    let held = service.hold(&http, &etag, idle, 2 * EACH).await;
    let took = service.stop().await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    for h in held {
        let (status, _, _) = tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .expect("held requests are answered at shutdown")
            .unwrap();
        assert_eq!(status, 304);
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_air_gapped_import_reaches_a_grpc_watcher_and_the_client_cache_within_a_second() {
    let service = start_with(None, |c, dir| {
        jfconnect::bundle::keys_generate(&dir.join("vendor")).unwrap();
        c.airgap.enabled = true;
        c.airgap.outbox_dir = dir.join("outbox");
        c.airgap.vendor_public_keys = vec![dir.join("vendor.pub")];
    })
    .await;
    let dir = service._dir.path().to_path_buf();
    let mut grpc = grpc_support::client(service.grpc, Some(TOKEN)).await;
    let mut stream = grpc
        .watch_entitlements(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let client = jfconnect_client::Client::builder(TOKEN)
        .grpc(format!("http://{}", service.grpc))
        .first_answer_wait(Duration::from_millis(10))
        .connect()
        .await
        .unwrap();
    assert!(client.snapshot().is_none(), "nothing before the import");

    // The registration bundle out, the vendor's answer back in, over the API.
    let http = http_client();
    let registration = http
        .get(service.url("/api/v1/offline/start_register"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(dir.join("registration.jfbundle"), &registration).unwrap();
    jfconnect::sim::vendor::answer_bundle(
        &dir.join("vendor-state"),
        &dir.join("vendor.key"),
        &dir.join("registration.jfbundle"),
        &dir.join("answer.jfbundle"),
        Arc::new(SystemClock),
    )
    .unwrap();
    let mut changes = service.app.entitlements().changes();
    let imported = http
        .post(service.url("/api/v1/offline/register"))
        .bearer_auth(ADMIN)
        .body(std::fs::read(dir.join("answer.jfbundle")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
    changes.changed().await.unwrap();
    let stored = tokio::time::Instant::now();

    let first = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the gRPC watcher hears within 1 s of the store")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.source,
        jfconnect_client::proto::Source::AirGapped as i32
    );
    let mut rx = client.subscribe();
    tokio::time::timeout(
        Duration::from_secs(1).saturating_sub(stored.elapsed()),
        rx.wait_for(|s| s.as_ref().is_some_and(|s| s.version == first.version)),
    )
    .await
    .expect("the client cache hears within 1 s of the store")
    .unwrap();
    assert_eq!(
        client.snapshot().unwrap().source,
        jfconnect_client::Source::AirGapped
    );
    let body: serde_json::Value = http
        .get(service.url("/api/v1/entitlements"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["source"], "air-gapped");
    assert_eq!(body["version"], first.version.as_str());
    drop(client);
    service.stop().await;
}

#[tokio::test]
async fn a_disabled_service_answers_grpc_health_as_not_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let service = start(None, false).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", service.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: jfconnect::grpc::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    let mut grpc = grpc_support::client(service.grpc, Some(TOKEN)).await;
    let err = grpc
        .get_entitlements(jfconnect_client::proto::GetEntitlementsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let r = http_client()
        .get(service.url("/api/v1/entitlements/check?product=xray&feature=scan"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    service.stop().await;
}
