//! A 256 MiB body through the store proxy, both ways, in bounded memory.
//!
//! Its own test binary (so its own process): the RSS measured here is this exchange's alone.
//! Bodies are generated and counted on the fly, never allocated whole, so any growth is the
//! proxy buffering.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use jfconnect::store_proxy::{self, StoreProxy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const CHUNK: usize = 64 * 1024;
const TOTAL: u64 = 256 * 1024 * 1024;
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;

fn chunks() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    futures_util::stream::iter(0..TOTAL / CHUNK as u64).map(move |_| Ok(chunk.clone()))
}

/// Counts an upload, or generates a download of [`TOTAL`] bytes.
async fn store(request: Request) -> Response {
    if request.uri().path().ends_with("/download") {
        return Body::from_stream(chunks()).into_response();
    }
    let mut n = 0u64;
    let mut body = request.into_body().into_data_stream();
    while let Some(Ok(c)) = body.next().await {
        n += c.len() as u64;
    }
    n.to_string().into_response()
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarter_gigabyte_streams_up_and_down_with_bounded_memory() {
    let (l, upstream) = bind().await;
    tokio::spawn(async move { axum::serve(l, Router::new().fallback(store)).await });
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = url::Url::parse(&format!("http://{upstream}/")).unwrap();
    let config = jfconnect::config::Config::defaults(std::env::temp_dir());
    let proxy = Arc::new(StoreProxy::new(
        jfconnect::http::build_store_client(&config).unwrap(),
        base,
        Duration::from_secs(10),
        Arc::new(jfconnect::clock::SystemClock),
    ));
    let (l, addr) = bind().await;
    tokio::spawn(async move { axum::serve(l, store_proxy::router::<()>(proxy)).await });
    let url = |p: &str| format!("http://{addr}/api/v1/store{p}");

    // Warm up pools, allocator and runtime before the baseline.
    let warm = client.post(url("/upload")).body("x").send().await.unwrap();
    assert_eq!(warm.text().await.unwrap(), "1");
    let before = vm_rss_kib();

    let up = client
        .post(url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks()))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 200);
    assert_eq!(up.text().await.unwrap(), TOTAL.to_string());

    let down = client.get(url("/download")).send().await.unwrap();
    assert_eq!(down.status(), 200);
    let mut received = 0u64;
    let mut body = down.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, TOTAL);

    let growth = vm_rss_kib().saturating_sub(before);
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "RSS grew by {growth} KiB moving 2 x {TOTAL} bytes"
    );
    eprintln!("RSS growth moving 2 x 256 MiB through the proxy: {growth} KiB");
}
