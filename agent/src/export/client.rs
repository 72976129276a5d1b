//! The opentelemetry-otlp `SpanExporter` for the configured endpoint, protocol and headers.
//!
//! Its own retries are turned off: the export task retries with its own backoff and counts.
//! An `https://` endpoint gets the TLS of [`CollectorTls`].

use super::config::header_pairs;
use super::tls::CollectorTls;
use super::{ExportConfig, ExportError, Protocol};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    RetryPolicy, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use std::collections::HashMap;

/// The path of the traces signal on an OTLP/HTTP receiver.
const HTTP_TRACES_PATH: &str = "/v1/traces";

/// Builds the exporter, reading the TLS files of an `https://` endpoint. The gRPC channel
/// connects lazily, so a collector that is down is not an error here. Needs a tokio runtime.
pub(super) fn build(config: &ExportConfig) -> Result<SpanExporter, ExportError> {
    let headers = header_pairs(&config.headers)?;
    let built = match config.protocol {
        Protocol::Grpc => {
            let endpoint = grpc_endpoint(&config.endpoint);
            let tls = CollectorTls::for_endpoint(&endpoint, &config.tls)?;
            let metadata = MetadataMap::from_headers(headers.into_iter().collect());
            let builder = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(config.timeout)
                .with_metadata(metadata)
                .with_retry_policy(RetryPolicy::disabled());
            match tls {
                Some(tls) => builder.with_tls_config(tls.grpc()).build(),
                None => builder.build(),
            }
        }
        Protocol::HttpProtobuf => {
            let endpoint = http_endpoint(&config.endpoint)?;
            let tls = CollectorTls::for_endpoint(&endpoint, &config.tls)?;
            let headers: HashMap<String, String> = headers
                .into_iter()
                .zip(&config.headers)
                .map(|((name, _), (_, value))| (name.as_str().to_owned(), value.clone()))
                .collect();
            let builder = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(config.timeout)
                .with_headers(headers)
                .with_retry_policy(RetryPolicy::disabled());
            match tls {
                Some(tls) => builder
                    .with_http_client(tls.http_client(config.timeout)?)
                    .build(),
                None => builder.build(),
            }
        }
    };
    built.map_err(|source| ExportError::Build {
        protocol: config.protocol,
        source,
    })
}

/// `host:port` becomes `http://host:port`; URLs with a scheme are kept.
fn grpc_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// A base URL (no path) gets `/v1/traces`; a URL with a path is the traces URL already.
fn http_endpoint(endpoint: &str) -> Result<String, ExportError> {
    let with_scheme = grpc_endpoint(endpoint);
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|source| ExportError::Endpoint {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(match uri.path() {
        "" | "/" => format!("{}{HTTP_TRACES_PATH}", with_scheme.trim_end_matches('/')),
        _ => with_scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_the_traces_path() {
        assert_eq!(grpc_endpoint("collector:4317"), "http://collector:4317");
        assert_eq!(grpc_endpoint("https://c:4317"), "https://c:4317");
        assert_eq!(
            http_endpoint("http://c:4318").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(http_endpoint("c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(
            http_endpoint("http://c/otlp/v1/traces").unwrap(),
            "http://c/otlp/v1/traces"
        );
        assert!(matches!(
            http_endpoint("http://bad host"),
            Err(ExportError::Endpoint { .. })
        ));
    }

    #[tokio::test]
    async fn builds_both_protocols_without_a_collector() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let config = ExportConfig {
                endpoint: "127.0.0.1:9".to_owned(),
                protocol,
                headers: vec![("authorization".to_owned(), "Bearer t".to_owned())],
                ..ExportConfig::default()
            };
            build(&config).unwrap();
        }
    }
}
