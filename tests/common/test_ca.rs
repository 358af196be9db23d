//! A CA made for one test. Shared as a file, not through the crate: the
//! integration tests include it (`tests/common`), and so do the relay's
//! unit tests of webhooks over TLS (`src/relay/notify.rs`), which cannot
//! reach `tests/common`.
#![allow(dead_code)]

use std::path::PathBuf;

/// A CA made for one test, and a server certificate it signed for
/// `localhost` and `127.0.0.1`, as PEM files in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vstats test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let ca_pem = dir.path().join("ca.pem");
        let cert_pem = dir.path().join("cert.pem");
        let key_pem = dir.path().join("key.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(&cert_pem, leaf.pem()).unwrap();
        std::fs::write(&key_pem, leaf_key.serialize_pem()).unwrap();
        TestCa {
            dir,
            ca_pem,
            cert_pem,
            key_pem,
        }
    }
}
