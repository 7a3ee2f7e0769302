//! The JPD over HTTP: Access for the token check, Artifactory for deploy and storage info.
//!
//! Uses the one outbound client of [`crate::http`] (timeouts, CA, proxy) and the bearer token
//! from `jfconnect.jpd.token_file`. Archive bodies are streamed from disk in chunks, never read
//! whole into memory.

use super::{Jpd, TOKEN_HINT};
use crate::config::Config;
use crate::http::{build, error_detail, ClientError, Outbound};
use crate::protocol::HEADER_CHECKSUM_SHA256;
use crate::protocol::{StorageInfo, ACCESS_TOKEN_CHECK, ARTIFACTORY_PREFIX, ARTIFACTORY_STORAGE};
use crate::remote::{Service, TransportError};
use crate::secret::Secret;
use std::path::Path;
use tokio::io::AsyncReadExt;
use url::Url;

const CHUNK: usize = 64 * 1024;

/// The JPD reached over HTTP(S).
pub(crate) struct OnlineJpd {
    outbound: Outbound,
    base: Url,
    token: Option<Secret>,
}

impl OnlineJpd {
    /// A client for `config.jpd.url` with `config.jpd.token`.
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        Ok(OnlineJpd {
            outbound: build(config)?,
            base: config.jpd.url.clone(),
            token: config.jpd.token.clone(),
        })
    }

    /// `base` + `prefix` + each of `segments`, percent-encoded.
    fn url(&self, prefix: &str, segments: &[&str]) -> Result<Url, TransportError> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| {
                TransportError::local(format!(
                    "jfconnect.jpd.url {} cannot be a base URL",
                    crate::http::redact_url(&self.base)
                ))
            })?;
            path.pop_if_empty();
            path.extend(prefix.split('/').filter(|s| !s.is_empty()));
            for s in segments {
                path.extend(s.split('/').filter(|p| !p.is_empty()));
            }
        }
        Ok(url)
    }

    fn token(&self) -> Result<&Secret, TransportError> {
        self.token.as_ref().filter(|t| !t.is_empty()).ok_or_else(|| {
            TransportError::local(
                "no JPD token is configured; set jfconnect.jpd.token_file to a file holding an access token",
            )
        })
    }

    /// Turns a non-success answer into a classified error with the right advice.
    async fn refusal(
        &self,
        service: Service,
        url: &Url,
        resp: crate::http::Response,
    ) -> TransportError {
        let status = resp.status().as_u16();
        let host = url.host_str().unwrap_or("?").to_string();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        let detail = error_detail(&body);
        let classified = self
            .outbound
            .status_error(status, &headers, service, url, &detail);
        if classified.message.starts_with("the proxy at") {
            return classified;
        }
        match status {
            401 | 403 => TransportError::rejected(
                Some(status),
                format!("{service} at {host} refused the token (HTTP {status}); {TOKEN_HINT}"),
            ),
            507 => TransportError::unavailable(
                Some(status),
                format!("Artifactory is out of storage at {host} (HTTP 507); free space in the JPD, it will be retried"),
            ),
            _ => classified,
        }
    }
}

impl OnlineJpd {
    /// An authenticated GET, its network failure classified for `service`.
    async fn get(
        &self,
        url: &Url,
        service: Service,
    ) -> Result<crate::http::Response, TransportError> {
        self.outbound
            .get(url)
            .bearer_auth(self.token()?.expose())
            .send()
            .await
            .map_err(|e| self.outbound.send_error(&e, service, url))
    }
}

#[async_trait::async_trait]
impl Jpd for OnlineJpd {
    async fn check_token(&self) -> Result<(), TransportError> {
        let url = self.url(ACCESS_TOKEN_CHECK, &[])?;
        let resp = self.get(&url, Service::Access).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.refusal(Service::Access, &url, resp).await)
        }
    }

    async fn deploy(
        &self,
        repo: &str,
        path: &str,
        file: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<StorageInfo, TransportError> {
        let url = self.url(ARTIFACTORY_PREFIX, &[repo, path])?;
        let f = tokio::fs::File::open(file).await.map_err(|e| {
            TransportError::local(format!("cannot read the archive {}: {e}", file.display()))
        })?;
        let stream = futures_util::stream::unfold(f, |mut f| async move {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let resp = self
            .outbound
            .put(&url)
            .bearer_auth(self.token()?.expose())
            .header(HEADER_CHECKSUM_SHA256, sha256)
            .header(crate::http::header::CONTENT_LENGTH, size)
            .header(crate::http::header::CONTENT_TYPE, "application/zip")
            .body(crate::http::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| self.outbound.send_error(&e, Service::Artifactory, &url))?;
        if !resp.status().is_success() {
            return Err(self.refusal(Service::Artifactory, &url, resp).await);
        }
        resp.json::<StorageInfo>().await.map_err(|e| {
            TransportError::unavailable(
                None,
                format!("Artifactory answered the deploy of {repo}/{path} with an unreadable body ({e}); it will be retried"),
            )
        })
    }

    async fn storage_info(
        &self,
        repo: &str,
        path: &str,
    ) -> Result<Option<StorageInfo>, TransportError> {
        let url = self.url(ARTIFACTORY_STORAGE, &[repo, path])?;
        let resp = self.get(&url, Service::Artifactory).await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.refusal(Service::Artifactory, &url, resp).await);
        }
        resp.json::<StorageInfo>().await.map(Some).map_err(|e| {
            TransportError::unavailable(
                None,
                format!("Artifactory answered storage info of {repo}/{path} with an unreadable body ({e}); it will be retried"),
            )
        })
    }

    fn describe(&self) -> String {
        format!("JPD at {}", crate::http::redact_url(&self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpd(base: &str) -> OnlineJpd {
        let mut c = Config::defaults(std::env::temp_dir());
        c.jpd.url = Url::parse(base).unwrap();
        OnlineJpd::new(&c).unwrap()
    }

    #[test]
    fn artifactory_urls_keep_a_base_path_and_encode_segments() {
        let j = jpd("http://jpd.example:8082/");
        let u = j.url(
            ARTIFACTORY_PREFIX,
            &["repo", "host/2024-01-02/usage-ab-1.zip"],
        );
        assert_eq!(
            u.unwrap().as_str(),
            "http://jpd.example:8082/artifactory/repo/host/2024-01-02/usage-ab-1.zip"
        );
        let j = jpd("https://jpd.example/prefix");
        let u = j.url(ARTIFACTORY_STORAGE, &["r", "a b.zip"]).unwrap();
        assert_eq!(
            u.as_str(),
            "https://jpd.example/prefix/artifactory/api/storage/r/a%20b.zip"
        );
    }

    #[tokio::test]
    async fn missing_token_names_the_setting() {
        let err = jpd("http://127.0.0.1:9/").check_token().await.unwrap_err();
        assert!(err.message.contains("jfconnect.jpd.token_file"), "{err}");
    }
}
