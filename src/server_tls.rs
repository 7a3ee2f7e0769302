//! HTTPS for the ports jfconnect serves: `tls.server.cert_file` and `tls.server.key_file` turn
//! it on. [`acceptor`] reads them once (a bad certificate or key is refused at start with a
//! sentence naming the file); each port's accept loop runs the handshakes, each in its
//! connection's own task under that port's header-read time limit.

use crate::config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why the server certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A file cannot be read.
    #[error("cannot read jfconnect.{key} {path}: {source}")]
    Read {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("jfconnect.tls.server.cert_file {0} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("jfconnect.tls.server.key_file {0} holds no PEM private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)")]
    NoKey(PathBuf),
    /// rustls refused the pair (unsupported key, or the key does not belong to the
    /// certificate).
    #[error("jfconnect.tls.server.key_file {key} cannot serve jfconnect.tls.server.cert_file {cert}: {reason}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The TLS acceptor the configuration asks for; `None` when `tls.server.*` is not set.
pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, ServerTlsError> {
    match (&config.tls.server.cert_file, &config.tls.server.key_file) {
        (Some(cert), Some(key)) => load(cert, key).map(Some),
        // Validation refuses one without the other.
        _ => Ok(None),
    }
}

/// Reads a PEM certificate chain and its private key into an acceptor (HTTP/1.1 over TLS 1.2
/// and 1.3).
pub fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerTlsError> {
    let read = |k: &'static str, p: &Path| {
        std::fs::read(p).map_err(|source| ServerTlsError::Read {
            key: k,
            path: p.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("tls.server.cert_file", cert)?;
    let key_pem = read("tls.server.key_file", key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(ServerTlsError::NoCertificate(cert.to_path_buf()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| ServerTlsError::NoKey(key.to_path_buf()))?;
    let refused = |reason: String| ServerTlsError::Refused {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(private.clone_key())
        .map_err(|e| refused(format!("unsupported key ({e})")))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| refused("the key does not belong to the certificate".into()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| refused(e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The same certificate and key for the gRPC port: ALPN `h2` instead of `http/1.1`. gRPC
/// clients offer only `h2`, and a server offering only `http/1.1` refuses their handshake
/// (`no_application_protocol`).
pub(crate) fn for_grpc(acceptor: &TlsAcceptor) -> TlsAcceptor {
    let mut config = (**acceptor.config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}
