//! Streaming bodies across the proxy, both ways, with an idle timeout.
//!
//! Bodies are never collected: each chunk read from one side is handed to the other, so a
//! 1 GiB upload or download holds only the chunks in flight. The timeout is an IDLE timeout:
//! a slow but moving transfer of any size is fine, while a store that stays silent for longer
//! than the timeout (before its answer, or in the middle of a body) is given up on.

use axum::body::Body;
use futures_util::{Stream, StreamExt, TryStreamExt};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;

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

/// The caller's request body as an upstream body, touching `activity` on every chunk.
pub(crate) fn upstream_body(body: Body, activity: Arc<Activity>) -> crate::http::Body {
    crate::http::Body::wrap_stream(
        body.into_data_stream()
            .inspect_ok(move |_| activity.touch()),
    )
}

/// What ended a wait for the store's answer.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The store answered, or the send failed.
    Done(Result<crate::http::Response, crate::http::Error>),
    /// Nothing moved for `idle`.
    Idle,
}

/// Waits for the store's answer while the upload moves; gives up once nothing moved for `idle`.
pub(crate) async fn answer_or_idle<F>(pending: F, activity: &Activity, idle: Duration) -> Waited
where
    F: std::future::Future<Output = Result<crate::http::Response, crate::http::Error>>,
{
    tokio::pin!(pending);
    loop {
        let left = idle.saturating_sub(activity.quiet_for());
        if left.is_zero() {
            return Waited::Idle;
        }
        tokio::select! {
            done = &mut pending => return Waited::Done(done),
            _ = tokio::time::sleep(left) => {}
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, crate::http::Error>> + Send>>;

/// The store's answer body as our response body; ends with an error (which cuts the caller's
/// connection, so a truncated download is never mistaken for a whole one) if the store stays
/// silent for `idle` mid-body or breaks the transfer.
pub(crate) fn downstream_body(
    response: crate::http::Response,
    idle: Duration,
    host: String,
) -> Body {
    let chunks: ChunkStream = Box::pin(response.bytes_stream());
    let stream = futures_util::stream::unfold(Some(chunks), move |state| {
        let host = host.clone();
        async move {
            let mut chunks = state?;
            match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
                Ok(None) => None,
                Ok(Some(Err(e))) => {
                    tracing::warn!(%host, error = %e, "the JFrog Store broke off a response body");
                    Some((Err(std::io::Error::other(e)), None))
                }
                Err(_) => {
                    tracing::warn!(%host, "the JFrog Store went silent in the middle of a response body");
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the JFrog Store at {host} went silent mid-body"),
                    );
                    Some((Err(e), None))
                }
            }
        }
    });
    Body::from_stream(stream)
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
