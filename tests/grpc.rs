//! The gRPC service on a real socket: calls, auth, watch semantics, limits, health,
//! reflection and shutdown.

mod grpc_support;

use grpc_support::{client, served, start, TOKEN};
use jfconnect::entitlements::feed::Feed;
use jfconnect::grpc::Limits;
use jfconnect_client::proto::{CheckRequest, GetEntitlementsRequest, WatchRequest};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn get_check_and_watch_answer_from_the_feed() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let mut c = client(server.addr, Some(TOKEN)).await;
    let got = c
        .get_entitlements(GetEntitlementsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.jpd_id, "jpd-test");
    assert_eq!(got.subscription_type, "enterprise_plus");
    assert_eq!(got.entitlements.len(), 1);
    assert_eq!(got.entitlements[0].valid_until, "2099-01-01T00:00:00Z");
    assert_eq!(
        got.source,
        jfconnect_client::proto::Source::Connected as i32
    );
    assert_eq!(got.version.len(), 32);

    let check = |product: &str, feature: &str| CheckRequest {
        product: product.into(),
        feature: feature.into(),
    };
    let yes = c.check(check("xray", "scan")).await.unwrap().into_inner();
    assert!(yes.entitled);
    assert_eq!(yes.valid_until, "2099-01-01T00:00:00Z");
    assert_eq!(yes.version, got.version);
    assert!(
        !c.check(check("xray", "sbom"))
            .await
            .unwrap()
            .into_inner()
            .entitled
    );
    let empty = c.check(check("", "scan")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    let mut watch = c
        .watch_entitlements(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(SECOND, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.version, got.version);
    server.publish(served(&["scan", "sbom"], 0));
    let second = tokio::time::timeout(SECOND, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(second.version, first.version);
    assert_eq!(second.entitlements.len(), 2);
    assert!(
        c.check(check("xray", "sbom"))
            .await
            .unwrap()
            .into_inner()
            .entitled
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    for token in [None, Some("wrong"), Some("")] {
        let mut c = client(server.addr, token).await;
        let get = c
            .get_entitlements(GetEntitlementsRequest {})
            .await
            .unwrap_err();
        assert_eq!(get.code(), Code::Unauthenticated, "{token:?}");
        assert!(!get.message().contains(TOKEN));
        let check = c
            .check(CheckRequest {
                product: "xray".into(),
                feature: "scan".into(),
            })
            .await;
        assert_eq!(check.unwrap_err().code(), Code::Unauthenticated);
        let watch = c.watch_entitlements(WatchRequest::default()).await;
        assert_eq!(watch.unwrap_err().code(), Code::Unauthenticated);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_that_reconnects_with_its_version_gets_only_what_is_newer() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let mut c = client(server.addr, Some(TOKEN)).await;
    let current = c
        .get_entitlements(GetEntitlementsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut watch = c
        .watch_entitlements(WatchRequest {
            last_version: current.version.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.message())
            .await
            .is_err(),
        "nothing is sent while the version is the one the client has"
    );
    server.publish(served(&["scan", "contextual-analysis"], 0));
    let next = tokio::time::timeout(SECOND, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(next.version, current.version);
    // The same content published again (a confirmation) does not wake the watcher.
    server.publish(served(&["scan", "contextual-analysis"], 0));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.message())
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn no_entitlements_yet_is_not_found_and_a_watch_waits_for_the_first() {
    let server = start(Feed::Empty, Limits::default()).await;
    let mut c = client(server.addr, Some(TOKEN)).await;
    let err = c
        .get_entitlements(GetEntitlementsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut watch = c
        .watch_entitlements(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    server.publish(served(&["scan"], 0));
    let first = tokio::time::timeout(SECOND, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.entitlements.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let mut c = client(server.addr, Some(TOKEN)).await;
    let huge = "x".repeat(64 * 1024);
    let err = c
        .check(CheckRequest {
            product: huge.clone(),
            feature: "scan".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let long = c
        .check(CheckRequest {
            product: "x".repeat(1000),
            feature: "scan".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    let watch = c
        .watch_entitlements(WatchRequest {
            last_version: "v".repeat(1000),
        })
        .await;
    assert_eq!(watch.unwrap_err().code(), Code::InvalidArgument);
    // The server still answers.
    assert!(c.get_entitlements(GetEntitlementsRequest {}).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_slow_watcher_gets_the_latest_state_not_every_change() {
    let server = start(served(&["v0"], 0), Limits::default()).await;
    // A client whose window holds about two messages and who does not read for a while.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(Some(64 * 1024))
        .initial_connection_window_size(Some(64 * 1024))
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let mut c = jfconnect_client::proto::entitlements_client::EntitlementsClient::with_interceptor(
        channel,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        },
    );
    let mut watch = c
        .watch_entitlements(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let changes = 200;
    for i in 1..=changes {
        // ~40 KiB per message: 200 of them would be 8 MiB if the server queued them all.
        server.publish(served(&[&format!("v{i}")], 800));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut received = 0;
    let mut last = None;
    while let Ok(Ok(Some(m))) =
        tokio::time::timeout(Duration::from_millis(500), watch.message()).await
    {
        received += 1;
        last = Some(m);
    }
    let last = last.expect("messages arrive");
    assert!(
        last.entitlements
            .iter()
            .any(|e| e.feature == format!("v{changes}")),
        "the last message is the latest state"
    );
    assert!(
        received < changes / 4,
        "{received} messages for {changes} changes: intermediate states were queued"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_token() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    for (feed, want) in [
        (served(&["scan"], 0), ServingStatus::Serving),
        (Feed::Disabled, ServingStatus::NotServing),
    ] {
        let disabled = matches!(feed, Feed::Disabled);
        let server = start(feed, Limits::default()).await;
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel.clone());
        let answer = |service: &str| HealthCheckRequest {
            service: service.into(),
        };
        let status = health
            .check(answer(jfconnect::grpc::SERVICE_NAME))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, want as i32);
        let overall = health.check(answer("")).await.unwrap().into_inner().status;
        assert_eq!(overall, ServingStatus::Serving as i32);
        if disabled {
            let mut c = client(server.addr, Some(TOKEN)).await;
            let err = c
                .get_entitlements(GetEntitlementsRequest {})
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unavailable);
            assert!(
                err.message().contains("jfconnect.enabled: false"),
                "{err:?}"
            );
            let watch = c.watch_entitlements(WatchRequest::default()).await;
            assert_eq!(watch.unwrap_err().code(), Code::Unavailable);
        } else {
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            let mut reflection = ServerReflectionClient::new(channel);
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = reflection
                .server_reflection_info(futures_util::stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(list)) =
                answers.message().await.unwrap().unwrap().message_response
            else {
                panic!("not a list of services");
            };
            let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
            assert!(
                names.contains(&jfconnect::grpc::SERVICE_NAME.to_string()),
                "{names:?}"
            );
            assert!(
                names.contains(&"grpc.health.v1.Health".to_string()),
                "{names:?}"
            );
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn shutdown_ends_open_watches_and_returns_promptly() {
    let server = start(served(&["scan"], 0), Limits::default()).await;
    let mut watches = Vec::new();
    for _ in 0..20 {
        let mut c = client(server.addr, Some(TOKEN)).await;
        let mut w = c
            .watch_entitlements(WatchRequest::default())
            .await
            .unwrap()
            .into_inner();
        w.message().await.unwrap().unwrap();
        watches.push(w);
    }
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    for mut w in watches {
        let end = tokio::time::timeout(SECOND, w.message()).await.unwrap();
        assert!(matches!(end, Ok(None) | Err(_)), "the stream ended");
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_the_cap_holds() {
    let limits = Limits {
        max_connections: 3,
        first_call_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(served(&["scan"], 0), limits).await;
    // Three connections that never send a byte fill the cap...
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...so a fourth is closed at once.
    let mut fourth = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(SECOND, fourth.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "a connection over the cap is closed");
    // The silent ones are closed after the first-call timeout (the server's SETTINGS and GOAWAY
    // may come first).
    for mut s in silent {
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection stays open");
    }
    // Slots are free again: a real client gets answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = client(server.addr, Some(TOKEN)).await;
    assert!(c.get_entitlements(GetEntitlementsRequest {}).await.is_ok());
    let _ = fourth.write_all(b"x").await;
    server.stop().await;
}
