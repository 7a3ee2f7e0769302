//! The store proxy's outbound client: a bare hyper-util client, built here like every outbound
//! client, with the same trust and routing as [`super::build`]'s reqwest client.
//!
//! The store proxy forwards every request it gets, so the client's own per-request work is the
//! proxy's cost: reqwest turned the URL into a URI and back, wrapped each send in its redirect,
//! timeout and retry machinery, and copied the headers into its own request. This client takes
//! the caller's request as it is (method, URI, headers, streaming body) and hands it to
//! hyper-util's pool, keeping what reqwest gave the store proxy:
//!
//! - the outbound proxy of [`super::proxies_in_effect`] with its `no_proxy` rule (the same
//!   [`super::routes_via`] decision): HTTPS targets through a CONNECT tunnel (hyper-util's
//!   `Tunnel`), HTTP targets in absolute form to the proxy, both with the proxy's Basic
//!   credentials;
//! - TLS with rustls over the built-in (webpki) and the system's roots plus `tls.ca_file`, HTTP/2
//!   when the store offers it (ALPN), HTTP/1.1 otherwise;
//! - `http.connect_timeout` over the whole connect (TCP, tunnel and handshake), pooled
//!   keep-alive connections dropped after [`super::POOL_IDLE_TIMEOUT`] idle;
//! - our `User-Agent` (and `Accept: */*`) when the caller sent none, and the trace id.
//!
//! It never follows a redirect and sets no whole-request timeout: the store proxy watches for
//! silence itself. Errors are hyper-util's, classified by [`super::classify_send_error`].

use super::no_proxy::NoProxyRule;
use super::{proxies_in_effect, routes_via, ClientError, POOL_IDLE_TIMEOUT};
use crate::config::Config;
use http::header::{HeaderValue, ACCEPT, PROXY_AUTHORIZATION, USER_AGENT};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The body the store client sends: the caller's own, as the API server received it.
pub type StoreBody = axum::body::Body;

/// A failed send to the store (no HTTP answer); see [`super::classify_send_error`].
pub type StoreSendError = hyper_util::client::legacy::Error;

/// The store's answer, its body streaming.
pub type StoreResponse = http::Response<hyper::body::Incoming>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Direct = HttpsConnector<HttpConnector>;
type Tunneled = HttpsConnector<Tunnel<Direct>>;
type Plain = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// One proxy: which requests it takes and how to reach it.
struct Route {
    scope: &'static str,
    no_proxy: Option<NoProxyRule>,
    /// Its URL without credentials.
    uri: http::Uri,
    /// `Basic <user:password>`, marked sensitive.
    auth: Option<HeaderValue>,
    /// The connector that opens a CONNECT tunnel through it, then TLS to the target.
    tunnel: Tunneled,
}

/// The proxies of the configuration, in order; the first whose scope and `no_proxy` take a
/// request routes it (as reqwest picked among its proxies).
#[derive(Clone)]
struct Routes(Arc<[Route]>);

impl Routes {
    fn for_uri(&self, uri: &http::Uri) -> Option<&Route> {
        let (scheme, host) = (uri.scheme_str().unwrap_or("http"), uri.host().unwrap_or(""));
        self.0
            .iter()
            .find(|r| routes_via(r.scope, r.no_proxy.as_ref(), scheme, host))
    }
}

/// Opens connections for the pool: direct, to the proxy (plain HTTP targets), or through a
/// tunnel (HTTPS targets), all within the connect timeout.
#[derive(Clone)]
pub struct StoreConnector {
    direct: Direct,
    routes: Routes,
    connect_timeout: Duration,
}

impl tower_service::Service<http::Uri> for StoreConnector {
    type Response = StoreStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<StoreStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: http::Uri) -> Self::Future {
        let connecting: Self::Future = match self.routes.for_uri(&target) {
            None => {
                let mut direct = self.direct.clone();
                Box::pin(async move { Ok(StoreStream::Direct(direct.call(target).await?)) })
            }
            Some(route) if target.scheme() == Some(&http::uri::Scheme::HTTPS) => {
                let mut tunnel = route.tunnel.clone();
                Box::pin(
                    async move { Ok(StoreStream::Tunneled(Box::new(tunnel.call(target).await?))) },
                )
            }
            Some(route) => {
                let mut direct = self.direct.clone();
                let proxy = route.uri.clone();
                Box::pin(async move { Ok(StoreStream::ToProxy(direct.call(proxy).await?)) })
            }
        };
        let limit = self.connect_timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(done) => done,
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {} s", limit.as_secs_f64()),
                )) as BoxError),
            }
        })
    }
}

/// One pooled connection to the store.
pub enum StoreStream {
    /// To the store itself, plain or TLS.
    Direct(Plain),
    /// To the proxy, which gets plain HTTP requests in absolute form.
    ToProxy(Plain),
    /// TLS to the store inside a CONNECT tunnel through the proxy (boxed: two TLS states).
    Tunneled(Box<MaybeHttpsStream<Plain>>),
}

macro_rules! each_stream {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            StoreStream::Direct($s) | StoreStream::ToProxy($s) => {
                let $s = Pin::new($s);
                $e
            }
            StoreStream::Tunneled($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl Read for StoreStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_read(cx, buf))
    }
}

impl Write for StoreStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            StoreStream::Direct(s) | StoreStream::ToProxy(s) => s.is_write_vectored(),
            StoreStream::Tunneled(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_shutdown(cx))
    }
}

impl Connection for StoreStream {
    fn connected(&self) -> Connected {
        match self {
            StoreStream::Direct(s) => s.connected(),
            // hyper-util then writes the request target in absolute form, as proxies expect.
            StoreStream::ToProxy(s) => s.connected().proxy(true),
            StoreStream::Tunneled(s) => s.connected(),
        }
    }
}

/// The client the store proxy forwards with.
#[derive(Clone)]
pub struct StoreClient {
    client: hyper_util::client::legacy::Client<StoreConnector, StoreBody>,
    routes: Routes,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("proxies", &self.routes.0.len())
            .finish_non_exhaustive()
    }
}

impl StoreClient {
    /// Sends `request` (absolute URI) as it is, adding only our defaults and, for a plain-HTTP
    /// target behind the proxy, the proxy's credentials.
    pub fn send(
        &self,
        mut request: http::Request<StoreBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        let headers = request.headers_mut();
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.user_agent.clone());
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        if let Some(id) = crate::logging::current_trace_id() {
            if let Ok(value) = HeaderValue::from_str(&id) {
                headers.insert(crate::logging::TRACE_HEADER, value);
            }
        }
        if request.uri().scheme() != Some(&http::uri::Scheme::HTTPS) {
            if let Some(auth) = self
                .routes
                .for_uri(request.uri())
                .and_then(|r| r.auth.clone())
            {
                request.headers_mut().insert(PROXY_AUTHORIZATION, auth);
            }
        }
        self.client.request(request)
    }
}

/// Builds the store proxy's client from the configuration (and the proxy variables captured
/// with it): the trust, proxies and connect timeout of [`super::build`], no redirects.
pub fn build_store_client(config: &Config) -> Result<StoreClient, ClientError> {
    let tls = tls_config(config)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.http.connect_timeout));
    let direct = https(tls.clone(), http.clone());
    let mut routes = Vec::new();
    for (info, password, url) in proxies_in_effect(config)? {
        let bad = |reason: String| ClientError::Proxy {
            url: info.url.clone(),
            reason,
        };
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let uri: http::Uri = bare.as_str().parse().map_err(|e| bad(format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("only http:// and https:// proxies are supported".into()));
        }
        let auth = match &info.username {
            Some(user) => Some(basic_auth(
                user,
                password.as_ref().map(|s| s.expose()).unwrap_or(""),
            )?),
            None => None,
        };
        let mut tunnel = Tunnel::new(uri.clone(), https(tls.clone(), http.clone()));
        if let Some(auth) = &auth {
            tunnel = tunnel.with_auth(auth.clone());
        }
        routes.push(Route {
            scope: info.scope,
            no_proxy: info.no_proxy.as_deref().map(NoProxyRule::parse),
            uri,
            auth,
            tunnel: https(tls.clone(), tunnel),
        });
    }
    let routes = Routes(routes.into());
    let connector = StoreConnector {
        direct,
        routes: routes.clone(),
        connect_timeout: config.http.connect_timeout,
    };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);
    Ok(StoreClient {
        client,
        routes,
        user_agent: HeaderValue::from_static(super::USER_AGENT),
    })
}

/// `connector` with TLS for `https` URIs (HTTP/2 or HTTP/1.1 by ALPN); `http` ones pass as is.
fn https<C>(tls: Arc<rustls::ClientConfig>, connector: C) -> HttpsConnector<C> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector)
}

/// rustls over the built-in roots, the system's, and `tls.ca_file`'s, as reqwest's client has.
fn tls_config(config: &Config) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates are skipped, as every TLS client does.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some((path, certs)) = super::ca_certs(config)? {
        for cert in certs {
            roots.add(cert).map_err(|e| ClientError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// `Basic base64(user:password)`, marked sensitive so hyper never logs it.
fn basic_auth(user: &str, password: &str) -> Result<HeaderValue, ClientError> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| ClientError::Proxy {
            url: "jfconnect.proxy.username".into(),
            reason: e.to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}
