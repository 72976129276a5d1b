//! A fake Kubernetes API server for the watcher tests: pods only, list and watch, over real
//! HTTP on 127.0.0.1.
//!
//! No kube-apiserver (nor etcd) can run on the machines this project is built and tested on,
//! so the tests drive kube's real client against this server instead. It follows the API
//! conventions the watcher relies on: a list answers a `PodList` with its `resourceVersion`;
//! a watch from a version replays the later events and then streams newline-delimited
//! `WatchEvent`s (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) over a chunked response; a watch
//! from a compacted version gets an ERROR event with code 410; `fieldSelector=spec.nodeName=X`
//! filters both. The tests can also make it answer a watch with an HTTP 410, drop every
//! connection and refuse new ones (an outage), and come back on the same port.

mod routes;

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
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A pod of namespace `shop` on `node`, with an `app` label and a managed-fields entry.
pub fn pod(node: &str, name: &str, uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("shop".to_owned()),
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

#[derive(Default)]
struct State {
    resource_version: u64,
    pods: BTreeMap<String, Pod>,
    /// Every event as (resource version, node of the pod, JSON line).
    log: Vec<(u64, String, String)>,
    /// Watches from a version below this one get a 410 ERROR event.
    compacted: u64,
    watches: Vec<(Option<String>, mpsc::UnboundedSender<Bytes>)>,
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self
            .lock()
            .watches
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .count()
            < count
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {count} open watches after 10 s; requests: {:?}",
                self.requests()
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
        self.watches.retain(|(selected, tx)| {
            let wanted = match (node, selected) {
                (Some(node), Some(selected)) => node == selected,
                _ => true,
            };
            !wanted || tx.send(bytes.clone()).is_ok()
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
