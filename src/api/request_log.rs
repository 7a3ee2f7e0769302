//! The request log: one entry per answered request, with a trace id per request.
//!
//! Runs outside every route (so refused requests, 401s included, are logged too). The trace id
//! is the caller's `X-JFrog-Trace-Id` when it sent a valid one, else a fresh one; the answer
//! carries it back in the same header.

use crate::clock::{Clock, SystemClock};
use crate::logging::{self, RequestRecord};
use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use tracing::Instrument;

/// Who a request proved to be, set on the response by the token check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthenticatedUser(pub &'static str);

/// The caller's address as the logs write it (`-` when the server did not record one).
pub(crate) fn remote_address(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Logs the request once its answer is ready.
pub(crate) async fn log_requests(request: Request, next: Next) -> Response {
    let entry = Entry::of(&request, remote_address(&request));
    let span = entry.span();
    let response = next.run(request).instrument(span).await;
    entry.answered(response)
}

/// A request's part of its log entry, read before it is handled; [`Entry::answered`] writes
/// the entry and puts the trace id on the answer. For a front end that runs ahead of the
/// router (the store proxy's fast path) as much as for [`log_requests`].
pub(crate) struct Entry {
    started: chrono::DateTime<chrono::Utc>,
    trace_id: String,
    remote_address: String,
    method: String,
    path: String,
    request_content_length: i64,
    user_agent: String,
}

impl Entry {
    /// What the log keeps of `request`, which came from `remote_address`.
    pub(crate) fn of<B>(request: &axum::http::Request<B>, remote_address: String) -> Entry {
        let headers = request.headers();
        let trace_id = headers
            .get(logging::TRACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|t| logging::is_trace_id(t))
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(logging::new_trace_id);
        Entry {
            started: SystemClock.now(),
            trace_id,
            remote_address,
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            request_content_length: declared_length(headers),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string(),
        }
    }

    /// The span the request is handled in: its lines and outbound calls carry the trace id.
    pub(crate) fn span(&self) -> tracing::Span {
        logging::trace_span("request", &self.trace_id)
    }

    /// Writes the entry for `response` and returns it carrying the trace id.
    pub(crate) fn answered(self, mut response: Response) -> Response {
        let user = response
            .extensions()
            .get::<AuthenticatedUser>()
            .map(|u| u.0)
            .unwrap_or("anonymous");
        let response_content_length = response
            .body()
            .size_hint()
            .exact()
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or_else(|| declared_length(response.headers()));
        let finished = SystemClock.now();
        let trace_value = HeaderValue::from_str(&self.trace_id);
        logging::log_request(&RequestRecord {
            time: logging::now_text(),
            trace_id: self.trace_id,
            remote_address: self.remote_address,
            user: user.to_string(),
            method: self.method,
            path: self.path,
            status: response.status().as_u16(),
            request_content_length: self.request_content_length,
            response_content_length,
            duration_ms: (finished - self.started).num_milliseconds().max(0),
            user_agent: self.user_agent,
        });
        if let Ok(v) = trace_value {
            response.headers_mut().insert(logging::TRACE_HEADER, v);
        }
        response
    }
}

fn declared_length(headers: &axum::http::HeaderMap) -> i64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}
