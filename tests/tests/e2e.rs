//! End to end: a real containerd + runc driven through the CRI API like kubelet drives it, the
//! real nodetrace agent (eBPF programs, correlator, LMDB store, HTTP API) running alongside,
//! and the pod's trace read back over HTTP. Needs root; skips with a reason otherwise.

mod common;

use common::{
    Agent, LIFECYCLE_CALLS, Ready, assert_inside, assert_lifecycle_call, assert_pod, by_name,
    describe, end, expected_parent, lifecycle_complete, metric, otlp_spans, skipped_unless_root,
    spans_until, tag, window,
};
use nodetrace::api::{
    PodSelector,
    client::{Client, DEFAULT_TIMEOUT, TraceQuery},
    format::jaeger_model::{Span, Trace},
};
use nodetrace_testbed::{
    CriCall, Testbed,
    rotel::{LoggedSpan, Rotel, free_port, rotel_or_skip},
};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long spans may take to reach the store after the calls returned.
const SPANS_TIMEOUT: Duration = Duration::from_secs(15);

/// An OTLP/JSON attribute value as rotel's debug log prints it.
fn printed(value: &serde_json::Value) -> String {
    if let Some(s) = value.get("stringValue").and_then(|v| v.as_str()) {
        return format!("Str({s})");
    }
    if let Some(i) = value.get("intValue") {
        return format!(
            "Int({})",
            i.as_str().map_or_else(|| i.to_string(), str::to_owned)
        );
    }
    if let Some(b) = value.get("boolValue").and_then(|v| v.as_bool()) {
        return format!("Bool({b})");
    }
    let items: Vec<String> = value["arrayValue"]["values"]
        .as_array()
        .map(|values| values.iter().map(printed).collect())
        .unwrap_or_default();
    format!("Slice({})", items.join(", "))
}

fn printed_attributes(attributes: &serde_json::Value) -> BTreeMap<String, String> {
    attributes
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| {
                    (
                        a["key"].as_str().unwrap_or("").to_owned(),
                        printed(&a["value"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_same_span(
    id: &str,
    resource: &serde_json::Value,
    span: &serde_json::Value,
    logged: &LoggedSpan,
) {
    let name = span["name"].as_str().unwrap_or("");
    let field = |key: &str| logged.fields.get(key).cloned().unwrap_or_default();
    assert_eq!(
        field("Trace ID"),
        span["traceId"].as_str().unwrap_or(""),
        "{name} {id}"
    );
    assert_eq!(
        field("Parent ID"),
        span["parentSpanId"].as_str().unwrap_or(""),
        "{name}"
    );
    assert_eq!(field("Name"), name);
    assert_eq!(
        field("Start time"),
        span["startTimeUnixNano"].as_str().unwrap_or(""),
        "{name}"
    );
    assert_eq!(
        field("End time"),
        span["endTimeUnixNano"].as_str().unwrap_or(""),
        "{name}"
    );
    assert_eq!(
        logged.attributes,
        printed_attributes(&span["attributes"]),
        "attributes of {name}"
    );
    let resource = printed_attributes(resource);
    for (key, value) in &resource {
        assert_eq!(
            logged.resource.get(key),
            Some(value),
            "resource {key} of {name}"
        );
    }
    assert_eq!(
        logged.resource.get("k8s.cluster.name").map(String::as_str),
        Some("Str(e2e-cluster)"),
        "{name}"
    );
}

fn find<'a>(spans: &[&'a Span], name: &str, id: &str) -> &'a Span {
    spans
        .iter()
        .copied()
        .find(|s| s.operation_name == name && tag(s, "container.id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no `{name}` span for {id}; spans:\n{}", describe(spans)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lifecycle_is_traced_end_to_end() {
    if skipped_unless_root(
        "a_pod_lifecycle_is_traced_end_to_end",
        "eBPF, containerd, mounts",
    ) {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let testbed = Testbed::start(&work.path().join("testbed"))
        .await
        .expect("start the testbed");
    // A real OpenTelemetry collector receives the same spans over OTLP/gRPC.
    let rotel = rotel_or_skip().map(|bin| {
        let grpc = free_port();
        (Rotel::start(&bin, grpc, free_port()), grpc)
    });
    let mut flags = vec![
        "--node-name=e2e-node".to_owned(),
        "--max-store-mib=64".to_owned(),
        "--cluster-name=e2e-cluster".to_owned(),
        "--otlp-timeout=5s".to_owned(),
        "--no-kube".to_owned(),
    ];
    flags.extend(
        rotel
            .as_ref()
            .map(|(_, port)| format!("--otlp-endpoint=http://127.0.0.1:{port}")),
    );
    let agent = Agent::start(
        &work.path().join("agent-data"),
        testbed.containerd().socket(),
        flags,
        Ready::Agent {
            within: Duration::from_secs(20),
        },
    )
    .await;

    let before = agent.scrape().await;
    let lifecycle = testbed
        .pod("e2e", "web")
        .with_exec(&["sh", "-c", "echo hello; exit 3"]);
    let report = lifecycle.run(testbed.cri()).await.expect("pod lifecycle");
    assert_eq!(report.exec.exit_code, 3);
    let (sandbox, container) = (report.sandbox_id.clone(), report.container_id.clone());

    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    let by_pod_name = by_name("e2e", "web");
    let traces = spans_until(
        &client,
        &by_pod_name,
        SPANS_TIMEOUT,
        lifecycle_complete(&report),
    )
    .await;
    assert_eq!(traces.len(), 1, "one pod, one trace");
    let spans: Vec<&Span> = traces[0].spans.iter().collect();

    // Every span carries the pod, the node and the container it was for.
    let uid = report.pod.uid.clone();
    for span in &spans {
        assert_pod(span, &report.pod);
        let what = format!("{} of {:?}", span.operation_name, tag(span, "container.id"));
        if tag(span, "rpc.method").is_some() {
            continue; // CRI spans: checked below, per method.
        }
        let id = tag(span, "container.id").unwrap_or_default();
        assert!(
            id == sandbox || id == container,
            "{what}: unknown container"
        );
        if id == container {
            assert_eq!(
                tag(span, "k8s.container.name").as_deref(),
                Some("main"),
                "{what}"
            );
            assert_eq!(
                tag(span, "container.image.name").as_deref(),
                Some(report.image.as_str()),
                "{what}"
            );
        }
    }

    // The sandbox: created and started by RunPodSandbox, killed and deleted by StopPodSandbox.
    let run_sandbox = window(&report, CriCall::RunPodSandbox);
    let stop_sandbox = window(&report, CriCall::StopPodSandbox);
    assert_inside(
        find(&spans, "runc create", &sandbox),
        run_sandbox,
        "sandbox create",
    );
    assert_inside(
        find(&spans, "runc start", &sandbox),
        run_sandbox,
        "sandbox start",
    );
    assert_inside(
        find(&spans, "runc kill", &sandbox),
        stop_sandbox,
        "sandbox kill",
    );
    assert_inside(
        find(&spans, "runc delete", &sandbox),
        stop_sandbox,
        "sandbox delete",
    );
    let pause = find(&spans, "container process", &sandbox);
    // The pause process starts as RunPodSandbox returns (runc start does not wait for it).
    assert!(
        pause.start_unix_ns >= run_sandbox.start_unix_ns,
        "pause starts after RunPodSandbox began"
    );
    assert!(
        stop_sandbox.contains(end(pause)),
        "pause ends in StopPodSandbox"
    );

    // The container: created and started by StartContainer, stopped by StopContainer.
    let start_container = window(&report, CriCall::StartContainer);
    let stop_container = window(&report, CriCall::StopContainer);
    let exec_sync = window(&report, CriCall::ExecSync);
    assert_inside(
        find(&spans, "runc create", &container),
        start_container,
        "create",
    );
    assert_inside(
        find(&spans, "runc start", &container),
        start_container,
        "start",
    );
    let kill = spans
        .iter()
        .copied()
        .find(|s| {
            s.operation_name == "runc kill"
                && tag(s, "container.id").as_deref() == Some(container.as_str())
                && tag(s, "nodetrace.oci.signal").as_deref() == Some("SIGTERM")
        })
        .unwrap_or_else(|| panic!("no `runc kill` with SIGTERM; spans:\n{}", describe(&spans)));
    assert_inside(kill, stop_container, "kill SIGTERM");
    assert_inside(
        find(&spans, "runc delete", &container),
        stop_container,
        "delete",
    );

    let entrypoint = find(&spans, "container process", &container);
    // `runc start` does not wait for the entrypoint's exec, which can come just after
    // StartContainer returned; the span still hangs under StartContainer (checked below).
    assert!(
        entrypoint.start_unix_ns >= start_container.start_unix_ns,
        "entrypoint starts after StartContainer began"
    );
    assert!(
        stop_container.contains(end(entrypoint)),
        "entrypoint ends in StopContainer"
    );
    assert_eq!(
        tag(entrypoint, "process.exit.code"),
        Some(report.container_exit_code.to_string()),
        "the entrypoint's exit code is the one the runtime reports"
    );
    assert!(tag(entrypoint, "process.command_args").is_some_and(|a| a.contains("trap")));

    // ExecSync: `runc exec` and the process it started, with its exit code.
    let runc_exec = find(&spans, "runc exec", &container);
    assert_inside(runc_exec, exec_sync, "runc exec");
    assert_eq!(tag(runc_exec, "process.exit.code").as_deref(), Some("0"));
    let exec_process = find(&spans, "exec process", &container);
    assert_inside(exec_process, exec_sync, "exec process");
    assert_eq!(tag(exec_process, "process.exit.code").as_deref(), Some("3"));
    assert!(
        exec_process
            .tags
            .iter()
            .any(|t| t.key == "error" && t.v_bool),
        "a non-zero exit is an error"
    );

    // Every CRI call is a span inside the window the client measured, with the pod on it.
    for call in LIFECYCLE_CALLS {
        assert_lifecycle_call(&spans, &report, call);
    }
    assert!(
        !spans.iter().any(|s| s.operation_name == "ContainerStatus"),
        "polled calls are counted, not traced"
    );

    // The runtime's spans hang under the CRI call that caused them.
    let parent_of = |span: &Span| {
        let parent = span.references.first()?.span_id;
        spans
            .iter()
            .find(|s| s.span_id == parent)
            .map(|s| s.operation_name.clone())
    };
    for span in &spans {
        let Some(expected) = expected_parent(span) else {
            continue;
        };
        assert_eq!(
            parent_of(span).as_deref(),
            Some(expected),
            "{} of {:?}",
            span.operation_name,
            tag(span, "container.id")
        );
    }

    // The same spans by pod UID.
    let by_uid = TraceQuery {
        pod: PodSelector::parse_uid(&uid).expect("selector"),
        ..by_pod_name.clone()
    };
    let by_uid = client.traces(&by_uid).await.expect("query by uid");
    let ids = |traces: &[Trace]| {
        let mut ids: Vec<_> = traces
            .iter()
            .flat_map(|t| &t.spans)
            .map(|s| s.span_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&by_uid), ids(&traces));

    // The collector got the same spans, with the same ids and attributes.
    if let Some((rotel, _)) = &rotel {
        let otlp = reqwest::get(format!(
            "{}/api/traces?pod_uid={uid}&format=otlp",
            agent.url()
        ))
        .await
        .expect("OTLP/JSON from the API")
        .text()
        .await
        .expect("body");
        let otlp: serde_json::Value = serde_json::from_str(&otlp).expect("OTLP/JSON");
        // The API's OTLP answer adds the synthesized pod root span, which is not exported.
        let mut api_spans = otlp_spans(&otlp);
        let roots: Vec<String> = api_spans
            .iter()
            .filter(|(_, (_, span))| {
                span["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("pod e2e/web on "))
            })
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(roots.len(), 1, "one synthesized pod root span");
        let root = roots[0].clone();
        api_spans.remove(&root);
        assert_eq!(api_spans.len(), spans.len());
        // In the export, the root's children are parentless.
        for (_, span) in api_spans.values_mut() {
            if span["parentSpanId"].as_str() == Some(root.as_str()) {
                span.as_object_mut()
                    .expect("span object")
                    .remove("parentSpanId");
            }
        }
        let ids: Vec<String> = api_spans.keys().cloned().collect();
        let logged = rotel.wait_for_spans(&ids).await;
        for (id, (resource, span)) in &api_spans {
            assert_same_span(id, resource, span, &logged[id]);
        }
    }

    // The agent's own metrics moved with the work it did.
    let after = agent.scrape().await;
    let moved = |series: &str| {
        let (b, a) = (
            metric(&before, series).unwrap_or(0.0),
            metric(&after, series),
        );
        let a = a.unwrap_or_else(|| panic!("{series} missing from /metrics:\n{after}"));
        a - b
    };
    assert!(moved("nodetrace_kernel_events_received_total") >= spans.len() as f64);
    assert!(moved("nodetrace_spans_total") >= spans.len() as f64);
    assert!(moved("nodetrace_spans_stored_total") >= spans.len() as f64);
    assert!(metric(&after, "nodetrace_store_spans").is_some_and(|n| n >= spans.len() as f64));
    assert!(
        metric(
            &after,
            "nodetrace_http_requests_total{route=\"/api/traces\",code=\"200\"}"
        )
        .is_some_and(|n| n >= 2.0)
    );
    assert_eq!(
        metric(&after, "nodetrace_probes_attached{kind=\"tracepoint\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &after,
            "nodetrace_events_dropped_total{reason=\"ringbuf_full\"}"
        ),
        Some(0.0)
    );

    agent.stop(Duration::from_secs(15)).await;
    let teardown = testbed.stop().expect("the testbed leaves nothing behind");
    eprintln!("teardown: {teardown:?}");
}
