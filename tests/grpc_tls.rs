//! gRPC over the server TLS of `tls.server.*`: the gRPC port speaks TLS with the API's
//! certificate (and ALPN `h2`), a tonic client and the `jfconnect-client` crate trusting the CA
//! reach Get, Check and Watch, and a plain-text client is refused.

mod sim_support;
mod tls_support;

use jfconnect::app::App;
use jfconnect::clock::SystemClock;
use jfconnect::config::Config;
use jfconnect::server::Listeners;
use jfconnect_client::proto::entitlements_client::EntitlementsClient;
use jfconnect_client::proto::{CheckRequest, GetEntitlementsRequest, WatchRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tls_support::{other_ca_pem, TestPki};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const TOKEN: &str = "grpc-tls-token";
const ADMIN: &str = "grpc-tls-admin-token";

/// A CA and a server certificate for `localhost` signed by it, written as `server.pem` and
/// `server.key`; returns the CA's PEM.
fn pki(dir: &Path) -> String {
    let made = TestPki::for_names(&["localhost"]);
    made.write_server_files(dir);
    made.ca_pem
}

fn entitlements_client(channel: Channel) -> EntitlementsClient<Channel> {
    EntitlementsClient::new(channel)
}

fn authed<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_over_the_server_tls_and_refuses_plain_text() {
    let sim = sim_support::start().await;
    sim.set_xray_features(&["scan"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = pki(dir.path());
    let mut config = Config::defaults(dir.path().join("data"));
    std::fs::write(dir.path().join("license"), sim_support::LICENSE).unwrap();
    config.license.file = Some(dir.path().join("license"));
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.api.admin_token = Some(jfconnect::secret::Secret::new(ADMIN));
    config.tls.server.cert_file = Some(dir.path().join("server.pem"));
    config.tls.server.key_file = Some(dir.path().join("server.key"));
    let base: url::Url = sim.handle.base_url().parse().unwrap();
    config.jes.url = base.clone();
    config.jcs.url = base.clone();
    config.jpd.url = base;
    let tls = jfconnect::server_tls::acceptor(&config).unwrap();
    assert!(tls.is_some());
    let app = Arc::new(App::build(config, Arc::new(SystemClock), None, true).unwrap());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_port, grpc_port) = (
        http.local_addr().unwrap().port(),
        grpc.local_addr().unwrap().port(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(jfconnect::server::serve_tls(
        app.clone(),
        Listeners {
            http,
            grpc: Some(grpc),
        },
        tls,
        async move {
            let _ = stopped.await;
        },
    ));

    let grpc_url = format!("https://localhost:{grpc_port}");
    let channel = Endpoint::from_shared(grpc_url.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a TLS connection to the gRPC port");
    let mut client = entitlements_client(channel);

    // Get, once the first scheduled run of the entitlements job has stored them.
    let mut got = None;
    for _ in 0..200 {
        match client
            .get_entitlements(authed(GetEntitlementsRequest {}))
            .await
        {
            Ok(r) => {
                got = Some(r.into_inner());
                break;
            }
            Err(s) => assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.expect("entitlements over gRPC and TLS within 10 s");
    assert!(got
        .entitlements
        .iter()
        .any(|e| e.product == "xray" && e.feature == "scan"));

    let check = client
        .check(authed(CheckRequest {
            product: "xray".into(),
            feature: "scan".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(check.entitled);
    assert_eq!(check.version, got.version);

    // Watch: the current entitlements, then a change made at the simulator.
    let mut stream = client
        .watch_entitlements(authed(WatchRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.version, got.version);
    let cached = jfconnect_client::Client::builder(TOKEN)
        .grpc(grpc_url.clone())
        .ca_pem(ca_pem.as_bytes())
        .connect()
        .await
        .unwrap();
    assert!(cached.is_entitled("xray", "scan"));
    assert_eq!(cached.link(), jfconnect_client::Link::Grpc);

    sim.set_xray_features(&["scan", "sbom"]).await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let run_url = format!("https://localhost:{http_port}/api/v1/jobs/entitlements/run");
    let mut started = false;
    for _ in 0..200 {
        let r = https
            .post(&run_url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            started = true;
            break;
        }
        assert_eq!(r.status(), 409);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the entitlements job never started");
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the TLS watch hears the change")
        .unwrap()
        .unwrap();
    assert_ne!(next.version, first.version);
    assert!(next.entitlements.iter().any(|e| e.feature == "sbom"));
    let mut rx = cached.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.as_ref().is_some_and(|s| s.version == next.version)),
    )
    .await
    .expect("the client cache hears the change over TLS")
    .unwrap();
    assert!(cached.is_entitled("xray", "sbom"));

    // Plain text to the TLS port: no gRPC answer.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let refused = entitlements_client(channel)
                .get_entitlements(authed(GetEntitlementsRequest {}))
                .await
                .expect_err("a plain-text call to the TLS port is refused");
            // The TLS listener's alert is no HTTP/2: the call fails at the transport (closed,
            // canceled, a protocol error: it depends on timing), never reaching the service,
            // which would answer OK, NOT_FOUND or UNAUTHENTICATED.
            assert!(
                std::error::Error::source(&refused).is_some()
                    && !matches!(
                        refused.code(),
                        tonic::Code::Ok | tonic::Code::NotFound | tonic::Code::Unauthenticated
                    ),
                "{refused:?}"
            );
        }
    }
    // And a client that does not trust the CA gets nothing.
    let untrusting = jfconnect_client::Client::builder(TOKEN)
        .grpc(grpc_url)
        .ca_pem(other_ca_pem())
        .first_answer_wait(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    assert!(untrusting.snapshot().is_none());
    assert!(!untrusting.is_entitled("xray", "scan"));

    drop((cached, untrusting));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(12), served)
        .await
        .expect("serve returns within the shutdown promise")
        .unwrap()
        .unwrap();
    sim.stop().await;
}
