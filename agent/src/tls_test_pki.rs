//! A throwaway PKI for the TLS tests, made fresh by each test with rcgen (no key is committed):
//! a CA, a server certificate for `localhost` and 127.0.0.1, and a client certificate.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// PEM texts of one CA and the certificates it signed.
pub(crate) struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "nodetrace test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let (server_cert_pem, server_key_pem) = leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) =
            leaf(&ca, &["node-a"], ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca_pem: ca.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    /// Writes the server's certificate and key into `dir`: (certificate, key).
    pub fn write_server(&self, dir: &Path) -> (PathBuf, PathBuf) {
        (
            write(dir, "server.crt", &self.server_cert_pem),
            write(dir, "server.key", &self.server_key_pem),
        )
    }

    /// Writes the client's certificate and key into `dir`: (certificate, key).
    pub fn write_client(&self, dir: &Path) -> (PathBuf, PathBuf) {
        (
            write(dir, "client.crt", &self.client_cert_pem),
            write(dir, "client.key", &self.client_key_pem),
        )
    }

    /// Writes the CA certificate into `dir`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        write(dir, "ca.crt", &self.ca_pem)
    }
}

fn leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, ca).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
