//! The simulated JPD endpoints jfconnect calls: Access's token check and Artifactory's deploy,
//! storage info and download.
//!
//! A deploy body may be hundreds of MiB, so it is streamed to a temp file and hashed on the way,
//! never held in memory; only when the digest matches `X-Checksum-Sha256` is it moved into
//! place (see `artifacts`). A mismatch answers 409 and stores nothing, as Artifactory does.

use super::archive::parse_sha256;
use super::artifacts::{self, ArtifactMeta, PlaceError, Upload};
use super::paths::{parse_artifact_path, ArtifactPath};
use super::reply::{bearer, ApiError, MismatchFault};
use super::state::SimState;
use crate::protocol::{sha256_hex, Checksums, StorageInfo, HEADER_CHECKSUM_SHA256};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Write buffer between the network and the temp file.
const UPLOAD_BUFFER: usize = 1024 * 1024;

/// Checks the JPD bearer token: any non-empty one, or exactly `--jpd-token` when set.
fn check_jpd_token(state: &SimState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "the request has no bearer access token",
        ));
    };
    match &state.jpd_token {
        Some(want) if !want.ct_eq(token) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is not valid",
        )),
        _ => Ok(()),
    }
}

/// `GET /access/api/v1/tokens/me`.
pub(crate) async fn token_me(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_jpd_token(&state, &headers)?;
    Ok(Json(serde_json::json!({
        "subject": "jfconnect",
        "scope": "applied-permissions/user",
    }))
    .into_response())
}

/// The artifact path of a request under `prefix`, or a 400 answer.
fn artifact_path(uri: &Uri, prefix: &str) -> Result<ArtifactPath, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    parse_artifact_path(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            format!("the artifact path is refused: {e}"),
        )
    })
}

fn storage_info(path: &ArtifactPath, meta: ArtifactMeta, mismatch: bool) -> StorageInfo {
    let sha256 = if mismatch {
        // Deterministic and surely different from the real digest.
        sha256_hex(meta.sha256.as_bytes())
    } else {
        meta.sha256
    };
    StorageInfo {
        repo: path.repo.clone(),
        path: path.rel(),
        size: meta.size.to_string(),
        checksums: Checksums { sha256 },
    }
}

fn disk_failed(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "simulated Artifactory disk failure");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_failed",
        "the simulator cannot read or write the artifact",
    )
}

/// `PUT /artifactory/{repo}/{path}`.
pub(crate) async fn deploy(
    State(state): State<Arc<SimState>>,
    mismatch: Option<Extension<MismatchFault>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    check_jpd_token(&state, &headers)?;
    let path = artifact_path(&uri, "/artifactory/")?;
    let expected = match headers.get(HEADER_CHECKSUM_SHA256) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
            if parse_sha256(&text).is_none() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_checksum",
                    format!("{HEADER_CHECKSUM_SHA256} is not 64 hex digits"),
                ));
            }
            Some(text)
        }
    };
    let upload = receive_upload(&state, body).await?;
    if expected.is_some_and(|want| want != upload.sha256) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "checksum_mismatch",
            format!("the uploaded bytes do not match {HEADER_CHECKSUM_SHA256}; nothing was stored"),
        ));
    }
    let worker = state.clone();
    let target = path.clone();
    let placed = tokio::task::spawn_blocking(move || artifacts::place(&worker, &target, upload))
        .await
        .map_err(disk_failed)?;
    match placed {
        Ok(meta) => Ok((
            StatusCode::CREATED,
            Json(storage_info(&path, meta, mismatch.is_some())),
        )
            .into_response()),
        Err(PlaceError::Conflict(why)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "path_conflict",
            format!("cannot store the artifact: {why}"),
        )),
        Err(PlaceError::Io(e)) => Err(disk_failed(e)),
    }
}

/// Streams a request body into a temp file, hashing it on the way.
async fn receive_upload(state: &SimState, body: Body) -> Result<Upload, ApiError> {
    let tmp_dir = state.dirs.tmp.clone();
    let named = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(tmp_dir)
    })
    .await
    .map_err(disk_failed)?
    .map_err(disk_failed)?;
    let (file, temp) = named.into_parts();
    let mut writer =
        tokio::io::BufWriter::with_capacity(UPLOAD_BUFFER, tokio::fs::File::from_std(file));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
                "the upload ended before its last byte",
            )
        })?;
        size += chunk.len() as u64;
        if size > state.max_artifact_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the artifact is larger than {} bytes",
                    state.max_artifact_bytes
                ),
            ));
        }
        hasher.update(&chunk);
        writer.write_all(&chunk).await.map_err(disk_failed)?;
    }
    writer.flush().await.map_err(disk_failed)?;
    let mut file = writer.into_inner();
    file.flush().await.map_err(disk_failed)?;
    drop(file);
    Ok(Upload {
        temp,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// `GET /artifactory/...`: storage info under `api/storage/`, otherwise the artifact's bytes.
pub(crate) async fn get_artifact(
    State(state): State<Arc<SimState>>,
    mismatch: Option<Extension<MismatchFault>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    check_jpd_token(&state, &headers)?;
    let storage_prefix = "/artifactory/api/storage/";
    let is_storage = uri.path().starts_with(storage_prefix);
    let prefix = if is_storage {
        storage_prefix
    } else {
        "/artifactory/"
    };
    let path = artifact_path(&uri, prefix)?;
    let worker = state.clone();
    let lookup = path.clone();
    let meta = tokio::task::spawn_blocking(move || artifacts::meta(&worker, &lookup))
        .await
        .map_err(disk_failed)?
        .map_err(disk_failed)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no artifact at {}/{}", path.repo, path.rel()),
            )
        })?;
    if is_storage {
        return Ok(Json(storage_info(&path, meta, mismatch.is_some())).into_response());
    }
    download(&state, &path, meta).await
}

/// Streams an artifact's bytes.
async fn download(
    state: &SimState,
    path: &ArtifactPath,
    meta: ArtifactMeta,
) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path.under(&state.dirs.artifactory))
        .await
        .map_err(disk_failed)?;
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&meta.sha256) {
        headers.insert(HEADER_CHECKSUM_SHA256, v);
    }
    Ok(resp)
}
