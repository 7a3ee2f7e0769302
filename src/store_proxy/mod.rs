//! The JFrog Store proxy: `/api/v1/store/<path>?<query>` is forwarded to
//! `<store.url>/<path>?<query>`.
//!
//! Products inside a JPD reach the JFrog Store through jfconnect, so only jfconnect needs a
//! way out (outbound proxy, private CA: the client comes from
//! [`crate::http::build_store_client`]).
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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Where the store proxy lives in the API.
pub(crate) const MOUNT: &str = "/api/v1/store";

/// Forwards store requests to one upstream.
#[derive(Debug, Clone)]
pub struct StoreProxy {
    client: crate::http::StoreClient,
    upstream: Url,
    /// `scheme://host:port/base` of `upstream` without a trailing `/`, credentials or query:
    /// what each forwarded path is appended to. None when the URL cannot carry a path.
    base: Option<Arc<str>>,
    /// The store URL's credentials, if it carries any, as `Authorization: Basic`.
    authorization: Option<axum::http::HeaderValue>,
    host: Arc<str>,
    timeout: Duration,
    clock: crate::clock::SharedClock,
}

impl StoreProxy {
    /// A proxy to `upstream` (`store.url`) over `client`, giving up on a store that stays
    /// silent for `timeout` (before its answer, or mid-body) as `clock` measures it.
    ///
    /// `client` comes from [`crate::http::build_store_client`], so the outbound proxy and CA
    /// apply and a store redirect reaches the caller as is.
    pub fn new(
        client: crate::http::StoreClient,
        upstream: Url,
        timeout: Duration,
        clock: crate::clock::SharedClock,
    ) -> Self {
        let base = (!upstream.cannot_be_a_base()).then(|| {
            let mut bare = upstream.clone();
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            let origin = &bare[..url::Position::BeforePath];
            format!("{origin}{}", bare.path().trim_end_matches('/')).into()
        });
        let authorization = basic_credentials(&upstream);
        StoreProxy {
            client,
            host: upstream.host_str().unwrap_or("?").into(),
            base,
            authorization,
            upstream,
            timeout,
            clock,
        }
    }

    /// The store URL requests go to.
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    /// Answers one request whose path starts with [`MOUNT`], from `client_ip` when known: the
    /// store's answer, or our JSON error. The one entry point of the proxy, for the API's fast
    /// path ahead of its router and for [`router`] alike.
    pub async fn handle<B>(&self, request: http::Request<B>, client_ip: Option<IpAddr>) -> Response
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        match self.forward(request, client_ip).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    }

    /// Forwards one request as it arrived, its path starting with [`MOUNT`].
    async fn forward<B>(
        &self,
        request: http::Request<B>,
        client_ip: Option<IpAddr>,
    ) -> Result<Response, StoreProxyError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path()
            .strip_prefix(MOUNT)
            .ok_or(StorePathError::NotRooted)?;
        check_store_path(path)?;
        let uri = self.target(path, parts.uri.query())?;
        let with_body = has_body(&parts.headers);
        let mut headers = upstream_request_headers(std::mem::take(&mut parts.headers), client_ip);
        if let Some(credentials) = &self.authorization {
            headers.insert(header::AUTHORIZATION, credentials.clone());
        }
        let outbound = |body: Body| {
            let mut outbound = axum::http::Request::new(body);
            *outbound.method_mut() = parts.method.clone();
            *outbound.uri_mut() = uri;
            *outbound.headers_mut() = headers;
            outbound
        };
        let waited = if with_body {
            // The upload's chunks count as activity: a slow but moving upload is not idle.
            let activity = Activity::new(self.clock.clone());
            let body = body::upstream_body(Body::new(body), activity.clone());
            body::answer_or_idle(self.client.send(outbound(body)), &activity, self.timeout).await
        } else {
            // Nothing moves our way until the answer: one timer, no activity to share.
            body::answer_within(self.client.send(outbound(Body::empty())), self.timeout).await
        };
        let answer = match waited {
            Waited::Done(Ok(answer)) => answer,
            Waited::Done(Err(e)) => {
                let err = StoreProxyError::from_send(&e, &self.upstream, self.timeout);
                tracing::warn!(method = %parts.method, path, "{err}");
                return Err(err);
            }
            Waited::Idle => {
                let err = StoreProxyError::Timeout {
                    host: self.host.to_string(),
                    timeout: self.timeout,
                };
                tracing::warn!(method = %parts.method, path, "{err}");
                return Err(err);
            }
        };
        tracing::debug!(method = %parts.method, path, status = answer.status().as_u16(), "store request forwarded");
        let (answer, incoming) = answer.into_parts();
        let mut response = Response::new(body::downstream_body(
            incoming,
            self.timeout,
            self.host.clone(),
        ));
        *response.status_mut() = answer.status;
        *response.headers_mut() = downstream_response_headers(answer.headers);
        Ok(response)
    }

    /// `<store.url>/<path>?<query>`, the path and query appended byte for byte as they arrived.
    fn target(&self, path: &str, query: Option<&str>) -> Result<axum::http::Uri, StoreProxyError> {
        let Some(base) = &self.base else {
            return Err(StoreProxyError::BadRequest(format!(
                "jfconnect.store.url {} cannot carry a path",
                crate::http::redact_url(&self.upstream)
            )));
        };
        let rest = path.strip_prefix('/').unwrap_or(path);
        let mut target =
            String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
        target.push_str(base);
        target.push('/');
        target.push_str(rest);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        axum::http::Uri::try_from(target)
            .map_err(|e| StoreProxyError::BadRequest(format!("the store URL is not valid: {e}")))
    }
}

/// `Basic base64(user:password)` for a store URL that carries credentials (percent-decoded), as
/// clients send for such URLs.
fn basic_credentials(url: &Url) -> Option<axum::http::HeaderValue> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = axum::http::HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
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
        .route(MOUNT, any(routed))
        .route(&format!("{MOUNT}/"), any(routed))
        .route(&format!("{MOUNT}/{{*rest}}"), any(routed))
        .layer(DefaultBodyLimit::disable())
        .with_state(proxy)
}

async fn routed(State(proxy): State<Arc<StoreProxy>>, request: Request) -> Response {
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    proxy.handle(request, client_ip).await
}

/// True for the paths the store proxy answers: [`MOUNT`] itself and every path below it (the
/// paths [`router`] routes).
pub(crate) fn serves(path: &str) -> bool {
    path.strip_prefix(MOUNT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
