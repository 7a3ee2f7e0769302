//! Every network failure the online transport can meet becomes the class docs/architecture.md names and a
//! sentence a person can act on: refused, DNS, timeout, each with what to do next.

mod sim_support;

use jfconnect::config::Config;
use jfconnect::protocol::RegisterRequest;
use jfconnect::secret::Secret;
use jfconnect::transport::online::OnlineTransport;
use jfconnect::transport::{ErrorClass, Transport};
use std::time::Duration;

fn transport(base: &str, request_timeout: Duration) -> OnlineTransport {
    let mut config = Config::defaults(std::path::PathBuf::from("unused"));
    config.http.request_timeout = request_timeout;
    config.http.connect_timeout = Duration::from_secs(2);
    let outbound = jfconnect::http::build(&config).unwrap();
    let base: url::Url = base.parse().unwrap();
    OnlineTransport::new(outbound, base.clone(), base)
}

fn request() -> RegisterRequest {
    RegisterRequest {
        jpd_id: sim_support::JPD.into(),
        license_key: Secret::new("JFL-ONLINE-ERRORS-0001"),
        jfconnect_version: "test".into(),
    }
}

#[tokio::test]
async fn connection_refused_is_unavailable_and_suggests_allowlisting() {
    // Bind then drop: the port is free and nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = transport(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    let e = t.register(&request()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(
        e.message.contains("refused the connection"),
        "{}",
        e.message
    );
    assert!(e.message.contains("allowlisted"), "{}", e.message);
}

#[tokio::test]
async fn unknown_host_is_unavailable_and_names_dns() {
    let t = transport("http://jes.nonexistent.invalid", Duration::from_secs(5));
    let e = t.register(&request()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(e.message.contains("DNS"), "{}", e.message);
    assert!(
        e.message.contains("jes.nonexistent.invalid"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn slow_jes_times_out_as_unavailable() {
    let sim = sim_support::start().await;
    sim.set_faults(&["register=delay:3s"]).await;
    let t = transport(&sim.handle.base_url(), Duration::from_millis(500));
    let e = t.register(&request()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(
        e.message.contains("did not answer in time"),
        "{}",
        e.message
    );
    sim.stop().await;
}

#[tokio::test]
async fn connection_reset_is_unavailable() {
    let sim = sim_support::start().await;
    sim.set_faults(&["register=reset"]).await;
    let t = transport(&sim.handle.base_url(), Duration::from_secs(5));
    let e = t.register(&request()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(
        !e.message.contains("JFL-ONLINE-ERRORS-0001"),
        "{}",
        e.message
    );
    sim.stop().await;
}
