//! HTTPS for the simulator (`sim serve --tls`): a throwaway CA and a server certificate made on
//! start with rcgen, so tests and the demo exercise real TLS — trust via `tls.ca_file`, refusal
//! without it, a name mismatch — with nothing to install.
//!
//! The certificate names `localhost` only (not `127.0.0.1`), so `https://localhost:<port>` is
//! trusted with the CA and `https://127.0.0.1:<port>` fails on the name: both cases a user can
//! meet, on loopback.

use super::SimError;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The name the server certificate is issued for.
pub(crate) const TLS_HOST: &str = "localhost";

/// A TLS acceptor and where its CA certificate was written.
#[derive(Clone)]
pub struct SimTls {
    /// Wraps accepted sockets.
    pub acceptor: TlsAcceptor,
    /// `<data>/tls/ca.pem`: the CA to trust (`jfconnect.tls.ca_file`).
    pub ca_file: PathBuf,
}

fn tls_err(reason: impl std::fmt::Display) -> SimError {
    SimError::Tls(reason.to_string())
}

/// Makes a CA and a server certificate for `localhost`, writes the CA PEM under `data_dir`,
/// and answers the acceptor.
pub fn make(data_dir: &Path) -> Result<SimTls, SimError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "jfconnect simulator test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let ca = ca_params.self_signed(&ca_key).map_err(tls_err)?;

    let mut leaf_params = CertificateParams::new(vec![TLS_HOST.to_string()]).map_err(tls_err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, TLS_HOST);
    let leaf_key = KeyPair::generate().map_err(tls_err)?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .map_err(tls_err)?;

    let dir = data_dir.join("tls");
    let ca_file = dir.join("ca.pem");
    crate::state::write_atomic(&ca_file, ca.pem().as_bytes())
        .map_err(|e| SimError::io("write", &ca_file, e))?;

    let chain = vec![
        CertificateDer::from(leaf.der().to_vec()),
        CertificateDer::from(ca.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_err)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(tls_err)?;
    Ok(SimTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_file,
    })
}
