//! End to end, the pod's view: a real containerd + runc with the nodetrace agent running in this
//! process, watching its node's pods in a fake Kubernetes API server (the testbed's
//! `fake_apiserver`: no kube-apiserver can run on these machines) through a kubeconfig, in one
//! sequence (one containerd, one agent: attaching and detaching the CRI uprobes is what costs):
//!
//! a. A pod with a trace-context annotation, known to the API before its RunPodSandbox: all its
//!    spans are in the annotation's trace, its CRI spans under the annotation's span, and every
//!    span carries its workload (a Deployment through its ReplicaSet) and allowed labels.
//! b. A pod without the annotation: its trace id is its UID.
//! c. A container that exits 1 and is created and started again as attempt 1, as a kubelet
//!    restarts it: both attempts in one trace, each labelled with its attempt, the exit code on
//!    the container-process span.
//! d. The three answer formats (`kelemetry`, `jaeger`, `otlp`) for the same pods describe the
//!    same spans; Jaeger and OTLP add one synthesized pod root that the pod's top spans hang
//!    under. For the annotated pod, whose top spans hang under the annotation's span, that root
//!    hangs there too (or is left out).
//! e. `GET /api/v1/pods` lists the three pods with their span counts, newest first.
//!
//! Where the agent answers wrongly the test goes on to the next step, so that one run tells
//! everything, and fails at the end (after the teardown) with every problem found.
//!
//! Needs root; skips with a reason otherwise.

mod common;

use common::{
    Agent, Ready, Step, by_name, count, count_of, describe, lifecycle_complete, otlp_spans, short,
    skipped_unless_root, spans_until, tag,
};
use nodetrace::api::{
    client::{Client, DEFAULT_TIMEOUT},
    format::jaeger_model::{Span, Trace, TracesResponse},
};
use nodetrace_testbed::{
    Testbed,
    cri::{ContainerSpec, PodIdentity, container_config, host_network_sandbox_config},
    fake_apiserver::{
        FakeApiServer,
        k8s_openapi::{
            api::core::v1::{Pod, PodSpec},
            apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
        },
    },
};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Namespace of the test's pods.
const NAMESPACE: &str = "e2e-pods";
/// The agent's node name, the `spec.nodeName` of the pods in the fake API server.
const NODE: &str = "e2e-pods-node";
/// The trace and span of the annotated pod's `trace.kubernetes.io/context` (W3C's example).
const CONTEXT_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CONTEXT_SPAN_ID: &str = "b7ad6b7169203331";
/// The annotated pod: a Deployment's pod, named as the Deployment controller names them.
const DEPLOYMENT: &str = "web";
const REPLICASET: &str = "web-7d4b9c";
const TEMPLATE_HASH: &str = "7d4b9c";
/// How long spans may take to reach the store after the calls returned.
const SPANS_TIMEOUT: Duration = Duration::from_secs(20);
/// The attribute of the synthesized pod root.
const SYNTHESIZED: &str = "nodetrace.synthesized";
/// The attempt attribute.
const ATTEMPT: &str = "nodetrace.cri.attempt";

/// How long the agent may take to attach its CRI uprobes and connect its pod watcher.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to stop (detaching the CRI uprobes).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /api/traces` for `ns/name` in `format`, as JSON.
async fn traces_json(agent: &Agent, name: &str, format: &str) -> Value {
    let url = format!(
        "{}/api/traces?pod={NAMESPACE}/{name}&format={format}",
        agent.url()
    );
    let response = reqwest::get(&url).await.expect("GET /api/traces");
    let status = response.status();
    let body = response.text().await.expect("the answer's body");
    assert!(status.is_success(), "{url} answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

/// The pod object the API server holds for a CRI pod: same namespace, name and UID, on the
/// agent's node.
fn api_pod(
    pod: &PodIdentity,
    labels: &[(&str, &str)],
    replicaset: Option<&str>,
    traceparent: Option<&str>,
) -> Pod {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    Pod {
        metadata: ObjectMeta {
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            labels: Some(map(labels)),
            annotations: traceparent.map(|value| map(&[("trace.kubernetes.io/context", value)])),
            owner_references: replicaset.map(|name| {
                vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "ReplicaSet".to_owned(),
                    name: name.to_owned(),
                    uid: "5d9f4c3e-0000-4000-8000-00000000e2e0".to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.to_owned()),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Puts `pod` into the API server and waits until the agent's watch has it.
async fn register(server: &FakeApiServer, pod: Pod) {
    server.apply(pod);
    server.wait_for_delivery().await;
    // The event is on the agent's connection; give its watcher a moment to apply it.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The one trace of a pod, checked to be one.
fn one_trace(traces: Vec<Trace>) -> Trace {
    let count = traces.len();
    let mut traces = traces.into_iter();
    match (traces.next(), count) {
        (Some(trace), 1) => trace,
        _ => panic!("expected one trace for the pod, got {count}"),
    }
}

/// The UID as a trace id: its 16 bytes in hex.
fn uid_trace_id(uid: &str) -> String {
    uid.replace('-', "")
}

/// What the agent got wrong, step by step. The steps go on after a wrong answer (so that one run
/// tells everything); the test fails at the end, after the teardown.
#[derive(Default)]
struct Findings {
    failed: Vec<String>,
}

impl Findings {
    /// Records the problems of `what` (printed at once, with the spans they are about).
    fn record(&mut self, what: &str, problems: &[String], spans: &[&Span]) {
        if problems.is_empty() {
            return;
        }
        let _ = writeln!(
            std::io::stderr(),
            "  WRONG: {what}: {} problem(s):\n    {}\n  spans:\n{}",
            problems.len(),
            problems.join("\n    "),
            describe(spans)
        );
        self.failed
            .push(format!("{what}:\n    {}", problems.join("\n    ")));
    }

    fn assert_none(&self) {
        assert!(
            self.failed.is_empty(),
            "the agent answered wrongly (details above):\n  {}",
            self.failed.join("\n  ")
        );
    }
}

/// One span as any of the three formats describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpanView {
    trace_id: String,
    name: String,
    parent: Option<String>,
    synthesized: bool,
}

/// The spans of an answer by span id.
type View = BTreeMap<String, SpanView>;

fn kelemetry_view(body: &Value) -> View {
    let response: TracesResponse =
        serde_json::from_value(body.clone()).expect("a Kelemetry (Jaeger model) answer");
    let mut view = View::new();
    for span in response.data.iter().flat_map(|t| &t.spans) {
        let old = view.insert(
            span.span_id.to_hex(),
            SpanView {
                trace_id: span.trace_id.to_hex(),
                name: span.operation_name.clone(),
                parent: parent_of(span),
                synthesized: tag(span, SYNTHESIZED).as_deref() == Some("true"),
            },
        );
        assert_eq!(old, None, "span {} twice", span.span_id.to_hex());
    }
    view
}

fn jaeger_view(body: &Value) -> View {
    let mut view = View::new();
    for trace in body["data"].as_array().expect("Jaeger UI data") {
        let processes = trace["processes"].as_object().expect("processes");
        for span in trace["spans"].as_array().expect("spans") {
            let id = span["spanID"].as_str().expect("spanID").to_owned();
            let process = span["processID"].as_str().expect("processID");
            assert!(
                processes.contains_key(process),
                "span {id}: process {process} not in the trace's processes"
            );
            let trace_id = span["traceID"].as_str().expect("traceID").to_owned();
            let parent = span["references"].as_array().and_then(|refs| {
                refs.iter()
                    .find(|r| r["refType"] == "CHILD_OF" && r["traceID"] == trace_id.as_str())
                    .map(|r| r["spanID"].as_str().expect("spanID").to_owned())
            });
            let synthesized = span["tags"].as_array().is_some_and(|tags| {
                tags.iter()
                    .any(|t| t["key"] == SYNTHESIZED && t["value"] == Value::Bool(true))
            });
            let view_span = SpanView {
                trace_id,
                name: span["operationName"].as_str().unwrap_or("").to_owned(),
                parent,
                synthesized,
            };
            assert_eq!(view.insert(id.clone(), view_span), None, "span {id} twice");
        }
    }
    view
}

fn otlp_view(body: &Value) -> View {
    otlp_spans(body)
        .into_iter()
        .map(|(id, (_, span))| {
            let synthesized = span["attributes"].as_array().is_some_and(|attributes| {
                attributes
                    .iter()
                    .any(|a| a["key"] == SYNTHESIZED && a["value"]["boolValue"] == true)
            });
            let view_span = SpanView {
                trace_id: span["traceId"].as_str().expect("traceId").to_owned(),
                name: span["name"].as_str().unwrap_or("").to_owned(),
                parent: span["parentSpanId"].as_str().map(str::to_owned),
                synthesized,
            };
            (id, view_span)
        })
        .collect()
}

fn describe_view(view: &View) -> String {
    view.iter()
        .map(|(id, s)| {
            format!(
                "  {id} {} trace={} parent={}{}",
                s.name,
                s.trace_id,
                s.parent.as_deref().unwrap_or("-"),
                if s.synthesized { " (synthesized)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the three formats of one pod against each other. `external_parent` is the span the
/// pod's top spans hang under outside this node (the annotation's), if any. Returns problems.
async fn check_formats(
    agent: &Agent,
    name: &str,
    trace_id: &str,
    external_parent: Option<&str>,
) -> Vec<String> {
    let pod = format!("{NAMESPACE}/{name}");
    let kelemetry = kelemetry_view(&traces_json(agent, name, "kelemetry").await);
    let jaeger = jaeger_view(&traces_json(agent, name, "jaeger").await);
    let otlp = otlp_view(&traces_json(agent, name, "otlp").await);
    let mut problems = Vec::new();
    let dump = || {
        format!(
            "kelemetry:\n{}\njaeger:\n{}\notlp:\n{}",
            describe_view(&kelemetry),
            describe_view(&jaeger),
            describe_view(&otlp)
        )
    };

    // Kelemetry: the observed spans only, all in the pod's trace.
    if let Some((id, _)) = kelemetry.iter().find(|(_, s)| s.synthesized) {
        problems.push(format!("kelemetry: span {id} is synthesized"));
    }
    for (format, view) in [
        ("kelemetry", &kelemetry),
        ("jaeger", &jaeger),
        ("otlp", &otlp),
    ] {
        for (id, span) in view {
            if span.trace_id != trace_id {
                problems.push(format!(
                    "{format}: {} {id} is in trace {}, not {trace_id}",
                    span.name, span.trace_id
                ));
            }
        }
    }
    // The spans at the top of the pod's node activity.
    let top: BTreeSet<&String> = kelemetry
        .iter()
        .filter(|(_, s)| s.parent.as_deref() == external_parent)
        .map(|(id, _)| id)
        .collect();
    if top.is_empty() {
        problems.push(format!(
            "kelemetry: no span hangs under {external_parent:?}"
        ));
    }

    // Jaeger UI: the same spans plus one synthesized root adopting the top spans; or, for a pod
    // whose spans already hang under a span of another trace, either a root under that span
    // adopting them, or no root at all.
    let roots: Vec<(&String, &SpanView)> = jaeger.iter().filter(|(_, s)| s.synthesized).collect();
    let root_id = match roots.as_slice() {
        [(id, root)] => {
            let expected_name = format!("pod {pod} on {NODE}");
            if root.name != expected_name {
                problems.push(format!(
                    "jaeger: the root is named {:?}, not {expected_name:?}",
                    root.name
                ));
            }
            if root.parent.as_deref() != external_parent {
                problems.push(format!(
                    "jaeger: the synthesized root {id} has parent {:?}, expected {:?} (the \
                     span the pod's spans hang under)",
                    root.parent, external_parent
                ));
            }
            Some((*id).clone())
        }
        [] if external_parent.is_some() => None,
        _ => {
            problems.push(format!(
                "jaeger: {} synthesized roots, expected 1",
                roots.len()
            ));
            None
        }
    };
    let expected_ids: BTreeSet<&String> = kelemetry.keys().chain(root_id.as_ref()).collect();
    let jaeger_ids: BTreeSet<&String> = jaeger.keys().collect();
    if jaeger_ids != expected_ids {
        problems.push(format!(
            "jaeger: span ids differ from kelemetry's (+ root {root_id:?}): only in jaeger {:?}, \
             missing {:?}",
            jaeger_ids.difference(&expected_ids).collect::<Vec<_>>(),
            expected_ids.difference(&jaeger_ids).collect::<Vec<_>>()
        ));
    }
    let mut adopted = 0;
    for (id, span) in &kelemetry {
        let Some(in_jaeger) = jaeger.get(id) else {
            continue;
        };
        let expected = match &root_id {
            Some(root) if top.contains(id) => Some(root.as_str()),
            _ => span.parent.as_deref(),
        };
        if in_jaeger.parent.as_deref() != expected {
            problems.push(format!(
                "jaeger: {} {id} has parent {:?}, expected {expected:?} (kelemetry: {:?})",
                span.name, in_jaeger.parent, span.parent
            ));
        }
        if root_id.is_some() && in_jaeger.parent == root_id {
            adopted += 1;
        }
        if in_jaeger.name != span.name {
            problems.push(format!(
                "jaeger: {id} is named {:?}, kelemetry {:?}",
                in_jaeger.name, span.name
            ));
        }
    }
    if let Some(root) = &root_id {
        eprintln!(
            "  {pod}: jaeger root {root} adopts {adopted} of {} spans (parent {:?})",
            kelemetry.len(),
            jaeger[root].parent
        );
    } else {
        eprintln!("  {pod}: jaeger has no synthesized root");
    }

    // OTLP: exactly what Jaeger UI says, in OTLP's terms.
    if otlp != jaeger {
        let differing: Vec<String> = jaeger
            .keys()
            .chain(otlp.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|id| jaeger.get(*id) != otlp.get(*id))
            .map(|id| format!("{id}: jaeger {:?} otlp {:?}", jaeger.get(id), otlp.get(id)))
            .collect();
        problems.push(format!(
            "otlp differs from jaeger: {}",
            differing.join("; ")
        ));
    }
    if !problems.is_empty() {
        eprintln!("  the answers for {pod}:\n{}", dump());
    }
    problems
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_traces_carry_context_metadata_attempts_and_all_formats() {
    if skipped_unless_root(
        "pod_traces_carry_context_metadata_attempts_and_all_formats",
        "eBPF uprobes, a private containerd with runc",
    ) {
        return;
    }
    let started = Instant::now();
    let started_us = now_us();
    let mut findings = Findings::default();
    let work = tempfile::tempdir().expect("temp dir");

    let step = Step::start(
        started,
        "setup: containerd, fake API server, kubeconfig, agent",
    );
    let testbed = Testbed::start(&work.path().join("testbed"))
        .await
        .expect("start the testbed");
    let apiserver = FakeApiServer::start([]).await;
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(&kubeconfig, apiserver.kubeconfig()).expect("write the kubeconfig");
    let agent = Agent::start(
        &work.path().join("agent-data"),
        testbed.containerd().socket(),
        [
            format!("--node-name={NODE}"),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--retention=1h".to_owned(),
            "--max-store-mib=64".to_owned(),
            format!("--btf={}", nodetrace::ebpf::VMLINUX_BTF),
        ],
        Ready::Components {
            names: &["cri", "kube"],
            within: READY_TIMEOUT,
        },
    )
    .await;
    apiserver.wait_for_open_watches(1).await;
    let watch = apiserver.watch_requests().pop().expect("the agent's watch");
    assert!(
        watch.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")),
        "the agent watches its node's pods only: {watch}"
    );
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    let cri = testbed.cri().clone();
    eprintln!("  agent ready after {:?}", started.elapsed());
    drop(step);

    // a. A Deployment's pod with a trace context, known to the API before RunPodSandbox.
    let step = Step::start(
        started,
        "a. a pod with a trace-context annotation and a Deployment owner",
    );
    let web = testbed.pod(NAMESPACE, &format!("{REPLICASET}-x2x4q"));
    let web_pod = web.pod.clone();
    let traceparent = format!("00-{CONTEXT_TRACE_ID}-{CONTEXT_SPAN_ID}-01");
    register(
        &apiserver,
        api_pod(
            &web_pod,
            &[
                ("app", DEPLOYMENT),
                ("app.kubernetes.io/name", DEPLOYMENT),
                ("pod-template-hash", TEMPLATE_HASH),
                ("team", "checkout"),
            ],
            Some(REPLICASET),
            Some(&traceparent),
        ),
    )
    .await;
    let web_report = web.run(&cri).await.expect("the annotated pod's lifecycle");
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, &web_pod.name),
        SPANS_TIMEOUT,
        lifecycle_complete(&web_report),
    )
    .await;
    let trace = one_trace(traces);
    let spans: Vec<&Span> = trace.spans.iter().collect();
    let ids: BTreeSet<String> = spans.iter().map(|s| s.span_id.to_hex()).collect();
    let mut problems = Vec::new();
    let mut under_annotation = Vec::new();
    for span in &spans {
        let what = format!(
            "{} {} ({})",
            span.operation_name,
            span.span_id.to_hex(),
            tag(span, "container.id").map_or_else(|| "-".to_owned(), |id| short(&id).to_owned())
        );
        if span.trace_id.to_hex() != CONTEXT_TRACE_ID {
            problems.push(format!(
                "{what} is in trace {}, not the annotation's {CONTEXT_TRACE_ID}",
                span.trace_id.to_hex()
            ));
        }
        let parent = parent_of(span);
        match parent.as_deref() {
            Some(CONTEXT_SPAN_ID) => under_annotation.push(span.operation_name.clone()),
            Some(p) if ids.contains(p) => {}
            other => problems.push(format!(
                "{what} has parent {other:?}, neither a span of the pod nor the annotation's \
                 {CONTEXT_SPAN_ID}"
            )),
        }
        if tag(span, "rpc.method").is_some() && parent.as_deref() != Some(CONTEXT_SPAN_ID) {
            problems.push(format!(
                "{what}: a CRI span has parent {parent:?}, not the annotation's span \
                 {CONTEXT_SPAN_ID}"
            ));
        }
        for (key, expected) in [
            ("k8s.pod.uid", web_pod.uid.as_str()),
            ("k8s.pod.name", web_pod.name.as_str()),
            ("k8s.namespace.name", NAMESPACE),
            ("k8s.deployment.name", DEPLOYMENT),
            ("k8s.replicaset.name", REPLICASET),
            ("k8s.pod.label.app", DEPLOYMENT),
            ("k8s.pod.label.app.kubernetes.io/name", DEPLOYMENT),
            ("nodetrace.trace_context.source", "annotation"),
        ] {
            let value = tag(span, key);
            if value.as_deref() != Some(expected) {
                problems.push(format!("{what}: {key} is {value:?}, expected {expected:?}"));
            }
        }
        for key in ["k8s.pod.label.pod-template-hash", "k8s.pod.label.team"] {
            if let Some(value) = tag(span, key) {
                problems.push(format!(
                    "{what}: carries {key}={value}, a label not allowed"
                ));
            }
        }
        let node = span
            .process
            .as_ref()
            .and_then(|p| p.tags.iter().find(|t| t.key == "k8s.node.name"))
            .map(|t| t.value_string());
        if node.as_deref() != Some(NODE) {
            problems.push(format!(
                "{what}: process tag k8s.node.name is {node:?}, not {NODE}"
            ));
        }
    }
    findings.record("a. the annotated pod's spans", &problems, &spans);
    under_annotation.sort();
    eprintln!(
        "  {} spans in trace {CONTEXT_TRACE_ID}; under the annotation's span: {}",
        spans.len(),
        under_annotation.join(", ")
    );
    drop(step);

    // b. A pod without the annotation: its trace id is its UID.
    let step = Step::start(
        started,
        "b. a pod without annotation: trace id from its UID",
    );
    let plain = testbed.pod(NAMESPACE, "plain");
    let plain_pod = plain.pod.clone();
    register(
        &apiserver,
        api_pod(&plain_pod, &[("app", "plain")], None, None),
    )
    .await;
    let plain_report = plain.run(&cri).await.expect("the plain pod's lifecycle");
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, &plain_pod.name),
        SPANS_TIMEOUT,
        lifecycle_complete(&plain_report),
    )
    .await;
    let trace = one_trace(traces);
    let spans: Vec<&Span> = trace.spans.iter().collect();
    let expected_trace = uid_trace_id(&plain_pod.uid);
    let mut problems = Vec::new();
    for span in &spans {
        let what = format!("{} {}", span.operation_name, span.span_id.to_hex());
        if span.trace_id.to_hex() != expected_trace {
            problems.push(format!(
                "{what} is in trace {}, not {expected_trace} (the UID {})",
                span.trace_id.to_hex(),
                plain_pod.uid
            ));
        }
        if tag(span, "rpc.method").is_some() && span.parent_span_id().is_some() {
            problems.push(format!("{what}: a CRI span with a parent"));
        }
        for (key, expected) in [
            ("k8s.pod.uid", Some(plain_pod.uid.as_str())),
            ("k8s.pod.label.app", Some("plain")),
            ("nodetrace.trace_context.source", None),
            ("k8s.deployment.name", None),
        ] {
            let value = tag(span, key);
            if value.as_deref() != expected {
                problems.push(format!("{what}: {key} is {value:?}, expected {expected:?}"));
            }
        }
    }
    findings.record("b. the plain pod's spans", &problems, &spans);
    eprintln!("  {} spans in trace {expected_trace}", spans.len());
    drop(step);

    // c. A container that exits 1, restarted as attempt 1 the way a kubelet does it.
    let step = Step::start(
        started,
        "c. a container exits 1 and is started again as attempt 1",
    );
    let crashy = PodIdentity::fresh(NAMESPACE, "crashy");
    register(
        &apiserver,
        api_pod(&crashy, &[("app", "crashy")], None, None),
    )
    .await;
    let log_dir = crashy.log_directory(testbed.containerd().pod_log_root());
    std::fs::create_dir_all(log_dir.join("main")).expect("pod log dir");
    let sandbox_config = host_network_sandbox_config(&crashy, &log_dir);
    let sandbox = cri
        .run_pod_sandbox(&sandbox_config)
        .await
        .expect("RunPodSandbox")
        .value;
    let spec = ContainerSpec::new(
        "main",
        nodetrace_testbed::BUSYBOX_IMAGE,
        &["sh", "-c", "echo crashing; exit 1"],
    );
    let mut containers = Vec::new();
    for attempt in [0, 1] {
        let config = container_config(&crashy, &spec.clone().with_attempt(attempt));
        let id = cri
            .create_container(&sandbox, &config, &sandbox_config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer attempt {attempt}: {e}"))
            .value;
        cri.start_container(&id)
            .await
            .unwrap_or_else(|e| panic!("StartContainer attempt {attempt}: {e}"));
        let status = cri
            .wait_for_container_exit(&id, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt} does not exit: {e}"));
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (1, "Error"),
            "attempt {attempt}'s status: {status:?}"
        );
        eprintln!("  attempt {attempt}: container {} exited 1", short(&id));
        containers.push(id);
    }
    for id in &containers {
        cri.remove_container(id).await.expect("RemoveContainer");
    }
    cri.stop_pod_sandbox(&sandbox)
        .await
        .expect("StopPodSandbox");
    cri.remove_pod_sandbox(&sandbox)
        .await
        .expect("RemovePodSandbox");
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, "crashy"),
        SPANS_TIMEOUT,
        |spans| {
            count(spans, "CreateContainer") == 2
                && count(spans, "StartContainer") == 2
                && count(spans, "RemovePodSandbox") == 1
                && count_of(spans, "container process", &sandbox) == 1
                && containers.iter().all(|id| {
                    count_of(spans, "container process", id) == 1
                        && count_of(spans, "runc delete", id) >= 1
                })
        },
    )
    .await;
    let trace = one_trace(traces);
    let spans: Vec<&Span> = trace.spans.iter().collect();
    let expected_trace = uid_trace_id(&crashy.uid);
    let by_id = |id: &str| spans.iter().copied().find(|s| s.span_id.to_hex() == id);
    let mut problems = Vec::new();
    let mut carriers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for span in &spans {
        let container = tag(span, "container.id").unwrap_or_default();
        let what = format!(
            "{} {} ({})",
            span.operation_name,
            span.span_id.to_hex(),
            short(&container)
        );
        if span.trace_id.to_hex() != expected_trace {
            problems.push(format!(
                "{what} is in trace {}, not the pod's {expected_trace}",
                span.trace_id.to_hex()
            ));
        }
        let attempt = tag(span, ATTEMPT);
        if attempt.is_some() {
            carriers
                .entry(span.operation_name.clone())
                .or_default()
                .insert(attempt.clone().unwrap_or_default());
        }
        // Every span about one of the two containers, or about the sandbox (its runc runs and
        // pause process, and the sandbox calls), says which attempt it was about.
        let about_sandbox = container == sandbox
            || (container.is_empty()
                && tag(span, "k8s.pod.sandbox.id").as_deref() == Some(sandbox.as_str()));
        if about_sandbox && attempt.as_deref() != Some("0") {
            problems.push(format!(
                "{what}: {ATTEMPT} is {attempt:?}, expected 0 (the sandbox's attempt)"
            ));
        }
        if let Some(n) = containers.iter().position(|id| *id == container) {
            if attempt != Some(n.to_string()) {
                problems.push(format!(
                    "{what}: {ATTEMPT} is {attempt:?}, expected {n} (the container's attempt)"
                ));
            }
            // Its runc runs and its process hang under its own StartContainer (or nowhere, when
            // the process raced the call's return).
            if matches!(
                span.operation_name.as_str(),
                "runc create" | "runc start" | "container process"
            ) && let Some(parent) = parent_of(span)
            {
                let parent_span = by_id(&parent);
                let ok = parent_span.is_some_and(|p| {
                    p.operation_name == "StartContainer"
                        && tag(p, "container.id").as_deref() == Some(container.as_str())
                });
                if !ok {
                    problems.push(format!(
                        "{what}: parent {parent} ({:?}) is not its container's StartContainer",
                        parent_span.map(|p| p.operation_name.as_str())
                    ));
                }
            }
        }
    }
    let creates: Vec<(Option<String>, Option<String>)> = spans
        .iter()
        .filter(|s| s.operation_name == "CreateContainer")
        .map(|s| (tag(s, ATTEMPT), tag(s, "container.id")))
        .collect();
    for (n, id) in containers.iter().enumerate() {
        if !creates.contains(&(Some(n.to_string()), Some(id.clone()))) {
            problems.push(format!(
                "no CreateContainer span with {ATTEMPT}={n} for {}: {creates:?}",
                short(id)
            ));
        }
    }
    for (n, id) in containers.iter().enumerate() {
        let processes: Vec<&&Span> = spans
            .iter()
            .filter(|s| {
                s.operation_name == "container process"
                    && tag(s, "container.id").as_deref() == Some(id.as_str())
            })
            .collect();
        let [process] = processes.as_slice() else {
            problems.push(format!(
                "{} container-process spans for attempt {n}",
                processes.len()
            ));
            continue;
        };
        let exit = tag(process, "process.exit.code");
        let error = (tag(process, "error"), tag(process, "otel.status_code"));
        if exit.as_deref() != Some("1") {
            problems.push(format!(
                "attempt {n}'s container process: process.exit.code is {exit:?}, not 1"
            ));
        }
        if error != (Some("true".to_owned()), Some("ERROR".to_owned())) {
            problems.push(format!(
                "attempt {n}'s container process: error/otel.status_code are {error:?}, not an \
                 error status"
            ));
        }
    }
    eprintln!("  spans carrying {ATTEMPT}: {carriers:?}");
    findings.record("c. the restarted container's pod", &problems, &spans);
    eprintln!(
        "  {} spans, both attempts in trace {expected_trace}",
        spans.len()
    );
    drop(step);

    // d. The three formats of the same pods.
    let step = Step::start(
        started,
        "d. kelemetry, jaeger and otlp answers describe the same spans",
    );
    let mut problems = check_formats(
        &agent,
        &web_pod.name,
        CONTEXT_TRACE_ID,
        Some(CONTEXT_SPAN_ID),
    )
    .await;
    problems.extend(check_formats(&agent, "crashy", &uid_trace_id(&crashy.uid), None).await);
    findings.record("d. the three formats", &problems, &[]);
    drop(step);

    // e. The pods listing.
    let step = Step::start(started, "e. GET /api/v1/pods lists the pods");
    let expected = [
        (&crashy, "crashy"),
        (&plain_pod, "plain"),
        (&web_pod, web_pod.name.as_str()),
    ];
    let mut counts = BTreeMap::new();
    for (pod, name) in &expected {
        let traces = client
            .traces(&by_name(NAMESPACE, name))
            .await
            .expect("traces");
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        counts.insert(pod.uid.clone(), spans as u64);
    }
    let page = client
        .pods(
            started_us.saturating_sub(60_000_000),
            now_us() + 60_000_000,
            100,
            0,
        )
        .await
        .expect("GET /api/v1/pods");
    let listed: Vec<String> = page
        .pods
        .iter()
        .map(|p| {
            format!(
                "{} {}/{} spans={} {}..{}",
                p.uid, p.namespace, p.name, p.span_count, p.first_activity_us, p.last_activity_us
            )
        })
        .collect();
    let mut problems = Vec::new();
    let mut positions = Vec::new();
    for (pod, name) in &expected {
        let Some(at) = page.pods.iter().position(|p| p.uid == pod.uid) else {
            problems.push(format!("{name} ({}) is not listed", pod.uid));
            continue;
        };
        let entry = &page.pods[at];
        if (entry.namespace.as_str(), entry.name.as_str()) != (NAMESPACE, *name) {
            problems.push(format!(
                "{} is listed as {}/{}, not {NAMESPACE}/{name}",
                pod.uid, entry.namespace, entry.name
            ));
        }
        let in_trace = counts.get(&pod.uid).copied().unwrap_or_default();
        if entry.span_count != in_trace {
            problems.push(format!(
                "{name}: span count {} in the listing, {in_trace} in its trace",
                entry.span_count
            ));
        }
        if entry.first_activity_us > entry.last_activity_us || entry.first_activity_us < started_us
        {
            problems.push(format!(
                "{name}: activity {}..{} µs is not within the test (from {started_us})",
                entry.first_activity_us, entry.last_activity_us
            ));
        }
        positions.push(at);
    }
    if !positions.windows(2).all(|w| w[0] < w[1]) {
        problems.push(format!(
            "not newest activity first (crashy, plain, {}): positions {positions:?}",
            web_pod.name
        ));
    }
    eprintln!("  listed:\n    {}", listed.join("\n    "));
    findings.record("e. the pods listing", &problems, &[]);
    drop(step);

    let step = Step::start(started, "stop the agent");
    agent.stop(STOP_TIMEOUT).await;
    drop(apiserver);
    drop(step);

    let step = Step::start(started, "teardown");
    let teardown = testbed.stop().expect("the testbed leaves nothing behind");
    eprintln!("  teardown: {teardown:?}");
    drop(step);
    eprintln!("[{:>6.2?}] done", started.elapsed());
    findings.assert_none();
}

/// A span's parent in the Kelemetry answer: its reference, or, for a parent outside the answer
/// (the annotation's span), the tag the reference was turned into.
fn parent_of(span: &Span) -> Option<String> {
    span.parent_span_id()
        .map(|p| p.to_hex())
        .or_else(|| tag(span, "nodetrace.parent_span_id"))
}
