//! The simulated entitlements server (JES): license registration and the entitlements of the
//! subscription, served with a strong ETag so that jfconnect's polling costs a 304 when nothing
//! changed, and changeable at run time (`POST /_sim/entitlements`) so tests can watch jfconnect
//! pick up a new subscription.
//!
//! Tokens are kept on disk only as their SHA-256, so the data folder holds no usable secret; the
//! license itself is never stored or logged.

use super::reply::{bearer, parse_json, read_body, ApiError, SMALL_BODY_LIMIT};
use super::state::{bump, SimState};
use crate::protocol::{
    sha256_hex, Entitlement, Entitlements, RegisterRequest, RegisterResponse, HEADER_JPD_ID,
};
use crate::secret::Secret;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use serde::Deserialize;
use std::sync::Arc;

/// Body of `POST /_sim/entitlements`: the new entitlements, other fields kept when absent.
#[derive(Debug, Deserialize)]
struct SubscriptionChange {
    subscription_id: Option<String>,
    subscription_type: Option<String>,
    issued_at: Option<String>,
    entitlements: Vec<Entitlement>,
}

/// True when JES accepts `key`: listed in `accepted`, or with no list, `JFL-` and 12+ chars.
pub(crate) fn license_accepted(key: &Secret, accepted: Option<&[String]>) -> bool {
    match accepted {
        Some(list) => list.iter().any(|k| key.ct_eq(k)),
        None => key.expose().starts_with("JFL-") && key.expose().chars().count() >= 12,
    }
}

/// True when an `If-None-Match` value names `etag` (or is `*`). Weak forms match too, as
/// RFC 9110 asks for `If-None-Match`.
pub(crate) fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `POST /jes/api/v1/register`.
pub(crate) async fn register(
    State(state): State<Arc<SimState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, SMALL_BODY_LIMIT).await?;
    // serde's messages may quote a value, and that value may be the license: say only where.
    let req: RegisterRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!(
                "the body is not a valid register request (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !crate::state::valid_jpd_id(&req.jpd_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_jpd_id",
            "jpd_id must be 1 to 128 letters, digits, '-', '_', '.' or ':', starting with a letter or digit",
        ));
    }
    if !license_accepted(&req.license_key, state.accepted_licenses.as_deref()) {
        tracing::info!(jpd_id = %req.jpd_id, "simulated JES refused a license");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_license",
            "the license key is not valid",
        ));
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("jes-{}", hex::encode(raw));
    let jpd_id = req.jpd_id.clone();
    let hash = sha256_hex(token.as_bytes());
    let subscription_id = state
        .jes
        .update(move |book| {
            book.tokens.insert(hash, jpd_id);
            book.subscription.subscription_id.clone()
        })
        .await
        .map_err(storage_failed)?;
    tracing::info!(jpd_id = %req.jpd_id, "simulated JES registered a JPD");
    Ok(Json(RegisterResponse {
        registration_token: Secret::new(token),
        subscription_id,
    })
    .into_response())
}

/// Checks the registration token and the JPD id header; answers the JPD id.
pub(crate) async fn authorize(state: &SimState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "the request has no bearer registration token",
        ));
    };
    let Some(jpd_id) = state.jes.jpd_of(token).await else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the registration token is not known; register again",
        ));
    };
    match headers.get(HEADER_JPD_ID).and_then(|v| v.to_str().ok()) {
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_jpd_id",
            format!("the request has no {HEADER_JPD_ID} header"),
        )),
        Some(id) if id != jpd_id => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "jpd_mismatch",
            "the registration token was issued to another JPD",
        )),
        Some(_) => Ok(jpd_id),
    }
}

/// `GET /jes/api/v1/entitlements`.
pub(crate) async fn entitlements(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let jpd_id = authorize(&state, &headers).await?;
    let sub = state.jes.book.lock().await.subscription.clone();
    let served = Entitlements {
        subscription_id: sub.subscription_id,
        subscription_type: sub.subscription_type,
        jpd_id,
        issued_at: sub.issued_at,
        entitlements: sub.entitlements,
    };
    let body = serde_json::to_vec(&served).map_err(|e| storage_failed(std::io::Error::other(e)))?;
    let etag = format!("\"{}\"", sha256_hex(&body));
    // A quoted hex digest is always a valid header value.
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &etag));
    if not_modified {
        bump(&state.counters.entitlements_not_modified);
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let content_type = HeaderValue::from_static("application/json");
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (header::CONTENT_TYPE, content_type),
        ],
        body,
    )
        .into_response())
}

/// `POST /_sim/entitlements`: replaces the served subscription.
pub(crate) async fn set_entitlements(
    State(state): State<Arc<SimState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, SMALL_BODY_LIMIT).await?;
    let change: SubscriptionChange = parse_json(&bytes, "entitlements change")?;
    let now = state
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let sub = state
        .jes
        .update(move |book| {
            let sub = &mut book.subscription;
            if let Some(id) = change.subscription_id {
                sub.subscription_id = id;
            }
            if let Some(t) = change.subscription_type {
                sub.subscription_type = t;
            }
            sub.issued_at = change.issued_at.unwrap_or(now);
            sub.entitlements = change.entitlements;
            sub.clone()
        })
        .await
        .map_err(storage_failed)?;
    Ok(Json(sub).into_response())
}

fn storage_failed(e: std::io::Error) -> ApiError {
    tracing::warn!(error = %e, "simulated JES cannot save its state");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_failed",
        "the simulator cannot save its state",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_wants_jfl_prefix_and_twelve_chars() {
        assert!(license_accepted(&Secret::new("JFL-12345678"), None));
        assert!(!license_accepted(&Secret::new("JFL-1234567"), None));
        assert!(!license_accepted(&Secret::new("ABC-12345678"), None));
    }

    #[test]
    fn explicit_list_replaces_the_default_rule() {
        let list = vec!["KEY-A".to_string()];
        assert!(license_accepted(&Secret::new("KEY-A"), Some(&list)));
        assert!(!license_accepted(&Secret::new("JFL-12345678"), Some(&list)));
    }

    #[test]
    fn if_none_match_accepts_lists_weak_forms_and_star() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
        assert!(!etag_matches("abc", "\"abc\""));
    }
}
