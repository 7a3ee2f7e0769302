//! The simulator's routing table, the fault middleware and the `/_sim/*` control endpoints (the
//! helpers every handler shares are in `reply`).
//!
//! Faults are applied in one middleware in front of every route rather than inside each
//! handler, so a fault behaves the same on every endpoint and a handler never needs to know
//! about them (except `mismatch`, which only makes sense where a checksum is answered: the
//! middleware marks the request and the Artifactory handlers honour the mark).

use super::fault::{parse_fault, Endpoint, FaultAction, FaultSet};
use super::paths::classify;
use super::reply::{error, parse_json, read_body, ApiError, MismatchFault, SMALL_BODY_LIMIT};
use super::server::ConnControl;
use super::state::{bump, SimState};
use super::sync::lock;
use super::{jcs, jes, jpd};
use crate::protocol::{self};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Builds the whole routing table.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route(protocol::JES_REGISTER, post(jes::register))
        .route(protocol::JES_ENTITLEMENTS, get(jes::entitlements))
        .route(protocol::JCS_USAGE, post(jcs::usage))
        .route(protocol::ACCESS_TOKEN_CHECK, get(jpd::token_me))
        .route(
            "/artifactory/{*rest}",
            get(jpd::get_artifact).put(jpd::deploy),
        )
        .route("/_sim/stats", get(stats))
        .route(
            "/_sim/faults",
            get(list_faults).post(set_faults).delete(clear_faults),
        )
        .route("/_sim/entitlements", post(jes::set_entitlements))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), apply_faults))
        .with_state(state)
}

/// Reads and throws away a request body, so that the client sees the answer rather than a
/// broken pipe while it is still sending.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

async fn apply_faults(
    State(state): State<Arc<SimState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(endpoint) = classify(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let c = &state.counters;
    let counter = match endpoint {
        Endpoint::Register => Some(&c.register_calls),
        Endpoint::Entitlements => Some(&c.entitlements_calls),
        Endpoint::Usage => Some(&c.usage_calls),
        Endpoint::Token => Some(&c.token_calls),
        Endpoint::Deploy => Some(&c.deploy_calls),
        Endpoint::Storage => Some(&c.storage_calls),
        Endpoint::Any => None,
    };
    if let Some(counter) = counter {
        bump(counter);
    }
    let Some(action) = lock(&state.faults).fire(endpoint) else {
        return next.run(req).await;
    };
    bump(&c.faults_fired);
    tracing::info!(endpoint = endpoint.as_str(), action = %action, "simulated fault fired");
    match action {
        FaultAction::Status(code) => {
            drain(req.into_body()).await;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(
                status,
                "simulated_fault",
                format!(
                    "the simulator answers HTTP {code} on the {} endpoint (fault injection)",
                    endpoint.as_str()
                ),
            )
        }
        FaultAction::Reset => match req.extensions().get::<ConnControl>() {
            Some(control) => {
                control.reset();
                // The connection task drops this request with its socket.
                std::future::pending::<Response>().await
            }
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated_fault",
                "the simulator cannot reset this connection",
            ),
        },
        FaultAction::Delay(d) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        FaultAction::Mismatch => {
            req.extensions_mut().insert(MismatchFault);
            next.run(req).await
        }
    }
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.stats()).into_response()
}

/// Body of `POST /_sim/faults` and answer of every `/_sim/faults` call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultList {
    faults: Vec<String>,
}

async fn list_faults(State(state): State<Arc<SimState>>) -> Response {
    Json(FaultList {
        faults: lock(&state.faults).specs(),
    })
    .into_response()
}

async fn set_faults(State(state): State<Arc<SimState>>, body: Body) -> Response {
    let parsed = async {
        let bytes = read_body(body, SMALL_BODY_LIMIT).await?;
        let list: FaultList = parse_json(&bytes, "fault list ({\"faults\":[\"usage=500x2\"]})")?;
        list.faults
            .iter()
            .map(|s| parse_fault(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_fault", e.to_string()))
    }
    .await;
    match parsed {
        Ok(faults) => {
            let set = FaultSet::new(faults);
            let specs = set.specs();
            *lock(&state.faults) = set;
            Json(FaultList { faults: specs }).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn clear_faults(State(state): State<Arc<SimState>>) -> Response {
    *lock(&state.faults) = FaultSet::default();
    Json(FaultList { faults: vec![] }).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "the simulator has no endpoint at this path",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "the simulator does not accept this method at this path",
    )
}
