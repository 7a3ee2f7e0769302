//! The HTTP API products call on port 8030.
//!
//! Everything except ping, liveness and readiness needs `Authorization: Bearer <token>`, on
//! every path (401 comes before 404 and 405): the API token reads, the admin token also changes
//! state, and each state change is written to the audit log ([`auth`]). Errors are JSON `{"error": {"code", "message"}}`; bodies are capped at 1 MiB; nothing a
//! client sends can panic the server (handlers return errors, never unwrap input).
//!
//! Architecture invariant: handlers only read shared state or ask the scheduler to act; they
//! never call JES, JCS or the JPD themselves.

pub mod auth;
mod cluster;
mod handlers;
mod labels;
mod metrics;
mod offline;
pub(crate) mod request_log;
mod watch;

use watch::EntitlementsBody;

use crate::app::App;
use crate::protocol::ErrorBody;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;
use tracing::Instrument;

/// Largest request body the API reads.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// An API error: a status and a JSON body with a code and a sentence.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody::new(code, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// What the handlers share: the app, read through its methods, and the API's own cache of the
/// rendered entitlements answer.
pub(crate) struct ApiState {
    app: Arc<App>,
    entitlements_body: EntitlementsBody,
}

impl std::ops::Deref for ApiState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

/// The API's routes over the built app.
pub fn router(app: Arc<App>) -> Router {
    routes(ApiState::new(app))
}

impl ApiState {
    fn new(app: Arc<App>) -> Arc<ApiState> {
        Arc::new(ApiState {
            app,
            entitlements_body: EntitlementsBody::default(),
        })
    }
}

/// The API port's service: a request for the store proxy goes straight to it, ahead of the
/// router, logged and token-checked as the router would (one path test in place of axum's
/// routing and middleware stack, on the path every product's store traffic takes); every other
/// request goes to the router.
#[derive(Clone)]
pub(crate) struct ApiService {
    router: Router,
    store: Option<(Arc<ApiState>, Arc<crate::store_proxy::StoreProxy>)>,
}

impl ApiService {
    /// The API of `app`, with `others` (the console) merged into its router.
    pub fn new(app: Arc<App>, others: Router) -> ApiService {
        let state = ApiState::new(app);
        let store = state.store().cloned().map(|proxy| (state.clone(), proxy));
        ApiService {
            router: routes(state).merge(others),
            store,
        }
    }

    /// Answers `request`, which came from `peer`.
    pub fn call<B>(
        &self,
        request: axum::http::Request<B>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static
    where
        B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let store = self
            .store
            .clone()
            .filter(|_| crate::store_proxy::serves(request.uri().path()));
        let router = self.router.clone();
        async move {
            match store {
                Some((state, proxy)) => store_request(&state, &proxy, request, peer).await,
                None => {
                    let mut request = request.map(axum::body::Body::new);
                    request.extensions_mut().insert(ConnectInfo(peer));
                    match router.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            }
        }
    }
}

/// What the router does for a store request, without it: the request log around the token
/// check around the proxy.
async fn store_request<B>(
    state: &ApiState,
    proxy: &crate::store_proxy::StoreProxy,
    request: axum::http::Request<B>,
    peer: SocketAddr,
) -> Response
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let entry = request_log::Entry::of(&request, peer.to_string());
    let span = entry.span();
    let answer = async {
        match auth::scope_of_request(state, request.headers()) {
            Ok(scope) => {
                let mut response = proxy.handle(request, Some(peer.ip())).await;
                response
                    .extensions_mut()
                    .insert(request_log::AuthenticatedUser(scope.user()));
                response
            }
            Err(refused) => refused.into_response(),
        }
    };
    entry.answered(answer.instrument(span).await)
}

fn routes(service: Arc<ApiState>) -> Router {
    let open = Router::new()
        .route("/api/v1/system/ping", get(handlers::ping))
        .route("/api/v1/system/liveness", get(handlers::ping))
        .route("/api/v1/system/readiness", get(handlers::readiness));
    let store = match service.store() {
        Some(proxy) => crate::store_proxy::router(proxy.clone()),
        None => Router::new()
            .route(
                crate::store_proxy::MOUNT,
                any(handlers::store_not_configured),
            )
            .route("/api/v1/store/{*rest}", any(handlers::store_not_configured)),
    };
    let reads = Router::new()
        .route("/api/v1/system/jpd_id", get(handlers::jpd_id))
        .route("/api/v1/entitlements", get(watch::entitlements))
        .route("/api/v1/entitlements/check", get(watch::check))
        .route("/api/v1/jobs", get(handlers::jobs))
        .route("/api/v1/cluster", get(cluster::cluster))
        .route("/metrics", get(metrics::metrics))
        // Merged, not nested: nesting rewrites the path before the store proxy's raw-path
        // check could see tricks such as `//host`.
        .merge(store);
    let state_changes = Router::new()
        .route("/api/v1/jobs/{name}/run", post(handlers::run_job))
        .route("/api/v1/license", put(handlers::put_license))
        .merge(offline::router())
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            auth::require_admin,
        ));
    // The token is checked around the fallbacks too: 401 before 404 or 405.
    let guarded = reads
        .merge(state_changes)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            auth::authenticate,
        ));
    open.merge(guarded)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(service)
        .layer(axum::middleware::from_fn(request_log::log_requests))
}
