//! Bearer-token check for the guarded routes, compared in constant time.

use super::ApiError;
use super::ApiState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Lets the request through only with `Authorization: Bearer <api token>`.
pub async fn require_token(
    State(service): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs Authorization: Bearer <token> (see jfconnect.api.token_file)",
        )),
        Some(t) if service.api_token().is_some_and(|k| k.ct_eq(t.trim())) => {
            let mut response = next.run(request).await;
            response
                .extensions_mut()
                .insert(super::request_log::AuthenticatedUser("api-token"));
            Ok(response)
        }
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API token is not valid",
        )),
    }
}
