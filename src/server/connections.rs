//! The API port's accept loop under [`ListenerLimits`]: a permit per connection from a
//! semaphore of `max_connections`, one task per connection, and the first request head read
//! here, before hyper, so a connection that has not sent a whole head costs a few hundred
//! bytes plus what it sent, never a parser's buffers.
//!
//! A connection's life: accepted (a permit held); wait until a byte arrives; TLS handshake
//! when TLS is on; read the first request head (to `\r\n\r\n`) within `header_read_timeout` of
//! the accept, refusing an over-long request line (414) or head (431); then hyper serves it,
//! starting with the bytes read, and closes it when the next head is not complete within
//! `idle_timeout` of the previous response. Until its first head is complete a connection is
//! *waiting*: at the cap the oldest waiting connection is closed for a newcomer.

use super::limits::{ListenerLimits, MAX_HEAD_BYTES, MAX_REQUEST_LINE_BYTES};
use crate::api::ApiService;
use crate::protocol::ErrorBody;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// The config key named in the log line at the cap.
const CAP_KEY: &str = "jfconnect.api.max_connections";

/// The open connections of one port and the permits that cap their number.
struct Gate {
    limits: ListenerLimits,
    permits: Arc<Semaphore>,
    /// Connections that have not sent a whole request head yet, oldest first.
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next_id: AtomicU64,
    at_cap: AtomicBool,
}

impl Gate {
    fn new(limits: ListenerLimits) -> Gate {
        Gate {
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            waiting: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            at_cap: AtomicBool::new(false),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a new connection as waiting; the `Notify` tells it to close.
    fn enter(&self) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.waiting().insert(id, evict.clone());
        (id, evict)
    }

    fn leave(&self, id: u64) {
        self.waiting().remove(&id);
    }

    /// Tells the oldest waiting connection to close; false when none is waiting.
    fn evict_oldest_waiting(&self) -> bool {
        let oldest = self.waiting().pop_first();
        match oldest {
            Some((_, evict)) => {
                evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// A permit for a new connection: at once below the cap; at the cap once the oldest
    /// waiting connection has closed, or once any connection ends when none is waiting.
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            if self.permits.available_permits() > self.limits.max_connections / 10 {
                self.at_cap.store(false, Ordering::Relaxed);
            }
            return Some(p);
        }
        let evicted = self.evict_oldest_waiting();
        if !self.at_cap.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "{CAP_KEY} ({}) reached: {}; raise it if this repeats",
                self.limits.max_connections,
                if evicted {
                    "closing the oldest connection that has not sent a request yet for each new one"
                } else {
                    "every connection is serving a request, new ones wait"
                }
            );
        }
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// Serves `api` over HTTP/1.1 (HTTPS when `tls` is given) on `listener` under `limits`
/// until `stop` turns true; then stops accepting, lets requests in flight finish and returns
/// when every connection has ended.
pub(crate) async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ListenerLimits,
    api: ApiService,
    mut stop: watch::Receiver<bool>,
) {
    let gate = Arc::new(Gate::new(limits));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut accept_error_logged = false;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                accept_error_logged = false;
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning; say it once.
                if !accept_error_logged {
                    tracing::warn!(error = %e, "cannot accept a connection (at the open-file limit?); retrying");
                    accept_error_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = tokio::select! {
            p = gate.permit() => p,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(permit) = permit else { break };
        let _ = tcp.set_nodelay(true);
        let task = Connection {
            gate: gate.clone(),
            builder: builder.clone(),
            api: api.clone(),
            tls: tls.clone(),
            peer,
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            task.run(tcp).await;
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = gate.permits.acquire_many(all).await;
}

/// What one connection's task needs.
struct Connection {
    gate: Arc<Gate>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    api: ApiService,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

/// A connection whose first request head has arrived, with that head kept to be replayed.
enum Ready {
    Plain(Prefixed<TcpStream>),
    Tls(Box<Prefixed<tokio_rustls::server::TlsStream<TcpStream>>>),
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        let (id, evict) = self.gate.enter();
        let tls = self.tls.take();
        let first_head = async move {
            // No buffer, no TLS state until the peer sends something.
            tcp.readable().await.ok()?;
            match tls {
                None => read_head(tcp).await.map(Ready::Plain),
                // Boxed, so a waiting connection's task does not reserve room for TLS state.
                Some(acceptor) => {
                    Box::pin(async move {
                        let stream = acceptor.accept(tcp).await.ok()?;
                        read_head(stream).await.map(|s| Ready::Tls(Box::new(s)))
                    })
                    .await
                }
            }
        };
        let mut stop = self.stop.clone();
        let ready = tokio::select! {
            r = first_head => r,
            _ = tokio::time::sleep(self.gate.limits.header_read_timeout) => {
                tracing::debug!(peer = %self.peer, "closing a connection that sent no whole request head in time");
                None
            }
            _ = evict.notified() => {
                tracing::debug!(peer = %self.peer, "closing a connection without a request at the connection cap");
                None
            }
            _ = stop.wait_for(|s| *s) => None,
        };
        self.gate.leave(id);
        // Boxed for the same reason: hyper's connection state exists only once a head came.
        match ready {
            Some(Ready::Plain(io)) => Box::pin(self.serve(io)).await,
            Some(Ready::Tls(io)) => Box::pin(self.serve(*io)).await,
            None => {}
        }
    }

    /// Hyper serves the connection until the peer closes it, it stays idle too long, or
    /// shutdown (requests in flight finish first).
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let api = self.api;
        let service = hyper::service::service_fn(move |request| {
            let answer = api.call::<hyper::body::Incoming>(request, peer);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stop = self.stop;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// Reads until the end of the first request head (an empty line) and returns the stream with
/// what was read to replay; `None` when the peer closed or went over a cap (then answered 414
/// or 431 and closed).
async fn read_head<I>(mut io: I) -> Option<Prefixed<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut head: Vec<u8> = Vec::new();
    loop {
        head.reserve(512);
        let searched = head.len().saturating_sub(3);
        if io.read_buf(&mut head).await.ok()? == 0 {
            return None;
        }
        let line = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        if line > MAX_REQUEST_LINE_BYTES {
            refuse(
                &mut io,
                414,
                "URI Too Long",
                "uri_too_long",
                format!("the request line is over {MAX_REQUEST_LINE_BYTES} bytes"),
            )
            .await;
            return None;
        }
        if head_complete(&head[searched..]) {
            return Some(Prefixed {
                prefix: head,
                read: 0,
                io,
            });
        }
        if head.len() > MAX_HEAD_BYTES {
            refuse(
                &mut io,
                431,
                "Request Header Fields Too Large",
                "head_too_large",
                format!("the request head is over {MAX_HEAD_BYTES} bytes"),
            )
            .await;
            return None;
        }
    }
}

/// True when `bytes` hold the empty line that ends a head (CRLF CRLF, or bare LF LF).
fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

/// Answers a refused head with the API's JSON error shape and closes.
async fn refuse<I: AsyncWrite + Unpin>(
    io: &mut I,
    status: u16,
    reason: &str,
    code: &str,
    message: String,
) {
    let body = serde_json::to_string(&ErrorBody::new(code, message)).unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = io.write_all(answer.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// A stream that first replays bytes already read from it.
struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let n = (this.prefix.len() - this.read).min(buf.remaining());
            buf.put_slice(&this.prefix[this.read..this.read + n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_the_first_empty_line() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_complete(b"GE"));
    }

    #[tokio::test]
    async fn the_head_read_is_replayed_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody")
            .await
            .unwrap();
        drop(client);
        let mut io = read_head(server).await.expect("a whole head");
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody");
    }

    #[tokio::test]
    async fn an_over_long_request_line_is_answered_414_and_a_huge_head_431() {
        for (head, status) in [
            (
                format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE_BYTES)),
                "414",
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}",
                    "X-A: b\r\n".repeat(MAX_HEAD_BYTES / 8 + 1)
                ),
                "431",
            ),
        ] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            client.write_all(head.as_bytes()).await.unwrap();
            assert!(read_head(server).await.is_none());
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{answer}"
            );
        }
    }
}
