//! A fake Kubernetes API server: pods only, list and watch, over real HTTP on 127.0.0.1. The
//! agent's pod-watcher tests (`agent/src/k8s`) and the end-to-end tests drive kube's real
//! client against it.
//!
//! No kube-apiserver (nor etcd) can run on the machines this project is built and tested on,
//! so the tests use this server instead. It follows the API conventions the watcher relies on:
//! a list answers a `PodList` with its `resourceVersion`; a watch from a version replays the
//! later events and then streams newline-delimited `WatchEvent`s (ADDED, MODIFIED, DELETED,
//! BOOKMARK, ERROR) over a chunked response; a watch from a compacted version gets an ERROR
//! event with code 410; `fieldSelector=spec.nodeName=X` filters both. The tests can also make
//! it answer a watch with an HTTP 410, drop every connection and refuse new ones (an outage),
//! and come back on the same port. It needs no authentication (a kubeconfig for it is
//! [`FakeApiServer::kubeconfig`]).

mod routes;

/// The Kubernetes API types the pods are made of (the version and feature the agent uses).
pub use k8s_openapi;
pub use routes::query_value;

use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use routes::{answer, gone_event};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The namespace of the pods of [`pod`], and the one [`FakeApiServer::delete`] and
/// [`FakeApiServer::change_unwatched`] name pods in.
pub const NAMESPACE: &str = "shop";

/// How long the `wait_for_*` methods wait.
const WAIT: Duration = Duration::from_secs(10);

/// A pod of namespace [`NAMESPACE`] on `node`, with an `app` label and a managed-fields entry.
pub fn pod(node: &str, name: &str, uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(NAMESPACE.to_owned()),
            name: Some(name.to_owned()),
            uid: Some(uid.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), name.to_owned())])),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubelet".to_owned()),
                operation: Some("Update".to_owned()),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The fake server; see the module documentation.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    serving: Mutex<Option<JoinHandle<()>>>,
}

/// An open watch: the node it selects and where its events go.
struct Watch {
    node: Option<String>,
    events: mpsc::UnboundedSender<Bytes>,
    /// Events sent to `events` that the response body has not taken yet.
    pending: Arc<AtomicUsize>,
}

impl Watch {
    fn send(&self, bytes: Bytes) -> bool {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let sent = self.events.send(bytes).is_ok();
        if !sent {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    fn is_open(&self) -> bool {
        !self.events.is_closed()
    }
}

#[derive(Default)]
struct State {
    resource_version: u64,
    pods: BTreeMap<String, Pod>,
    /// Every event as (resource version, node of the pod, JSON line).
    log: Vec<(u64, String, String)>,
    /// Watches from a version below this one get a 410 ERROR event.
    compacted: u64,
    watches: Vec<Watch>,
    /// Watch requests still to be answered with an HTTP 410.
    gone_answers: usize,
    /// Every request as `path?query`.
    requests: Vec<String>,
}

impl FakeApiServer {
    pub async fn start(pods: impl IntoIterator<Item = Pod>) -> Self {
        let listener = listen("127.0.0.1:0".parse().expect("an address")).await;
        let addr = listener.local_addr().expect("a bound address");
        let server = Self {
            addr,
            state: Arc::default(),
            serving: Mutex::default(),
        };
        for pod in pods {
            server.apply(pod);
        }
        server.serve(listener);
        server
    }

    /// The URL for `kube::Config::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context is this server over plain HTTP, without credentials
    /// (what `kubectl --kubeconfig` or the agent's `--kubeconfig` read).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: anonymous\n  user: {{}}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: anonymous\n\
             current-context: fake\n",
            url = self.url()
        )
    }

    /// Creates or updates a pod, with an event for the watches.
    pub fn apply(&self, pod: Pod) {
        let mut state = self.lock();
        let kind = if state.pods.contains_key(&key(&pod)) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let pod = state.store(pod);
        state.publish(kind, &pod);
    }

    /// Deletes a pod, with an event for the watches.
    pub fn delete(&self, name: &str) {
        let mut state = self.lock();
        let Some(pod) = state.pods.remove(&format!("shop/{name}")) else {
            panic!("no pod {name} to delete");
        };
        state.resource_version += 1;
        let pod = with_version(pod, state.resource_version);
        state.publish("DELETED", &pod);
    }

    /// Creates, updates or (with `None`) deletes a pod without any event, as if its events
    /// were compacted away before the watches saw them.
    pub fn change_unwatched(&self, name: &str, pod: Option<Pod>) {
        let mut state = self.lock();
        state.pods.remove(&format!("shop/{name}"));
        state.resource_version += 1;
        if let Some(pod) = pod {
            state.store(pod);
        }
    }

    /// Sends a BOOKMARK at the current version to the open watches.
    pub fn bookmark(&self) {
        let mut state = self.lock();
        let line = json!({
            "type": "BOOKMARK",
            "object": {"kind": "Pod", "apiVersion": "v1",
                       "metadata": {"resourceVersion": state.resource_version.to_string()}},
        });
        state.send_to_watches(None, &line);
    }

    /// Compacts history up to now: open watches get an ERROR event with code 410 and end,
    /// and watches from an older version get the same.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        state.compacted = state.resource_version;
        state.send_to_watches(None, &gone_event());
        state.watches.clear();
    }

    /// Answers the next `count` watch requests with an HTTP 410 Gone.
    pub fn answer_watches_with_gone(&self, count: usize) {
        self.lock().gone_answers = count;
    }

    /// An outage: drops every connection and refuses new ones until [`Self::come_back`].
    pub async fn go_down(&self) {
        let serving = self.serving.lock().expect("serving lock").take();
        if let Some(task) = serving {
            task.abort();
            let _ = task.await;
        }
        self.lock().watches.clear();
    }

    /// Listens again on the same address after [`Self::go_down`].
    pub async fn come_back(&self) {
        let listener = listen(self.addr).await;
        self.serve(listener);
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The watch requests so far.
    pub fn watch_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| query_value(r, "watch").as_deref() == Some("true"))
            .collect()
    }

    /// Waits until `count` watches are open.
    pub async fn wait_for_open_watches(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.lock().watches.iter().filter(|w| w.is_open()).count() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {count} open watches after {WAIT:?}; requests: {:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every open watch's response has taken all the events sent to it so far
    /// (they are then on their way to the client, which still needs a moment to apply them).
    pub async fn wait_for_delivery(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let pending: usize = self
                .lock()
                .watches
                .iter()
                .filter(|w| w.is_open())
                .map(|w| w.pending.load(Ordering::SeqCst))
                .sum();
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} watch events not delivered after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task on `go_down`, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = answer(&state, &request);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        *self.serving.lock().expect("serving lock") = Some(task);
    }
}

impl Drop for FakeApiServer {
    /// Stops serving: closes the listener and every connection.
    fn drop(&mut self) {
        let serving = match self.serving.get_mut() {
            Ok(serving) => serving.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = serving {
            task.abort();
        }
    }
}

impl State {
    /// Stores `pod` at a new resource version and returns the stored object.
    fn store(&mut self, pod: Pod) -> Pod {
        self.resource_version += 1;
        let pod = with_version(pod, self.resource_version);
        self.pods.insert(key(&pod), pod.clone());
        pod
    }

    fn publish(&mut self, kind: &str, pod: &Pod) {
        let line = json!({"type": kind, "object": pod});
        let node = node_of(pod);
        self.log
            .push((self.resource_version, node.clone(), line.to_string()));
        self.send_to_watches(Some(&node), &line);
    }

    /// Sends `line` to the open watches (of `node` only when given).
    fn send_to_watches(&mut self, node: Option<&str>, line: &Value) {
        let bytes = Bytes::from(format!("{line}\n"));
        self.watches.retain(|watch| {
            let wanted = match (node, &watch.node) {
                (Some(node), Some(selected)) => node == selected,
                _ => true,
            };
            !wanted || watch.send(bytes.clone())
        });
    }
}

async fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind 127.0.0.1");
    socket.listen(64).expect("listen")
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_default()
}

fn with_version(mut pod: Pod, version: u64) -> Pod {
    pod.metadata.resource_version = Some(version.to_string());
    pod
}
