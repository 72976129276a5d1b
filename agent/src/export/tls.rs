//! TLS of the OTLP export: an `https://` endpoint is reached over rustls (ring), trusting only
//! the CAs of the CA file and presenting the client certificate when one is given; over gRPC
//! through tonic's TLS, over HTTP through a hyper client with a rustls connector.
//!
//! No system or bundled roots are built in: an `https://` endpoint needs the CA file.

use super::ExportError;
use crate::tls::{self, KeyPair, PemFile};
use opentelemetry_http::HttpClient;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::tonic_types::transport::{ClientTlsConfig, Identity};
use rustls::RootCertStore;
use std::path::PathBuf;
use std::time::Duration;

const CA_FILE: &str = "the OTLP CA file (--otlp-ca-file)";
const CLIENT_CERT_FILE: &str = "the OTLP client certificate (--otlp-client-cert-file)";
const CLIENT_KEY_FILE: &str = "the OTLP client key (--otlp-client-key-file)";

/// The TLS files of the export; all `None` by default (plain text endpoints only). They are
/// read once, when the exporter is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportTls {
    /// CA certificates (PEM) the collector's certificate must chain to. Required for an
    /// `https://` endpoint.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM, the certificate first, then its intermediates) presented to
    /// the collector, with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

impl ExportTls {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// A client certificate comes with its key, and a key with its certificate.
    pub(super) fn validate(&self) -> Result<(), ExportError> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ExportError::Setting {
                setting: "tls",
                reason: "a client certificate needs its key, and a key its certificate",
            });
        }
        Ok(())
    }
}

/// What an `https://` endpoint is reached with, read from the files.
#[derive(Debug)]
pub(super) struct CollectorTls {
    roots: RootCertStore,
    identity: Option<KeyPair>,
}

impl CollectorTls {
    /// The TLS of `url` (the endpoint with its scheme): `None` for `http://`. An `https://`
    /// endpoint without a CA file, or TLS files with an `http://` endpoint, is an error.
    pub(super) fn for_endpoint(url: &str, files: &ExportTls) -> Result<Option<Self>, ExportError> {
        let uri: http::Uri = url.parse().map_err(|source| ExportError::Endpoint {
            endpoint: url.to_owned(),
            source,
        })?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return match files.is_empty() {
                true => Ok(None),
                false => Err(ExportError::TlsWithoutHttps {
                    endpoint: url.to_owned(),
                }),
            };
        }
        files.validate()?;
        let Some(ca_file) = &files.ca_file else {
            return Err(ExportError::HttpsWithoutCa {
                endpoint: url.to_owned(),
            });
        };
        let roots = PemFile::read(ca_file, CA_FILE)?.trust_anchors()?;
        let identity = match (&files.client_cert_file, &files.client_key_file) {
            (Some(cert), Some(key)) => {
                Some(KeyPair::read(cert, CLIENT_CERT_FILE, key, CLIENT_KEY_FILE)?)
            }
            _ => None,
        };
        Ok(Some(Self { roots, identity }))
    }

    /// tonic's TLS settings: the CA's anchors only, and the client certificate.
    pub(super) fn grpc(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().trust_anchors(self.roots.roots.iter().cloned());
        match &self.identity {
            Some(pair) => config.identity(Identity::from_pem(
                &pair.cert_pem.bytes,
                &pair.key_pem.bytes,
            )),
            None => config,
        }
    }

    /// An HTTP/1 client that speaks only https, with this TLS; its requests time out after
    /// `timeout`.
    pub(super) fn http_client(
        &self,
        timeout: Duration,
    ) -> Result<impl HttpClient + 'static, ExportError> {
        let config = tls::client_config(self.roots.clone(), self.identity.as_ref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        Ok(HyperClient::new(connector, timeout, None))
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
