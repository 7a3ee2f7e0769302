//! `GET /api/v1/entitlements` with a strong `ETag`, `If-None-Match` (304) and `?wait=` (a
//! long-poll held until the entitlements change), and `GET /api/v1/entitlements/check`.
//!
//! Both answer from the entitlements feed, the same snapshots the gRPC service streams, so an
//! ETag here is a `version` there. A held request costs one task and one watch receiver; it
//! answers within milliseconds of a change, with 304 at its deadline, and at once when the
//! service shuts down.

use super::{ApiError, ApiState};
use crate::entitlements::feed::{check_name, Feed, Served};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Longest `?wait=` honoured.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// The last rendered body, keyed by version, confirmation time and the second it was rendered
/// in (`age_seconds` changes once a second). Products poll this route hard; rendering once a
/// second instead of once a request is most of its cost.
#[derive(Default)]
pub(crate) struct EntitlementsBody(std::sync::Mutex<Option<(BodyKey, Bytes)>>);

type BodyKey = (String, i64, i64);

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "disabled",
        "jfconnect is disabled (jfconnect.enabled: false)",
    )
}

fn none_yet() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_entitlements",
        "no entitlements have been received yet; GET /api/v1/jobs shows why",
    )
}

fn bad_request(code: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Reads `?wait=`: `30s`, `1m` or a number of seconds; capped at [`MAX_WAIT`].
fn parse_wait(value: &str) -> Result<Duration, ApiError> {
    let v = value.trim();
    let wait = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string())
    } else {
        crate::config::parse_interval(v)
    };
    wait.map(|w| w.min(MAX_WAIT))
        .map_err(|e| bad_request("bad_wait", format!("wait: {e} (at most 60s)")))
}

fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Does `If-None-Match` name `version`? (Weak comparison, as RFC 9110 asks for this header.)
fn none_match(headers: &HeaderMap, version: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == version)
}

fn etag(version: &str) -> HeaderValue {
    // Versions are hex digits, always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

fn not_modified(version: &str) -> Response {
    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag(version))]).into_response()
}

/// `GET /api/v1/entitlements[?wait=30s]`: the entitlements valid now, with their age.
pub async fn entitlements(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut wait = Duration::ZERO;
    for (key, value) in query_pairs(&query) {
        if key == "wait" {
            wait = parse_wait(&value)?;
        }
    }
    if !s.config().enabled {
        return Err(disabled());
    }
    let feed = s.feed();
    // Subscribe before reading, so a change in between still wakes this request.
    let mut changes = feed.subscribe();
    let mut current = feed.current();
    let Feed::Served(served) = &*current else {
        return Err(none_yet());
    };
    if none_match(&headers, &served.version) {
        if wait.is_zero() {
            return Ok(not_modified(&served.version));
        }
        let seen = served.version.clone();
        let mut closing = feed.closing();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(not_modified(&seen));
                    }
                    let next = changes.borrow_and_update().clone();
                    if next.version().is_some_and(|v| v != seen) {
                        current = next;
                        break;
                    }
                }
                _ = &mut deadline => return Ok(not_modified(&seen)),
                _ = closing.wait_for(|c| *c) => return Ok(not_modified(&seen)),
            }
        }
    }
    let Feed::Served(served) = &*current else {
        return Err(none_yet());
    };
    let body = body(&s, served)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag(&served.version)),
        ],
        body,
    )
        .into_response())
}

fn body(s: &ApiState, served: &Served) -> Result<Bytes, ApiError> {
    let now = s.clock().now();
    let key: BodyKey = (
        served.version.clone(),
        served.confirmed_at.timestamp_millis(),
        now.timestamp(),
    );
    let mut cache = s
        .entitlements_body
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((k, body)) = cache.as_ref() {
        if *k == key {
            return Ok(body.clone());
        }
    }
    let rendered = json!({
        "jpd_id": served.jpd_id,
        "subscription_id": served.entitlements.subscription_id,
        "subscription_type": served.entitlements.subscription_type,
        "entitlements": served.entitlements.entitlements,
        "fetched_at": served.fetched_at,
        "confirmed_at": served.confirmed_at,
        "age_seconds": served.age_seconds(now),
        "source": served.source,
        "version": served.version,
    });
    let bytes = serde_json::to_vec(&rendered)
        .map(Bytes::from)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "local",
                format!("cannot render the entitlements: {e}"),
            )
        })?;
    *cache = Some((key, bytes.clone()));
    Ok(bytes)
}

/// `GET /api/v1/entitlements/check?product=xray&feature=scan`: one question, one answer.
pub async fn check(
    State(s): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(&query);
    let get = |name: &str| {
        let value = pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        check_name(name, value)
            .map(|()| value.to_string())
            .map_err(|e| bad_request("bad_check", format!("{e} (?product=...&feature=...)")))
    };
    let (product, feature) = (get("product")?, get("feature")?);
    if !s.config().enabled {
        return Err(disabled());
    }
    let current = s.feed().current();
    let Feed::Served(served) = &*current else {
        return Err(none_yet());
    };
    let now = s.clock().now();
    let answer = served.check(&product, &feature, now);
    Ok((
        [(header::ETAG, etag(&served.version))],
        Json(json!({
            "entitled": answer.entitled,
            "valid_until": answer.valid_until,
            "source": served.source,
            "age_seconds": served.age_seconds(now),
            "version": served.version,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_units_or_seconds_and_is_capped() {
        assert_eq!(parse_wait("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_wait("5m").unwrap(), MAX_WAIT);
        assert_eq!(parse_wait("0").unwrap(), Duration::ZERO);
        assert!(parse_wait("soon").is_err());
        assert!(parse_wait("99999999999999999999").is_err());
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let mut h = HeaderMap::new();
        assert!(!none_match(&h, "abc"));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(none_match(&h, "abc"));
        assert!(!none_match(&h, "ab"));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(none_match(&h, "anything"));
    }
}
