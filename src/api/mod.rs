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
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use std::sync::Arc;

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
    let service = Arc::new(ApiState {
        app,
        entitlements_body: EntitlementsBody::default(),
    });
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
