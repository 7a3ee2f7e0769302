//! The jfconnect-client cache against a real gRPC server: it follows changes, keeps answering
//! while the server is gone, converges when it is back, and starts from its cache file.

mod grpc_support;

use grpc_support::{served, start, start_on, TOKEN};
use jfconnect::grpc::Limits;
use jfconnect_client::{Backoff, Client, Link};
use std::time::Duration;

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(300),
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let result = tokio::time::timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "{what} within {limit:?}");
}

#[tokio::test]
async fn the_cache_follows_changes_within_a_second() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let client = Client::connect(&server.url(), TOKEN).await.unwrap();
    assert!(client.is_entitled("xray", "scan"));
    assert!(!client.is_entitled("xray", "sbom"));
    assert_eq!(client.link(), Link::Grpc);
    server.publish(served(&["scan", "sbom"], 0));
    wait_until("the new feature is seen", Duration::from_secs(1), || {
        client.is_entitled("xray", "sbom")
    })
    .await;
    server.publish(served(&["sbom"], 0));
    wait_until(
        "the removed feature is gone",
        Duration::from_secs(1),
        || !client.is_entitled("xray", "scan"),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn the_cache_answers_while_jfconnect_is_down_then_converges() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("entitlements.json");
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let addr = server.addr;
    let client = Client::builder(TOKEN)
        .grpc(server.url())
        .cache_file(&cache)
        .backoff(fast_backoff())
        .connect()
        .await
        .unwrap();
    assert!(client.is_entitled("xray", "scan"));
    wait_until("the cache file is written", Duration::from_secs(2), || {
        cache.exists()
    })
    .await;

    server.stop().await;
    for _ in 0..20 {
        assert!(
            client.is_entitled("xray", "scan"),
            "answers while jfconnect is down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("the link is seen down", Duration::from_secs(2), || {
        client.link() == Link::Down
    })
    .await;

    // A product starting now, with jfconnect still down, answers from the file.
    let restarted_product = Client::builder(TOKEN)
        .grpc(format!("http://{addr}"))
        .cache_file(&cache)
        .backoff(fast_backoff())
        .connect()
        .await
        .unwrap();
    assert!(restarted_product.is_entitled("xray", "scan"));

    // jfconnect comes back on the same port with other entitlements: both converge.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let feed = tokio::sync::watch::channel(std::sync::Arc::new(served(&["sbom"], 0))).0;
    let server = start_on(listener, feed, Limits::default());
    for c in [&client, &restarted_product] {
        wait_until("the client converges", Duration::from_secs(3), || {
            c.is_entitled("xray", "sbom") && !c.is_entitled("xray", "scan")
        })
        .await;
    }
    assert_eq!(client.link(), Link::Grpc);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_token_leaves_the_client_answering_not_entitled() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let client = Client::builder("wrong")
        .grpc(server.url())
        .first_answer_wait(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    assert!(!client.is_entitled("xray", "scan"));
    assert!(client.snapshot().is_none());
    server.stop().await;
}

#[tokio::test]
async fn bad_addresses_are_refused_with_a_sentence() {
    let err = Client::connect("jfconnect:8035", TOKEN).await.unwrap_err();
    assert!(err.to_string().contains("jfconnect:8035"), "{err}");
    let err = Client::builder(TOKEN).connect().await.unwrap_err();
    assert!(err.to_string().contains("no jfconnect address"), "{err}");
    let err = Client::connect("http://127.0.0.1:1", "bad\ntoken")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("bad"), "{err}");
}
