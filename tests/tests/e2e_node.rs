//! End to end on a real node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! a kubelet built from the Go module proxy drive the testbed's containerd 2.4 and runc 1.5; a
//! pod made through the API runs on the pod network, and the agent (watching the API with the
//! admin's kubeconfig) traces what the kubelet asked of the runtime for it. Teardown leaves no
//! process, address, bridge or changed kernel setting behind. Needs root and the built
//! components (`NODETRACE_RUNTIMES_DIR`); skips with a reason otherwise.

mod common;

use common::{Agent, Ready, by_name, count, describe, skipped_unless_root, spans_until, tag};
use nodetrace::{
    api::{
        client::{Client, DEFAULT_TIMEOUT},
        format::jaeger_model::Span,
    },
    ebpf::VMLINUX_BTF,
};
use nodetrace_testbed::{
    BUSYBOX_IMAGE, BuiltRuntimes,
    cluster::{Cluster, ClusterBinaries, NODE_IP},
};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_made_through_the_api_runs_on_the_node() {
    let test = "a_pod_made_through_the_api_runs_on_the_node";
    if skipped_unless_root(test, "a kubelet, containerd, network interfaces") {
        return;
    }
    let Some(built) = BuiltRuntimes::from_env() else {
        eprintln!("skipped {test}: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
        return;
    };
    let binaries = ClusterBinaries::from_built(&built, "v1.37", "v3.7")
        .expect("Kubernetes 1.37 and etcd 3.7 (cargo xtask setup)");
    let containerd = built.containerd("v2.4").expect("containerd 2.4");
    let (_, runc) = built.runc("v1.5").expect("runc 1.5");
    let work = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let sysctls_before = kernel_settings();
    let cluster = Cluster::start(&work.path().join("cluster"), binaries, containerd, &runc)
        .await
        .unwrap_or_else(|e| panic!("start the cluster: {e}"));
    eprintln!("[{:>6.2?}] cluster ready", started.elapsed());
    assert_eq!(
        kernel_settings(),
        sysctls_before,
        "the kubelet's kernel settings are given back once it runs"
    );
    let agent = Agent::start(
        &work.path().join("agent-data"),
        cluster.testbed().containerd().socket(),
        [
            "--node-name=nodetrace-node".to_owned(),
            format!("--kubeconfig={}", cluster.admin_kubeconfig().display()),
            format!("--oci-runtime-binary={}", runc.display()),
            format!("--btf={VMLINUX_BTF}"),
        ],
        Ready::Components {
            names: &["cri"],
            within: Duration::from_secs(30),
        },
    )
    .await;
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    eprintln!("[{:>6.2?}] agent ready", started.elapsed());
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
            ["RunPodSandbox", "CreateContainer", "StartContainer"]
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

/// The kernel settings the kubelet changes when it starts.
fn kernel_settings() -> Vec<String> {
    ["kernel/panic", "kernel/panic_on_oops"]
        .iter()
        .map(|name| std::fs::read_to_string(format!("/proc/sys/{name}")).expect("read a sysctl"))
        .collect()
}
