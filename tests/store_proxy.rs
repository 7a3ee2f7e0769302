//! The store proxy end to end, between a real client and a recording upstream on loopback:
//! what is forwarded, what never is, and what the caller gets when the store fails.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use jfconnect::store_proxy::{self, StoreProxy};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body_len: u64,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The test store: records every request, then answers by path.
async fn upstream_handler(log: Log, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut body_len = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => body_len += c.len() as u64,
            Err(_) => break,
        }
    }
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body_len,
    });
    match parts.uri.path().trim_start_matches("/store-root") {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late".into_response()
        }
        "/redirect" => (StatusCode::FOUND, [("location", "/elsewhere")]).into_response(),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "store broke").into_response(),
        "/stall-mid-body" => {
            let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from_static(b"first part"),
            )])
            .chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(bytes::Bytes::from_static(b"never"))
            }));
            Body::from_stream(chunks).into_response()
        }
        _ => (
            StatusCode::OK,
            [
                ("content-type", "text/plain"),
                ("etag", "\"v1\""),
                ("set-cookie", "store=1"),
                ("connection", "x-upstream-hop"),
                ("x-upstream-hop", "1"),
                ("x-store", "yes"),
            ],
            format!("received {body_len} bytes"),
        )
            .into_response(),
    }
}

async fn serve(app: Router, listener: tokio::net::TcpListener) {
    let _ = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await;
}

struct Harness {
    proxy: SocketAddr,
    log: Log,
}

impl Harness {
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/api/v1/store{rest}", self.proxy)
    }
}

/// The client the service gives the proxy, over the default configuration (no outbound proxy).
fn proxy_client() -> jfconnect::http::StoreClient {
    let mut config = jfconnect::config::Config::defaults(std::env::temp_dir());
    config.http.connect_timeout = Duration::from_secs(2);
    jfconnect::http::build_store_client(&config).unwrap()
}

fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Mounts the store router the way the API does: merged into an app whose other routes keep a
/// 1 MiB body limit.
async fn start_proxy(upstream: url::Url, timeout: Duration) -> SocketAddr {
    let proxy = Arc::new(StoreProxy::new(
        proxy_client(),
        upstream,
        timeout,
        Arc::new(jfconnect::clock::SystemClock),
    ));
    let app = Router::new()
        .route(
            "/api/v1/other",
            axum::routing::post(|b: bytes::Bytes| async move { b.len().to_string() }),
        )
        .merge(store_proxy::router(proxy))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(app, listener));
    addr
}

async fn start(timeout: Duration) -> Harness {
    let log: Log = Arc::default();
    let recorder = log.clone();
    let app = Router::new().fallback(move |req: Request| upstream_handler(recorder.clone(), req));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(serve(app, listener));
    let base = url::Url::parse(&format!("http://{upstream}/store-root/")).unwrap();
    Harness {
        proxy: start_proxy(base, timeout).await,
        log,
    }
}

/// Sends `target` byte for byte (no client-side normalisation) and returns status and body.
async fn raw_get(addr: SocketAddr, target: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: jfconnect\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn get_with_query_string_is_forwarded_below_the_store_url() {
    let h = start(Duration::from_secs(5)).await;
    let r = test_client()
        .get(h.url("/api/v1/plans?product=xray&tier=pro%20plus&empty="))
        .header("accept", "application/json")
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-10")
        .header("if-none-match", "\"v0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = h.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.path, "/store-root/api/v1/plans");
    assert_eq!(
        s.query.as_deref(),
        Some("product=xray&tier=pro%20plus&empty=")
    );
    assert_eq!(s.headers["accept"], "application/json");
    assert_eq!(s.headers["accept-encoding"], "gzip");
    assert_eq!(s.headers["range"], "bytes=0-10");
    assert_eq!(s.headers["if-none-match"], "\"v0\"");
    assert_eq!(s.body_len, 0);
    assert!(s.headers.get("transfer-encoding").is_none());
}

#[tokio::test]
async fn post_body_over_the_api_body_limit_is_forwarded_intact_with_its_length() {
    let h = start(Duration::from_secs(5)).await;
    let body = vec![b'x'; 3 * 1024 * 1024 + 17];
    let r = test_client()
        .post(h.url("/upload/file.bin?overwrite=true"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        format!("received {} bytes", body.len())
    );
    let s = &h.seen()[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/store-root/upload/file.bin");
    assert_eq!(s.query.as_deref(), Some("overwrite=true"));
    assert_eq!(s.headers["content-type"], "application/octet-stream");
    assert_eq!(s.headers["content-length"], body.len().to_string().as_str());
    assert_eq!(s.body_len, body.len() as u64);
    // The API's own routes keep their limit.
    let r = test_client()
        .post(format!("http://{}/api/v1/other", h.proxy))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn every_method_is_forwarded_as_is() {
    let h = start(Duration::from_secs(5)).await;
    let client = test_client();
    for method in ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client
            .request(m, h.url("/thing"))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
    }
    let methods: Vec<String> = h.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]);
}

#[tokio::test]
async fn our_authorization_cookies_and_hop_by_hop_headers_are_not_forwarded() {
    let h = start(Duration::from_secs(5)).await;
    let r = test_client()
        .get(h.url("/x"))
        .header("authorization", "Bearer api-token-secret")
        .header("cookie", "session=abc")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("upgrade", "h2c")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = &h.seen()[0];
    for name in [
        "authorization",
        "cookie",
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(s.headers.get(name).is_none(), "{name} was forwarded");
    }
    let all = format!("{:?}", s.headers);
    assert!(!all.contains("api-token-secret"), "{all}");
    assert_eq!(s.headers["x-end-to-end"], "kept");
    assert_ne!(s.headers["host"], "jfconnect");
}

#[tokio::test]
async fn forwarded_for_and_proto_are_set() {
    let h = start(Duration::from_secs(5)).await;
    test_client()
        .get(h.url("/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let s = &h.seen()[0];
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn store_answers_pass_back_without_hop_by_hop_headers_or_cookies() {
    let h = start(Duration::from_secs(5)).await;
    let client = test_client();
    let r = client.get(h.url("/x")).send().await.unwrap();
    assert_eq!(r.headers()["x-store"], "yes");
    assert_eq!(r.headers()["etag"], "\"v1\"");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert!(r.headers().get("x-upstream-hop").is_none());
    assert!(r.headers().get("set-cookie").is_none());

    let r = client.get(h.url("/fail")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "store broke");

    let r = client.get(h.url("/redirect")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/elsewhere");
}

#[tokio::test]
async fn the_store_root_itself_is_reachable() {
    let h = start(Duration::from_secs(5)).await;
    for rest in ["", "/"] {
        let r = test_client().get(h.url(rest)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{rest:?}");
    }
    let paths: Vec<String> = h.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/store-root/", "/store-root/"]);
}

/// Every trick from the issue, sent raw. Each gets 400 with the JSON `bad_store_path` error,
/// and the upstream records nothing at all.
#[tokio::test]
async fn every_path_trick_is_refused_with_400_and_never_reaches_the_store() {
    let h = start(Duration::from_secs(5)).await;
    let tricks: &[&[u8]] = &[
        b"/api/v1/store/../admin",
        b"/api/v1/store/a/../../admin",
        b"/api/v1/store/./x",
        b"/api/v1/store/..",
        b"/api/v1/store/%2e%2e/admin",
        b"/api/v1/store/%2E%2E/admin",
        b"/api/v1/store/%2E./admin",
        b"/api/v1/store/.%2e/admin",
        b"/api/v1/store/%252e%252e/admin",
        b"/api/v1/store/a%2f..%2fadmin",
        b"/api/v1/store/a%2Fb",
        b"/api/v1/store/a%5cb",
        b"/api/v1/store/..%5cadmin",
        b"/api/v1/store/a\\..\\admin",
        b"/api/v1/store/..;/admin",
        b"/api/v1/store/a;jsessionid=1",
        b"/api/v1/store/a%3b/b",
        b"/api/v1/store//evil.com/x",
        b"/api/v1/store/http://evil.com/x",
        b"/api/v1/store/http:evil.com",
        b"/api/v1/store/http%3a%2f%2fevil.com",
        b"/api/v1/store/a%00b",
        b"/api/v1/store/a%0ab",
        b"/api/v1/store/a%0d%0aX-Injected:%201",
        b"/api/v1/store/%c0%ae%c0%ae/admin",
        b"/api/v1/store/%ef%bc%8e%ef%bc%8e/admin",
        b"/api/v1/store/a%zz",
        b"/api/v1/store/a|b",
    ];
    for trick in tricks {
        let (status, body) = raw_get(h.proxy, trick).await;
        let shown = String::from_utf8_lossy(trick);
        assert_eq!(status, 400, "{shown}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{shown}: body {body:?} is not JSON: {e}"));
        assert_eq!(json["error"]["code"], "bad_store_path", "{shown}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("the store path"), "{shown}: {message}");
    }
    // Raw control characters never even parse as HTTP; they are refused just the same.
    for trick in [
        &b"/api/v1/store/a\0b"[..],
        b"/api/v1/store/a\x01b",
        b"/api/v1/store/a\x7fb",
    ] {
        let (status, _) = raw_get(h.proxy, trick).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(trick));
    }
    assert!(h.seen().is_empty(), "the store received {:?}", h.seen());
}

#[tokio::test]
async fn closed_store_port_gives_502_naming_the_store_host() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let base = url::Url::parse(&format!("http://{closed}/")).unwrap();
    let proxy = start_proxy(base, Duration::from_secs(2)).await;
    let r = test_client()
        .get(format!("http://{proxy}/api/v1/store/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "store_unreachable");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("JFrog Store at http://{closed}"))
            && message.contains("jfconnect.store.url"),
        "names the URL with its port and the key: {message}"
    );
    assert!(message.contains("refused the connection"), "{message}");
}

#[tokio::test]
async fn store_silent_past_the_timeout_gives_504_naming_the_store_host() {
    let h = start(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = test_client().get(h.url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "store_timeout");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("JFrog Store at 127.0.0.1"), "{message}");
    assert!(message.contains("0.3 s"), "{message}");
}

#[tokio::test]
async fn slow_upload_that_keeps_moving_outlives_the_idle_timeout() {
    let h = start(Duration::from_millis(300)).await;
    let chunks = futures_util::stream::iter(0..8).then(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[7u8; 1000]))
    });
    let r = test_client()
        .put(h.url("/slow-upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "received 8000 bytes");
}

#[tokio::test]
async fn store_silent_mid_body_cuts_the_download_instead_of_ending_it_cleanly() {
    let h = start(Duration::from_millis(300)).await;
    let r = test_client()
        .get(h.url("/stall-mid-body"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a truncated body must not look whole"
    );
}
