//! The gRPC port (default 8035): `jfconnect.v1.Entitlements` for the products, with
//! `grpc.health.v1` and server reflection beside it.
//!
//! The server knows nothing of how the service is wired: it takes a [`FeedReceiver`] (the
//! latest entitlements snapshot and a way to wait for the next), the API token and a clock.
//! Health and reflection are open, like the HTTP API's ping; every Entitlements call needs
//! `authorization: Bearer <token>`. When jfconnect is disabled the port still answers:
//! health says NOT_SERVING for `jfconnect.v1.Entitlements` and its calls get UNAVAILABLE at
//! once, so no client is left hanging.
//!
//! Architecture invariant: the gRPC service only reads the feed; it never calls JES, JCS or
//! the JPD.

mod listener;
mod service;

use crate::clock::SharedClock;
use crate::entitlements::feed::{Feed, FeedReceiver};
use crate::secret::Secret;
use jfconnect_client::proto;
use jfconnect_client::proto::entitlements_server::EntitlementsServer;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The full name of the Entitlements service, as health and reflection report it.
pub const SERVICE_NAME: &str = "jfconnect.v1.Entitlements";

/// Limits of the gRPC listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at accept (logged once).
    pub max_connections: usize,
    /// Time a new connection gets for its TLS handshake and its first call.
    pub first_call_timeout: Duration,
    /// Time a connection may stay open with no call in progress.
    pub idle_timeout: Duration,
    /// Largest request message decoded.
    pub max_request_bytes: usize,
    /// Largest reply message encoded.
    pub max_reply_bytes: usize,
    /// Calls open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Largest header block a call may send.
    pub max_header_bytes: u32,
    /// How often an HTTP/2 ping checks a connection...
    pub keep_alive_interval: Duration,
    /// ...and how long its answer may take before the connection is dropped.
    pub keep_alive_timeout: Duration,
    /// Time open calls get to end after shutdown before connections are cut.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            first_call_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_request_bytes: 16 * 1024,
            max_reply_bytes: 4 * 1024 * 1024,
            max_streams_per_connection: 256,
            max_header_bytes: 16 * 1024,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
            drain: Duration::from_secs(5),
        }
    }
}

/// Why the gRPC server could not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The reflection service refused the descriptors (a build defect).
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// What the gRPC server needs; [`GrpcServer::serve`] runs it.
pub struct GrpcServer {
    /// The entitlements to serve.
    pub feed: FeedReceiver,
    /// The token Entitlements calls must present (`None`: every call is refused).
    pub token: Option<Secret>,
    /// Time, for `age_seconds`.
    pub clock: SharedClock,
    /// Server TLS (its config must offer ALPN `h2`); `None` serves plain HTTP/2.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Listener limits.
    pub limits: Limits,
}

impl GrpcServer {
    /// Serves on `listener` until `shutdown` completes; then refuses new connections, ends
    /// open watch streams, and returns once connections closed (at most `limits.drain`).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GrpcError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let routes = self.routes(stop_rx.clone()).await?;
        let accept = listener::run(listener, routes, self.tls, self.limits, stop_rx);
        tokio::pin!(accept);
        tokio::select! {
            _ = &mut accept => return Ok(()),
            _ = shutdown => {}
        }
        let _ = stop_tx.send(true);
        accept.await;
        Ok(())
    }

    async fn routes(&self, stop: watch::Receiver<bool>) -> Result<listener::Routes, GrpcError> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let status = if matches!(&**self.feed.borrow(), Feed::Disabled) {
            tonic_health::ServingStatus::NotServing
        } else {
            tonic_health::ServingStatus::Serving
        };
        health_reporter
            .set_service_status(SERVICE_NAME, status)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let entitlements = EntitlementsServer::new(service::EntitlementsService {
            feed: self.feed.clone(),
            clock: self.clock.clone(),
            stop,
        })
        .max_decoding_message_size(self.limits.max_request_bytes)
        .max_encoding_message_size(self.limits.max_reply_bytes);
        let token = self.token.clone();
        let guarded = tonic::service::interceptor::InterceptedService::new(
            entitlements,
            move |request: tonic::Request<()>| {
                service::authorize(token.as_ref(), &request)?;
                Ok(request)
            },
        );
        Ok(tonic::service::Routes::new(health)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(guarded))
    }
}
