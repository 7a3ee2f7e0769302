//! Serves the store proxy alone on 127.0.0.1, in front of a given store URL, for
//! `scripts/bench-store-proxy` (see docs/benchmarks.md). Not part of the service.
//!
//! Usage: `store_proxy_bench <store-url> <addr-file>`; the bound address is written to
//! `<addr-file>` once the proxy accepts connections. The client is the service's own
//! (`http::build_store_client` over the default configuration), so the figures include it.

use jfconnect::config::Config;
use jfconnect::store_proxy::{self, StoreProxy};
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
    let app = store_proxy::router::<()>(proxy);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}
