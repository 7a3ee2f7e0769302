//! Streaming bodies across the proxy, both ways, with an idle timeout.
//!
//! Bodies are never collected: each chunk read from one side is handed to the other, so a
//! 1 GiB upload or download holds only the chunks in flight. The timeout is an IDLE timeout:
//! a slow but moving transfer of any size is fine, while a store that stays silent for longer
//! than the timeout (before its answer, or in the middle of a body) is given up on.

use crate::clock::SharedClock;
use crate::http::{StoreResponse, StoreSendError};
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// When bytes of one exchange last moved, shared between the upload stream and the code that
/// waits for the store's answer; read from the clock's monotonic reading.
#[derive(Debug)]
pub(crate) struct Activity {
    clock: SharedClock,
    origin: Duration,
    /// Milliseconds since `origin` of the last chunk.
    last_ms: AtomicU64,
}

impl Activity {
    /// Starts the clock now.
    pub fn new(clock: SharedClock) -> Arc<Self> {
        Arc::new(Activity {
            origin: clock.monotonic(),
            clock,
            last_ms: AtomicU64::new(0),
        })
    }

    fn since_origin(&self) -> Duration {
        self.clock.monotonic().saturating_sub(self.origin)
    }

    /// Records that bytes moved now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.since_origin().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long nothing has moved.
    pub(crate) fn quiet_for(&self) -> Duration {
        self.since_origin()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The caller's request body, touching `activity` on every chunk that moves.
pub(crate) fn upstream_body(body: Body, activity: Arc<Activity>) -> Body {
    Body::new(Upstream {
        inner: body,
        activity,
    })
}

struct Upstream {
    inner: Body,
    activity: Arc<Activity>,
}

impl http_body::Body for Upstream {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What ended a wait for the store's answer.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The store answered, or the send failed.
    Done(Result<StoreResponse, StoreSendError>),
    /// Nothing moved for `idle`.
    Idle,
}

/// Waits for the store's answer while the upload moves; gives up once nothing moved for `idle`.
pub(crate) async fn answer_or_idle<F>(pending: F, activity: &Activity, idle: Duration) -> Waited
where
    F: std::future::Future<Output = Result<StoreResponse, StoreSendError>>,
{
    tokio::pin!(pending);
    loop {
        let left = idle.saturating_sub(activity.quiet_for());
        if left.is_zero() {
            return Waited::Idle;
        }
        tokio::select! {
            biased;
            done = &mut pending => return Waited::Done(done),
            _ = tokio::time::sleep(left) => {}
        }
    }
}

/// Waits for the store's answer to a request without a body; gives up after `idle`.
pub(crate) async fn answer_within<F>(pending: F, idle: Duration) -> Waited
where
    F: std::future::Future<Output = Result<StoreResponse, StoreSendError>>,
{
    match tokio::time::timeout(idle, pending).await {
        Ok(done) => Waited::Done(done),
        Err(_) => Waited::Idle,
    }
}

/// The store's answer body as our response body; ends with an error (which cuts the caller's
/// connection, so a truncated download is never mistaken for a whole one) if the store stays
/// silent for `idle` mid-body or breaks the transfer. Chunks pass as they come, not copied.
pub(crate) fn downstream_body(incoming: Incoming, idle: Duration, host: Arc<str>) -> Body {
    Body::new(Downstream {
        inner: incoming,
        idle,
        silence: None,
        host,
        failed: false,
    })
}

struct Downstream {
    inner: Incoming,
    idle: Duration,
    /// Armed while the store owes the next chunk; dropped whenever one arrives.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    host: Arc<str>,
    /// An error was passed on: nothing follows it.
    failed: bool,
}

impl http_body::Body for Downstream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.silence = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                let host = &this.host;
                tracing::warn!(%host, error = %e, "the JFrog Store broke off a response body");
                this.failed = true;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Pending => {
                let idle = this.idle;
                let silence = this
                    .silence
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if silence.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let host = &this.host;
                tracing::warn!(%host, "the JFrog Store went silent in the middle of a response body");
                this.failed = true;
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the JFrog Store at {host} went silent mid-body"),
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn quiet_time_is_read_from_the_clock() {
        let clock = ManualClock::new(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);
        let activity = Activity::new(Arc::new(clock.clone()));
        clock.advance(Duration::from_secs(3));
        assert_eq!(activity.quiet_for(), Duration::from_secs(3));
        activity.touch();
        assert_eq!(activity.quiet_for(), Duration::ZERO);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(activity.quiet_for(), Duration::from_millis(1500));
    }
}
