//! A gRPC server on 127.0.0.1 fed by hand, for the gRPC and client tests.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use jfconnect::clock::SystemClock;
use jfconnect::entitlements::feed::{Feed, Served, Source};
use jfconnect::grpc::{GrpcServer, Limits};
use jfconnect::protocol::{Entitlement, Entitlements};
use jfconnect::secret::Secret;
use jfconnect_client::proto::entitlements_client::EntitlementsClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const TOKEN: &str = "grpc-test-token";

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A snapshot with `features` of product `xray` (plus padding entitlements when `pad` > 0).
pub fn served(features: &[&str], pad: usize) -> Feed {
    let mut entitlements: Vec<Entitlement> = features
        .iter()
        .map(|f| Entitlement {
            product: "xray".into(),
            feature: (*f).into(),
            valid_from: None,
            valid_until: Some("2099-01-01T00:00:00Z".into()),
        })
        .collect();
    entitlements.extend((0..pad).map(|i| Entitlement {
        product: "padding".into(),
        feature: format!("feature-{i:06}"),
        valid_from: None,
        valid_until: None,
    }));
    let stored = Entitlements {
        subscription_id: "sub-1".into(),
        subscription_type: "enterprise_plus".into(),
        jpd_id: "jpd-test".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        entitlements,
    };
    let t = at("2026-01-01T00:00:00Z");
    Feed::Served(Served::new(
        Source::Connected,
        "jpd-test",
        &stored,
        t,
        t,
        Utc::now(),
    ))
}

pub struct Running {
    pub addr: SocketAddr,
    pub feed: watch::Sender<Arc<Feed>>,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn publish(&self, feed: Feed) {
        self.feed.send_replace(Arc::new(feed));
    }

    /// Asks the server to stop and waits (bounded) for it.
    pub async fn stop(mut self) -> Duration {
        let started = tokio::time::Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the gRPC server stops within 10 s")
            .unwrap();
        started.elapsed()
    }
}

pub async fn start(feed: Feed, limits: Limits) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, watch::channel(Arc::new(feed)).0, limits)
}

pub fn start_on(
    listener: tokio::net::TcpListener,
    feed: watch::Sender<Arc<Feed>>,
    limits: Limits,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = GrpcServer {
        feed: feed.subscribe(),
        token: Some(Secret::new(TOKEN)),
        clock: Arc::new(SystemClock),
        tls: None,
        limits,
    };
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        feed,
        stop: Some(stop_tx),
        task,
    }
}

/// Adds the token (when there is one) to every call.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            r.metadata_mut().insert("authorization", h.clone());
        }
        Ok(r)
    }
}

pub type Authed = EntitlementsClient<InterceptedService<Channel, Auth>>;

/// A client presenting `token` (none when `None`).
pub async fn client(addr: SocketAddr, token: Option<&str>) -> Authed {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let header = token.map(|t| format!("Bearer {t}").parse().unwrap());
    EntitlementsClient::with_interceptor(channel, Auth(header))
}
