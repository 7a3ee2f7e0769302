//! The floor under the store proxy's CPU per request, for docs/benchmarks.md: the least a
//! hyper-based HTTP/1.1 proxy does for one request, with none of jfconnect's work (no router,
//! no path check, no header filtering, no idle timeouts, no TLS or outbound-proxy routing).
//! A hyper server whose one service strips `/api/v1/store` and sends the request, headers as
//! they came, through a pooled hyper-util client to `<store-url>`, streaming the answer back.
//! Same arguments as `store_proxy_bench`, so `scripts/bench.d/store-proxy` can run either
//! (`BENCH_EXAMPLE=store_proxy_floor`). Not part of the service.

use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Upstream = Client<HttpConnector, Incoming>;

async fn forward(
    client: Upstream,
    store: std::sync::Arc<str>,
    mut request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Incoming>, BoxError> {
    let rest = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let rest = rest.strip_prefix("/api/v1/store").unwrap_or(rest);
    let uri: hyper::Uri = format!("{store}{rest}").parse()?;
    *request.uri_mut() = uri;
    request.headers_mut().remove(hyper::header::HOST);
    Ok(client.request(request).await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(addr_file)) = (args.next(), args.next()) else {
        return Err("usage: store_proxy_floor <store-url> <addr-file>".into());
    };
    let store: std::sync::Arc<str> = store.trim_end_matches('/').into();
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(HttpConnector::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(&addr_file, listener.local_addr()?.to_string())?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (client, store) = (client.clone(), store.clone());
        let service = hyper::service::service_fn(move |request| {
            forward(client.clone(), store.clone(), request)
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
