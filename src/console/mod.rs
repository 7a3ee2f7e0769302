//! The admin console at `/ui/` on the API port: entitlements, job health, usage and the
//! air-gapped round trip, in a browser, connected or air-gapped alike.
//!
//! Pages are rendered on the server (maud templates, which escape every value they print:
//! product and feature names, file names and reasons come from bundles, usage files and
//! remotes). Every asset is compiled into the binary and the pages run no script, so nothing
//! leaves for a CDN and the Content Security Policy can forbid inline script and style.
//!
//! Security: the login page takes the admin token and answers a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` over TLS, ending when idle or old; see [`session`]); the token
//! is never put in a URL, a log line or a page. Every state-changing form carries the
//! session's CSRF token and a POST from another origin is refused. Failed logins are throttled
//! per address. Uploads are capped like `POST /api/v1/offline/register`.
//!
//! Architecture invariant: the console reads through the same builders as the API
//! ([`crate::status::report`]) and changes state only through the app (the scheduler, the
//! import); it never writes a state file itself.

mod airgap;
mod assets;
mod auth;
mod chart;
mod cluster;
mod layout;
mod overview;
pub mod session;
mod usage;

use crate::app::App;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::{Arc, Mutex};

/// Where the console is served.
pub(crate) const MOUNT: &str = "/ui/";

/// The Content Security Policy of every console answer.
pub(crate) const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// Largest form body (login, buttons); bundle uploads have their own cap.
const MAX_FORM: usize = 64 * 1024;

/// What the console's handlers share.
pub(crate) struct Console {
    app: Arc<App>,
    sessions: Mutex<session::Sessions>,
    throttle: Mutex<session::Throttle>,
    /// Cookies are marked `Secure` when the port serves HTTPS.
    secure: bool,
}

impl Console {
    fn now(&self) -> std::time::Duration {
        self.app.clock().monotonic()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, session::Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The console's routes over the built app (merged beside the API's by the server).
pub fn router(app: Arc<App>) -> Router {
    let secure = app.config().tls.server.cert_file.is_some();
    let console = Arc::new(Console {
        app,
        sessions: Mutex::default(),
        throttle: Mutex::default(),
        secure,
    });
    Router::new()
        .route("/ui", get(|| async { Redirect::to(MOUNT) }))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/jobs/{name}/run", post(overview::run_job))
        .route("/ui/usage", get(usage::page))
        .route("/ui/cluster", get(cluster::page))
        .route("/ui/airgap", get(airgap::page))
        .route("/ui/airgap/registration", post(airgap::registration))
        .route("/ui/airgap/outbox/{name}", get(airgap::outbox_file))
        .route(
            "/ui/airgap/upload",
            post(airgap::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/ui/airgap/preview", get(airgap::preview))
        .route("/ui/airgap/apply", post(airgap::apply))
        .route("/ui/airgap/cancel", post(airgap::cancel))
        .route("/ui/assets/{name}", get(assets::asset))
        .route("/ui/{*rest}", get(not_found))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::from_fn(auth::same_origin))
        // Outside the origin check, so a refused cross-site post is recorded too.
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::audit,
        ))
        .layer(axum::middleware::from_fn(headers))
        .with_state(console)
        .layer(axum::middleware::from_fn(
            crate::api::request_log::log_requests,
        ))
}

/// `response`, noting for the audit log what it changed.
fn noted(mut response: Response, change: String) -> Response {
    response
        .extensions_mut()
        .insert(crate::api::auth::AuditNote(change));
    response
}

/// The headers of every console answer: the Content Security Policy, no caching, no sniffing,
/// no referrer, no framing.
async fn headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        layout::bare(
            "Not found",
            maud::html! {
                p { "There is no such page in the console." }
                p { a href=(MOUNT) { "Back to the overview" } }
            },
        ),
    )
        .into_response()
}
