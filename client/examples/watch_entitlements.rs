//! A product's use of jfconnect-client: one cache for the process, asked locally.
//!
//! ```text
//! cargo run -p jfconnect-client --example watch_entitlements -- \
//!     http://127.0.0.1:8035 /var/opt/jfrog/jfconnect/data/api.token xray scan
//! ```
//!
//! Prints the answer every second; change the subscription (or stop and restart jfconnect)
//! and watch the answer follow, while the cache file keeps it across restarts of this program.

use jfconnect_client::Client;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token_file, product, feature] = args.as_slice() else {
        eprintln!("usage: watch_entitlements GRPC_URL TOKEN_FILE PRODUCT FEATURE");
        std::process::exit(2);
    };
    let token = match std::fs::read_to_string(token_file) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            eprintln!("cannot read the token file {token_file}: {e}");
            std::process::exit(2);
        }
    };
    let cache = std::env::temp_dir().join("jfconnect-entitlements-cache.json");
    let client = match Client::builder(token)
        .grpc(url.as_str())
        .cache_file(&cache)
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    loop {
        let version = client.snapshot().map(|s| s.version.clone());
        println!(
            "{product}/{feature}: {} (version {}, via {:?})",
            if client.is_entitled(product, feature) {
                "entitled"
            } else {
                "not entitled"
            },
            version.as_deref().unwrap_or("none"),
            client.link()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
