//! The online transport: HTTPS to JES and JCS through the shared client (timeouts, CA, proxy).
//!
//! Every failure leaves this file classified (see [`crate::http`]); a connection refused or a
//! DNS failure to JES says the host may need allowlisting, because that is what it usually is.

use super::{EntitlementsFetch, Transport, TransportError, UsageReceipt, UsageUpload};
use crate::http::{error_detail, Outbound};
use crate::http::{header, StatusCode};
use crate::protocol::{self, Entitlements, RegisterRequest, RegisterResponse, UsageBatchReceipt};
use crate::remote::Service;
use crate::secret::Secret;
use std::collections::HashSet;
use url::Url;

/// Talks HTTPS to JES (entitlements) and JCS (consumption).
pub struct OnlineTransport {
    outbound: Outbound,
    jes: Url,
    jcs: Url,
}

impl OnlineTransport {
    /// A transport using `outbound` against the given base URLs.
    pub fn new(outbound: Outbound, jes: Url, jcs: Url) -> Self {
        OnlineTransport { outbound, jes, jcs }
    }

    fn endpoint(base: &Url, path: &str) -> Result<Url, TransportError> {
        let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
        Url::parse(&joined)
            .map_err(|e| TransportError::local(format!("cannot build URL from {base}: {e}")))
    }
}

/// Reads a failed answer's body (bounded) for its error sentence.
async fn failure(
    outbound: &Outbound,
    resp: crate::http::Response,
    service: Service,
    url: &Url,
) -> TransportError {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
    outbound.status_error(status, &headers, service, url, &error_detail(&body))
}

async fn read_capped(
    mut resp: crate::http::Response,
    cap: usize,
) -> Result<Vec<u8>, crate::http::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

/// Reads and parses a JSON success body, bounded to `cap` bytes.
async fn json_body<T: serde::de::DeserializeOwned>(
    outbound: &Outbound,
    resp: crate::http::Response,
    service: Service,
    url: &Url,
    cap: usize,
) -> Result<T, TransportError> {
    let body = read_capped(resp, cap + 1)
        .await
        .map_err(|e| outbound.send_error(&e, service, url))?;
    if body.len() > cap {
        return Err(TransportError::unavailable(
            None,
            format!("{service} sent an answer larger than {cap} bytes; refused"),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        TransportError::unavailable(
            None,
            format!("{service} sent an answer jfconnect cannot read ({e}); it will be retried"),
        )
    })
}

const MAX_ANSWER: usize = 8 * 1024 * 1024;

#[async_trait::async_trait]
impl Transport for OnlineTransport {
    async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, TransportError> {
        let url = Self::endpoint(&self.jes, protocol::JES_REGISTER)?;
        let resp = self
            .outbound
            .post(&url)
            .header(protocol::HEADER_JPD_ID, &req.jpd_id)
            .json(req)
            .send()
            .await
            .map_err(|e| self.outbound.send_error(&e, Service::Jes, &url))?;
        match resp.status() {
            s if s.is_success() => {
                json_body(&self.outbound, resp, Service::Jes, &url, MAX_ANSWER).await
            }
            StatusCode::BAD_REQUEST => {
                let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
                let detail = error_detail(&body);
                Err(TransportError::rejected(
                    Some(400),
                    format!(
                        "JES rejected the license (HTTP 400{}); fix the license, then restart or update it",
                        if detail.is_empty() { String::new() } else { format!(": {detail}") }
                    ),
                ))
            }
            _ => Err(failure(&self.outbound, resp, Service::Jes, &url).await),
        }
    }

    async fn fetch_entitlements(
        &self,
        jpd_id: &str,
        token: &Secret,
        etag: Option<&str>,
    ) -> Result<EntitlementsFetch, TransportError> {
        let url = Self::endpoint(&self.jes, protocol::JES_ENTITLEMENTS)?;
        let mut req = self
            .outbound
            .get(&url)
            .bearer_auth(token.expose())
            .header(protocol::HEADER_JPD_ID, jpd_id);
        if let Some(tag) = etag {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.outbound.send_error(&e, Service::Jes, &url))?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(EntitlementsFetch::NotModified),
            s if s.is_success() => {
                let etag = resp
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let entitlements: Entitlements =
                    json_body(&self.outbound, resp, Service::Jes, &url, MAX_ANSWER).await?;
                Ok(EntitlementsFetch::Updated { etag, entitlements })
            }
            _ => Err(failure(&self.outbound, resp, Service::Jes, &url).await),
        }
    }

    async fn upload_usage(
        &self,
        jpd_id: &str,
        token: &Secret,
        batch: &[UsageUpload],
    ) -> Result<UsageReceipt, TransportError> {
        let url = Self::endpoint(&self.jcs, protocol::JCS_USAGE)?;
        let files = batch
            .iter()
            .map(|f| (f.sha256.as_str(), f.name.as_str(), &f.content[..]));
        let body = protocol::usage_batch_body(jpd_id, files).map_err(|e| {
            TransportError::local(format!("cannot write the usage batch for JCS: {e}"))
        })?;
        let resp = self
            .outbound
            .post(&url)
            .bearer_auth(token.expose())
            .header(protocol::HEADER_JPD_ID, jpd_id)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.outbound.send_error(&e, Service::Jcs, &url))?;
        if !resp.status().is_success() {
            return Err(failure(&self.outbound, resp, Service::Jcs, &url).await);
        }
        let receipt: UsageBatchReceipt =
            json_body(&self.outbound, resp, Service::Jcs, &url, MAX_ANSWER).await?;
        receipt_for(batch, receipt)
    }

    fn describe(&self) -> String {
        format!("online (JES {}, JCS {})", self.jes, self.jcs)
    }
}

/// Checks that JCS acknowledged exactly the files sent; a partial receipt is not a receipt.
fn receipt_for(
    batch: &[UsageUpload],
    receipt: UsageBatchReceipt,
) -> Result<UsageReceipt, TransportError> {
    let got: HashSet<&str> = receipt.received.iter().map(|r| r.sha256.as_str()).collect();
    if let Some(missing) = batch.iter().find(|f| !got.contains(f.sha256.as_str())) {
        return Err(TransportError::unavailable(
            None,
            format!(
                "JCS did not acknowledge usage file {} ({}); the batch will be sent again",
                missing.name, missing.sha256
            ),
        ));
    }
    Ok(UsageReceipt {
        acknowledged: batch.iter().map(|f| f.sha256.clone()).collect(),
        duplicates: receipt.received.iter().filter(|r| r.duplicate).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UsageFileReceipt;

    fn upload(sha: &str) -> UsageUpload {
        UsageUpload {
            sha256: sha.into(),
            name: format!("{sha}.json"),
            content: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn partial_receipt_is_not_a_receipt() {
        let batch = [upload("a"), upload("b")];
        let r = UsageBatchReceipt {
            received: vec![UsageFileReceipt {
                sha256: "a".into(),
                duplicate: false,
            }],
        };
        let err = receipt_for(&batch, r).unwrap_err();
        assert_eq!(err.class, crate::transport::ErrorClass::Unavailable);
        assert!(err.message.contains("b.json"));
    }

    #[test]
    fn full_receipt_counts_duplicates() {
        let batch = [upload("a"), upload("b")];
        let r = UsageBatchReceipt {
            received: vec![
                UsageFileReceipt {
                    sha256: "a".into(),
                    duplicate: true,
                },
                UsageFileReceipt {
                    sha256: "b".into(),
                    duplicate: false,
                },
            ],
        };
        let ok = receipt_for(&batch, r).unwrap();
        assert_eq!(ok.acknowledged, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(ok.duplicates, 1);
    }
}
