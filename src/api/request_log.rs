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
    let started = SystemClock.now();
    let trace_id = request
        .headers()
        .get(logging::TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| logging::is_trace_id(t))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(logging::new_trace_id);
    let remote_address = remote_address(&request);
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let request_content_length = declared_length(request.headers());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let mut response = next
        .run(request)
        .instrument(logging::trace_span("request", &trace_id))
        .await;
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
    logging::log_request(&RequestRecord {
        time: logging::now_text(),
        trace_id: trace_id.clone(),
        remote_address,
        user: user.to_string(),
        method,
        path,
        status: response.status().as_u16(),
        request_content_length,
        response_content_length,
        duration_ms: (finished - started).num_milliseconds().max(0),
        user_agent,
    });
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(logging::TRACE_HEADER, v);
    }
    response
}

fn declared_length(headers: &axum::http::HeaderMap) -> i64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}
