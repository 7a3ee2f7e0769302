//! Serves the store proxy alone on 127.0.0.1, in front of a given store URL, for
//! `scripts/bench.d/store-proxy` (see docs/benchmarks.md). Not part of the service.
//!
//! Usage: `store_proxy_bench <store-url> <addr-file>`; the bound address is written to
//! `<addr-file>` once the proxy accepts connections. Each connection is served as the API port
//! serves it (hyper's HTTP/1.1 server with keep-alive) and each request goes to
//! `StoreProxy::handle`, the entry the API takes for store paths ahead of its router; the token
//! check and the request log the API adds around it are not included. The client is the
//! service's own (`http::build_store_client` over the default configuration), so the figures
//! include it.

use hyper_util::rt::{TokioIo, TokioTimer};
use jfconnect::config::Config;
use jfconnect::store_proxy::StoreProxy;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(addr_file)) = (args.next(), args.next()) else {
        return Err("usage: store_proxy_bench <store-url> <addr-file>".into());
    };
    let store = url::Url::parse(&store)?;
    let config = Config::defaults(std::env::temp_dir());
    let client = jfconnect::http::build_store_client(&config)?;
    let proxy = Arc::new(StoreProxy::new(
        client,
        store,
        Duration::from_secs(30),
        Arc::new(jfconnect::clock::SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(&addr_file, listener.local_addr()?.to_string())?;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (proxy, builder) = (proxy.clone(), builder.clone());
        let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            let proxy = proxy.clone();
            async move {
                let answer = proxy.handle(request, Some(peer.ip())).await;
                Ok::<_, std::convert::Infallible>(answer)
            }
        });
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
