//! Serving the API on a TCP listener within bounds: how long a client may take to send a request
//! head, how long a request may take, how many connections and requests are served at once, and
//! how long shutdown waits for them. A client, hostile or broken, can hold a connection for at
//! most the header-read timeout without sending a request, and a query for at most the request
//! timeout. With TLS ([`serve_tls`]) the handshake comes first and has a time limit of its own:
//! a client that connects and never finishes it holds a connection for that long at most.

use super::handlers::ApiError;
use super::router::LIVENESS_PATH;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse as _, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::{future::Future, io, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// A connection that has not sent a whole request head (request line and headers) this long
/// after it was accepted, or after its previous answer when kept alive, is closed without an
/// answer: a slowloris client holds a connection for this long at most. Clients of the API send
/// their request at once; 10 s leaves room for a slow network.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request may take, waiting for a request slot included, before it is answered 503.
/// A trace query of `params::MAX_LIMIT` spans takes well under a second; 30 s is for a store
/// under heavy load, and is what a client waits at most.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's listen backlog until one closes. Each
/// costs a file descriptor and at most [`MAX_REQUEST_HEAD_BYTES`] of buffer plus a task, so
/// all of them together stay near 20 MiB; the API's clients (an aggregator, Prometheus, the CLI)
/// need a handful.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// With TLS, a connection that has not finished its handshake this long after it was accepted
/// is closed; the header-read timeout starts after it. Clients complete a handshake in a few
/// round trips; 10 s leaves room for a slow network.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once, all routes but `/healthz`; more wait (within the request timeout)
/// for one to finish. A trace answer of `params::MAX_LIMIT` spans takes some tens of MiB to
/// build, so 8 at once stay within the agent's memory budget, and below LMDB's reader slots.
pub const DEFAULT_MAX_REQUESTS: usize = 8;
/// How long shutdown waits for open connections to finish their request; the connections still
/// open after it are closed. Kubelet allows 30 s for the whole shutdown by default, and the store
/// and the exporter flush after the HTTP server has stopped.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) a connection may send; a longer one is
/// answered 431. The API's requests are a short query string and a token, and it bounds the
/// memory a connection holds (hyper's own default is about 400 KiB).
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// Pause after a failed accept that is not about one connection (out of file descriptors,
/// buffers): accepting again at once would only fail again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Most connections a flag may allow (file descriptors are the limit beyond it).
const MAX_CONNECTIONS_FLAG: usize = 65_536;

/// The server's bounds; `Default` has the constants above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_requests: usize,
    pub shutdown_grace: Duration,
    pub tls_handshake_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests: DEFAULT_MAX_REQUESTS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// `app` with the request bounds of `limits`: at most `max_requests` requests at once (except
/// `/healthz`, so that a busy agent is never taken for a dead one), each answered within
/// `request_timeout`, waiting for a slot included, or answered 503 with a JSON error.
pub fn bound_requests(app: Router, limits: &ServeLimits) -> Router {
    let bounds = RequestBounds {
        timeout: limits.request_timeout,
        slots: Arc::new(Semaphore::new(limits.max_requests)),
    };
    app.layer(from_fn_with_state(bounds, bound_request))
}

#[derive(Clone)]
struct RequestBounds {
    timeout: Duration,
    slots: Arc<Semaphore>,
}

/// The request slot a request holds. Handlers that hand work to a blocking thread move a clone
/// there: a query that outlives its request timeout keeps its slot until it is done, so the cap
/// also bounds the store reads in progress.
#[derive(Clone)]
pub struct RequestSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

async fn bound_request(
    State(bounds): State<RequestBounds>,
    mut request: Request,
    next: Next,
) -> Response {
    let timeout = bounds.timeout;
    let answer = async move {
        let mut slot = None;
        if request.uri().path() != LIVENESS_PATH {
            // The semaphore is never closed: acquiring only waits.
            if let Ok(permit) = bounds.slots.acquire_owned().await {
                let held = RequestSlot {
                    _permit: Arc::new(permit),
                };
                request.extensions_mut().insert(held.clone());
                slot = Some(held);
            }
        }
        let response = next.run(request).await;
        drop(slot);
        response
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout { timeout }.into_response(),
    }
}

/// Serves `app` on `listener` until `shutdown` completes, with the connection bounds of
/// `limits` (wrap `app` with [`bound_requests`] for the request bounds). Then it stops
/// accepting, lets each open connection finish the request it is answering, and after
/// `shutdown_grace` closes the connections still open and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, None, app, limits, shutdown).await;
}

/// [`serve`] over TLS: each connection first completes a handshake with `tls` within
/// `tls_handshake_timeout`, or is closed.
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    limits: &ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, Some(tls), app, limits, shutdown).await;
}

/// The TLS side of a connection: what accepts the handshake, and how long it may take.
#[derive(Clone)]
struct Handshake {
    acceptor: TlsAcceptor,
    timeout: Duration,
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: &ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let handshake = tls.map(|acceptor| Handshake {
        acceptor,
        timeout: limits.tls_handshake_timeout,
    });
    let builder = Arc::new(connection_builder(limits));
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Without a free slot nothing is accepted: new connections wait in the listen backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = connection_slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            stream = accept(&listener) => stream,
        };
        reap(&mut connections);
        connections.spawn(serve_connection(
            builder.clone(),
            stream,
            handshake.clone(),
            app.clone(),
            closing_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace = ?limits.shutdown_grace,
            "closing the HTTP connections still open after the shutdown grace"
        );
        connections.shutdown().await;
    }
}

/// HTTP/1 only: telling HTTP/2 from HTTP/1 reads the connection's first bytes with no time
/// limit, and the API's clients speak HTTP/1.1.
fn connection_builder(limits: &ServeLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    builder
}

/// The next connection; errors that concern one connection are skipped, others pause first.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(err) if is_connection_error(&err) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept HTTP connections; retrying in 1 s");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Forgets the connections that have ended, saying so when one panicked.
fn reap(connections: &mut JoinSet<()>) {
    while let Some(ended) = connections.try_join_next() {
        if let Err(err) = ended
            && err.is_panic()
        {
            tracing::error!(error = %err, "an HTTP connection task panicked");
        }
    }
}

/// One connection, holding its slot until it ends: the TLS handshake first when there is one
/// (given up at shutdown), then HTTP; on shutdown it finishes the answer in progress, if any,
/// and closes.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    handshake: Option<Handshake>,
    app: Router,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let Some(handshake) = handshake else {
        return serve_http(&builder, stream, app, closing).await;
    };
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(handshake.timeout, handshake.acceptor.accept(stream)) => {
            accepted
        }
        _ = closing.changed() => return,
    };
    // Failed and unfinished handshakes are the client's business, as HTTP errors are.
    match accepted {
        Ok(Ok(stream)) => serve_http(&builder, stream, app, closing).await,
        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(timeout = ?handshake.timeout, "no TLS handshake in time"),
    }
}

/// HTTP on one connection, plain or TLS.
async fn serve_http<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    app: Router,
    mut closing: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Timeouts, resets and malformed requests end here; they are the client's business.
    if let Err(err) = ended {
        tracing::debug!(error = %err, "HTTP connection ended with an error");
    }
}

/// `--http-request-timeout` and `--http-shutdown-grace`: a duration (`30s`, `2m`) above zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match crate::cli::parse_duration(text)? {
        Duration::ZERO => Err(format!("{text:?} is no time at all: give at least 1s")),
        duration => Ok(duration),
    }
}

/// `--http-max-connections`: from 1 to 65536.
pub fn parse_connection_cap(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONNECTIONS_FLAG).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of connections from 1 to {MAX_CONNECTIONS_FLAG}"
        )),
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tls_tests;
