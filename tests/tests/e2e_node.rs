//! End to end on a real node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! a kubelet built from the Go module proxy drive the testbed's containerd 2.4 and runc 1.5, the
//! kubelet sending its own spans to a real collector (rotel-agent). The agent watches the API
//! with the admin's kubeconfig. In one sequence:
//!
//! 1. A plain pod on the pod network, created then deleted: every CRI call the kubelet made for
//!    it (its own client spans, the ground truth) has the agent's matching span.
//! 2. A Deployment's pod with an init container and an emptyDir volume (the watcher names the
//!    Deployment through the ReplicaSet; its label `app` is on its spans), and a pod on the host
//!    network whose trace-context annotation gives its trace id: likewise matched.
//! 3. The API server goes down: `/readyz` says `kube` degraded, and a static pod the kubelet
//!    runs without it is still traced (SyncPod to runc); it comes back, and so does `kube`.
//! 4. Teardown leaves no process, address, bridge or changed kernel setting behind.
//!
//! Needs root and the built components (`NODETRACE_RUNTIMES_DIR`); skips with a reason
//! otherwise.

mod common;

use common::{
    Agent, Ready, by_name, count, describe, end as end_of, only, skipped_unless_root, spans_until,
    tag,
};
use nodetrace::{
    api::{
        client::{Client, DEFAULT_TIMEOUT},
        format::jaeger_model::Span,
    },
    ebpf::VMLINUX_BTF,
};
use nodetrace_testbed::{
    BUSYBOX_IMAGE, BuiltRuntimes,
    agreement::{AgentCall, Agreement, agreement},
    cluster::{Cluster, ClusterBinaries, NODE_IP},
    rotel::{Rotel, find_rotel, free_port, parse_log},
};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_made_through_the_api_are_traced_as_the_kubelet_saw_them() {
    let test = "pods_made_through_the_api_are_traced_as_the_kubelet_saw_them";
    if skipped_unless_root(test, "a kubelet, containerd, network interfaces") {
        return;
    }
    let Some(built) = BuiltRuntimes::from_env() else {
        eprintln!("skipped {test}: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
        return;
    };
    let binaries = ClusterBinaries::from_built(&built, "v1.37", "v3.7")
        .expect("Kubernetes 1.37 and etcd 3.7 (cargo xtask setup)");
    let kubelet_binary = binaries.kubelet.clone();
    let containerd = built.containerd("v2.4").expect("containerd 2.4");
    let (_, runc) = built.runc("v1.5").expect("runc 1.5");
    let work = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    // The kubelet's own spans (its CRI client calls) go to a real collector: ground truth.
    let rotel_bin = find_rotel().unwrap_or_else(|e| panic!("rotel-agent (cargo xtask setup): {e}"));
    let rotel_grpc = free_port();
    let rotel = Rotel::start(&rotel_bin, rotel_grpc, free_port());
    let kubelet_tracing = format!("127.0.0.1:{rotel_grpc}");
    let sysctls_before = kernel_settings();
    let mut cluster = Cluster::start(
        &work.path().join("cluster"),
        binaries,
        containerd,
        &runc,
        Some(&kubelet_tracing),
    )
    .await
    .unwrap_or_else(|e| panic!("start the cluster: {e}"));
    eprintln!("[{:>6.2?}] cluster ready", started.elapsed());
    assert_eq!(
        kernel_settings(),
        sysctls_before,
        "the kubelet's kernel settings are given back once it runs"
    );
    let socket = cluster.testbed().containerd().socket().to_owned();
    let flags = [
        "--node-name=nodetrace-node".to_owned(),
        format!("--kubeconfig={}", cluster.admin_kubeconfig().display()),
        format!("--kubelet-socket={}", cluster.kubelet_socket().display()),
        format!("--oci-runtime-binary={}", runc.display()),
        format!("--btf={VMLINUX_BTF}"),
    ];
    let cri_ready = Ready::Components {
        names: &["cri", "kubelet"],
        within: Duration::from_secs(30),
    };
    let agent = Agent::start(
        &work.path().join("agent-data"),
        &socket,
        flags.clone(),
        cri_ready,
    )
    .await;
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    // A second agent without API access: what it knows of a pod comes from the node alone.
    let bare = Agent::start(
        &work.path().join("bare-agent-data"),
        &socket,
        [
            "--node-name=nodetrace-node".to_owned(),
            "--no-kube".to_owned(),
            format!("--kubelet-socket={}", cluster.kubelet_socket().display()),
            format!("--oci-runtime-binary={}", runc.display()),
            format!("--btf={VMLINUX_BTF}"),
        ],
        cri_ready,
    )
    .await;
    let bare_client = Client::new(&bare.url(), None, DEFAULT_TIMEOUT).expect("client");
    eprintln!("[{:>6.2?}] agents ready", started.elapsed());
    cluster
        .apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: default
spec:
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [\"sh\", \"-c\", \"echo started; sleep 3600\"]
"
        ))
        .expect("create the pod");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let phase = cluster
            .kubectl(&[
                "get",
                "pod",
                "hello",
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ])
            .unwrap_or_default();
        if phase.starts_with("Running") {
            eprintln!("[{:>6.2?}] pod: {phase}", started.elapsed());
            assert!(phase.contains("10.244.0."), "on the pod network: {phase}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pod did not run: {phase}; {}",
            cluster
                .kubectl(&["describe", "pod", "hello"])
                .unwrap_or_else(|e| e)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let uid = cluster
        .kubectl(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"])
        .expect("the pod's uid");

    // What the kubelet asked of the runtime for the pod, traced by the agent.
    // (The container's process span comes when it exits; it sleeps.)
    let traces = spans_until(
        &client,
        &by_name("default", "hello"),
        Duration::from_secs(20),
        |spans| {
            [
                "RunPodSandbox",
                "CreateContainer",
                "StartContainer",
                "Kubelet.SyncPod",
            ]
            .iter()
            .all(|m| count(spans, m) >= 1)
                && count(spans, "runc start") >= 2
        },
    )
    .await;
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    eprintln!(
        "[{:>6.2?}] the pod's trace:\n{}",
        started.elapsed(),
        describe(&spans)
    );
    for span in &spans {
        assert_eq!(
            tag(span, "k8s.pod.uid").as_deref(),
            Some(uid.as_str()),
            "every span carries the pod's uid from the API: {}",
            describe(&[span])
        );
    }
    assert!(
        spans.iter().any(|s| s.operation_name == "runc create"),
        "the kubelet's pod was created by runc under a CRI call:\n{}",
        describe(&spans)
    );
    assert_kubelet_parents(&spans);
    // The pod network's CNI plugins ran for the sandbox, under the call that made it.
    let run = only(&spans, "RunPodSandbox");
    let bridge = only(&spans, "CNI ADD bridge");
    assert_eq!(
        bridge.parent_span_id(),
        Some(run.span_id),
        "the bridge plugin ran under RunPodSandbox:\n{}",
        describe(&spans)
    );
    assert!(
        spans
            .iter()
            .any(|s| s.operation_name == "CNI ADD host-local"
                && s.parent_span_id() == Some(bridge.span_id)),
        "the IPAM plugin bridge delegated to hangs under it:\n{}",
        describe(&spans)
    );

    // Ground truth: every CRI call the kubelet made for the pod, as its own client span, has
    // the matching span of the agent (same method and pod, inside the client's window).
    let agreement = wait_for_agreement(&rotel, &client, ("hello", &uid), 3).await;
    report(&agreement, started, "created");
    // Deleting the pod: the kubelet stops its container and sandbox.
    cluster
        .kubectl(&["delete", "pod", "hello", "--grace-period=1", "--wait=true"])
        .unwrap_or_else(|e| panic!("delete the pod: {e}"));
    let agreement = wait_for_agreement(&rotel, &client, ("hello", &uid), 5).await;
    report(&agreement, started, "created and deleted");

    // A Deployment's pod with an init container and an emptyDir volume they share, and a pod on
    // the host network.
    cluster
        .apply(&format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      volumes:
      - name: scratch
        emptyDir: {{}}
      initContainers:
      - name: init
        image: {BUSYBOX_IMAGE}
        imagePullPolicy: Never
        command: [\"sh\", \"-c\", \"echo ready > /scratch/state\"]
        volumeMounts: [{{name: scratch, mountPath: /scratch}}]
      containers:
      - name: main
        image: {BUSYBOX_IMAGE}
        imagePullPolicy: Never
        command: [\"sh\", \"-c\", \"cat /scratch/state; sleep 3600\"]
        volumeMounts: [{{name: scratch, mountPath: /scratch}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: host
  namespace: default
  annotations:
    trace.kubernetes.io/context: \"00-{CONTEXT_TRACE_ID}-b7ad6b7169203331-01\"
spec:
  hostNetwork: true
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [\"sh\", \"-c\", \"sleep 3600\"]
    readinessProbe:
      exec:
        command: [\"true\"]
      periodSeconds: 2
"
        ))
        .expect("create the Deployment and the host-network pod");
    let web = wait_running(&cluster, "app=web").await;
    let host = wait_running(&cluster, "").await;
    eprintln!("[{:>6.2?}] {} and host running", started.elapsed(), web.0);
    assert_eq!(
        host.2, NODE_IP,
        "the host-network pod has the node's address"
    );
    assert!(
        web.2.starts_with("10.244.0."),
        "the Deployment's pod on the pod network: {web:?}"
    );
    let traces = spans_until(
        &client,
        &by_name("default", &web.0),
        Duration::from_secs(20),
        |spans| {
            count(spans, "CreateContainer") == 2
                && count(spans, "StartContainer") == 2
                && spans.iter().any(|s| {
                    s.operation_name == "container process"
                        && tag(s, "k8s.container.name").as_deref() == Some("init")
                })
        },
    )
    .await;
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    let init = spans
        .iter()
        .find(|s| {
            s.operation_name == "container process"
                && tag(s, "k8s.container.name").as_deref() == Some("init")
        })
        .expect("the init container's process");
    assert_eq!(
        tag(init, "process.exit.code").as_deref(),
        Some("0"),
        "{}",
        describe(&[init])
    );
    assert!(
        spans
            .iter()
            .any(|s| tag(s, "k8s.deployment.name").as_deref() == Some("web")),
        "the watcher names the pod's Deployment (ReplicaSet → Deployment):\n{}",
        describe(&spans)
    );
    let agreement = wait_for_agreement(&rotel, &client, (&web.0, &web.1), 5).await;
    report(
        &agreement,
        started,
        "of a Deployment, with an init container",
    );
    let host_traces = spans_until(
        &client,
        &by_name("default", "host"),
        Duration::from_secs(20),
        |spans| count(spans, "StartContainer") == 1,
    )
    .await;
    assert_eq!(host_traces.len(), 1, "the host-network pod has its trace");
    for span in &host_traces[0].spans {
        assert_eq!(
            span.trace_id.to_hex(),
            CONTEXT_TRACE_ID,
            "the pod's trace-context annotation, read through the API, gives its trace id: {}",
            describe(&[span])
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| tag(s, "k8s.pod.label.app").as_deref() == Some("web")),
        "the Deployment pod's label app=web is on its spans:\n{}",
        describe(&spans)
    );
    let agreement = wait_for_agreement(&rotel, &client, ("host", &host.1), 3).await;
    report(&agreement, started, "on the host network");

    // `nodetrace explain`: the plain pod's start from its SyncPod to its first process, and a
    // pod whose command does not exist: its failed StartContainer named first.
    let hello = client
        .traces(&by_name("default", "hello"))
        .await
        .expect("the plain pod's trace");
    let explained = nodetrace::explain::explain("default/hello", &hello).expect("an explanation");
    eprintln!("{}", nodetrace::explain::render(&explained));
    assert!(explained.started, "{explained:?}");
    assert_eq!(explained.from, "Kubelet.SyncPod");
    assert_eq!(explained.to, "first process of container main");
    for step in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        assert!(
            explained.steps.iter().any(|s| s.name == step),
            "{step} on the path: {explained:?}"
        );
    }
    assert!(explained.steps.iter().map(|s| s.share).sum::<f64>() <= 1.0 + 1e-9);
    cluster
        .apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: broken
  namespace: default
spec:
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [\"/no-such-program\"]
"
        ))
        .expect("create the broken pod");
    let broken = spans_until(
        &client,
        &by_name("default", "broken"),
        Duration::from_secs(60),
        |spans| {
            spans
                .iter()
                .any(|s| s.operation_name == "StartContainer" && tag(s, "error").is_some())
        },
    )
    .await;
    let explained = nodetrace::explain::explain("default/broken", &broken).expect("an explanation");
    eprintln!("{}", nodetrace::explain::render(&explained));
    assert!(!explained.started, "{explained:?}");
    assert_eq!(explained.findings[0].kind, "error", "{explained:?}");
    assert!(
        explained.findings[0]
            .text
            .starts_with("StartContainer (main) failed"),
        "the failed start is named first: {:?}",
        explained.findings
    );
    cluster
        .kubectl(&[
            "delete",
            "pod",
            "broken",
            "--grace-period=0",
            "--wait=false",
        ])
        .unwrap_or_else(|e| panic!("delete the broken pod: {e}"));

    // Without API access, the annotation and the labels come from the pods' sandboxes, as
    // kubelet copied them there.
    let bare_host = spans_until(
        &bare_client,
        &by_name("default", "host"),
        Duration::from_secs(20),
        |spans| count(spans, "StartContainer") == 1,
    )
    .await;
    assert_eq!(bare_host.len(), 1, "one trace for the host-network pod");
    for span in &bare_host[0].spans {
        assert_eq!(
            span.trace_id.to_hex(),
            CONTEXT_TRACE_ID,
            "without API access the annotation still gives the trace id: {}",
            describe(&[span])
        );
    }
    let bare_web = spans_until(
        &bare_client,
        &by_name("default", &web.0),
        Duration::from_secs(20),
        |spans| count(spans, "StartContainer") == 2,
    )
    .await;
    let bare_web: Vec<&Span> = bare_web.iter().flat_map(|t| &t.spans).collect();
    assert!(
        bare_web
            .iter()
            .filter(|s| s.operation_name != "container process")
            .all(|s| tag(s, "k8s.pod.label.app").as_deref() == Some("web")),
        "without API access the label app=web is on the pod's spans:\n{}",
        describe(&bare_web)
    );
    eprintln!(
        "[{:>6.2?}] without API access: trace context and labels from the sandboxes",
        started.elapsed()
    );
    bare.stop(Duration::from_secs(30)).await;

    // The agent restarts (as a DaemonSet upgrade restarts it) while the pods run. The host
    // pod's readiness probe makes the kubelet call ExecSync every 2 s: the first calls after
    // the restart are attributed and stay in the pod's one trace; then the pod is deleted, and
    // its container's process, started before the restart, ends with its real start time.
    let data_dir = agent.data_dir.clone();
    agent.stop(Duration::from_secs(30)).await;
    let restarted_at = unix_now_ns();
    let agent = Agent::start(&data_dir, &socket, flags.clone(), cri_ready).await;
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    eprintln!("[{:>6.2?}] agent restarted", started.elapsed());
    let after_restart = |s: &&Span| s.start_unix_ns >= restarted_at;
    spans_until(
        &client,
        &by_name("default", "host"),
        Duration::from_secs(30),
        |spans| {
            spans
                .iter()
                .any(|s| s.operation_name == "ExecSync" && after_restart(s))
                && spans
                    .iter()
                    .any(|s| s.operation_name == "runc exec" && after_restart(s))
        },
    )
    .await;
    cluster
        .kubectl(&["delete", "pod", "host", "--grace-period=1", "--wait=true"])
        .unwrap_or_else(|e| panic!("delete the host-network pod: {e}"));
    let host_traces = spans_until(
        &client,
        &by_name("default", "host"),
        Duration::from_secs(30),
        |spans| {
            count(spans, "RemovePodSandbox") == 1
                && spans.iter().any(|s| {
                    s.operation_name == "container process"
                        && tag(s, "nodetrace.process.seen_mid_life").as_deref() == Some("true")
                })
        },
    )
    .await;
    assert_eq!(
        host_traces.len(),
        1,
        "the pod's trace stays whole across the restart: {:?}",
        host_traces
            .iter()
            .map(|t| t.spans.first().map(|s| s.trace_id.to_hex()))
            .collect::<Vec<_>>()
    );
    let spans: Vec<&Span> = host_traces[0].spans.iter().collect();
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id.to_hex() == CONTEXT_TRACE_ID),
        "the annotation's trace: {}",
        describe(&spans)
    );
    let ids: std::collections::HashSet<String> = spans.iter().map(|s| s.span_id.to_hex()).collect();
    for span in &spans {
        assert_eq!(
            tag(span, "k8s.pod.uid").as_deref(),
            Some(host.1.as_str()),
            "attributed after the restart: {}",
            describe(&[span])
        );
        for reference in &span.references {
            assert!(
                ids.contains(&reference.span_id.to_hex())
                    || reference.span_id.to_hex() == "b7ad6b7169203331",
                "every parent is in the trace (or is the annotation's span): {}",
                describe(&[span])
            );
        }
    }
    let process = spans
        .iter()
        .find(|s| tag(s, "nodetrace.process.seen_mid_life").as_deref() == Some("true"))
        .expect("the container's process");
    assert!(
        process.start_unix_ns < restarted_at,
        "its real start, before the restart: {}",
        describe(&[process])
    );
    assert_eq!(
        tag(process, "k8s.container.name").as_deref(),
        Some("main"),
        "{}",
        describe(&[process])
    );
    eprintln!(
        "[{:>6.2?}] across the restart: {} spans in the pod's one trace",
        started.elapsed(),
        spans.len()
    );

    // The kubelet is upgraded (a new binary file: another inode): the agent plans and attaches
    // to it within its poll interval, and a new pod's calls hang under its SyncPod again.
    let upgraded = work.path().join("kubelet-upgraded");
    std::fs::copy(&kubelet_binary, &upgraded).expect("copy the kubelet");
    cluster
        .replace_kubelet(&upgraded)
        .await
        .unwrap_or_else(|e| panic!("restart the kubelet from a new binary: {e}"));
    agent
        .wait_readyz(
            Duration::from_secs(60),
            |answer| match common::component_detail(answer, "kubelet") {
                Some(detail) if detail.contains("kubelet-upgraded") => Ok(()),
                other => Err(format!(
                    "the kubelet probes are not on the new binary: {other:?}"
                )),
            },
        )
        .await;
    cluster
        .apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: after-upgrade
  namespace: default
spec:
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [\"sleep\", \"3600\"]
"
        ))
        .expect("create a pod after the kubelet's upgrade");
    let after = spans_until(
        &client,
        &by_name("default", "after-upgrade"),
        Duration::from_secs(60),
        |spans| count(spans, "StartContainer") == 1 && count(spans, "Kubelet.SyncPod") >= 1,
    )
    .await;
    let after: Vec<&Span> = after.iter().flat_map(|t| &t.spans).collect();
    assert_kubelet_parents(&after);
    eprintln!(
        "[{:>6.2?}] kubelet upgraded: its probes moved to the new binary",
        started.elapsed()
    );

    // An API server outage: the agent says so (`kube` degraded) and goes on tracing; the API
    // server comes back and so does the agent's watch.
    agent
        .wait_ready(Ready::Components {
            names: &["kube"],
            within: Duration::from_secs(30),
        })
        .await;
    cluster.stop_api_server();
    agent
        .wait_readyz(Duration::from_secs(60), |answer| {
            let state = answer
                .as_ref()
                .map(|(_, body)| body["components"]["kube"]["state"].clone());
            match state.as_ref().and_then(|s| s.as_str()) {
                Some("degraded") => Ok(()),
                other => Err(format!("the kube component was not degraded ({other:?})")),
            }
        })
        .await;
    eprintln!(
        "[{:>6.2?}] API server down: /readyz kube degraded",
        started.elapsed()
    );
    // The kubelet goes on without the API server: a static pod (its manifest in the kubelet's
    // static pod directory) is run by the kubelet alone, and traced, SyncPod to runc.
    let manifest = cluster.static_pod_dir().join("during.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: during
  namespace: default
spec:
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [\"sleep\", \"3600\"]
"
        ),
    )
    .expect("write the static pod's manifest");
    let during = spans_until(
        &client,
        &by_name("default", "during-nodetrace-node"),
        Duration::from_secs(60),
        |spans| {
            count(spans, "StartContainer") == 1
                && count(spans, "Kubelet.SyncPod") >= 1
                && count(spans, "runc start") >= 2
        },
    )
    .await;
    let during: Vec<&Span> = during.iter().flat_map(|t| &t.spans).collect();
    assert_kubelet_parents(&during);
    eprintln!(
        "[{:>6.2?}] traced during the outage: the kubelet's static pod, {} spans",
        started.elapsed(),
        during.len()
    );
    std::fs::remove_file(&manifest).expect("remove the static pod's manifest");
    cluster
        .start_api_server()
        .await
        .unwrap_or_else(|e| panic!("restart the API server: {e}"));
    agent
        .wait_ready(Ready::Components {
            names: &["kube"],
            within: Duration::from_secs(60),
        })
        .await;
    eprintln!(
        "[{:>6.2?}] API server back: /readyz kube ready",
        started.elapsed()
    );
    agent.stop(Duration::from_secs(30)).await;

    let pids = cluster.component_pids();
    cluster.stop();
    eprintln!("[{:>6.2?}] torn down", started.elapsed());
    for (name, pid) in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) still runs"
        );
    }
    let lo = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip addr");
    assert!(
        !String::from_utf8_lossy(&lo.stdout).contains(NODE_IP),
        "the node address is gone from lo"
    );
    assert!(
        !std::path::Path::new("/sys/class/net/ntk8s-br0").exists(),
        "the pod bridge is gone"
    );
    assert_eq!(
        kernel_settings(),
        sysctls_before,
        "kernel settings given back"
    );
}

/// Waits until the pod selected by `selector` (a label selector; empty: the pod `host`) runs;
/// its (name, uid, pod IP).
async fn wait_running(cluster: &Cluster, selector: &str) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let template = "{.metadata.name} {.metadata.uid} {.status.phase} {.status.podIP}";
    loop {
        let answer = if selector.is_empty() {
            cluster.kubectl(&["get", "pod", "host", "-o", &format!("jsonpath={template}")])
        } else {
            cluster.kubectl(&[
                "get",
                "pods",
                "-l",
                selector,
                "-o",
                &format!("jsonpath={{range .items[*]}}{template}{{end}}"),
            ])
        }
        .unwrap_or_default();
        let fields: Vec<&str> = answer.split_whitespace().collect();
        if let [name, uid, "Running", ip] = fields.as_slice() {
            return ((*name).to_owned(), (*uid).to_owned(), (*ip).to_owned());
        }
        assert!(
            Instant::now() < deadline,
            "{selector:?} is not running: {answer:?}; {}",
            cluster.kubectl(&["describe", "pods"]).unwrap_or_else(|e| e)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The trace id the host-network pod's trace-context annotation names.
/// The kubelet's side of a pod start, by uprobes on the kubelet: `Kubelet.SyncPod` is the root
/// of the CRI calls, through the runtime sync and its phases: RunPodSandbox under
/// createPodSandbox, CreateContainer and StartContainer under startContainer.
fn assert_kubelet_parents(spans: &[&Span]) {
    let by_id: std::collections::HashMap<String, &Span> =
        spans.iter().map(|s| (s.span_id.to_hex(), *s)).collect();
    let parent = |span: &Span| {
        span.references
            .first()
            .and_then(|r| by_id.get(&r.span_id.to_hex()).copied())
    };
    let chain = |span: &Span| {
        let mut names = Vec::new();
        let mut current = parent(span);
        while let Some(up) = current {
            names.push(up.operation_name.clone());
            current = parent(up);
        }
        names
    };
    for (call, phase) in [
        ("RunPodSandbox", "KubeRuntime.createPodSandbox"),
        ("CreateContainer", "KubeRuntime.startContainer"),
        ("StartContainer", "KubeRuntime.startContainer"),
    ] {
        for span in spans.iter().filter(|s| s.operation_name == call) {
            let chain = chain(span);
            assert_eq!(
                chain.first().map(String::as_str),
                Some(phase),
                "{call} hangs under {phase}: {chain:?}\n{}",
                describe(spans)
            );
            assert!(
                chain.iter().any(|n| n == "KubeRuntime.SyncPod")
                    && chain.last().map(String::as_str) == Some("Kubelet.SyncPod"),
                "{call} is under the runtime sync, under Kubelet.SyncPod: {chain:?}"
            );
        }
    }
    let sync = spans
        .iter()
        .find(|s| s.operation_name == "Kubelet.SyncPod" && parent(s).is_none())
        .expect("a Kubelet.SyncPod root");
    assert_eq!(
        tag(sync, "nodetrace.kubelet.function").as_deref(),
        Some("Kubelet.SyncPod")
    );
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

const CONTEXT_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319d";

/// The kubelet's CRI client spans of traced methods in the traces of its `syncPod` spans for
/// the pod `uid`, each matched against the agent's spans of the pod. Waits until the kubelet
/// exported them (it batches) and every one is matched, or 30 s.
async fn wait_for_agreement(
    rotel: &Rotel,
    client: &Client,
    (name, uid): (&str, &str),
    at_least: usize,
) -> Agreement {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logged = parse_log(&rotel.log());
        let traces = client
            .traces(&by_name("default", name))
            .await
            .expect("query the agent");
        let ours: Vec<AgentCall> = traces
            .iter()
            .flat_map(|t| &t.spans)
            .map(|s| AgentCall {
                method: s.operation_name.clone(),
                pod_uid: tag(s, "k8s.pod.uid").unwrap_or_default(),
                start_unix_ns: s.start_unix_ns,
                end_unix_ns: end_of(s),
            })
            .collect();
        let agreement = agreement(&logged, &ours, uid);
        if (agreement.total >= at_least && agreement.matched == agreement.total)
            || Instant::now() > deadline
        {
            if agreement.total == 0 {
                let names: std::collections::BTreeSet<_> = logged
                    .values()
                    .filter_map(|s| s.fields.get("Name"))
                    .collect();
                eprintln!("  the kubelet's span names: {names:?}");
            }
            return agreement;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the agreement (with the methods seen) and fails below 99% or with fewer spans than
/// the pod's calls.
fn report(agreement: &Agreement, started: Instant, when: &str) {
    eprintln!(
        "[{:>6.2?}] pod {when}: the kubelet's CRI client spans matched by the agent: {} of {} ({:.1}%): {:?}",
        started.elapsed(),
        agreement.matched,
        agreement.total,
        agreement.percent(),
        agreement.methods
    );
    for missing in &agreement.unmatched {
        eprintln!("  not matched: {missing}");
    }
    assert!(
        agreement.percent() >= 99.0,
        "agreement with the kubelet's own spans below 99%: {agreement:?}"
    );
}

/// The kernel settings the kubelet changes when it starts.
fn kernel_settings() -> Vec<String> {
    ["kernel/panic", "kernel/panic_on_oops"]
        .iter()
        .map(|name| std::fs::read_to_string(format!("/proc/sys/{name}")).expect("read a sysctl"))
        .collect()
}
