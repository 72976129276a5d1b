//! Tests of the pod watcher: kube's real client against the testbed's fake API server,
//! `nodetrace_testbed::fake_apiserver` (no kube-apiserver can run on this project's machines).

use super::{K8sError, KubeHealth, OwnerKind, PodDirectory, PodDirectoryConfig, PodWatcher};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use nodetrace_testbed::fake_apiserver::{FakeApiServer, pod, query_value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const A1: &str = "00000000-0000-4000-8000-0000000000a1";
const A2: &str = "00000000-0000-4000-8000-0000000000a2";
const A3: &str = "00000000-0000-4000-8000-0000000000a3";
const B1: &str = "00000000-0000-4000-8000-0000000000b1";

/// A watcher of node-a running against `server`.
struct Running {
    directory: PodDirectory,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(server: &FakeApiServer) -> Self {
        let url = server.url().parse().expect("a URL");
        let mut config = PodDirectoryConfig::new("node-a");
        config.deleted_retention = Duration::ZERO;
        let watcher = PodWatcher::new(kube::Config::new(url), config).expect("a watcher");
        let directory = watcher.directory();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(watcher.run(stopped));
        Self {
            directory,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(true).expect("the watcher listens");
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the watcher stops within 2 s")
            .expect("the watcher does not panic");
    }

    fn name_of(&self, uid: &str) -> Option<String> {
        self.directory.get(uid).map(|meta| meta.name)
    }
}

/// Polls `check` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn initial_list_fills_the_directory_with_this_nodes_pods_only() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1), pod("node-b", "b1", B1)]).await;
    let running = Running::start(&server);
    server.wait_for_open_watches(1).await;

    let meta = running.directory.get(A1).expect("pod a1 is listed");
    assert_eq!(
        (meta.namespace.as_str(), meta.name.as_str()),
        ("shop", "a1")
    );
    assert_eq!(meta.node_name, "node-a");
    assert_eq!(meta.labels.get("app").map(String::as_str), Some("a1"));
    assert_eq!(running.directory.get(B1), None, "a pod of another node");
    assert_eq!(running.directory.health(), KubeHealth::Connected);
    let stored = running.directory.live_pod(A1).expect("stored");
    assert!(
        stored
            .metadata
            .managed_fields
            .as_deref()
            .is_none_or(<[_]>::is_empty)
    );

    // The selector is on the list and on the watch, which starts from the list's version.
    let requests = server.requests();
    let list = &requests[0];
    assert!(list.starts_with("/api/v1/pods?"), "{list}");
    assert!(
        list.contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{list}"
    );
    let watch = &server.watch_requests()[0];
    assert!(
        watch.contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{watch}"
    );
    assert_eq!(query_value(watch, "resourceVersion").as_deref(), Some("2"));
    assert_eq!(running.directory.stats().lists, 1);
    running.stop().await;
}

#[tokio::test]
async fn watch_events_add_modify_and_delete_pods() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1)]).await;
    let running = Running::start(&server);
    server.wait_for_open_watches(1).await;

    let mut a2 = pod("node-a", "a2", A2);
    server.apply(a2.clone());
    server.apply(pod("node-b", "b1", B1));
    eventually("a2 added", || running.name_of(A2).is_some()).await;

    a2.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "ReplicaSet".to_owned(),
        name: "web-6f7c9d".to_owned(),
        uid: "00000000-0000-4000-8000-0000000000f1".to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    a2.metadata.labels = Some(BTreeMap::from([(
        "pod-template-hash".to_owned(),
        "6f7c9d".to_owned(),
    )]));
    a2.metadata.annotations = Some(BTreeMap::from([(
        "trace.kubernetes.io/context".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    )]));
    server.apply(a2);
    server.bookmark();
    eventually("a2 modified", || {
        running.directory.get(A2).is_some_and(|m| m.owner.is_some())
    })
    .await;
    let meta = running.directory.get(A2).expect("a2");
    let owner = meta.owner.expect("an owner");
    assert_eq!(
        (owner.kind, owner.name.as_str()),
        (OwnerKind::Deployment, "web")
    );
    let context = meta.trace_context.expect("a trace context");
    assert_eq!(
        context.trace_id.to_hex(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    server.delete("a1");
    eventually("a1 deleted", || running.name_of(A1).is_none()).await;
    assert_eq!(running.directory.get(B1), None);
    assert_eq!(running.directory.stats().live_pods, 1);
    assert_eq!(running.directory.stats().lists, 1, "events need no re-list");
    running.stop().await;
}

#[tokio::test]
async fn gone_event_relists_and_the_directory_matches_the_server() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1), pod("node-a", "a2", A2)]).await;
    let running = Running::start(&server);
    server.wait_for_open_watches(1).await;

    // Changes the watch never sees, then the watch expires with an ERROR event (code 410).
    server.change_unwatched("a2", None);
    server.change_unwatched("a3", Some(pod("node-a", "a3", A3)));
    server.expire_watches();
    eventually("a3 re-listed", || running.name_of(A3).is_some()).await;

    assert_eq!(running.name_of(A1).as_deref(), Some("a1"));
    assert_eq!(
        running.name_of(A2),
        None,
        "a pod deleted while the watch was expired"
    );
    let stats = running.directory.stats();
    assert_eq!((stats.lists, stats.live_pods), (2, 2));
    assert!(stats.watch_errors >= 1);
    assert_eq!(
        running.directory.health(),
        KubeHealth::Connected,
        "a 410 is no outage"
    );
    server.wait_for_open_watches(1).await;
    server.apply(pod("node-a", "a2", A2));
    eventually("watching again after the re-list", || {
        running.name_of(A2).is_some()
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn gone_answer_to_a_watch_request_relists() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1)]).await;
    server.answer_watches_with_gone(1);
    let running = Running::start(&server);
    eventually("a re-list", || running.directory.stats().lists == 2).await;
    server.wait_for_open_watches(1).await;

    assert_eq!(server.watch_requests().len(), 2);
    server.apply(pod("node-a", "a2", A2));
    eventually("a2 added", || running.name_of(A2).is_some()).await;
    assert_eq!(running.name_of(A1).as_deref(), Some("a1"));
    assert_eq!(running.directory.health(), KubeHealth::Connected);
    running.stop().await;
}

#[tokio::test]
async fn dropped_connection_is_retried_and_the_directory_keeps_its_pods() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1)]).await;
    let running = Running::start(&server);
    server.wait_for_open_watches(1).await;
    let resumed_from = query_value(&server.watch_requests()[0], "resourceVersion");

    server.go_down().await;
    eventually("degraded", || {
        matches!(running.directory.health(), KubeHealth::Degraded { .. })
    })
    .await;
    let KubeHealth::Degraded { error, .. } = running.directory.health() else {
        unreachable!("checked above");
    };
    assert!(!error.is_empty());
    assert_eq!(
        running.name_of(A1).as_deref(),
        Some("a1"),
        "kept during the outage"
    );

    // A pod created during the outage arrives when the watch resumes, without a re-list.
    server.apply(pod("node-a", "a2", A2));
    server.come_back().await;
    eventually("connected again", || {
        running.directory.health() == KubeHealth::Connected
    })
    .await;
    eventually("a2 replayed", || running.name_of(A2).is_some()).await;
    assert_eq!(running.name_of(A1).as_deref(), Some("a1"));
    assert_eq!(running.directory.stats().lists, 1);
    let last_watch = server
        .watch_requests()
        .pop()
        .expect("a watch after the outage");
    assert_eq!(query_value(&last_watch, "resourceVersion"), resumed_from);
    running.stop().await;
}

#[tokio::test]
async fn unreachable_api_at_start_is_degraded_until_it_answers() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1)]).await;
    server.go_down().await;
    let running = Running::start(&server);
    assert_eq!(running.directory.get(A1), None);
    eventually("degraded", || {
        matches!(running.directory.health(), KubeHealth::Degraded { .. })
    })
    .await;

    server.come_back().await;
    eventually("listed", || running.name_of(A1).is_some()).await;
    assert_eq!(running.directory.health(), KubeHealth::Connected);
    running.stop().await;
}

#[tokio::test]
async fn kubeconfig_of_the_server_is_read_and_used() {
    let server = FakeApiServer::start([pod("node-a", "a1", A1)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, server.kubeconfig()).expect("write the kubeconfig");
    let watcher = PodWatcher::from_kubeconfig(&path, PodDirectoryConfig::new("node-a"))
        .await
        .expect("a watcher from the kubeconfig");
    let directory = watcher.directory();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(watcher.run(stopped));
    eventually("a1 listed", || directory.get(A1).is_some()).await;
    assert_eq!(directory.health(), KubeHealth::Connected);
    stop.send(true).expect("the watcher listens");
    task.await.expect("the watcher does not panic");
}

#[test]
fn empty_node_name_is_refused() {
    let url = "http://127.0.0.1:1".parse().expect("a URL");
    let result = PodWatcher::new(kube::Config::new(url), PodDirectoryConfig::new(""));
    assert!(matches!(result, Err(K8sError::NoNodeName)));
}
