//! The simulator's accept loop: one task per connection, graceful shutdown, and the ability to
//! cut a connection with a TCP reset.
//!
//! `axum::serve` would be shorter, but it hides the socket, and the `reset` fault must close a
//! connection with no HTTP answer at all so that the client sees a connection error, as it
//! would when a proxy or a crashing server drops it. So each connection is served by hyper
//! directly; the task keeps a duplicate of the socket's handle, and when a handler asks for a
//! reset it sets `SO_LINGER` to zero and drops everything, which makes the kernel send RST.
//!
//! The served stream is generic over `AsyncRead + AsyncWrite`, so a TLS acceptor can wrap the
//! accepted stream later (after the duplicate is taken) without touching the routes.

use super::SimError;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client may take to send a request's headers (slow-loris guard). hyper counts it
/// from the moment a connection waits for a request, so it also closes a keep-alive connection
/// left idle this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
// A pooled connection reused at the instant the simulator closes it for idleness loses its
// request (`IncompleteMessage`): jfconnect's clients must let go of idle connections first.
const _: () = assert!(
    crate::http::POOL_IDLE_TIMEOUT.as_secs() < HEADER_READ_TIMEOUT.as_secs(),
    "the outbound pool keeps idle connections as long as the simulator or longer"
);

/// How long in-flight requests may run on after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Put into every request's extensions: lets a handler have its connection cut.
#[derive(Debug, Clone)]
pub(crate) struct ConnControl {
    reset: Arc<Notify>,
}

impl ConnControl {
    /// Asks the connection task to close the socket with a TCP reset, answering nothing.
    pub fn reset(&self) {
        self.reset.notify_one();
    }
}

/// Accepts connections on `listener` and serves `router` until `shutdown` completes, then lets
/// in-flight requests finish for a short grace period.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, router.clone(), tls.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "simulator cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (stream, raw) = match duplicate(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "simulator cannot set up a connection");
            return;
        }
    };
    match tls {
        None => serve_stream(stream, raw, router, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_stream(tls_stream, raw, router, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "simulator TLS handshake failed"),
                Err(_) => tracing::debug!("simulator TLS handshake timed out"),
            }
        }
    }
}

/// Serves one connection over any byte stream; `raw` is a second handle on its TCP socket.
async fn serve_stream<S>(
    stream: S,
    raw: std::net::TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reset = Arc::new(Notify::new());
    let control = ConnControl {
        reset: reset.clone(),
    };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(control.clone());
        router.clone().oneshot(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "simulator connection ended with an error");
                }
                return;
            }
            _ = reset.notified() => {
                reset_on_close(raw);
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Splits a socket into the stream hyper serves and a duplicate handle kept for [`reset_on_close`].
fn duplicate(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let raw = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, raw))
}

/// Sets `SO_LINGER` to zero, so that closing the last handle (on return) sends RST, not FIN.
fn reset_on_close(raw: std::net::TcpStream) {
    match TcpStream::from_std(raw) {
        Ok(socket) => {
            if let Err(e) = socket.set_zero_linger() {
                tracing::debug!(error = %e, "cannot set SO_LINGER; the connection closes with FIN");
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot reach the socket to reset it"),
    }
}
