//! What every handler of the simulator shares: JSON error answers, capped body reads, bearer
//! tokens and the mark of a `mismatch` fault. Its own file, below the routing table and the
//! handlers, so that they do not import each other.

use crate::protocol::ErrorBody;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// Largest body accepted by the small JSON endpoints (register, `/_sim/*`).
pub(crate) const SMALL_BODY_LIMIT: usize = 1024 * 1024;

/// Marks a request hit by a `mismatch` fault: the handler answers a wrong SHA-256.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MismatchFault;

/// A JSON [`ErrorBody`] answer.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// A refused request: status, stable code and one sentence, answered as an [`ErrorBody`].
/// Handlers return `Result<Response, ApiError>` and use `?`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// The bearer token of a request, if any (empty tokens count as none).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads a whole request body, refusing it (413) once it passes `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read to its end",
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Parses a JSON body, answering 400 with serde's reason on failure.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not a valid {what}: {e}"),
        )
    })
}
