//! OTLP push against a real collector: `rotel-agent` (PyPI package `rotel`) on loopback ports,
//! logging every span it receives; the test reads that log back.
//!
//! Skips with a printed reason when rotel-agent cannot be found (set `ROTEL_AGENT` to its path,
//! or install it with `pip install rotel`); set `NODETRACE_REQUIRE_ROTEL=1` to fail instead.

use nodetrace::export::{ExportConfig, ExportHandle, ExportSink, Exporter, Protocol};
use nodetrace::model::{
    AttrValue, Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, keys,
};
use nodetrace_testbed::rotel::{LoggedSpan, Rotel, free_port, rotel_or_skip};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const POD_UID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const SANDBOX_ID: &str = "5e1f0c2d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
const CONTAINER_ID: &str = "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b";
const NODE: &str = "node-a";
const CLUSTER: &str = "test-cluster";
const HOST: &str = "node-a.example";

/// How rotel prints one of our attribute values.
fn printed(value: &AttrValue) -> String {
    match value {
        AttrValue::Str(s) => format!("Str({s})"),
        AttrValue::Int(i) => format!("Int({i})"),
        AttrValue::Bool(b) => format!("Bool({b})"),
        AttrValue::StrList(items) => {
            let items: Vec<String> = items.iter().map(|s| format!("Str({s})")).collect();
            format!("Slice({})", items.join(", "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a pod's lifecycle as the agent traces it

fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_nanos()).expect("fits in u64")
}

fn pod() -> PodRef {
    PodRef {
        uid: POD_UID.to_owned(),
        namespace: "default".to_owned(),
        name: "web-0".to_owned(),
    }
}

fn span(parent: Option<&Span>, name: &str, service: &str, from_ms: u64, to_ms: u64) -> Span {
    let t0 = now_ns() - 10_000_000_000;
    Span {
        trace_id: TraceId::from_pod_uid(POD_UID),
        span_id: SpanId::random(),
        parent_span_id: parent.map(|p| p.span_id),
        name: name.to_owned(),
        service: service.to_owned(),
        kind: SpanKind::Internal,
        start_unix_ns: t0 + from_ms * 1_000_000,
        end_unix_ns: t0 + to_ms * 1_000_000 + 123,
        pod: Some(pod()),
        attributes: vec![Attribute::str(keys::NODE_NAME, NODE)],
        status: SpanStatus::Unset,
    }
}

fn cri(method: &str, from_ms: u64, to_ms: u64) -> Span {
    let mut s = span(None, method, "containerd", from_ms, to_ms);
    s.kind = SpanKind::Server;
    s.status = SpanStatus::Ok;
    s.attributes.extend([
        Attribute::str(keys::RPC_SYSTEM, "grpc"),
        Attribute::str(keys::RPC_SERVICE, "runtime.v1.RuntimeService"),
        Attribute::str(keys::RPC_METHOD, method),
        Attribute::str(keys::SANDBOX_ID, SANDBOX_ID),
    ]);
    s
}

fn runc(parent: &Span, verb: &str, id: &str, pid: i64, from_ms: u64, to_ms: u64) -> Span {
    let mut s = span(
        Some(parent),
        &format!("runc {verb}"),
        "runc",
        from_ms,
        to_ms,
    );
    let args = ["runc", "--root", "/run/containerd/runc/k8s.io", verb, id];
    s.attributes.extend([
        Attribute::str(keys::PROCESS_EXECUTABLE_NAME, "runc"),
        Attribute::int(keys::PROCESS_PID, pid),
        Attribute::str(keys::OCI_VERB, verb),
        Attribute::str(keys::CONTAINER_ID, id),
        Attribute::int(keys::PROCESS_EXIT_CODE, 0),
        Attribute::str_list(keys::PROCESS_COMMAND_ARGS, args.map(str::to_owned).to_vec()),
        Attribute::bool(keys::ATTRIBUTED, true),
    ]);
    s
}

/// Sandbox and container start of one pod, a container that exits with 1, and a span no pod
/// could be found for.
fn pod_lifecycle() -> Vec<Span> {
    let run_sandbox = cri("RunPodSandbox", 0, 310);
    let sandbox_create = runc(&run_sandbox, "create", SANDBOX_ID, 48_213, 180, 263);
    let sandbox_start = runc(&run_sandbox, "start", SANDBOX_ID, 48_240, 270, 282);
    let mut start = cri("StartContainer", 1400, 1520);
    start.attributes.extend([
        Attribute::str(keys::CONTAINER_ID, CONTAINER_ID),
        Attribute::str(keys::CONTAINER_NAME, "web"),
    ]);
    let container_start = runc(&start, "start", CONTAINER_ID, 48_330, 1450, 1500);
    let mut process = span(Some(&start), "web", "container", 1500, 4200);
    process.status = SpanStatus::Error("exited with code 1".to_owned());
    process.attributes.extend([
        Attribute::str(keys::CONTAINER_ID, CONTAINER_ID),
        Attribute::str(keys::PROCESS_EXECUTABLE_PATH, "/bin/web"),
        Attribute::int(keys::PROCESS_EXIT_CODE, 1),
    ]);
    let mut orphan = span(None, "runc delete", "runc", 5000, 5040);
    orphan.trace_id = TraceId::hashed(&["orphan", "runc delete"]);
    orphan.pod = None;
    orphan.attributes.extend([
        Attribute::bool(keys::ATTRIBUTED, false),
        Attribute::str(keys::ATTRIBUTION_ERROR, "no bundle for pid 48999"),
    ]);
    vec![
        run_sandbox,
        sandbox_create,
        sandbox_start,
        start,
        container_start,
        process,
        orphan,
    ]
}

// ---------------------------------------------------------------------------------------------
// checks

fn config(protocol: Protocol, endpoint: String) -> ExportConfig {
    ExportConfig {
        endpoint,
        protocol,
        headers: vec![("x-nodetrace-test".to_owned(), "1".to_owned())],
        timeout: Duration::from_secs(2),
        max_delay: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        cluster_name: Some(CLUSTER.to_owned()),
        node_name: NODE.to_owned(),
        host_name: HOST.to_owned(),
        ..ExportConfig::default()
    }
}

fn send_all(sink: &ExportSink, spans: &[Span]) {
    for span in spans {
        assert!(sink.send(span.clone()), "queued");
    }
}

/// Every field the agent chose arrived as it was: ids, name, kind, status, attributes (the
/// node name moved to the resource, the pod's added) and the service's resource.
fn assert_arrived_intact(sent: &[Span], logged: &BTreeMap<String, LoggedSpan>) {
    for span in sent {
        let got = &logged[&span.span_id.to_hex()];
        let field = |name: &str| got.fields.get(name).map(String::as_str).unwrap_or("");
        assert_eq!(field("Trace ID"), span.trace_id.to_hex(), "{}", span.name);
        let parent = span.parent_span_id.map(|p| p.to_hex()).unwrap_or_default();
        assert_eq!(field("Parent ID"), parent, "{}", span.name);
        assert_eq!(field("Name"), span.name);
        let kind = match span.kind {
            SpanKind::Internal => "SPAN_KIND_INTERNAL",
            SpanKind::Server => "SPAN_KIND_SERVER",
            SpanKind::Client => "SPAN_KIND_CLIENT",
        };
        assert_eq!(field("Kind"), kind, "{}", span.name);
        assert_eq!(field("Start time"), span.start_unix_ns.to_string());
        assert_eq!(field("End time"), span.end_unix_ns.to_string());
        match &span.status {
            SpanStatus::Error(message) => {
                assert_eq!(field("Status code"), "STATUS_CODE_ERROR");
                assert_eq!(field("Status message"), message);
            }
            SpanStatus::Ok => assert_eq!(field("Status code"), "STATUS_CODE_OK"),
            SpanStatus::Unset => assert_eq!(field("Status code"), "STATUS_CODE_UNSET"),
        }

        let mut expected: BTreeMap<String, String> = span
            .attributes
            .iter()
            .filter(|a| a.key != keys::NODE_NAME)
            .map(|a| (a.key.clone(), printed(&a.value)))
            .collect();
        if let Some(pod) = &span.pod {
            for (key, value) in [
                (keys::POD_UID, &pod.uid),
                (keys::POD_NAME, &pod.name),
                (keys::NAMESPACE, &pod.namespace),
            ] {
                expected.insert(key.to_owned(), format!("Str({value})"));
            }
        }
        assert_eq!(got.attributes, expected, "attributes of {}", span.name);

        let resource: BTreeMap<String, String> = [
            ("service.name", span.service.as_str()),
            ("k8s.node.name", NODE),
            ("k8s.cluster.name", CLUSTER),
            ("host.name", HOST),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), format!("Str({v})")))
        .collect();
        assert_eq!(got.resource, resource, "resource of {}", span.name);
    }
}

async fn export_pod_lifecycle(protocol: Protocol) {
    let Some(bin) = rotel_or_skip() else { return };
    let (grpc_port, http_port) = (free_port(), free_port());
    let rotel = Rotel::start(&bin, grpc_port, http_port);
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://127.0.0.1:{grpc_port}"),
        Protocol::HttpProtobuf => format!("http://127.0.0.1:{http_port}"),
    };
    let (sink, handle) = Exporter::start(config(protocol, endpoint)).expect("exporter starts");
    let spans = pod_lifecycle();
    send_all(&sink, &spans);
    let ids: Vec<String> = spans.iter().map(|s| s.span_id.to_hex()).collect();
    let logged = rotel.wait_for_spans(&ids).await;
    assert_arrived_intact(&spans, &logged);
    let stats = shutdown(handle).await;
    assert_eq!(stats.exported_spans, 7);
    assert_eq!(stats.failed_exports, 0);
}

async fn shutdown(handle: ExportHandle) -> nodetrace::export::ExportStats {
    tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
        .await
        .expect("shutdown within its deadline")
        .expect("export task ends cleanly")
}

#[tokio::test]
async fn spans_arrive_intact_over_grpc() {
    export_pod_lifecycle(Protocol::Grpc).await;
}

#[tokio::test]
async fn spans_arrive_intact_over_http_protobuf() {
    export_pod_lifecycle(Protocol::HttpProtobuf).await;
}

#[tokio::test]
async fn spans_sent_while_the_collector_is_down_arrive_once_it_is_up() {
    let Some(bin) = rotel_or_skip() else { return };
    let (grpc_port, http_port) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    let (sink, handle) =
        Exporter::start(config(Protocol::Grpc, endpoint)).expect("exporter starts");
    let spans = pod_lifecycle();
    send_all(&sink, &spans);

    let until = Instant::now() + Duration::from_secs(10);
    while handle.stats().failed_exports < 2 {
        assert!(
            Instant::now() < until,
            "no failed export: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = handle.stats();
    assert_eq!(down.exported_spans, 0, "{down:?}");

    let rotel = Rotel::start(&bin, grpc_port, http_port);
    let ids: Vec<String> = spans.iter().map(|s| s.span_id.to_hex()).collect();
    let logged = rotel.wait_for_spans(&ids).await;
    assert_arrived_intact(&spans, &logged);

    let stats = shutdown(handle).await;
    assert_eq!(stats.exported_spans, 7, "{stats:?}");
    assert!(stats.failed_exports >= down.failed_exports, "{stats:?}");
    assert!(stats.retries >= 2, "{stats:?}");
    assert_eq!(
        stats.dropped_retry_full + stats.dropped_queue_full,
        0,
        "{stats:?}"
    );
}
