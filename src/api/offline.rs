//! Air-gapped registration over HTTP, shaped like JFrog's offline endpoints: fetch a
//! registration bundle to carry out, post back the entitlements bundle the vendor answered.
//!
//! Both routes change state, so they need the admin token and are audited. The upload route has its own body cap (the bundle
//! limit, `Limits::default().max_file_bytes`) instead of the API's 1 MiB, and streams the body
//! into a temp file in the data folder (removed afterwards) so a large bundle never sits in
//! memory. Only a raw body is accepted (`Content-Type: application/octet-stream` or none):
//! multipart would need axum's `multipart` feature and the `multer` crate for a form nobody
//! needs to fill in by hand here.

use super::ApiError;
use super::ApiState;
use crate::app::App;
use crate::transport::airgapped::AirgapError;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use std::io::Write;
use std::sync::Arc;

/// The offline routes (mounted among the token-guarded ones).
pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/offline/start_register", get(start_register))
        .route(
            "/api/v1/offline/register",
            post(register).layer(DefaultBodyLimit::disable()),
        )
}

fn max_bundle_bytes() -> u64 {
    crate::bundle::Limits::default().max_file_bytes
}

fn require_airgap(service: &App) -> Result<(), ApiError> {
    if service.config().airgap.enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "airgap_disabled",
            "air-gapped mode is off; set jfconnect.airgap.enabled: true to register offline",
        ))
    }
}

fn failed(e: AirgapError) -> ApiError {
    if e.is_bad_input() {
        ApiError::new(StatusCode::BAD_REQUEST, "bundle_refused", e.to_string())
    } else {
        tracing::error!(error = %e, "offline request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("cannot {what}: {e}"),
    )
}

/// `GET /api/v1/offline/start_register`: a fresh signed registration bundle, as a download.
async fn start_register(State(service): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    require_airgap(&service)?;
    let written = service.registration_bundle().await.map_err(failed)?;
    let bytes = tokio::fs::read(&written.path)
        .await
        .map_err(|e| internal("read the registration bundle", e))?;
    let name = written
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "registration.jfbundle".into());
    let note = format!("wrote the registration bundle {name} to the outbox");
    Ok((
        axum::Extension(super::auth::AuditNote(note)),
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the bundle is over the {}-byte limit", max_bundle_bytes()),
    )
}

/// `POST /api/v1/offline/register`: the raw body is an entitlements bundle; verified and
/// imported exactly as `jfconnect bundle import` does.
async fn register(
    State(service): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_airgap(&service)?;
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        if ct.starts_with("multipart/") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the bundle as the raw request body (curl --data-binary @FILE), not as a multipart form",
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bundle_bytes()) {
        return Err(too_large());
    }
    let data_dir = service.config().data_dir.clone();
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-offline-register-")
        .tempfile_in(&data_dir)
        .map_err(|e| internal("create a temp file", e))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the request body could not be read: {e}"),
            )
        })?;
        total += chunk.len() as u64;
        if total > max_bundle_bytes() {
            return Err(too_large());
        }
        tmp.write_all(&chunk)
            .map_err(|e| internal("write the temp file", e))?;
    }
    let outcome = service
        .import_entitlements_bundle(tmp.path())
        .await
        .map_err(failed)?;
    drop(tmp);
    let note = format!(
        "imported entitlements bundle {} (sequence {})",
        outcome.manifest.bundle_id, outcome.manifest.sequence
    );
    Ok((
        axum::Extension(super::auth::AuditNote(note)),
        Json(serde_json::json!({
        "imported": true,
        "bundle_id": outcome.manifest.bundle_id,
        "sequence": outcome.manifest.sequence,
        "subscription_id": outcome.subscription_id,
        "entitlements": outcome.entitlements,
        "valid_now": outcome.valid_now,
        "message": outcome.summary(),
        })),
    )
        .into_response())
}
