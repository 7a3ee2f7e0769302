//! What the store proxy answers when it cannot forward: a status and one JSON sentence.
//!
//! 400 when the path was refused (nothing was sent), 502 when the store could not be reached
//! or cut the exchange before answering, 504 when it stayed silent past the timeout. The store's
//! own answers, errors included, pass through unchanged and never become one of these.

use super::path::StorePathError;
use crate::protocol::ErrorBody;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::Duration;
use url::Url;

/// Why a store request was not forwarded or got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreProxyError {
    /// The path failed the check; nothing was sent upstream.
    #[error(transparent)]
    BadPath(#[from] StorePathError),
    /// The request could not be turned into an upstream request.
    #[error("the store request cannot be forwarded: {0}")]
    BadRequest(String),
    /// The store refused the connection, could not be resolved or reached, or failed TLS.
    #[error("{0}")]
    Unreachable(String),
    /// The store sent nothing for longer than the timeout.
    #[error("the JFrog Store at {host} sent no answer within {} s; check that it is up and reachable from this host", .timeout.as_secs_f64())]
    Timeout {
        /// The store host.
        host: String,
        /// The timeout that passed.
        timeout: Duration,
    },
}

impl StoreProxyError {
    /// The HTTP status the caller gets.
    pub fn status(&self) -> StatusCode {
        match self {
            StoreProxyError::BadPath(_) | StoreProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            StoreProxyError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            StoreProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable code in the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            StoreProxyError::BadPath(_) => "bad_store_path",
            StoreProxyError::BadRequest(_) => "bad_store_request",
            StoreProxyError::Unreachable(_) => "store_unreachable",
            StoreProxyError::Timeout { .. } => "store_timeout",
        }
    }

    /// Classifies a failed upstream send (no HTTP answer) for the store at `url`.
    pub(crate) fn from_send(
        err: &crate::http::StoreSendError,
        url: &Url,
        timeout: Duration,
    ) -> Self {
        let host = url.host_str().unwrap_or("?").to_string();
        if crate::http::send_timed_out(err) {
            return StoreProxyError::Timeout { host, timeout };
        }
        let sentence =
            crate::http::classify_send_error(err, crate::remote::Service::Store, url).message;
        // The shared classifier speaks for scheduled jobs ("it will be retried"); a proxied
        // call is not retried, so that tail would mislead the caller.
        let sentence = match sentence.strip_suffix("; it will be retried") {
            Some(head) => format!("{head}; try again later"),
            None => sentence,
        };
        StoreProxyError::Unreachable(sentence)
    }
}

impl IntoResponse for StoreProxyError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code(), self.to_string());
        (self.status(), Json(body)).into_response()
    }
}
