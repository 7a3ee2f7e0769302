//! Route handlers: small functions over the shared [`ApiState`].

use super::auth::AuditNote;
use super::ApiError;
use super::ApiState;
use crate::jobs::scheduler::{Holder, StartError};
use crate::jobs::JobName;
use crate::protocol::ErrorBody;
use crate::status;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// `GET /api/v1/system/ping` and `/liveness`: the process answers.
pub async fn ping() -> &'static str {
    "OK"
}

/// `GET /api/v1/system/readiness`: ready, or disabled (still 200: a disabled service is healthy).
pub async fn readiness(State(s): State<Arc<ApiState>>) -> Response {
    if !s.config().enabled {
        return Json(json!({ "status": "disabled" })).into_response();
    }
    match super::cluster::degraded(&s) {
        Some(reason) => Json(json!({ "status": "degraded", "reason": reason })).into_response(),
        None => Json(json!({ "status": "ready" })).into_response(),
    }
}

/// `GET /api/v1/system/jpd_id`: this JPD's id, as plain text.
pub async fn jpd_id(State(s): State<Arc<ApiState>>) -> String {
    s.jpd_id().to_string()
}

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "disabled",
        "jfconnect is disabled (jfconnect.enabled: false)",
    )
}

/// `GET /api/v1/jobs`: each job's last and next run and last error.
pub async fn jobs(State(s): State<Arc<ApiState>>) -> Json<status::StatusReport> {
    Json(status::report(&s).await)
}

/// `POST /api/v1/jobs/{name}/run`: start a job now (answers at once; the job runs in the
/// background). 202 only when it really started; 409 naming the holder when it already runs.
pub async fn run_job(
    State(s): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let job: JobName = name
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::NOT_FOUND, "unknown_job", e))?;
    let scheduler = s.scheduler().ok_or_else(disabled)?;
    if !scheduler.job_names().contains(&job) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_unavailable",
            format!("the {job} job does not run in this mode"),
        ));
    }
    if let Some(refusal) = super::cluster::refuse_unless_holder(&s, job).await {
        return Err(refusal);
    }
    match scheduler.start(job).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            axum::Extension(AuditNote(format!("started the {job} job"))),
            Json(json!({ "job": job, "status": "started", "message": format!("the {job} job started; GET /api/v1/jobs shows its outcome") })),
        )
            .into_response()),
        Err(e @ StartError::Running { holder, .. }) => {
            let (pid, this_process) = match holder {
                Holder::ThisProcess(pid) => (Some(pid), true),
                Holder::Process(pid) => (Some(pid), false),
                Holder::Unknown => (None, false),
            };
            let mut body = serde_json::to_value(ErrorBody::new("job_running", e.to_string()))
                .unwrap_or_default();
            body["holder"] = json!({ "pid": pid, "this_process": this_process });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(e @ StartError::Unavailable { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_unavailable",
            e.to_string(),
        )),
        Err(e @ StartError::Lock { .. }) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "local",
            e.to_string(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenseBody {
    license_key: String,
}

/// `PUT /api/v1/license`: set the license (raw text, or JSON `{"license_key": "..."}`) in
/// `<data_dir>/license.api`, in effect before the admin's `license.file` (left untouched), and
/// register again at once.
pub(crate) async fn put_license(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "bad_body",
            format!("cannot read the request body: {}", e.body_text()),
        )
    })?;
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let license = if is_json {
        serde_json::from_slice::<LicenseBody>(&body)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("the body is not {{\"license_key\": \"...\"}}: {e}"),
                )
            })?
            .license_key
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_license",
                "the license must be UTF-8 text",
            )
        })?
    };
    let license = license.trim();
    if license.is_empty() || license.len() > 64 * 1024 || license.chars().any(|c| c.is_control()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_license",
            "the license must be one line of text, at most 64 KiB",
        ));
    }
    let scheduler = s.scheduler().ok_or_else(disabled)?;
    if s.license().api_path.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_license_file",
            "no place to store a license set through the API",
        ));
    }
    // Never the admin's license.file: a mistyped key must not destroy the working one. In
    // database mode the database holds it first, sealed, for every node.
    let path = s
        .set_api_license(&crate::secret::Secret::new(license))
        .await
        .map_err(|e| {
            let code = match e {
                crate::app::AppError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(code, "local", format!("cannot store the license: {e}"))
        })?;
    scheduler
        .unblock(JobName::Entitlements)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "local", e.to_string()))?;
    tracing::info!("license updated through the API; registering again");
    let note = format!(
        "set the license in {} (fingerprint {}); registering again",
        path.display(),
        crate::secret::Secret::new(license).fingerprint()
    );
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(AuditNote(note)),
        Json(
            json!({ "status": "accepted", "message": "license updated; registering with JES now" }),
        ),
    )
        .into_response())
}

/// Any unknown route.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see README.md for the API",
    )
}

/// A known route with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// `/api/v1/store/*` when no store URL is configured.
pub async fn store_not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_not_configured",
        "the store proxy is off: set jfconnect.store.url",
    )
}
