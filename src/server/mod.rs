//! Runs a built [`App`]: the HTTP API on a bound listener and the jobs on their schedules,
//! until a shutdown future completes.
//!
//! `serve` takes an already-bound listener and a shutdown future (mini-redis style), so tests
//! bind `127.0.0.1:0` and read the real port back. The binary is a thin shell around it.
//! Every port is served under the [`limits::ListenerLimits`] of `jfconnect.api.*`
//! (`connections` runs the API's accept loop; the gRPC port applies the same values).

mod connections;
pub mod limits;

use crate::api;
use crate::app::{App, AppError};
use crate::jobs::JobName;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long running jobs get to finish after a shutdown signal, and the HTTP server to drain.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// The bound ports `serve` answers on.
pub struct Listeners {
    /// The HTTP API (`port`).
    pub http: TcpListener,
    /// The gRPC port (`grpc.port`), when `grpc.enabled`.
    pub grpc: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(http: TcpListener) -> Self {
        Listeners { http, grpc: None }
    }
}

/// Serves the API (and gRPC, when given a listener for it) and runs the jobs until
/// `shutdown` completes; then stops accepting, answers held long-polls and ends watch
/// streams, lets running jobs finish or checkpoint, and returns within ~10 s.
pub async fn serve(
    service: Arc<App>,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    serve_tls(service, listeners, None, shutdown).await
}

/// As [`serve`], over HTTPS (and gRPC over TLS) when `tls` is given (see
/// [`crate::server_tls::acceptor`]).
pub async fn serve_tls(
    service: Arc<App>,
    listeners: impl Into<Listeners>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let Listeners { http, grpc } = listeners.into();
    // An unwritable log folder is an error now, not a lost record at the first state change.
    service.audit_log().probe()?;
    let limits = limits::ListenerLimits::from_config(&service.config().api);
    limits::raise_fd_limit(limits.max_connections);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(service.feed().clone().follow(stop_rx.clone()));
    if let Some(grpc) = grpc {
        let server = crate::grpc::GrpcServer {
            feed: service.feed().subscribe(),
            token: service.api_token().cloned(),
            clock: service.clock().clone(),
            tls: tls.as_ref().map(crate::server_tls::for_grpc),
            limits: crate::grpc::Limits {
                max_connections: limits.max_connections,
                first_call_timeout: limits.header_read_timeout,
                idle_timeout: limits.idle_timeout,
                ..crate::grpc::Limits::default()
            },
        };
        let mut grpc_stop = stop_rx.clone();
        background.spawn(async move {
            let stopped = async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = server.serve(grpc, stopped).await {
                tracing::error!(error = %e, "the gRPC port stopped");
            }
        });
    }
    if let Some(s) = &service.scheduler() {
        background.spawn(Arc::clone(s).run_forever(stop_rx.clone(), SHUTDOWN_GRACE));
        background.spawn(watch_license(service.clone(), stop_rx.clone()));
    } else {
        tracing::warn!("jfconnect is disabled (jfconnect.enabled: false): answering health checks only, running no job");
    }
    if let Some(membership) = service.membership() {
        background.spawn(crate::app::cluster::run(
            membership.clone(),
            service.config().clone(),
            service.entitlements().clone(),
            service.scheduler().cloned(),
            stop_rx.clone(),
        ));
    }
    let app = api::ApiService::new(service.clone(), crate::console::router(service.clone()));
    let server = connections::serve_http(http, tls, limits, app, stop_rx.clone());
    tokio::pin!(server);
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut server => return Ok(()),
        _ = &mut shutdown => {}
    }
    tracing::info!("shutting down: no new requests; letting running jobs finish or checkpoint");
    let _ = stop_tx.send(true);
    let drain = async {
        (&mut server).await;
        while background.join_next().await.is_some() {}
    };
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; stopping now");
    }
    if let Some(cluster) = service.cluster() {
        // Releasing the leases lets another node take over at once instead of after the TTL.
        cluster.shutdown().await;
    }
    Ok(())
}

/// How often the license file is checked for a change.
pub const LICENSE_POLL: Duration = Duration::from_secs(5);

async fn watch_license(service: Arc<App>, mut stop: watch::Receiver<bool>) {
    let Some(scheduler) = service.scheduler() else {
        return;
    };
    let fingerprint = |s: &App| s.license().read().ok().flatten().map(|l| l.fingerprint());
    let mut last = fingerprint(&service);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LICENSE_POLL) => {}
            _ = stop.changed() => return,
        }
        let now = fingerprint(&service);
        if now != last {
            last = now;
            tracing::info!("the license changed; registering again");
            if let Err(e) = scheduler.unblock(JobName::Entitlements).await {
                tracing::error!(error = %e, "cannot reschedule the entitlements job");
            }
        }
    }
}
