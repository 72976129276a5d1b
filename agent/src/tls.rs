//! TLS material read from PEM files once at start: the API's certificate and key, the CAs a
//! client trusts and the client certificate it presents. rustls with the ring provider only.
//!
//! Every error names the file and what it was for, so that a bad file stops the agent at start
//! with a message that says which one.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file read; a CA bundle of a whole distribution is some 200 KiB. Pointing a flag
/// at a device or a huge file is an error, not a hang.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// The only protocol the API speaks (see `api::serve`), offered in ALPN.
const HTTP1_ALPN: &[u8] = b"http/1.1";

/// What is wrong with a TLS file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not valid PEM")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{what} {path} holds no PEM certificate (`BEGIN CERTIFICATE`)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error(
        "{what} {path} holds no PEM private key (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` \
         or `BEGIN EC PRIVATE KEY`)"
    )]
    NoKey { what: &'static str, path: PathBuf },
    #[error("{what} {path} holds a certificate that cannot be a trust anchor")]
    TrustAnchor {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("--tls-cert-file and --tls-key-file go together: give both or neither")]
    HalfPair,
    #[error("the ring crypto provider cannot make a TLS 1.2 and 1.3 configuration")]
    Provider {
        #[source]
        source: rustls::Error,
    },
    #[error("the certificate {cert} and the key {key} cannot be used together")]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The contents of one PEM file, with where they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemFile {
    /// What the file is for, in messages: `the API certificate (--tls-cert-file)`.
    pub what: &'static str,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl PemFile {
    /// Reads `path` whole, up to [`MAX_PEM_BYTES`].
    pub fn read(path: &Path, what: &'static str) -> Result<Self, TlsError> {
        let failed = |source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(failed)?
            .take(MAX_PEM_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(failed)?;
        if bytes.len() as u64 > MAX_PEM_BYTES {
            return Err(TlsError::TooLarge {
                what,
                path: path.to_owned(),
            });
        }
        Ok(Self {
            what,
            path: path.to_owned(),
            bytes,
        })
    }

    /// Every certificate in the file, in order (at least one).
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certificates = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| self.pem_error(source))?;
        if certificates.is_empty() {
            return Err(TlsError::NoCertificate {
                what: self.what,
                path: self.path.clone(),
            });
        }
        Ok(certificates)
    }

    /// The first private key in the file (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        match PrivateKeyDer::from_pem_slice(&self.bytes) {
            Ok(key) => Ok(key),
            Err(pem::Error::NoItemsFound) => Err(TlsError::NoKey {
                what: self.what,
                path: self.path.clone(),
            }),
            Err(source) => Err(self.pem_error(source)),
        }
    }

    /// The certificates of a CA file as trust anchors.
    pub fn trust_anchors(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for certificate in self.certificates()? {
            roots
                .add(certificate)
                .map_err(|source| TlsError::TrustAnchor {
                    what: self.what,
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(roots)
    }

    fn pem_error(&self, source: pem::Error) -> TlsError {
        TlsError::Pem {
            what: self.what,
            path: self.path.clone(),
            source,
        }
    }
}

/// A certificate chain and its private key, read and checked to belong together.
#[derive(Debug)]
pub struct KeyPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The files, as read (tonic takes PEM).
    pub cert_pem: PemFile,
    pub key_pem: PemFile,
}

impl KeyPair {
    /// Reads `cert` (the certificate first, then its intermediates) and `key`.
    pub fn read(
        cert: &Path,
        cert_what: &'static str,
        key: &Path,
        key_what: &'static str,
    ) -> Result<Self, TlsError> {
        let cert_pem = PemFile::read(cert, cert_what)?;
        let key_pem = PemFile::read(key, key_what)?;
        let pair = Self {
            chain: cert_pem.certificates()?,
            key: key_pem.private_key()?,
            cert_pem,
            key_pem,
        };
        rustls::sign::CertifiedKey::from_der(pair.chain.clone(), pair.key.clone_key(), &ring())
            .map_err(|source| pair.mismatch(source))?;
        Ok(pair)
    }

    fn mismatch(&self, source: rustls::Error) -> TlsError {
        TlsError::KeyPair {
            cert: self.cert_pem.path.clone(),
            key: self.key_pem.path.clone(),
            source,
        }
    }
}

/// The crypto provider of every TLS configuration of the agent.
pub fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The API's server configuration: TLS 1.2 and 1.3, HTTP/1.1 in ALPN, no client certificates
/// (clients authenticate with the bearer token).
pub fn api_server_config(identity: &KeyPair) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring()))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Provider { source })?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|source| identity.mismatch(source))?;
    config.alpn_protocols = vec![HTTP1_ALPN.to_vec()];
    Ok(config)
}

/// The API's TLS acceptor for `--tls-cert-file` and `--tls-key-file`: `None` when neither is
/// given, an error when only one is.
pub fn api_acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err(TlsError::HalfPair),
    };
    let pair = KeyPair::read(
        cert,
        "the API certificate (--tls-cert-file)",
        key,
        "the API key (--tls-key-file)",
    )?;
    let config = api_server_config(&pair)?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// A client configuration trusting only `roots`, presenting `identity` when given.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<&KeyPair>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(Arc::new(ring()))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Provider { source })?
        .with_root_certificates(roots);
    match identity {
        Some(pair) => builder
            .with_client_auth_cert(pair.chain.clone(), pair.key.clone_key())
            .map_err(|source| pair.mismatch(source)),
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
#[path = "tls_test_pki.rs"]
pub(crate) mod test_pki;

#[cfg(test)]
mod tests {
    use super::test_pki::Pki;
    use super::*;

    const WHAT: &str = "the test file";

    fn written(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config_with_http1_alpn() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = pki.write_server(dir.path());
        let pair = KeyPair::read(&cert, WHAT, &key, WHAT).expect("a good pair");
        assert_eq!(pair.chain.len(), 1);
        let config = api_server_config(&pair).expect("server config");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn each_bad_file_is_an_error_naming_it() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = pki.write_server(dir.path());
        let missing = dir.path().join("missing.pem");
        let not_pem = written(dir.path(), "garbage.pem", "not a certificate\n");
        let broken = written(
            dir.path(),
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
        );
        let other_key = written(dir.path(), "other.key", &Pki::new().server_key_pem);

        let message = |result: Result<KeyPair, TlsError>| match result {
            Ok(_) => panic!("accepted"),
            Err(err) => err.to_string(),
        };
        let read = |c: &Path, k: &Path| message(KeyPair::read(c, WHAT, k, "the key"));
        assert_eq!(
            read(&missing, &key),
            format!("cannot read the test file {}", missing.display())
        );
        assert_eq!(
            read(&not_pem, &key),
            format!(
                "the test file {} holds no PEM certificate (`BEGIN CERTIFICATE`)",
                not_pem.display()
            )
        );
        assert_eq!(
            read(&broken, &key),
            format!("the test file {} is not valid PEM", broken.display())
        );
        assert!(read(&cert, &cert).starts_with(&format!(
            "the key {} holds no PEM private key",
            cert.display()
        )),);
        assert_eq!(
            read(&cert, &other_key),
            format!(
                "the certificate {} and the key {} cannot be used together",
                cert.display(),
                other_key.display()
            )
        );
        let ca = PemFile::read(&not_pem, "the CA file").expect("readable");
        assert!(matches!(
            ca.trust_anchors(),
            Err(TlsError::NoCertificate { .. })
        ));
    }

    #[test]
    fn a_file_above_the_cap_is_refused_without_reading_it_all() {
        let err = PemFile::read(Path::new("/dev/zero"), WHAT).expect_err("endless");
        assert!(matches!(err, TlsError::TooLarge { .. }), "{err:?}");
    }
}
