//! The one outbound HTTP client: timeouts, TLS trust and proxy set once for every remote (JES,
//! JCS, the JPD, the store), and the one place where a failed request becomes a classified
//! [`TransportError`] with a sentence a person can act on.
//!
//! Architecture invariant: every outbound request is sent by a client built here.

use crate::config::Config;
use crate::transport::{class_of_status, ErrorClass, TransportError};
use std::error::Error as _;
use url::Url;

/// Errors building the client (bad CA file, bad proxy).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use jfconnect.tls.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The proxy setting could not be used.
    #[error("cannot use the proxy {url}: {reason}")]
    Proxy {
        /// The proxy URL (no credentials).
        url: String,
        /// Why.
        reason: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Builds the outbound client from the configuration.
pub fn build_client(config: &Config) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .user_agent(concat!("jfconnect/", env!("CARGO_PKG_VERSION")))
        .use_rustls_tls()
        .https_only(false);
    if let Some(path) = &config.tls_ca_file {
        let ca_err = |reason: String| ClientError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("it holds no PEM certificate".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(proxy) = &config.proxy {
        let shown = redact_url(&proxy.url);
        let mut p = reqwest::Proxy::all(proxy.url.as_str()).map_err(|e| ClientError::Proxy {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        if let Some(user) = &proxy.username {
            let pass = proxy.password.as_ref().map(|s| s.expose()).unwrap_or("");
            p = p.basic_auth(user, pass);
        }
        if let Some(no) = &config.no_proxy {
            p = p.no_proxy(reqwest::NoProxy::from_string(no));
        }
        builder = builder.proxy(p);
    }
    builder
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// A URL with any user name and password removed, for messages.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Turns a failed send (no HTTP answer) into a classified error naming `service` ("JES") and
/// the host, with what to do next.
pub fn classify_send_error(err: &reqwest::Error, service: &str, url: &Url) -> TransportError {
    let host = url.host_str().unwrap_or("?").to_string();
    let chain = error_chain(err);
    let lower = chain.to_lowercase();
    let message = if err.is_timeout() {
        format!("{service} at {host} did not answer in time (timeout); it will be retried")
    } else if lower.contains("dns")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
    {
        format!("cannot resolve the {service} host {host} (DNS); check the URL and the network, and that {host} is allowlisted in your firewall")
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        let why = if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
            "unknown issuer"
        } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
            "name mismatch"
        } else if lower.contains("expired") {
            "expired"
        } else {
            "handshake failed"
        };
        format!("the TLS certificate of {host} is not trusted ({why}); add your CA to jfconnect.tls.ca_file")
    } else if lower.contains("connection refused") {
        format!("{service} at {host} refused the connection; check that it runs and that {host} is allowlisted in your firewall")
    } else if lower.contains("reset")
        || lower.contains("closed")
        || lower.contains("incomplete")
        || lower.contains("eof")
    {
        format!(
            "the connection to {service} at {host} was cut before an answer; it will be retried"
        )
    } else {
        format!("cannot reach {service} at {host}: {}; check the network and that {host} is allowlisted", first_line(&chain))
    };
    TransportError::unavailable(None, message)
}

/// Classifies an HTTP answer that is not a success.
pub fn classify_status(status: u16, service: &str, url: &Url, detail: &str) -> TransportError {
    let host = url.host_str().unwrap_or("?");
    let class = class_of_status(status);
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {}", first_line(detail))
    };
    let message = match class {
        ErrorClass::Rejected => {
            format!("{service} at {host} refused the request (HTTP {status}){detail}")
        }
        _ => format!("{service} at {host} failed (HTTP {status}){detail}; it will be retried"),
    };
    TransportError {
        class,
        status: Some(status),
        message,
    }
}

fn error_chain(err: &reqwest::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// Pulls the `message` of a `{"error": {...}}` body, or a short prefix of the text.
pub fn error_detail(body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<crate::protocol::ErrorBody>(body) {
        return e.error.message;
    }
    first_line(&String::from_utf8_lossy(body))
}
