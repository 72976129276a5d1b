//! End to end, CNI spans: a real containerd 2.4 + runc 1.5 with Debian's CNI plugins (`bridge`
//! with `host-local` IPAM) and the nodetrace agent running in this process.
//!
//! The pod network's range has room for one pod (a /30: the bridge takes .1, the pod .2):
//!
//! 1. Pod A gets a network: its RunPodSandbox has `CNI ADD bridge` (under it `CNI ADD
//!    host-local`, the IPAM plugin bridge runs) and `CNI ADD loopback`, each with the plugin,
//!    command, interface, network namespace, sandbox and pod, and exit code 0.
//! 2. Pod B finds the range full: host-local fails, so does bridge, and containerd undoes the
//!    ADD with a DEL; RunPodSandbox fails. The failed plugins are error spans with the exit
//!    code and the error the plugin printed.
//! 3. Pod A stops: its StopPodSandbox has `CNI DEL bridge` with `CNI DEL host-local` under it.
//!
//! Needs root and the runtimes `cargo xtask setup` builds (NODETRACE_RUNTIMES_DIR, which
//! `cargo xtask test` sets); skips with a reason otherwise.

mod common;

use common::{
    Agent, Ready, Step, assert_inside, by_name, describe, end, skipped_unless_root, spans_until,
    tag,
};
use k8s_cri::v1 as api;
use nodetrace::{
    api::{
        client::{Client, DEFAULT_TIMEOUT},
        format::jaeger_model::Span,
    },
    ebpf::VMLINUX_BTF,
};
use nodetrace_testbed::{
    BuiltRuntimes, CniNetwork, ContainerdOptions, Testbed,
    cluster::host::delete_link,
    cri::{PodIdentity, host_network_sandbox_config},
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

const NAMESPACE: &str = "e2e-cni";
/// The pod bridge the plugin makes (deleted at the end).
const BRIDGE: &str = "ntcni-br0";
/// Room for one pod: .1 is the bridge's (the gateway), .2 the only address left.
const SUBNET: &str = "10.246.0.0/30";
/// Where Debian's containernetworking-plugins are.
const PLUGINS: &str = "/usr/lib/cni";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SPANS_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The network: bridge with host-local IPAM, as the test cluster's pods get (one pod's room).
fn conflist(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "nodetrace-cni-e2e",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": SUBNET }]],
                "dataDir": ipam_dir,
            },
        }],
    })
    .to_string()
}

/// A pod on the pod network (kubelet's config for a pod without `hostNetwork`).
fn pod_network_sandbox_config(pod: &PodIdentity, logs: &Path) -> api::PodSandboxConfig {
    let mut config = host_network_sandbox_config(pod, logs);
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|context| context.namespace_options.as_mut())
    {
        options.network = api::NamespaceMode::Pod as i32;
    }
    config
}

/// The one span named `name`, failing with the spans when there is not exactly one.
fn one<'a>(spans: &[&'a Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| s.operation_name == name)
        .collect();
    match found.as_slice() {
        [span] => span,
        _ => panic!(
            "expected one `{name}` span, got {}:\n{}",
            found.len(),
            describe(spans)
        ),
    }
}

/// The one span named `name` whose parent is `parent`.
fn child<'a>(spans: &[&'a Span], name: &str, parent: &Span) -> &'a Span {
    let parent_id = Some(parent.span_id.to_hex());
    let found: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| s.operation_name == name && parent_of(s) == parent_id)
        .collect();
    match found.as_slice() {
        [span] => span,
        _ => panic!(
            "expected one `{name}` span under {} ({}), got {}:\n{}",
            parent.operation_name,
            parent.span_id.to_hex(),
            found.len(),
            describe(spans)
        ),
    }
}

fn parent_of(span: &Span) -> Option<String> {
    span.parent_span_id().map(|id| id.to_hex())
}

/// What every plugin span of `pod` carries.
fn assert_plugin(span: &Span, plugin: &str, command: &str, sandbox: &str, pod: &PodIdentity) {
    let what = &span.operation_name;
    assert_eq!(tag(span, "cni.plugin").as_deref(), Some(plugin), "{what}");
    assert_eq!(tag(span, "cni.command").as_deref(), Some(command), "{what}");
    assert_eq!(
        tag(span, "cni.container_id").as_deref(),
        Some(sandbox),
        "{what}"
    );
    assert_eq!(
        tag(span, "container.id").as_deref(),
        Some(sandbox),
        "{what}"
    );
    assert!(
        tag(span, "cni.netns").is_some_and(|netns| netns.starts_with("/var/run/netns/")),
        "{what}: netns {:?}",
        tag(span, "cni.netns")
    );
    assert_eq!(
        tag(span, "k8s.pod.uid").as_deref(),
        Some(pod.uid.as_str()),
        "{what}"
    );
    assert_eq!(
        tag(span, "k8s.pod.name").as_deref(),
        Some(pod.name.as_str()),
        "{what}"
    );
    assert_eq!(
        tag(span, "k8s.namespace.name").as_deref(),
        Some(NAMESPACE),
        "{what}"
    );
    assert_eq!(
        tag(span, "process.executable.path").as_deref(),
        Some(format!("{PLUGINS}/{plugin}").as_str()),
        "{what}"
    );
    let process = span.process.as_ref().expect("process");
    assert_eq!(process.service_name, "containerd", "{what}");
}

fn assert_succeeded(span: &Span) {
    let what = &span.operation_name;
    assert_eq!(
        tag(span, "process.exit.code").as_deref(),
        Some("0"),
        "{what}"
    );
    assert_eq!(tag(span, "error"), None, "{what} succeeded");
}

/// One line per span for the test's output: name, duration, exit code.
fn report(label: &str, spans: &[&Span]) {
    for span in spans {
        if span.operation_name.starts_with("CNI ") || span.operation_name.ends_with("PodSandbox") {
            eprintln!(
                "  {label}: {:<24} {:>8.2} ms  exit {}  {}",
                span.operation_name,
                span.duration_ns as f64 / 1e6,
                tag(span, "process.exit.code").unwrap_or_else(|| "-".to_owned()),
                tag(span, "otel.status_description").unwrap_or_default()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_plugin_runs_hang_under_the_sandbox_calls_that_ran_them() {
    let test = "cni_plugin_runs_hang_under_the_sandbox_calls_that_ran_them";
    if skipped_unless_root(test, "eBPF, a private containerd with a CNI bridge network") {
        return;
    }
    let Some(built) = BuiltRuntimes::from_env() else {
        eprintln!("skipped {test}: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
        return;
    };
    let containerd = built
        .containerd("v2.4")
        .expect("containerd 2.4 (cargo xtask setup)");
    let (_, runc) = built.runc("v1.5").expect("runc 1.5 (cargo xtask setup)");
    assert!(
        Path::new(PLUGINS).join("bridge").is_file(),
        "Debian's containernetworking-plugins (cargo xtask setup)"
    );
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let _bridge = BridgeGone(BRIDGE);

    let step = Step::start(started, "setup: containerd with a bridge network, agent");
    let testbed = Testbed::start_with(
        &work.path().join("testbed"),
        ContainerdOptions {
            containerd_binary: containerd.containerd,
            shim_binary: Some(containerd.shim),
            runc_binary: Some(runc.clone()),
            cni: Some(CniNetwork {
                bin_dir: PathBuf::from(PLUGINS),
                conflist: conflist(&work.path().join("ipam")),
            }),
            ..ContainerdOptions::default()
        },
    )
    .await
    .expect("start the testbed");
    let agent = Agent::start(
        &work.path().join("agent-data"),
        testbed.containerd().socket(),
        [
            "--node-name=e2e-node".to_owned(),
            format!("--btf={VMLINUX_BTF}"),
            format!("--oci-runtime-binary={}", runc.display()),
            "--cni-error-messages".to_owned(),
        ],
        Ready::Components {
            names: &["cri"],
            within: READY_TIMEOUT,
        },
    )
    .await;
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    let cri = testbed.cri().clone();
    let logs = testbed.containerd().pod_log_root().to_owned();
    drop(step);

    let step = Step::start(started, "1. pod A gets the network's one address");
    let pod_a = PodIdentity::fresh(NAMESPACE, "pod-a");
    let run_a = cri
        .run_pod_sandbox(&pod_network_sandbox_config(
            &pod_a,
            &pod_a.log_directory(&logs),
        ))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox of pod A: {e}\ncontainerd log:\n{}",
                testbed.containerd().log_tail(3000)
            )
        });
    let (sandbox_a, run_a_window) = run_a.into_parts();
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, "pod-a"),
        SPANS_TIMEOUT,
        |spans| {
            [
                "RunPodSandbox",
                "CNI ADD bridge",
                "CNI ADD host-local",
                "CNI ADD loopback",
            ]
            .iter()
            .all(|name| spans.iter().any(|s| s.operation_name == *name))
        },
    )
    .await;
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    report("pod A", &spans);
    let run = one(&spans, "RunPodSandbox");
    let bridge = one(&spans, "CNI ADD bridge");
    let ipam = one(&spans, "CNI ADD host-local");
    let loopback = one(&spans, "CNI ADD loopback");
    for (span, plugin) in [
        (bridge, "bridge"),
        (ipam, "host-local"),
        (loopback, "loopback"),
    ] {
        assert_plugin(span, plugin, "ADD", &sandbox_a, &pod_a);
        assert_succeeded(span);
        assert_inside(span, run_a_window, &span.operation_name);
        assert_eq!(
            span.trace_id, run.trace_id,
            "{}: the pod's trace",
            span.operation_name
        );
    }
    assert_eq!(
        parent_of(bridge),
        Some(run.span_id.to_hex()),
        "bridge under RunPodSandbox"
    );
    assert_eq!(parent_of(loopback), Some(run.span_id.to_hex()));
    assert_eq!(
        parent_of(ipam),
        Some(bridge.span_id.to_hex()),
        "host-local under the bridge plugin that ran it"
    );
    assert!(ipam.start_unix_ns >= bridge.start_unix_ns && end(ipam) <= end(bridge));
    assert_eq!(tag(bridge, "cni.ifname").as_deref(), Some("eth0"));
    assert_eq!(tag(loopback, "cni.ifname").as_deref(), Some("lo"));
    assert_eq!(tag(bridge, "nodetrace.cri.attempt").as_deref(), Some("0"));
    drop(step);

    let step = Step::start(started, "2. pod B finds the range full: its plugins fail");
    let pod_b = PodIdentity::fresh(NAMESPACE, "pod-b");
    let failed = cri
        .run_pod_sandbox(&pod_network_sandbox_config(
            &pod_b,
            &pod_b.log_directory(&logs),
        ))
        .await;
    let Err(failure) = failed else {
        panic!("RunPodSandbox of pod B succeeded with no address left");
    };
    eprintln!("  pod B's RunPodSandbox failed as it must: {failure}");
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, "pod-b"),
        SPANS_TIMEOUT,
        |spans| {
            [
                "RunPodSandbox",
                "CNI ADD bridge",
                "CNI ADD host-local",
                "CNI DEL bridge",
            ]
            .iter()
            .all(|name| spans.iter().any(|s| s.operation_name == *name))
        },
    )
    .await;
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    report("pod B", &spans);
    let run = one(&spans, "RunPodSandbox");
    assert_eq!(
        tag(run, "error").as_deref(),
        Some("true"),
        "RunPodSandbox failed"
    );
    let bridge = one(&spans, "CNI ADD bridge");
    let ipam = one(&spans, "CNI ADD host-local");
    let sandbox_b = tag(bridge, "cni.container_id").expect("the sandbox's id");
    for (span, plugin) in [(bridge, "bridge"), (ipam, "host-local")] {
        assert_plugin(span, plugin, "ADD", &sandbox_b, &pod_b);
        assert_eq!(
            tag(span, "process.exit.code").as_deref(),
            Some("1"),
            "{plugin}"
        );
        assert_eq!(
            tag(span, "error").as_deref(),
            Some("true"),
            "{plugin} failed"
        );
        // The error the plugin printed: host-local's own, which bridge passes on.
        let status = tag(span, "otel.status_description").unwrap_or_default();
        assert!(
            status.contains("exited with status 1: ")
                && status.contains("no IP addresses available in range set"),
            "{plugin}'s status says why: {status}"
        );
        let message = tag(span, "cni.error.message").unwrap_or_default();
        assert!(
            message.contains("no IP addresses available in range set"),
            "{plugin}'s error message: {message}"
        );
        assert!(
            tag(span, "cni.error.code").is_some(),
            "{plugin}'s error code"
        );
    }
    assert_eq!(parent_of(bridge), Some(run.span_id.to_hex()));
    assert_eq!(parent_of(ipam), Some(bridge.span_id.to_hex()));
    // containerd undoes the failed ADD in the same call.
    let undo = spans
        .iter()
        .find(|s| s.operation_name == "CNI DEL bridge")
        .expect("the DEL that undoes the ADD");
    assert_eq!(parent_of(undo), Some(run.span_id.to_hex()));
    drop(step);

    let step = Step::start(started, "3. pod A stops: DEL under StopPodSandbox");
    let stop_window = cri
        .stop_pod_sandbox(&sandbox_a)
        .await
        .expect("StopPodSandbox of pod A")
        .window;
    cri.remove_pod_sandbox(&sandbox_a)
        .await
        .expect("RemovePodSandbox of pod A");
    // containerd tears the network down at StopPodSandbox, and once more (without the network
    // namespace, gone by then) at RemovePodSandbox.
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, "pod-a"),
        SPANS_TIMEOUT,
        |spans| {
            ["CNI DEL bridge", "CNI DEL host-local", "CNI DEL loopback"]
                .iter()
                .all(|name| spans.iter().filter(|s| s.operation_name == *name).count() == 2)
                && spans.iter().any(|s| s.operation_name == "RemovePodSandbox")
        },
    )
    .await;
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    report("pod A", &spans);
    let stop = one(&spans, "StopPodSandbox");
    let remove = one(&spans, "RemovePodSandbox");
    let bridge = child(&spans, "CNI DEL bridge", stop);
    let loopback = child(&spans, "CNI DEL loopback", stop);
    let ipam = child(&spans, "CNI DEL host-local", bridge);
    for (span, plugin) in [
        (bridge, "bridge"),
        (ipam, "host-local"),
        (loopback, "loopback"),
    ] {
        assert_plugin(span, plugin, "DEL", &sandbox_a, &pod_a);
        assert_succeeded(span);
        assert_inside(span, stop_window, &span.operation_name);
    }
    let again = child(&spans, "CNI DEL bridge", remove);
    assert_succeeded(again);
    assert_eq!(
        tag(again, "cni.container_id").as_deref(),
        Some(sandbox_a.as_str())
    );
    assert_succeeded(child(&spans, "CNI DEL host-local", again));
    assert_succeeded(child(&spans, "CNI DEL loopback", remove));
    let scrape = agent.scrape().await;
    assert_eq!(
        common::metric(
            &scrape,
            "nodetrace_events_dropped_total{reason=\"cni_env_cut\"}"
        ),
        Some(0.0),
        "containerd's environment was examined whole"
    );
    drop(step);

    let step = Step::start(started, "teardown");
    agent.stop(STOP_TIMEOUT).await;
    testbed.stop().expect("teardown");
    drop(step);
}

/// Deletes the pod bridge when the test ends, passed or failed (after the testbed's teardown
/// removed the pods: it is declared before the testbed).
struct BridgeGone(&'static str);

impl Drop for BridgeGone {
    fn drop(&mut self) {
        delete_link(self.0);
    }
}
