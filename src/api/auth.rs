//! Two scopes, and the audit log of state changes.
//!
//! Every route but the health checks needs a bearer token, and the token decides the scope:
//! the API token (`api.token_file`) reads; the admin token (`api.admin_token_file`) reads and
//! changes state. The scope is decided once, by [`authenticate`], for every guarded path,
//! unknown paths and wrong methods included, so 401 comes before a 404 or 405 could tell a
//! caller without a token what exists. Each state-changing route then sits behind
//! [`require_admin`]: a read token gets 403 with a sentence, and every request that reaches it
//! with a valid token, let through or not, is written to `jfconnect-audit.log` as one JSON line
//! (when, scope, remote address, method, path, status, and what changed as the handler told it
//! in an [`AuditNote`]). Tokens, licenses and request bodies never go there.
//!
//! [`scope_of`] is the one check of a presented token, for any other front end (the console).

use super::request_log::AuthenticatedUser;
use super::{ApiError, ApiState};
use crate::app::App;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;

/// What a presented token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// The API token: reads.
    Read,
    /// The admin token: reads and state changes.
    Admin,
}

impl Scope {
    /// The name the request log shows as the user.
    pub(crate) fn user(self) -> &'static str {
        match self {
            Scope::Read => "api-token",
            Scope::Admin => "admin-token",
        }
    }
}

/// A handler's one-line account of what it changed, set as a response extension; the audit
/// log records it. Never a secret.
#[derive(Debug, Clone)]
pub(crate) struct AuditNote(pub String);

/// The scope of a presented token, or `None` when it is neither token. Both tokens are
/// compared, in constant time, whatever the first comparison says.
pub(crate) fn scope_of(app: &App, presented: &str) -> Option<Scope> {
    let admin = app.admin_token().is_some_and(|t| t.ct_eq(presented));
    let read = app.api_token().is_some_and(|t| t.ct_eq(presented));
    match (admin, read) {
        (true, _) => Some(Scope::Admin),
        (false, true) => Some(Scope::Read),
        (false, false) => None,
    }
}

/// The scope of a request's `Authorization: Bearer <token>`, or the 401 to answer.
pub(crate) fn scope_of_request(app: &App, headers: &HeaderMap) -> Result<Scope, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs Authorization: Bearer <token> (the API token of jfconnect.api.token_file to read, the admin token of jfconnect.api.admin_token_file to change state)",
        ));
    };
    scope_of(app, token).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is neither the API token nor the admin token",
        )
    })
}

/// Decides the scope of every request it wraps (401 without a valid token, whatever the path)
/// and hands it to the routes as a request extension.
pub(crate) async fn authenticate(
    State(service): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let scope = scope_of_request(&service, request.headers())?;
    request.extensions_mut().insert(scope);
    let mut response = next.run(request).await;
    response
        .extensions_mut()
        .insert(AuthenticatedUser(scope.user()));
    Ok(response)
}

/// Lets only the admin scope through to a state-changing route (403 with a sentence for the
/// read scope) and writes the request to the audit log whatever its outcome.
pub(crate) async fn require_admin(
    State(service): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let scope = request.extensions().get::<Scope>().copied();
    let audited = Audited::of(&request);
    let response = if scope == Some(Scope::Admin) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this request changes state and needs the admin token (jfconnect.api.admin_token_file); the API token only reads",
        )
        .into_response()
    };
    record_change(&service, &audited.answered(scope, &response)).await;
    response
}

/// A request's part of its audit record (address, method, path), read before it is handled.
pub(crate) struct Audited {
    remote_address: String,
    method: String,
    path: String,
}

impl Audited {
    /// What the audit log keeps of `request`.
    pub(crate) fn of(request: &Request) -> Audited {
        Audited {
            remote_address: super::request_log::remote_address(request),
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
        }
    }

    /// The record of this request, made with `scope` and answered `response` (its status, and
    /// the [`AuditNote`] a handler left saying what changed).
    pub(crate) fn answered(self, scope: Option<Scope>, response: &Response) -> AuditRecord {
        AuditRecord {
            time: crate::logging::now_text(),
            scope,
            remote_address: self.remote_address,
            method: self.method,
            path: self.path,
            status: response.status().as_u16(),
            change: response
                .extensions()
                .get::<AuditNote>()
                .map(|n| n.0.clone()),
        }
    }
}

/// One line of `jfconnect-audit.log`.
#[derive(Debug, Serialize)]
pub(crate) struct AuditRecord {
    /// When the answer was ready (RFC 3339, UTC).
    pub time: String,
    /// The scope the token proved, if any.
    pub scope: Option<Scope>,
    /// The caller's address.
    pub remote_address: String,
    /// HTTP method.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// What changed, as the handler described it; none when nothing did.
    pub change: Option<String>,
}

/// Appends `record` to the audit log (off the async threads); a failure is logged, the
/// answer stands.
pub(crate) async fn record_change(app: &App, record: &AuditRecord) {
    let audit = app.audit_log().clone();
    let line = match serde_json::to_value(record) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot render an audit record");
            return;
        }
    };
    let written = tokio::task::spawn_blocking(move || audit.append(&line)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit log"),
        Err(e) => tracing::error!(error = %e, "cannot write the audit log"),
    }
}
