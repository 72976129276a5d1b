//! The API over TLS, on real TCP connections on the loopback address, with a throwaway CA: the
//! CLI's client that trusts the CA gets answers, others get none, and clients that never finish
//! the handshake or their request hold a connection only for a bounded time. Times are only
//! generous upper bounds on "answers at all" (or lower bounds on "waits"), never performance.

use super::*;
use crate::api::client::{Client, ClientError, DEFAULT_TIMEOUT, TraceQuery};
use crate::api::format::fixtures;
use crate::api::{ApiState, PodSelector, Readiness, router};
use crate::store::{Store, StoreConfig};
use crate::tls::test_pki::Pki;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Long enough for anything that should happen to happen on a loaded machine.
const ANSWERS_WITHIN: Duration = Duration::from_secs(5);
const TOKEN: &str = "s3cret";
/// What a slowloris client sends once its handshake is done, and then nothing more.
const HALF_REQUEST: &[u8] = b"GET /api/traces HTTP/1.1\r\nHost:";
/// The start of a TLS record that announces a 512-byte ClientHello, and then nothing more.
const HALF_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00];

/// An agent API over TLS with the server certificate of its PKI.
struct TlsServer {
    pki: Pki,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    /// The agent's API over a store holding the fixture pod's spans, behind [`TOKEN`], served
    /// over TLS with the bounds of `limits`, the acceptor built from files as the daemon does.
    async fn start(limits: ServeLimits) -> Self {
        let pki = Pki::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = pki.write_server(dir.path());
        let acceptor = crate::tls::api_acceptor(Some(&cert), Some(&key))
            .expect("TLS files")
            .expect("TLS is on");
        let store = Store::open(&dir.path().join("store"), StoreConfig::default()).expect("store");
        store.put_batch(&fixtures::pod_trace()).expect("put spans");
        let readiness = Readiness::new();
        readiness.set_ready("store");
        let app = router(ApiState::new(store, readiness, Some(TOKEN.to_owned())));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let app = bound_requests(app, &limits);
            serve_tls(listener, acceptor, app, &limits, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            pki,
            addr,
            stop,
            task,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn ca(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from_pem_slice(self.pki.ca_pem.as_bytes()).expect("CA")]
    }

    /// A TLS connection that trusts the CA, handshake done.
    async fn connect(&self) -> TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca().remove(0)).expect("trust anchor");
        let config = crate::tls::client_config(roots, None).expect("client config");
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("server name");
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake")
    }
}

fn pod_query() -> TraceQuery {
    TraceQuery {
        pod: PodSelector::Name {
            namespace: "default".to_owned(),
            name: "web-0".to_owned(),
        },
        start_us: Some((fixtures::T0 - 60_000_000_000) / 1000),
        end_us: Some((fixtures::T0 + 60_000_000_000) / 1000),
        limit: None,
    }
}

/// `/healthz` over https with reqwest, trusting `ca`.
async fn healthz(addr: SocketAddr, ca: &[CertificateDer<'static>]) -> reqwest::Result<String> {
    let mut client = reqwest::Client::builder().timeout(ANSWERS_WITHIN);
    for certificate in ca {
        client = client.add_root_certificate(reqwest::Certificate::from_der(certificate)?);
    }
    let url = format!("https://127.0.0.1:{}/healthz", addr.port());
    client.build()?.get(url).send().await?.text().await
}

/// `what` completed within [`ANSWERS_WITHIN`].
async fn promptly<T>(what: &str, answer: impl Future<Output = T>) -> T {
    timeout(ANSWERS_WITHIN, answer)
        .await
        .unwrap_or_else(|_| panic!("{what} got no answer within {ANSWERS_WITHIN:?}"))
}

/// The bytes the server sent before it closed the connection (a reset or a TLS error counts
/// as closed), or `None` when it is still open after `wait`.
async fn ending<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match timeout(wait, stream.read_to_end(&mut bytes)).await {
        Ok(_) => Some(bytes),
        Err(_) => None,
    }
}

async fn all_end<S: tokio::io::AsyncRead + Unpin>(streams: &mut [S], wait: Duration) -> Vec<bool> {
    futures::future::join_all(streams.iter_mut().map(|s| ending(s, wait)))
        .await
        .iter()
        .map(Option::is_some)
        .collect()
}

/// `count` TCP connections to `addr`, each having sent `first` (maybe nothing).
async fn raw_connections(addr: SocketAddr, count: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for n in 0..count {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        stream
            .write_all(first)
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        streams.push(stream);
    }
    streams
}

/// `count` TLS connections that finished their handshake and sent half a request.
async fn tls_half_requests(server: &TlsServer, count: usize) -> Vec<TlsStream<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    for n in 0..count {
        let mut stream = server.connect().await;
        stream
            .write_all(HALF_REQUEST)
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        stream
            .flush()
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        streams.push(stream);
    }
    streams
}

#[tokio::test]
async fn the_api_over_tls_answers_healthz_and_a_trace_query_to_a_client_that_trusts_the_ca() {
    let server = TlsServer::start(ServeLimits::default()).await;
    let health = promptly("/healthz", healthz(server.addr, &server.ca())).await;
    assert_eq!(health.expect("/healthz over https"), "ok");

    let client = Client::trusting(
        &server.url(),
        Some(TOKEN.to_owned()),
        DEFAULT_TIMEOUT,
        &server.ca(),
    )
    .expect("client");
    let traces = promptly("/api/traces", client.traces(&pod_query()))
        .await
        .expect("the pod's traces over https");
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].spans.len(), fixtures::pod_trace().len());

    let no_token =
        Client::trusting(&server.url(), None, DEFAULT_TIMEOUT, &server.ca()).expect("client");
    match promptly("/api/traces without a token", no_token.traces(&pod_query())).await {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("TLS does not replace the token: {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused_and_plain_http_gets_no_answer() {
    let server = TlsServer::start(ServeLimits::default()).await;
    let other_ca =
        vec![CertificateDer::from_pem_slice(Pki::new().ca_pem.as_bytes()).expect("another CA")];
    let stranger = Client::trusting(
        &server.url(),
        Some(TOKEN.to_owned()),
        DEFAULT_TIMEOUT,
        &other_ca,
    )
    .expect("client");
    match promptly("a client of another CA", stranger.traces(&pod_query())).await {
        Err(err @ ClientError::Request { .. }) => {
            let chain = crate::correlate::error_chain(&err);
            assert!(chain.contains("certificate"), "{chain}");
        }
        other => panic!("a client of another CA got {other:?}"),
    }
    let refused = promptly("/healthz of another CA", healthz(server.addr, &other_ca)).await;
    assert!(refused.is_err(), "{refused:?}");

    let mut plain = raw_connections(
        server.addr,
        1,
        b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = promptly("plain HTTP", ending(&mut plain[0], ANSWERS_WITHIN))
        .await
        .expect("closed");
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "plain HTTP got an HTTP answer: {answer:?}"
    );

    let health = promptly("/healthz", healthz(server.addr, &server.ca())).await;
    assert_eq!(health.expect("a trusting client still gets answers"), "ok");
}

#[tokio::test]
async fn connections_that_never_finish_the_tls_handshake_are_closed_after_the_handshake_timeout() {
    let server = TlsServer::start(ServeLimits {
        tls_handshake_timeout: Duration::from_secs(1),
        // Far longer than the test: only the handshake timeout can close these connections.
        header_read_timeout: Duration::from_secs(600),
        ..ServeLimits::default()
    })
    .await;
    let mut silent = raw_connections(server.addr, 200, b"").await;
    let mut half_hellos = raw_connections(server.addr, 50, HALF_CLIENT_HELLO).await;
    assert!(
        all_end(&mut silent[..1], Duration::from_millis(50))
            .await
            .iter()
            .all(|ended| !ended),
        "a silent connection is open before the handshake timeout"
    );
    let health = promptly("/healthz", healthz(server.addr, &server.ca())).await;
    assert_eq!(health.expect("served while handshakes are pending"), "ok");

    for (what, ended) in [
        ("silent", all_end(&mut silent, ANSWERS_WITHIN).await),
        (
            "half ClientHello",
            all_end(&mut half_hellos, ANSWERS_WITHIN).await,
        ),
    ] {
        assert!(
            ended.iter().all(|e| *e),
            "{} {what} connections still open after {ANSWERS_WITHIN:?}",
            ended.iter().filter(|e| !**e).count()
        );
    }
}

#[tokio::test]
async fn a_connection_without_a_handshake_holds_its_slot_only_until_the_handshake_timeout() {
    let server = TlsServer::start(ServeLimits {
        max_connections: 1,
        tls_handshake_timeout: Duration::from_millis(500),
        ..ServeLimits::default()
    })
    .await;
    let _silent = raw_connections(server.addr, 1, b"").await;
    let ca = server.ca();
    let addr = server.addr;
    let mut waiting = tokio::spawn(async move { healthz(addr, &ca).await });
    assert!(
        timeout(Duration::from_millis(200), &mut waiting)
            .await
            .is_err(),
        "a second connection waits while the only slot is held"
    );
    let health = promptly("/healthz once the silent one timed out", waiting)
        .await
        .expect("client task");
    assert_eq!(health.expect("/healthz"), "ok");
}

#[tokio::test]
async fn tls_half_requests_are_closed_after_the_header_read_timeout() {
    let server = TlsServer::start(ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServeLimits::default()
    })
    .await;
    let mut slow = tls_half_requests(&server, 50).await;
    let ended = all_end(&mut slow, ANSWERS_WITHIN).await;
    assert!(
        ended.iter().all(|e| *e),
        "{} half requests still open after {ANSWERS_WITHIN:?}",
        ended.iter().filter(|e| !**e).count()
    );
    let health = promptly("/healthz", healthz(server.addr, &server.ca())).await;
    assert_eq!(health.expect("/healthz"), "ok");
}

#[tokio::test]
async fn queries_over_tls_answer_while_slow_clients_are_held_and_shutdown_ends_in_time() {
    let server = TlsServer::start(ServeLimits {
        // Far longer than the test: every slow client is still there at shutdown.
        header_read_timeout: Duration::from_secs(600),
        tls_handshake_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(1),
        ..ServeLimits::default()
    })
    .await;
    let mut half_requests = tls_half_requests(&server, 100).await;
    let mut silent = raw_connections(server.addr, 200, b"").await;

    let client = Client::trusting(
        &server.url(),
        Some(TOKEN.to_owned()),
        DEFAULT_TIMEOUT,
        &server.ca(),
    )
    .expect("client");
    let traces = promptly("/api/traces", client.traces(&pod_query()))
        .await
        .expect("traces while slow clients are held");
    assert_eq!(traces[0].spans.len(), fixtures::pod_trace().len());

    let _ = server.stop.send(());
    promptly("shutdown with slow clients open", server.task)
        .await
        .expect("the server task");
    let ended = all_end(&mut half_requests, ANSWERS_WITHIN).await;
    assert!(
        ended.iter().all(|e| *e),
        "shutdown closed every half request"
    );
    let ended = all_end(&mut silent, ANSWERS_WITHIN).await;
    assert!(
        ended.iter().all(|e| *e),
        "shutdown closed every pending handshake"
    );
}

#[test]
fn tls_files_go_in_pairs() {
    use clap::Parser as _;
    let parse = |flags: &[&str]| {
        let args = ["nodetrace", "agent"].iter().chain(flags);
        crate::cli::Cli::try_parse_from(args).map(drop)
    };
    for (given, missing) in [
        ("--tls-cert-file", "--tls-key-file"),
        ("--tls-key-file", "--tls-cert-file"),
        ("--otlp-client-cert-file", "--otlp-client-key-file"),
        ("--otlp-client-key-file", "--otlp-client-cert-file"),
    ] {
        let err = parse(&[given, "a.pem"]).expect_err("half a pair");
        assert!(err.to_string().contains(missing), "{given}: {err}");
        parse(&[given, "a.pem", missing, "b.pem"]).expect("a pair");
    }
    assert!(matches!(
        crate::tls::api_acceptor(Some(Path::new("a.pem")), None),
        Err(crate::tls::TlsError::HalfPair)
    ));
    assert!(matches!(crate::tls::api_acceptor(None, None), Ok(None)));
}

#[tokio::test]
async fn a_bad_tls_file_stops_the_agent_at_start_naming_it() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, _) = Pki::new().write_server(dir.path());
    let missing = dir.path().join("missing.key");
    let data = dir.path().join("data");
    let cli = crate::cli::Cli::try_parse_from([
        OsStr::new("nodetrace"),
        OsStr::new("agent"),
        OsStr::new("--tls-cert-file"),
        cert.as_os_str(),
        OsStr::new("--tls-key-file"),
        missing.as_os_str(),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ])
    .expect("flags");
    let crate::cli::Command::Agent(args) = cli.command else {
        panic!("not the agent command");
    };
    let err = crate::daemon::run_until(args, std::future::pending())
        .await
        .expect_err("a missing key file");
    assert_eq!(
        format!("{err:#}"),
        format!(
            "cannot read the API key (--tls-key-file) {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert!(
        !data.exists(),
        "nothing was started before the TLS files were read"
    );
}
