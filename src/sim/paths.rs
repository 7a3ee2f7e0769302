//! Request paths: which simulated endpoint a request is for, and which file under the data
//! folder an Artifactory path names.
//!
//! An artifact path comes straight from the network and becomes a file name, so it is parsed
//! strictly here before anything touches the disk: each segment is percent-decoded and refused
//! if it is empty, `.` or `..`, or holds a slash, a backslash or a control character. A path
//! that passes can only name a file inside `<data>/artifactory/<repo>/`.
//!
//! Architecture invariant: this module does no I/O.

use super::fault::Endpoint;
use crate::protocol;
use axum::http::Method;
use percent_encoding::percent_decode_str;
use std::path::{Path, PathBuf};

/// Longest accepted path segment, in bytes (a common file-system limit).
const MAX_SEGMENT: usize = 255;
/// Most segments accepted in one artifact path.
const MAX_SEGMENTS: usize = 64;

/// The endpoint a request is for, or `None` for `/_sim/*`, downloads and unknown paths.
pub(crate) fn classify(method: &Method, path: &str) -> Option<Endpoint> {
    let storage_prefix = format!("{}/", protocol::ARTIFACTORY_STORAGE);
    let artifactory_prefix = format!("{}/", protocol::ARTIFACTORY_PREFIX);
    if *method == Method::POST && path == protocol::JES_REGISTER {
        Some(Endpoint::Register)
    } else if *method == Method::GET && path == protocol::JES_ENTITLEMENTS {
        Some(Endpoint::Entitlements)
    } else if *method == Method::POST && path == protocol::JCS_USAGE {
        Some(Endpoint::Usage)
    } else if *method == Method::GET && path == protocol::ACCESS_TOKEN_CHECK {
        Some(Endpoint::Token)
    } else if *method == Method::GET && path.starts_with(&storage_prefix) {
        Some(Endpoint::Storage)
    } else if *method == Method::PUT && path.starts_with(&artifactory_prefix) {
        Some(Endpoint::Deploy)
    } else {
        None
    }
}

/// A checked artifact location: a repository key and a relative path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArtifactPath {
    /// Repository key, e.g. `jfconnect-usage`.
    pub repo: String,
    /// Decoded segments of the path inside the repository (at least one).
    pub segments: Vec<String>,
}

impl ArtifactPath {
    /// The path inside the repository, `/`-joined, no leading slash.
    pub fn rel(&self) -> String {
        self.segments.join("/")
    }

    /// `<root>/<repo>/<segments...>`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.join(&self.repo);
        for s in &self.segments {
            p.push(s);
        }
        p
    }

    /// True when the artifact is an archive that the simulator verifies (`*.zip`).
    pub(crate) fn is_archive(&self) -> bool {
        self.segments
            .last()
            .is_some_and(|s| s.to_ascii_lowercase().ends_with(".zip"))
    }
}

/// Why an artifact path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PathError(pub String);

/// Parses the raw (still percent-encoded) part of a URL path after `/artifactory/` or
/// `/artifactory/api/storage/`: `<repo>/<path...>`.
pub(crate) fn parse_artifact_path(raw: &str) -> Result<ArtifactPath, PathError> {
    let mut parts = raw.split('/');
    let repo = decode_segment(parts.next().unwrap_or(""))?;
    if repo.is_empty() {
        return Err(PathError("the repository key is missing".into()));
    }
    if repo == "api" {
        return Err(PathError("\"api\" is not a repository key".into()));
    }
    if repo.starts_with('.')
        || !repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(PathError(
            "the repository key may hold only letters, digits, '-', '_' and '.'".into(),
        ));
    }
    let segments = parts.map(decode_segment).collect::<Result<Vec<_>, _>>()?;
    if segments.is_empty() {
        return Err(PathError(
            "the path inside the repository is missing".into(),
        ));
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(PathError(format!(
            "the path has more than {MAX_SEGMENTS} segments"
        )));
    }
    for s in &segments {
        if s.is_empty() {
            return Err(PathError(
                "the path has an empty segment (a doubled or trailing '/')".into(),
            ));
        }
        if s == "." || s == ".." {
            return Err(PathError(
                "the path may not hold '.' or '..' segments".into(),
            ));
        }
    }
    Ok(ArtifactPath { repo, segments })
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let s = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError("the path is not valid UTF-8 once decoded".into()))?
        .into_owned();
    if s.len() > MAX_SEGMENT {
        return Err(PathError(format!(
            "a path segment is longer than {MAX_SEGMENT} bytes"
        )));
    }
    if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(PathError(
            "a path segment holds an encoded '/', a '\\' or a control character".into(),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_encoded_paths_parse() {
        let p = parse_artifact_path("jfconnect-usage/2024/archive%201.zip").unwrap();
        assert_eq!(p.repo, "jfconnect-usage");
        assert_eq!(p.rel(), "2024/archive 1.zip");
        assert!(p.is_archive());
        assert_eq!(
            p.under(Path::new("/d")),
            PathBuf::from("/d/jfconnect-usage/2024/archive 1.zip")
        );
    }

    #[test]
    fn traversal_and_absolute_tricks_are_refused() {
        for raw in [
            "repo/../etc/passwd",
            "repo/%2e%2e/x",
            "repo/a/%2E%2E",
            "repo/./x",
            "../x/y",
            "%2e%2e/x",
            "repo//etc/passwd",
            "/etc/passwd",
            "repo/a%2fb",
            "repo/a%5Cb",
            "repo/a%00b",
            "repo/",
            "repo",
            "",
            "api/x",
            ".hidden/x",
            "re po/x",
            "repo/%ff",
        ] {
            assert!(parse_artifact_path(raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn requests_are_classified_by_method_and_path() {
        assert_eq!(
            classify(&Method::POST, "/jes/api/v1/register"),
            Some(Endpoint::Register)
        );
        assert_eq!(
            classify(&Method::GET, "/jes/api/v1/entitlements"),
            Some(Endpoint::Entitlements)
        );
        assert_eq!(
            classify(&Method::POST, "/jcs/api/v1/usage"),
            Some(Endpoint::Usage)
        );
        assert_eq!(
            classify(&Method::GET, "/access/api/v1/tokens/me"),
            Some(Endpoint::Token)
        );
        assert_eq!(
            classify(&Method::GET, "/artifactory/api/storage/r/a.zip"),
            Some(Endpoint::Storage)
        );
        assert_eq!(
            classify(&Method::PUT, "/artifactory/r/a.zip"),
            Some(Endpoint::Deploy)
        );
        assert_eq!(classify(&Method::GET, "/artifactory/r/a.zip"), None);
        assert_eq!(classify(&Method::GET, "/_sim/stats"), None);
    }
}
