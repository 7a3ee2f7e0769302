//! Certificates for the tests that need TLS: a throwaway CA made with rcgen and a server
//! certificate it signed, for loopback names. Nothing here is trusted outside one test.

#![allow(dead_code)] // each test binary uses part of it

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A CA and one server certificate signed by it, all in PEM.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    /// A fresh CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn for_names(names: &[&str]) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        TestPki {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// For `localhost` and `127.0.0.1`.
    pub fn loopback() -> TestPki {
        TestPki::for_names(&["localhost", "127.0.0.1"])
    }

    /// Writes the server certificate and key as `server.pem` and `server.key` in `dir`.
    pub fn write_server_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// The PEM of a CA that signed nothing.
pub fn other_ca_pem() -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

/// The PEM of a private key that belongs to no certificate.
pub fn stray_key_pem() -> String {
    KeyPair::generate().unwrap().serialize_pem()
}
