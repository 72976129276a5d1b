//! OTLP over TLS to in-process collectors that require a client certificate signed by a
//! throwaway CA: a tonic OTLP/gRPC trace service, and an OTLP/HTTP receiver served by the API's
//! own TLS server. Spans arrive with the client certificate; without it, or without trusting the
//! collector's CA, nothing does. Bad TLS settings are start-up errors.

use super::*;
use crate::api::ServeLimits;
use crate::api::format::fixtures;
use crate::export::{ExportConfig, ExportHandle, ExportStats, Exporter, Protocol};
use crate::tls::test_pki::Pki;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};

/// Long enough for anything that should happen to happen on a loaded machine.
const WITHIN: Duration = Duration::from_secs(10);

/// What a collector was sent, by requests that got through TLS.
#[derive(Debug, Default)]
struct Received {
    span_ids: BTreeSet<String>,
    /// Requests whose connection presented a client certificate (gRPC only: tonic tells).
    with_client_certificate: usize,
}

type Shared = Arc<Mutex<Received>>;

fn record(received: &Shared, request: &ExportTraceServiceRequest) {
    let mut received = received.lock().expect("lock");
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans);
    for span in spans {
        let hex: String = span.span_id.iter().map(|b| format!("{b:02x}")).collect();
        received.span_ids.insert(hex);
    }
}

struct GrpcTraces {
    received: Shared,
}

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            self.received.lock().expect("lock").with_client_certificate += 1;
        }
        record(&self.received, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_traces(State(received): State<Shared>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            record(&received, &request);
            (
                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err(err) => (http::StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    }
}

/// A collector on 127.0.0.1 with the server certificate of `pki`, requiring a client
/// certificate signed by its CA; it stops when dropped.
struct Collector {
    endpoint: String,
    received: Shared,
    _stop: oneshot::Sender<()>,
}

impl Collector {
    async fn start(protocol: Protocol, pki: &Pki) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("https://{}", listener.local_addr().expect("address"));
        let received = Shared::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        match protocol {
            Protocol::Grpc => {
                let tls = ServerTlsConfig::new()
                    .identity(Identity::from_pem(
                        &pki.server_cert_pem,
                        &pki.server_key_pem,
                    ))
                    .client_ca_root(Certificate::from_pem(&pki.ca_pem));
                let service = TraceServiceServer::new(GrpcTraces {
                    received: received.clone(),
                });
                let server = Server::builder()
                    .tls_config(tls)
                    .expect("server TLS")
                    .add_service(service);
                tokio::spawn(async move {
                    let incoming = TcpIncoming::from(listener);
                    if let Err(err) = server.serve_with_incoming_shutdown(incoming, stopped).await {
                        panic!("the gRPC collector failed: {err}");
                    }
                });
            }
            Protocol::HttpProtobuf => {
                let app = Router::new()
                    .route("/v1/traces", post(http_traces))
                    .with_state(received.clone());
                let acceptor =
                    tokio_rustls::TlsAcceptor::from(Arc::new(requiring_client_certs(pki)));
                tokio::spawn(async move {
                    crate::api::serve::serve_tls(
                        listener,
                        acceptor,
                        app,
                        &ServeLimits::default(),
                        stopped,
                    )
                    .await;
                });
            }
        }
        Self {
            endpoint,
            received,
            _stop: stop,
        }
    }

    fn span_ids(&self) -> BTreeSet<String> {
        self.received.lock().expect("lock").span_ids.clone()
    }
}

/// The HTTP collector's TLS: the server certificate, and client certificates of the CA only.
fn requiring_client_certs(pki: &Pki) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA"))
        .expect("trust anchor");
    let provider = Arc::new(crate::tls::ring());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).expect("key"),
        )
        .expect("server config")
}

/// The CA file of `trusted`, and the client certificate of `client` when given, in `dir`.
fn files(dir: &Path, trusted: &Pki, client: Option<&Pki>) -> ExportTls {
    let ca_file = Some(trusted.write_ca(dir));
    match client {
        Some(pki) => {
            let (cert, key) = pki.write_client(dir);
            ExportTls {
                ca_file,
                client_cert_file: Some(cert),
                client_key_file: Some(key),
            }
        }
        None => ExportTls {
            ca_file,
            ..ExportTls::default()
        },
    }
}

fn config(protocol: Protocol, endpoint: &str, tls: ExportTls) -> ExportConfig {
    ExportConfig {
        endpoint: endpoint.to_owned(),
        protocol,
        tls,
        timeout: Duration::from_secs(2),
        max_delay: Duration::from_millis(50),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        shutdown_timeout: Duration::from_millis(500),
        node_name: "node-a".to_owned(),
        ..ExportConfig::default()
    }
}

/// Queues the fixture pod's spans; their ids.
fn send_pod_trace(handle: &crate::export::ExportSink) -> BTreeSet<String> {
    fixtures::pod_trace()
        .into_iter()
        .map(|span| {
            let id = span.span_id.to_hex();
            assert!(handle.send(span), "queued");
            id
        })
        .collect()
}

async fn wait_for(handle: &ExportHandle, what: &str, done: impl Fn(&ExportStats) -> bool) {
    let until = tokio::time::Instant::now() + WITHIN;
    while !done(&handle.stats()) {
        assert!(
            tokio::time::Instant::now() < until,
            "{what} within {WITHIN:?}; stats {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn spans_arrive(protocol: Protocol) {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let collector = Collector::start(protocol, &pki).await;
    let tls = files(dir.path(), &pki, Some(&pki));
    let (sink, handle) =
        Exporter::start(config(protocol, &collector.endpoint, tls)).expect("exporter starts");
    let sent = send_pod_trace(&sink);
    wait_for(&handle, "every span exported", |s| {
        s.exported_spans == sent.len() as u64
    })
    .await;
    let stats = handle.shutdown().await.expect("export task ends");
    assert_eq!(stats.failed_exports, 0, "{stats:?}");
    assert_eq!(collector.span_ids(), sent);
    if protocol == Protocol::Grpc {
        assert!(
            collector
                .received
                .lock()
                .expect("lock")
                .with_client_certificate
                > 0,
            "the collector saw the client certificate"
        );
    }
}

/// Nothing arrives: every export fails at the TLS layer.
async fn refused(protocol: Protocol, collector_pki: &Pki, tls: ExportTls) {
    let collector = Collector::start(protocol, collector_pki).await;
    let (sink, handle) =
        Exporter::start(config(protocol, &collector.endpoint, tls)).expect("exporter starts");
    send_pod_trace(&sink);
    wait_for(&handle, "two failed exports", |s| s.failed_exports >= 2).await;
    let stats = handle.shutdown().await.expect("export task ends");
    assert_eq!(stats.exported_spans, 0, "{protocol}: {stats:?}");
    assert!(collector.span_ids().is_empty(), "{protocol}: spans arrived");
}

#[tokio::test]
async fn spans_arrive_over_grpc_with_tls_and_a_client_certificate() {
    spans_arrive(Protocol::Grpc).await;
}

#[tokio::test]
async fn spans_arrive_over_http_protobuf_with_tls_and_a_client_certificate() {
    spans_arrive(Protocol::HttpProtobuf).await;
}

#[tokio::test]
async fn a_collector_that_requires_a_client_certificate_refuses_an_exporter_without_one() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        refused(protocol, &pki, files(dir.path(), &pki, None)).await;
    }
}

#[tokio::test]
async fn an_exporter_refuses_a_collector_whose_certificate_another_ca_signed() {
    let (collector_pki, other) = (Pki::new(), Pki::new());
    let (dir, other_dir) = (tempfile::tempdir(), tempfile::tempdir());
    let (dir, other_dir) = (dir.expect("temp dir"), other_dir.expect("temp dir"));
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        // The client certificate is one the collector accepts: only the server's is in question.
        let mut tls = files(dir.path(), &collector_pki, Some(&collector_pki));
        tls.ca_file = Some(other.write_ca(other_dir.path()));
        refused(protocol, &collector_pki, tls).await;
    }
}

#[tokio::test]
async fn https_without_a_ca_file_and_tls_files_with_plain_http_are_start_up_errors() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let no_ca = config(protocol, "https://collector:4317", ExportTls::default());
        let err = Exporter::start(no_ca).expect_err("https needs a CA");
        assert!(matches!(err, ExportError::HttpsWithoutCa { .. }), "{err:?}");
        assert!(err.to_string().contains("--otlp-ca-file"), "{err}");

        for plain in ["http://collector:4317", "collector:4317"] {
            let tls = files(dir.path(), &pki, None);
            let err = Exporter::start(config(protocol, plain, tls)).expect_err("not https");
            assert!(
                matches!(err, ExportError::TlsWithoutHttps { .. }),
                "{err:?}"
            );
        }

        let mut half = files(dir.path(), &pki, Some(&pki));
        half.client_key_file = None;
        let err = Exporter::start(config(protocol, "https://collector:4317", half))
            .expect_err("a certificate without its key");
        assert!(
            matches!(err, ExportError::Setting { setting: "tls", .. }),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_tls_file_is_a_start_up_error_naming_it() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "hello\n").expect("write");
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let mut tls = files(dir.path(), &pki, Some(&pki));
        tls.ca_file = Some(not_a_ca.clone());
        let err = Exporter::start(config(protocol, "https://collector:4317", tls))
            .expect_err("no CA in the file");
        assert_eq!(
            err.to_string(),
            format!(
                "the OTLP CA file (--otlp-ca-file) {} holds no PEM certificate (`BEGIN \
                 CERTIFICATE`)",
                not_a_ca.display()
            )
        );

        let mut tls = files(dir.path(), &pki, Some(&pki));
        let missing = dir.path().join("missing.key");
        tls.client_key_file = Some(missing.clone());
        let err = Exporter::start(config(protocol, "https://collector:4317", tls))
            .expect_err("no key file");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read the OTLP client key (--otlp-client-key-file) {}",
                missing.display()
            )
        );
    }
}
