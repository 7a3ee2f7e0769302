//! The JFrog Store proxy: `/api/v1/store/<path>?<query>` is forwarded to
//! `<store.url>/<path>?<query>`.
//!
//! Products inside a JPD reach the JFrog Store through jfconnect, so only jfconnect needs a
//! way out (outbound proxy, private CA: the client comes from [`crate::http::build_client`]).
//! The proxy is deliberately thin: it checks the path ([`path`]), filters headers
//! ([`headers`]), and streams bodies both ways ([`body`]) so memory does not grow with the
//! size of what passes. Its own failures are JSON ([`error`]); the store's answers pass
//! through untouched.
//!
//! Architecture invariant: nothing is sent upstream before [`check_store_path`] accepted the
//! raw path, and our API's `Authorization` never leaves the process.

mod body;
mod error;
mod headers;
mod path;

pub(crate) use error::StoreProxyError;
pub(crate) use headers::{downstream_response_headers, upstream_request_headers};
pub(crate) use path::{check_store_path, StorePathError};

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use body::{Activity, Waited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Where the store proxy lives in the API.
pub(crate) const MOUNT: &str = "/api/v1/store";

/// Upper bound on one whole exchange, so the shared client's per-request timeout (meant for
/// small API calls) does not cut a long download that keeps moving; silence is caught by the
/// proxy's own idle timeout long before this.
const MAX_EXCHANGE: Duration = Duration::from_secs(24 * 3600);

/// Forwards store requests to one upstream.
#[derive(Debug, Clone)]
pub struct StoreProxy {
    client: crate::http::Client,
    upstream: Url,
    timeout: Duration,
    clock: crate::clock::SharedClock,
}

impl StoreProxy {
    /// A proxy to `upstream` (`store.url`) over `client`, giving up on a store that stays
    /// silent for `timeout` (before its answer, or mid-body) as `clock` measures it.
    ///
    /// `client` should come from [`crate::http::build_client`] so the outbound proxy and CA
    /// apply, and should not follow redirects, so a store redirect reaches the caller as is.
    pub fn new(
        client: crate::http::Client,
        upstream: Url,
        timeout: Duration,
        clock: crate::clock::SharedClock,
    ) -> Self {
        StoreProxy {
            client,
            upstream,
            timeout,
            clock,
        }
    }

    /// The store URL requests go to.
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    /// Forwards one request as it arrived, its path starting with [`MOUNT`].
    pub(crate) async fn forward(&self, request: Request) -> Result<Response, StoreProxyError> {
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path()
            .strip_prefix(MOUNT)
            .ok_or(StorePathError::NotRooted)?;
        check_store_path(path)?;
        let url = self.target(path, parts.uri.query())?;
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let headers = upstream_request_headers(&parts.headers, client_ip);
        let activity = Activity::new(self.clock.clone());
        let mut outbound =
            crate::http::traced(self.client.request(parts.method.clone(), url.clone()))
                .headers(headers)
                .timeout(MAX_EXCHANGE);
        if has_body(&parts.headers) {
            outbound = outbound.body(body::upstream_body(body, activity.clone()));
        }
        let answer = match body::answer_or_idle(outbound.send(), &activity, self.timeout).await {
            Waited::Done(Ok(answer)) => answer,
            Waited::Done(Err(e)) => {
                let err = StoreProxyError::from_send(&e, &url, self.timeout);
                tracing::warn!(method = %parts.method, path, "{err}");
                return Err(err);
            }
            Waited::Idle => {
                let err = StoreProxyError::Timeout {
                    host: self.host(),
                    timeout: self.timeout,
                };
                tracing::warn!(method = %parts.method, path, "{err}");
                return Err(err);
            }
        };
        tracing::debug!(method = %parts.method, path, status = answer.status().as_u16(), "store request forwarded");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = answer.status();
        *response.headers_mut() = downstream_response_headers(answer.headers());
        *response.body_mut() = body::downstream_body(answer, self.timeout, self.host());
        Ok(response)
    }

    /// `<store.url>/<path>?<query>`, the path appended byte for byte as it arrived.
    fn target(&self, path: &str, query: Option<&str>) -> Result<Url, StoreProxyError> {
        let mut url = self.upstream.clone();
        if url.cannot_be_a_base() {
            return Err(StoreProxyError::BadRequest(format!(
                "jfconnect.store.url {} cannot carry a path",
                crate::http::redact_url(&self.upstream)
            )));
        }
        let base = url.path().trim_end_matches('/').to_string();
        let rest = path.strip_prefix('/').unwrap_or(path);
        url.set_path(&format!("{base}/{rest}"));
        url.set_query(query);
        url.set_fragment(None);
        Ok(url)
    }

    fn host(&self) -> String {
        self.upstream.host_str().unwrap_or("?").to_string()
    }
}

/// Whether the request carries a body (HTTP/1.1: a non-zero length, or a transfer coding).
/// Bodyless requests go out without one, not as an empty chunked stream.
fn has_body(headers: &axum::http::HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The store proxy's routes: [`MOUNT`] itself and every path below it, any method. MERGE them
/// into the API router (`Router::merge`), do not `nest` them: nesting rewrites the request
/// path before the handler sees it (axum drops one `/` after the prefix, so
/// `/api/v1/store//evil.com` would arrive as `/evil.com`), and the path check must see the raw
/// path. The API's body limit does not apply here: bodies stream.
pub fn router<S>(proxy: Arc<StoreProxy>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(MOUNT, any(handle))
        .route(&format!("{MOUNT}/"), any(handle))
        .route(&format!("{MOUNT}/{{*rest}}"), any(handle))
        .layer(DefaultBodyLimit::disable())
        .with_state(proxy)
}

async fn handle(State(proxy): State<Arc<StoreProxy>>, request: Request) -> Response {
    match proxy.forward(request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}
