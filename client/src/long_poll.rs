//! One HTTP long-poll session: `GET /api/v1/entitlements?wait=` with `If-None-Match` in a
//! loop, for networks where gRPC is blocked.

use crate::cache::Snapshot;
use crate::inner::{Inner, Link};
use std::time::Duration;

/// Largest entitlements body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Polls until a request fails; returns the failure as a sentence.
pub(crate) async fn watch(inner: &Inner, base: &str) -> Result<(), String> {
    let wait = inner.settings.long_poll_wait;
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(wait + Duration::from_secs(15));
    if let Some(pem) = &inner.settings.ca_pem {
        http = http.tls_built_in_root_certs(false);
        for ca in reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("the CA is not PEM: {e}"))?
        {
            http = http.add_root_certificate(ca);
        }
    }
    let http = http
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = format!("{base}/api/v1/entitlements?wait={}s", wait.as_secs().max(1));
    loop {
        let mut request = http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, inner.auth.clone());
        if let Some(v) = inner.version() {
            request = request.header(reqwest::header::IF_NONE_MATCH, format!("\"{v}\""));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        match response.status().as_u16() {
            200 => {
                let etag = response
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or("jfconnect answered without an ETag")?;
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("reading the answer failed: {e}"))?
                {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(format!("the answer is larger than {MAX_BODY} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                let snapshot = Snapshot::from_http(&etag, &body)
                    .map_err(|e| format!("the answer is not entitlements JSON: {e}"))?;
                inner.set_link(Link::Http);
                inner.publish(snapshot);
            }
            304 => {
                inner.set_link(Link::Http);
                inner.answered();
            }
            404 => {
                // No entitlements yet: ask again shortly.
                inner.set_link(Link::Http);
                inner.answered();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            401 => return Err("jfconnect refused the token (HTTP 401)".into()),
            code => return Err(format!("jfconnect answered HTTP {code}")),
        }
    }
}
