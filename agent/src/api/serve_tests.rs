//! The server's bounds, over real TCP connections on the loopback address. Times are only
//! generous upper bounds on "answers at all" (or lower bounds on "waits"), never performance.

use super::*;
use crate::api::format::fixtures;
use crate::api::{ApiState, Readiness, router};
use crate::store::{Store, StoreConfig};
use axum::Extension;
use axum::routing::get;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Long enough for anything that should happen to happen on a loaded machine.
const ANSWERS_WITHIN: Duration = Duration::from_secs(5);
const TOKEN: &str = "s3cret";
/// What a slowloris client sends, and then nothing more.
const HALF_REQUEST: &[u8] = b"GET /api/traces HTTP/1.1\r\nHost:";

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Serves `app` with the request and connection bounds of `limits`, until `stop`.
async fn start(app: Router, limits: ServeLimits) -> Server {
    raise_open_file_limit();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let app = bound_requests(app, &limits);
        serve(listener, app, &limits, async move {
            let _ = stopped.await;
        })
        .await;
    });
    Server { addr, stop, task }
}

/// The agent's API over a store holding the fixture pod's spans, behind [`TOKEN`].
fn agent_api() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open store");
    store.put_batch(&fixtures::pod_trace()).expect("put spans");
    let readiness = Readiness::new();
    readiness.set_ready("store");
    let app = router(ApiState::new(store, readiness, Some(TOKEN.to_owned())));
    (dir, app)
}

fn traces_path() -> String {
    format!(
        "/api/traces?pod=default/web-0&start={}&end={}",
        (fixtures::T0 - 60_000_000_000) / 1000,
        (fixtures::T0 + 60_000_000_000) / 1000
    )
}

/// Each test opens some hundreds of connections, twice over (both ends are in this process).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed, which lives here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One `GET` on a connection of its own (`Connection: close`), read to the end.
async fn get_path(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    exchange(addr, request.as_bytes()).await
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send the request");
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("read the answer");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// `what` answered within [`ANSWERS_WITHIN`].
async fn promptly<T>(what: &str, answer: impl Future<Output = T>) -> T {
    timeout(ANSWERS_WITHIN, answer)
        .await
        .unwrap_or_else(|_| panic!("{what} got no answer within {ANSWERS_WITHIN:?}"))
}

async fn half_requests(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for n in 0..count {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        stream
            .write_all(HALF_REQUEST)
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        streams.push(stream);
    }
    streams
}

/// How a connection ended, read to its end: the bytes the server sent before it closed
/// (a reset counts as closed), or `None` when it is still open after `wait`.
async fn ending(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match timeout(wait, stream.read_to_end(&mut bytes)).await {
        Ok(_) => Some(bytes),
        Err(_) => None,
    }
}

async fn endings(streams: &mut [TcpStream], wait: Duration) -> Vec<Option<Vec<u8>>> {
    futures::future::join_all(streams.iter_mut().map(|s| ending(s, wait))).await
}

#[tokio::test]
async fn queries_answer_while_500_slowloris_connections_are_held_and_shutdown_ends_in_time() {
    let (_dir, app) = agent_api();
    let limits = ServeLimits {
        // Far longer than the test: the half requests are all still open when the queries run.
        header_read_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let server = start(app, limits).await;
    let mut slow = half_requests(server.addr, 500).await;

    let health = promptly("/healthz", get_path(server.addr, "/healthz", None)).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let traces = promptly(
        "/api/traces",
        get_path(server.addr, &traces_path(), Some(TOKEN)),
    )
    .await;
    assert_eq!(traces.status, 200, "{}", traces.body);
    let body: serde_json::Value = serde_json::from_str(&traces.body).expect("JSON");
    assert_eq!(
        body["data"][0]["spans"].as_array().map(Vec::len),
        Some(fixtures::pod_trace().len())
    );
    let still_open = endings(&mut slow, Duration::from_millis(50)).await;
    assert!(
        still_open.iter().all(Option::is_none),
        "the half requests were all open while the queries were answered"
    );

    let _ = server.stop.send(());
    promptly("shutdown with 500 half requests open", server.task)
        .await
        .expect("the server task");
    let ended = endings(&mut slow, ANSWERS_WITHIN).await;
    assert!(
        ended.iter().all(Option::is_some),
        "shutdown closed every half request"
    );
}

#[tokio::test]
async fn half_requests_and_silent_connections_are_closed_after_the_header_read_timeout() {
    let (_dir, app) = agent_api();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServeLimits::default()
    };
    let server = start(app, limits).await;
    let mut streams = half_requests(server.addr, 500).await;
    streams.push(TcpStream::connect(server.addr).await.expect("connect"));
    // Kept alive after a whole request and answer, then idle.
    let mut kept_alive = TcpStream::connect(server.addr).await.expect("connect");
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nok") {
        let mut chunk = [0u8; 512];
        let n = promptly("/healthz kept alive", kept_alive.read(&mut chunk))
            .await
            .expect("read");
        assert_ne!(n, 0, "closed before answering: {answer:?}");
        answer.extend_from_slice(&chunk[..n]);
    }
    streams.push(kept_alive);

    let ended = endings(&mut streams, ANSWERS_WITHIN).await;
    for (n, ending) in ended.iter().enumerate() {
        match ending {
            Some(bytes) => assert!(bytes.is_empty(), "connection {n} got an answer: {bytes:?}"),
            None => panic!("connection {n} is still open after {ANSWERS_WITHIN:?}"),
        }
    }
    let health = promptly("/healthz", get_path(server.addr, "/healthz", None)).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let (_dir, app) = agent_api();
    let limits = ServeLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(600),
        ..ServeLimits::default()
    };
    let server = start(app, limits).await;
    // Accepted first: the listen backlog is first come, first served.
    let mut held = half_requests(server.addr, 2).await;
    let mut third = tokio::spawn(get_path(server.addr, "/healthz", None));
    assert!(
        timeout(Duration::from_millis(300), &mut third)
            .await
            .is_err(),
        "a third connection is not served while two are open"
    );
    drop(held.pop());
    let health = promptly("/healthz once a connection closed", third)
        .await
        .expect("the client task");
    assert_eq!(health.status, 200);
}

/// `/hold` hands its work, and its request slot, to a task that runs until the test lets it go
/// (as the store queries do with a blocking thread), saying when it has started.
fn held_route(started: mpsc::Sender<()>, release: Arc<tokio::sync::Notify>) -> Router {
    let hold = move |slot: Option<Extension<RequestSlot>>| {
        let (started, release) = (started.clone(), release.clone());
        async move {
            let work = tokio::spawn(async move {
                let _slot = slot;
                release.notified().await;
            });
            let _ = started.send(()).await;
            let _ = work.await;
            "released"
        }
    };
    Router::new()
        .route("/hold", get(hold))
        .route("/quick", get(|| async { "quick" }))
        .route(LIVENESS_PATH, get(|| async { "ok" }))
}

#[tokio::test]
async fn requests_beyond_the_cap_wait_for_a_slot_but_healthz_never_does() {
    let (started, mut has_started) = mpsc::channel(1);
    let release = Arc::new(tokio::sync::Notify::new());
    let limits = ServeLimits {
        max_requests: 1,
        ..ServeLimits::default()
    };
    let server = start(held_route(started, release.clone()), limits).await;
    let held = tokio::spawn(get_path(server.addr, "/hold", None));
    promptly("/hold", has_started.recv()).await;

    let health = promptly("/healthz", get_path(server.addr, "/healthz", None)).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let mut quick = tokio::spawn(get_path(server.addr, "/quick", None));
    assert!(
        timeout(Duration::from_millis(300), &mut quick)
            .await
            .is_err(),
        "/quick waits while /hold has the only slot"
    );
    release.notify_one();
    let held = promptly("/hold", held).await.expect("client task");
    assert_eq!((held.status, held.body.as_str()), (200, "released"));
    let quick = promptly("/quick", quick).await.expect("client task");
    assert_eq!((quick.status, quick.body.as_str()), (200, "quick"));
}

#[tokio::test]
async fn a_request_that_outlasts_the_request_timeout_is_answered_503_with_a_json_error() {
    let (started, mut has_started) = mpsc::channel(1);
    let release = Arc::new(tokio::sync::Notify::new());
    let limits = ServeLimits {
        max_requests: 1,
        request_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let server = start(held_route(started, release), limits).await;
    let held = tokio::spawn(get_path(server.addr, "/hold", None));
    promptly("/hold", has_started.recv()).await;
    let held = promptly("/hold", held).await.expect("client task");
    // /hold's work, still running, keeps the slot; the time spent waiting for it counts.
    let quick = promptly("/quick", get_path(server.addr, "/quick", None)).await;
    for (route, answer) in [("/hold", held), ("/quick", quick)] {
        assert_eq!(answer.status, 503, "{route}: {}", answer.body);
        assert!(
            answer.head.contains("content-type: application/json"),
            "{route}: {}",
            answer.head
        );
        let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON error");
        assert_eq!(
            body["error"],
            "no answer within the request timeout of 300ms: the agent is busy or the query too \
             large",
            "{route}"
        );
    }
}

#[tokio::test]
async fn a_request_head_above_16_kib_is_refused_but_large_answers_are_whole() {
    let app = Router::new().route("/large", get(|| async { "x".repeat(1 << 20) }));
    let server = start(app, ServeLimits::default()).await;
    let long_header = format!(
        "GET /large HTTP/1.1\r\nHost: agent\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(MAX_REQUEST_HEAD_BYTES)
    );
    let refused = promptly("a long head", exchange(server.addr, long_header.as_bytes())).await;
    assert_eq!(refused.status, 431);
    let large = promptly("/large", get_path(server.addr, "/large", None)).await;
    assert_eq!((large.status, large.body.len()), (200, 1 << 20));
}

#[test]
fn the_agent_flags_default_to_the_serve_constants() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from(["nodetrace", "agent"]).expect("no flags");
    let crate::cli::Command::Agent(args) = cli.command else {
        panic!("not the agent command");
    };
    let from_flags = ServeLimits {
        max_connections: args.http_max_connections,
        request_timeout: args.http_request_timeout,
        shutdown_grace: args.http_shutdown_grace,
        ..ServeLimits::default()
    };
    assert_eq!(from_flags, ServeLimits::default());
}

#[test]
fn flags_refuse_zero_timeouts_and_connection_caps() {
    assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
    assert!(parse_timeout("0s").is_err());
    assert!(parse_timeout("30").is_err());
    assert_eq!(parse_connection_cap("1024"), Ok(1024));
    for bad in ["0", "-1", "65537", "many"] {
        assert!(parse_connection_cap(bad).is_err(), "{bad}");
    }
}
