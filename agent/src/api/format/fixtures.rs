//! A small realistic pod trace for the format, handler and waterfall tests.

use crate::model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, keys};

pub const POD_UID: &str = "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";
pub const NAMESPACE: &str = "default";
pub const POD_NAME: &str = "web-0";
/// 2024-05-14T09:30:00.123456789Z
pub const T0: u64 = 1_715_679_000_123_456_789;
const SANDBOX_ID: &str = "5e1f0c2d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
const CONTAINER_ID: &str = "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b";
const RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";

pub fn span_id(n: u8) -> SpanId {
    SpanId([0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 0, n])
}

fn pod() -> PodRef {
    PodRef {
        uid: POD_UID.to_owned(),
        namespace: NAMESPACE.to_owned(),
        name: POD_NAME.to_owned(),
    }
}

fn span(n: u8, parent: Option<u8>, name: &str, service: &str, from_ms: f64, to_ms: f64) -> Span {
    // Offsets in (fractional) milliseconds from T0, rounded to whole microseconds.
    let at = |ms: f64| T0 + (ms * 1000.0).round() as u64 * 1000;
    Span {
        trace_id: TraceId::from_pod_uid(POD_UID),
        span_id: span_id(n),
        parent_span_id: parent.map(span_id),
        name: name.to_owned(),
        service: service.to_owned(),
        kind: SpanKind::Internal,
        start_unix_ns: at(from_ms),
        end_unix_ns: at(to_ms),
        pod: Some(pod()),
        attributes: vec![Attribute::str(keys::NODE_NAME, "node-a")],
        status: SpanStatus::Unset,
    }
}

fn cri(n: u8, method: &str, from_ms: f64, to_ms: f64) -> Span {
    let mut s = span(n, None, method, "containerd", from_ms, to_ms);
    s.kind = SpanKind::Server;
    s.attributes.extend([
        Attribute::str(keys::RPC_SYSTEM, "grpc"),
        Attribute::str(keys::RPC_SERVICE, "runtime.v1.RuntimeService"),
        Attribute::str(keys::RPC_METHOD, method),
        Attribute::str(keys::CONTAINER_RUNTIME, "containerd"),
    ]);
    s
}

#[allow(clippy::too_many_arguments)]
fn runc(
    n: u8,
    parent: u8,
    verb: &str,
    container_id: &str,
    pid: i64,
    exit_code: i64,
    from_ms: f64,
    to_ms: f64,
) -> Span {
    let mut s = span(
        n,
        Some(parent),
        &format!("runc {verb}"),
        "runc",
        from_ms,
        to_ms,
    );
    s.attributes.extend([
        Attribute::str(keys::PROCESS_EXECUTABLE_NAME, "runc"),
        Attribute::int(keys::PROCESS_PID, pid),
        Attribute::str(keys::OCI_VERB, verb),
        Attribute::str(keys::CONTAINER_ID, container_id),
        Attribute::int(keys::PROCESS_EXIT_CODE, exit_code),
        Attribute::str(keys::ATTRIBUTION_SOURCE, "bundle"),
    ]);
    s
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// Sandbox creation, container creation and start, the container's process (exit code 0) and a
/// failed exec probe, in one pod's trace. Returned out of order on purpose.
pub fn pod_trace() -> Vec<Span> {
    let mut sandbox_create = runc(2, 1, "create", SANDBOX_ID, 48_213, 0, 181.0, 263.5);
    sandbox_create.attributes.extend([
        Attribute::str(keys::CONTAINER_TYPE, "sandbox"),
        Attribute::str_list(
            keys::PROCESS_COMMAND_ARGS,
            args(&[
                "runc",
                "--root",
                RUNC_ROOT,
                "create",
                "--bundle",
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/5e1f0c2d9a8b",
                "--pid-file",
                "init.pid",
                SANDBOX_ID,
            ]),
        ),
    ]);
    let mut sandbox_start = runc(3, 1, "start", SANDBOX_ID, 48_240, 0, 270.1, 281.9);
    sandbox_start
        .attributes
        .push(Attribute::str(keys::CONTAINER_TYPE, "sandbox"));

    let mut create = cri(4, "CreateContainer", 1204.0, 1391.0);
    create
        .attributes
        .push(Attribute::str(keys::CONTAINER_NAME, "web"));
    let mut container_create = runc(5, 4, "create", CONTAINER_ID, 48_301, 0, 1250.0, 1371.25);
    container_create.attributes.extend([
        Attribute::str(keys::CONTAINER_TYPE, "container"),
        Attribute::str(keys::CONTAINER_NAME, "web"),
        Attribute::str(keys::IMAGE_NAME, "docker.io/library/nginx:1.25"),
    ]);
    let mut start = cri(6, "StartContainer", 1395.0, 1450.0);
    start
        .attributes
        .push(Attribute::str(keys::CONTAINER_NAME, "web"));
    let mut container_start = runc(7, 6, "start", CONTAINER_ID, 48_366, 0, 1401.0, 1418.0);
    container_start
        .attributes
        .push(Attribute::str(keys::CONTAINER_NAME, "web"));

    let mut process = span(8, Some(6), "container process", "container", 1416.5, 9850.0);
    process.attributes.extend([
        Attribute::str(keys::CONTAINER_NAME, "web"),
        Attribute::str(keys::CONTAINER_ID, CONTAINER_ID),
        Attribute::str(keys::PROCESS_EXECUTABLE_NAME, "nginx"),
        Attribute::int(keys::PROCESS_PID, 48_377),
        Attribute::str_list(
            keys::PROCESS_COMMAND_ARGS,
            args(&["nginx", "-g", "daemon off;"]),
        ),
        Attribute::int(keys::PROCESS_EXIT_CODE, 0),
    ]);

    let mut probe = cri(9, "ExecSync", 5000.0, 5042.0);
    probe
        .attributes
        .push(Attribute::str(keys::CONTAINER_NAME, "web"));
    probe.status = SpanStatus::Error("command exited with code 1".to_owned());
    let mut exec = runc(10, 9, "exec", CONTAINER_ID, 49_002, 1, 5003.0, 5040.0);
    exec.attributes
        .push(Attribute::str(keys::CONTAINER_NAME, "web"));
    exec.status =
        SpanStatus::Error("sh -c 'test -f /tmp/ready && exit 0' exited with code 1".to_owned());

    vec![
        process,
        cri(1, "RunPodSandbox", 0.0, 412.345678),
        sandbox_create,
        sandbox_start,
        create,
        container_create,
        start,
        container_start,
        probe,
        exec,
    ]
}
