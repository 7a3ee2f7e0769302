//! The simulated consumption server (JCS): `POST /jcs/api/v1/usage` over the content-addressed
//! store of `usage_store`.
use super::jes::authorize;
use super::reply::{parse_json, read_body, ApiError};
use super::state::SimState;
use super::usage_store::BatchError;
use crate::protocol::UsageBatch;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// `POST /jcs/api/v1/usage`.
pub(crate) async fn usage(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let jpd_id = authorize(&state, &headers).await?;
    let bytes = read_body(body, state.usage_body_limit).await?;
    let batch: UsageBatch = parse_json(&bytes, "usage batch")?;
    drop(bytes);
    if batch.jpd_id != jpd_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "jpd_mismatch",
            "the batch names another JPD than the registration token",
        ));
    }
    let worker = state.clone();
    let outcome = tokio::task::spawn_blocking(move || worker.usage.receive(batch)).await;
    match outcome {
        Ok(Ok(receipt)) => Ok(Json(receipt).into_response()),
        Ok(Err(BatchError::Bad(code, message))) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, code, message))
        }
        Ok(Err(BatchError::Disk(e))) => {
            tracing::warn!(error = %e, "simulated JCS cannot store usage");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_failed",
                "the simulator cannot store the usage files",
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the simulator failed while storing the usage files",
        )),
    }
}
