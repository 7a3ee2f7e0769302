//! The gRPC listener's limits: a connection cap, a deadline for a new connection's first
//! call (and for its TLS handshake), an idle timeout once no call is open, HTTP/2 keep-alive
//! pings that find vanished peers under long watches, and caps on streams and header size.
//! Every connection is served by hyper's HTTP/2 server on its own task; shutdown sends
//! GOAWAY to each and waits for open calls, which the service ends at the same signal.

use super::Limits;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The routes every connection serves.
pub(crate) type Routes = tonic::service::Routes;

/// Accepts connections until `stop` flips, then waits for the open ones to close.
pub(crate) async fn run(
    listener: TcpListener,
    routes: Routes,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let full_logged = Arc::new(AtomicBool::new(false));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "the gRPC listener cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max = limits.max_connections,
                    "the gRPC port has reached its connection cap; refusing new connections"
                );
            }
            drop(tcp);
            continue;
        };
        if slots.available_permits() > limits.max_connections / 10 {
            full_logged.store(false, Ordering::Relaxed);
        }
        let _ = tcp.set_nodelay(true);
        let routes = routes.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(tcp, routes, limits, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    match tokio::time::timeout(limits.first_call_timeout, handshake).await {
                        Ok(Ok(tls)) => connection(tls, routes, limits, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("gRPC connections did not close in time; closing them now");
        connections.abort_all();
    }
}

/// Serves one connection until the peer closes it, it stays without a call too long, or
/// shutdown.
async fn connection<I>(io: I, routes: Routes, limits: Limits, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Number of calls open on this connection (a call is open until its response body ends).
    let (open_tx, mut open_rx) = watch::channel(0usize);
    let open_tx = Arc::new(open_tx);
    let service = tower::service_fn(move |request: http::Request<Incoming>| {
        let routes = routes.clone();
        let open = CallGuard::new(open_tx.clone());
        let call: BoxFuture<'static, Result<http::Response<tonic::body::Body>, Infallible>> =
            Box::pin(async move {
                let response = routes.oneshot(request).await?;
                Ok(response.map(|body| {
                    tonic::body::Body::new(body.map_frame(move |frame| {
                        let _open = &open;
                        frame
                    }))
                }))
            });
        call
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .keep_alive_timeout(limits.keep_alive_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    // Resolves once the connection has had no open call for too long: `first_call_timeout`
    // before its first call, `idle_timeout` after.
    let idle = Box::pin(async {
        let mut limit = limits.first_call_timeout;
        loop {
            if open_rx.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(limit) => return,
                changed = open_rx.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                    limit = limits.idle_timeout;
                }
            }
        }
    });
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = idle => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    // GOAWAY; open calls may finish (watch streams end at the same stop signal). A peer that
    // does not answer the GOAWAY's ping would hold the connection, so once no call is open it
    // gets a moment to read the GOAWAY and is then cut.
    conn.as_mut().graceful_shutdown();
    let calls_done = async {
        let _ = open_rx.wait_for(|n| *n == 0).await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = calls_done => {}
    }
}

/// Time a connection with no open call gets to read its GOAWAY before it is cut.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Counts a call as open until its response body is dropped.
struct CallGuard(Arc<watch::Sender<usize>>);

impl CallGuard {
    fn new(open: Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        CallGuard(open)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}
