//! OTLP push of finished spans to any OpenTelemetry collector, over gRPC or HTTP/protobuf.
//!
//! [`Exporter::start`] spawns one task fed by a bounded queue: [`ExportSink::send`] never waits
//! (a full queue drops the span and counts it). The task batches spans (by size or delay),
//! converts them to the SDK's `SpanData` with the agent's own trace and span ids, and exports
//! them through opentelemetry-otlp's `SpanExporter`, one resource per service. While the
//! collector is down it retries with exponential backoff, keeping unsent spans up to a bound.
//! [`ExportHandle`] reads the counters and shuts the task down with a deadline.

mod backoff;
mod client;
mod config;
mod convert;
mod outbox;
mod pipeline;
mod stats;
mod tls;
mod worker;

pub use config::{ExportConfig, Protocol, parse_header};
pub use pipeline::{ExportHandle, ExportSink, Exporter};
pub use stats::ExportStats;
pub use tls::ExportTls;

use thiserror::Error;

/// What can go wrong configuring, starting or stopping the export.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("otlp header `{text}` is not of the form key=value")]
    HeaderSyntax { text: String },

    #[error("invalid otlp header name `{name}`")]
    HeaderName {
        name: String,
        #[source]
        source: http::header::InvalidHeaderName,
    },

    #[error("invalid value for otlp header `{name}`")]
    HeaderValue {
        name: String,
        #[source]
        source: http::header::InvalidHeaderValue,
    },

    #[error("invalid otlp endpoint `{endpoint}`")]
    Endpoint {
        endpoint: String,
        #[source]
        source: http::uri::InvalidUri,
    },

    #[error("invalid export setting `{setting}`: {reason}")]
    Setting {
        setting: &'static str,
        reason: &'static str,
    },

    #[error(
        "otlp endpoint `{endpoint}` is https: give the CA that signs the collector's \
         certificate (--otlp-ca-file); no system roots are built in"
    )]
    HttpsWithoutCa { endpoint: String },

    #[error(
        "otlp endpoint `{endpoint}` is not https: the TLS files (--otlp-ca-file, \
         --otlp-client-cert-file) apply to https:// endpoints only"
    )]
    TlsWithoutHttps { endpoint: String },

    #[error(transparent)]
    Tls {
        #[from]
        source: crate::tls::TlsError,
    },

    #[error("cannot build the otlp {protocol} exporter")]
    Build {
        protocol: Protocol,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },

    #[error("the otlp exporter must be started inside a tokio runtime")]
    NoRuntime {
        #[source]
        source: tokio::runtime::TryCurrentError,
    },

    #[error("the otlp export task failed")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
}

#[cfg(test)]
mod tests;
