//! One gRPC watch session: connect, open `WatchEntitlements` from the version held, take each
//! reply until the stream ends.

use crate::cache::Snapshot;
use crate::inner::{Inner, Link};
use crate::proto::entitlements_client::EntitlementsClient;
use crate::proto::WatchRequest;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Runs one session; `Ok` when jfconnect ended the stream (it is shutting down), `Err` with a
/// sentence otherwise.
pub(crate) async fn watch(inner: &Inner, url: &str) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad address: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        // A jfconnect that vanished without closing the connection is noticed within ~25 s.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let endpoint = match &inner.settings.ca_pem {
        Some(pem) if url.starts_with("https:") => endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| format!("cannot set up TLS: {}", chain(&e)))?,
        _ => endpoint,
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", chain(&e)))?;
    let auth = MetadataValue::<Ascii>::try_from(inner.auth.as_bytes())
        .map_err(|_| "the API token cannot be sent as metadata".to_string())?;
    let mut client =
        EntitlementsClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", auth.clone());
            Ok(req)
        });
    let request = WatchRequest {
        last_version: inner.version().unwrap_or_default(),
    };
    let mut stream = client
        .watch_entitlements(request)
        .await
        .map_err(describe)?
        .into_inner();
    inner.answered();
    inner.set_link(Link::Grpc);
    loop {
        match stream.message().await {
            Ok(Some(reply)) => inner.publish(Snapshot::from_reply(reply)),
            Ok(None) => return Ok(()),
            Err(status) => return Err(describe(status)),
        }
    }
}

fn describe(status: tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => {
            format!("jfconnect refused the token: {}", status.message())
        }
        code => format!("{code:?}: {}", status.message()),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
