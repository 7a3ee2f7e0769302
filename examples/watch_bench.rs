//! Load generator for the dynamic-entitlements benchmark (docs/benchmarks.md, "Entitlements
//! watch and gRPC"); `scripts/bench.d/watch` starts the simulator and `jfconnect serve` and runs it.
//!
//! 1. Opens N HTTP long-polls (`?wait=60s`, `If-None-Match`) and reads the extra RSS of `serve`;
//!    changes the subscription at the simulator and asks the entitlements job to run; measures
//!    when each long-poll answers (from the job request).
//! 2. The same with N gRPC `WatchEntitlements` streams.
//! 3. `Check` over gRPC and `GET /api/v1/entitlements/check` over HTTP, C concurrent callers
//!    each, D seconds each: requests per second and p99.
//! 4. `jfconnect_client::Client::is_entitled`, answered from memory: time per call.
//!
//! Usage: watch_bench HTTP_URL GRPC_URL TOKEN SIM_URL SERVE_PID [WATCHERS] [CALLERS] [SECONDS]
//! [ADMIN_TOKEN] (the admin token asks for job runs; default TOKEN)

use jfconnect_client::proto::entitlements_client::EntitlementsClient;
use jfconnect_client::proto::{CheckRequest, WatchRequest};
use std::time::Duration;
use tokio::time::Instant;

/// Adds the API token to every call.
#[derive(Clone)]
struct Auth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Grpc = EntitlementsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

struct Args {
    http: String,
    grpc: String,
    token: String,
    admin: String,
    sim: String,
    pid: u32,
    watchers: usize,
    callers: usize,
    seconds: u64,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 {
        eprintln!("usage: watch_bench HTTP_URL GRPC_URL TOKEN SIM_URL SERVE_PID [WATCHERS] [CALLERS] [SECONDS] [ADMIN_TOKEN]");
        std::process::exit(2);
    }
    let num = |i: usize, default: u64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    Args {
        http: a[0].clone(),
        grpc: a[1].clone(),
        token: a[2].clone(),
        admin: a.get(8).unwrap_or(&a[2]).clone(),
        sim: a[3].clone(),
        pid: a[4].parse().expect("SERVE_PID is a number"),
        watchers: num(5, 1000) as usize,
        callers: num(6, 64) as usize,
        seconds: num(7, 10),
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn grpc_client(a: &Args) -> Grpc {
    let channel = tonic::transport::Endpoint::from_shared(a.grpc.clone())
        .unwrap()
        .connect()
        .await
        .expect("gRPC port answers");
    let header = format!("Bearer {}", a.token).parse().unwrap();
    EntitlementsClient::with_interceptor(channel, Auth(header))
}

async fn change(a: &Args, http: &reqwest::Client, n: usize) -> Instant {
    let features: Vec<_> = (0..=n)
        .map(|i| serde_json::json!({"product": "xray", "feature": format!("feature-{i}")}))
        .collect();
    http.post(format!("{}/_sim/entitlements", a.sim))
        .json(&serde_json::json!({ "entitlements": features }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let at = Instant::now();
    http.post(format!("{}/api/v1/jobs/entitlements/run", a.http))
        .bearer_auth(&a.admin)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    at
}

async fn etag(a: &Args, http: &reqwest::Client) -> String {
    let r = http
        .get(format!("{}/api/v1/entitlements", a.http))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    r.headers()["etag"].to_str().unwrap().to_string()
}

/// Fan-out of one change: (p50, p99, max) in ms, and the extra RSS in KiB.
struct Fanout {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    extra_kib: u64,
}

fn report(what: &str, lags: &mut [Duration], before: u64, held: u64) -> Fanout {
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: {} watchers, extra RSS {:.1} MiB ({} -> {} KiB); fan-out p50 {:?}, p99 {:?}, max {:?}",
        lags.len(),
        (held.saturating_sub(before)) as f64 / 1024.0,
        before,
        held,
        percentile(lags, 50),
        percentile(lags, 99),
        lags[lags.len() - 1]
    );
    Fanout {
        p50_ms: ms(percentile(lags, 50)),
        p99_ms: ms(percentile(lags, 99)),
        max_ms: ms(lags[lags.len() - 1]),
        extra_kib: held.saturating_sub(before),
    }
}

/// User + system CPU seconds `pid` has used so far.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After the command name: utime is field 14, stime 15 (counted from 1, name is 2).
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Runs `call` from `callers` concurrent loops for `deadline`: requests per second and p99.
async fn load<F, Fut>(callers: usize, deadline: Duration, call: F) -> (f64, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < deadline {
                let t = Instant::now();
                call().await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort();
    (
        lat.len() as f64 / start.elapsed().as_secs_f64(),
        percentile(&lat, 99),
    )
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::main]
async fn main() {
    let a = args();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .pool_idle_timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(4 * a.watchers)
        .build()
        .unwrap();
    change(&a, &http, 0).await;
    settle().await;

    // 1. HTTP long-polls.
    let cpu_start = cpu_s(a.pid);
    let before = rss_kib(a.pid);
    let tag = etag(&a, &http).await;
    let mut polls = Vec::new();
    for _ in 0..a.watchers {
        let request = http
            .get(format!("{}/api/v1/entitlements?wait=60s", a.http))
            .bearer_auth(&a.token)
            .header("if-none-match", &tag)
            .send();
        polls.push(tokio::spawn(async move {
            let r = request.await.unwrap();
            assert_eq!(r.status(), 200);
            Instant::now()
        }));
    }
    settle().await;
    let held = rss_kib(a.pid);
    let at = change(&a, &http, 1).await;
    let mut lags = Vec::new();
    for p in polls {
        lags.push(p.await.unwrap().saturating_duration_since(at));
    }
    let http_fanout = report("HTTP long-poll", &mut lags, before, held);
    settle().await;

    // 2. gRPC watch streams, spread over connections of 100 streams each.
    let before = rss_kib(a.pid);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(a.watchers);
    let mut opened = 0;
    while opened < a.watchers {
        let client = grpc_client(&a).await;
        for _ in 0..100.min(a.watchers - opened) {
            let mut c = client.clone();
            let mut s = c
                .watch_entitlements(WatchRequest::default())
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(Some(_)) = s.message().await {
                    let _ = tx.send(Instant::now()).await;
                }
            });
            opened += 1;
        }
    }
    settle().await;
    let held = rss_kib(a.pid);
    let at = change(&a, &http, 2).await;
    let mut lags = Vec::new();
    for _ in 0..a.watchers {
        let t = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        lags.push(t.saturating_duration_since(at));
    }
    let grpc_fanout = report("gRPC watch", &mut lags, before, held);
    let watch_cpu = cpu_s(a.pid) - cpu_start;
    settle().await;

    // 3. Check, gRPC and HTTP, same run.
    let deadline = Duration::from_secs(a.seconds);
    let grpc = grpc_client(&a).await;
    let (grpc_rate, grpc_p99) = load(a.callers, deadline, move || {
        let mut c = grpc.clone();
        async move {
            let request = CheckRequest {
                product: "xray".into(),
                feature: "feature-0".into(),
            };
            assert!(c.check(request).await.unwrap().into_inner().entitled);
        }
    })
    .await;
    println!(
        "gRPC Check: {} callers on 1 connection, {grpc_rate:.0} req/s, p99 {grpc_p99:?}",
        a.callers
    );
    let url = format!(
        "{}/api/v1/entitlements/check?product=xray&feature=feature-0",
        a.http
    );
    let token = a.token.clone();
    let client = http.clone();
    let (http_rate, http_p99) = load(a.callers, deadline, move || {
        let request = client.get(&url).bearer_auth(&token).send();
        async move {
            let r = request.await.unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
        }
    })
    .await;
    println!(
        "HTTP check: {} callers, keep-alive, {http_rate:.0} req/s, p99 {http_p99:?}",
        a.callers
    );

    // 4. The client cache's local answer.
    let client = jfconnect_client::Client::connect(&a.grpc, &a.token)
        .await
        .unwrap();
    let calls = 10_000_000u32;
    let start = std::time::Instant::now();
    let mut yes = 0u32;
    for i in 0..calls {
        let feature = if i % 2 == 0 { "feature-0" } else { "nope" };
        yes += u32::from(
            client.is_entitled(std::hint::black_box("xray"), std::hint::black_box(feature)),
        );
    }
    let per_call = start.elapsed() / calls;
    assert_eq!(yes, calls / 2);
    println!("client is_entitled: {per_call:?} per call ({calls} calls, half yes)");
    println!("serve RSS after: {} KiB", rss_kib(a.pid));
    // One machine-readable line for scripts/bench.
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let result = serde_json::json!({
        "watchers": a.watchers,
        "http_fanout_p50_ms": http_fanout.p50_ms,
        "http_fanout_p99_ms": http_fanout.p99_ms,
        "http_fanout_max_ms": http_fanout.max_ms,
        "http_extra_rss_kib": http_fanout.extra_kib,
        "grpc_fanout_p50_ms": grpc_fanout.p50_ms,
        "grpc_fanout_p99_ms": grpc_fanout.p99_ms,
        "grpc_fanout_max_ms": grpc_fanout.max_ms,
        "grpc_extra_rss_kib": grpc_fanout.extra_kib,
        "watch_cpu_s": watch_cpu,
        "grpc_check_rps": grpc_rate,
        "grpc_check_p99_ms": ms(grpc_p99),
        "http_check_rps": http_rate,
        "http_check_p99_ms": ms(http_p99),
        "is_entitled_ns": per_call.as_secs_f64() * 1e9,
        "serve_hwm_kib": hwm_kib(a.pid),
        "serve_cpu_s": cpu_s(a.pid),
    });
    println!("BENCH_RESULT {result}");
}
