//! Export settings, their defaults, and the `--otlp-header key=value` parser.

use super::{ExportError, ExportTls};
use http::{HeaderName, HeaderValue};
use std::fmt;
use std::time::Duration;

/// The OTLP transport.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (the collector's port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (the collector's port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Where and how spans are pushed. Every field has a default ([`ExportConfig::default`]); the
/// daemon sets at least `endpoint` and `node_name`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportConfig {
    /// The collector. gRPC: `http://host:4317` (`host:4317` gets `http://`). HTTP: a base URL
    /// (`http://host:4318`, to which `/v1/traces` is added) or the full URL of the traces path.
    /// Default `http://localhost:4317`. `https://` uses TLS with the CA of `tls` (required).
    pub endpoint: String,
    /// Default gRPC.
    pub protocol: Protocol,
    /// Sent with every request (gRPC metadata or HTTP headers), e.g. an authorization token.
    /// Default none.
    pub headers: Vec<(String, String)>,
    /// Time limit of one export request. Default 10 s.
    pub timeout: Duration,
    /// Spans waiting to be batched; when full, new spans are dropped and counted. Default 65536.
    pub queue_capacity: usize,
    /// Bytes the spans waiting for export may hold, queued or to be retried (by
    /// `Span::approx_bytes`); beyond, new spans are dropped and counted as queue-full.
    pub max_bytes: usize,
    /// Most spans in one export request. Default 512.
    pub max_batch: usize,
    /// Longest time a span waits for its batch to fill. Default 1 s.
    pub max_delay: Duration,
    /// Spans kept for (re)sending while the collector fails; beyond it they are dropped and
    /// counted. Default 65536.
    pub retry_capacity: usize,
    /// First delay before retrying a failed export; it doubles after each failure. Default 100 ms.
    pub retry_initial: Duration,
    /// Longest delay between retries. Default 30 s.
    pub retry_max: Duration,
    /// How long [`super::ExportHandle::shutdown`] may spend sending what is left. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Resource attribute `k8s.cluster.name`, left out when `None`. Default `None`.
    pub cluster_name: Option<String>,
    /// Resource attribute `k8s.node.name`, left out when empty. Default empty.
    pub node_name: String,
    /// Resource attribute `host.name`, left out when empty. Default empty.
    pub host_name: String,
    /// The CA file and client certificate of an `https://` endpoint. Default none.
    pub tls: ExportTls,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://localhost:4317".to_owned(),
            protocol: Protocol::Grpc,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            queue_capacity: 65_536,
            max_bytes: 16 << 20,
            max_batch: 512,
            max_delay: Duration::from_secs(1),
            retry_capacity: 65_536,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            cluster_name: None,
            node_name: String::new(),
            host_name: String::new(),
            tls: ExportTls::default(),
        }
    }
}

impl ExportConfig {
    /// Rejects settings the task cannot work with (zero sizes or durations, bad headers).
    pub fn validate(&self) -> Result<(), ExportError> {
        const AT_LEAST_ONE: &str = "must be at least 1";
        let sizes = [
            ("queue_capacity", self.queue_capacity),
            ("max_bytes", self.max_bytes),
            ("max_batch", self.max_batch),
            ("retry_capacity", self.retry_capacity),
        ];
        if let Some((setting, _)) = sizes.into_iter().find(|(_, size)| *size == 0) {
            return Err(ExportError::Setting {
                setting,
                reason: AT_LEAST_ONE,
            });
        }
        if self.timeout.is_zero() {
            return Err(ExportError::Setting {
                setting: "timeout",
                reason: "must be longer than zero",
            });
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(ExportError::Setting {
                setting: "retry_initial",
                reason: "must be longer than zero and at most retry_max",
            });
        }
        self.tls.validate()?;
        header_pairs(&self.headers).map(drop)
    }
}

/// Parses one `--otlp-header` value, `key=value`: the key is trimmed and lower-cased, the value
/// trimmed; both must be valid in an HTTP header (and so in gRPC metadata).
pub fn parse_header(text: &str) -> Result<(String, String), ExportError> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(ExportError::HeaderSyntax {
            text: text.to_owned(),
        });
    };
    let value = value.trim();
    let (name, _) = header_pair(key.trim(), value)?;
    Ok((name.as_str().to_owned(), value.to_owned()))
}

/// The headers as typed HTTP header names and values.
pub(super) fn header_pairs(
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, ExportError> {
    headers
        .iter()
        .map(|(key, value)| header_pair(key, value))
        .collect()
}

fn header_pair(key: &str, value: &str) -> Result<(HeaderName, HeaderValue), ExportError> {
    let name =
        HeaderName::from_bytes(key.as_bytes()).map_err(|source| ExportError::HeaderName {
            name: key.to_owned(),
            source,
        })?;
    let value = HeaderValue::from_str(value).map_err(|source| ExportError::HeaderValue {
        name: key.to_owned(),
        source,
    })?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_headers() {
        let parsed = parse_header(" Authorization = Bearer abc=def ").unwrap();
        assert_eq!(
            parsed,
            ("authorization".to_owned(), "Bearer abc=def".to_owned())
        );
        assert_eq!(
            parse_header("x-tenant=").unwrap(),
            ("x-tenant".to_owned(), String::new())
        );
    }

    #[test]
    fn header_errors_say_what_is_wrong() {
        let missing = parse_header("authorization").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "otlp header `authorization` is not of the form key=value"
        );
        let name = parse_header("bad name=x").unwrap_err();
        assert_eq!(name.to_string(), "invalid otlp header name `bad name`");
        assert!(std::error::Error::source(&name).is_some());
        let empty = parse_header("=x").unwrap_err();
        assert!(matches!(empty, ExportError::HeaderName { .. }), "{empty:?}");
        let value = parse_header("k=a\u{7}b").unwrap_err();
        assert_eq!(value.to_string(), "invalid value for otlp header `k`");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = ExportConfig::default();
        assert_eq!(config.queue_capacity, 65_536);
        assert_eq!(config.max_batch, 512);
        assert_eq!(config.max_delay, Duration::from_secs(1));
        assert_eq!(config.protocol, Protocol::Grpc);
        config.validate().unwrap();
    }

    #[test]
    fn validate_rejects_zero_sizes_and_bad_headers() {
        let config = ExportConfig {
            max_batch: 0,
            ..ExportConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid export setting `max_batch`: must be at least 1"
        );
        let config = ExportConfig {
            headers: vec![("a b".to_owned(), "c".to_owned())],
            ..ExportConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ExportError::HeaderName { .. })
        ));
    }
}
