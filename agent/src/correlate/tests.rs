//! The correlation state machine on hand-made event sequences, with real bundle files in a
//! temporary directory and a node whose pid files and cgroups the test chooses.

use super::*;
use crate::ebpf::CriRecord;
use crate::{
    ebpf::{ExecRecord, ExitRecord},
    model::{SpanStatus, TraceId, keys},
};
use nodetrace_common::{CriMethod, TrackedKind, cri_slots};
use std::{cell::RefCell, collections::HashMap, path::PathBuf};

const POD_UID: &str = "6f2b7d3a-1c9e-4b8f-9a0d-2e5f7c1b3a94";
const SANDBOX: &str = "5a0c1e8b7d2f4a6c9e3b1d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6c8e0b2d4f6a8c";
const CONTAINER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

#[derive(Default)]
struct FakeNode {
    pid_files: RefCell<HashMap<PathBuf, u32>>,
    cgroups: RefCell<HashMap<u32, String>>,
}

impl NodeView for &FakeNode {
    fn pid_file(&self, path: &Path) -> Option<u32> {
        self.pid_files.borrow().get(path).copied()
    }

    fn process_cgroups(&self, pid: u32) -> Option<String> {
        self.cgroups.borrow().get(&pid).cloned()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    node: FakeNode,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            node: FakeNode::default(),
        }
    }

    /// A correlator whose only runtime state root is the fixture's directory.
    fn correlator(&self) -> Correlator<&FakeNode> {
        Correlator::new(
            &self.node,
            WallClock::sample(),
            CorrelatorConfig {
                node_name: "node-a".to_owned(),
                max_pending: 16,
                max_containers: 16,
                state_roots: StateRoots::new([self.dir.path().to_owned()]).expect("a valid root"),
                ..CorrelatorConfig::default()
            },
        )
    }

    /// A bundle directory as containerd lays it out, with the CRI annotations.
    fn bundle(&self, id: &str, sandbox: bool) -> PathBuf {
        let dir = self.dir.path().join(id);
        std::fs::create_dir_all(&dir).expect("bundle dir");
        let mut annotations = serde_json::json!({
            "io.kubernetes.cri.container-type": if sandbox { "sandbox" } else { "container" },
            "io.kubernetes.cri.sandbox-id": SANDBOX,
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.sandbox-uid": POD_UID,
        });
        if !sandbox {
            annotations["io.kubernetes.cri.container-name"] = "app".into();
            annotations["io.kubernetes.cri.image-name"] = "docker.io/library/busybox:1".into();
        }
        let config = serde_json::json!({ "ociVersion": "1.0.2", "annotations": annotations });
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config.json");
        dir
    }

    fn runc(&self, id: &str, verb_args: &[&str]) -> Vec<String> {
        let log = self.dir.path().join(id).join("log.json");
        let mut argv: Vec<String> = [
            "runc",
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            log.to_str().expect("utf-8 path"),
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.extend(verb_args.iter().map(|s| (*s).to_owned()));
        argv
    }
}

fn exec(tgid: u32, ktime_ns: u64, role: ExecRole, argv: Vec<String>) -> KernelEvent {
    KernelEvent::Exec(ExecRecord {
        tgid,
        ppid: 1,
        role,
        cgroup_id: 1,
        ktime_ns,
        filename: argv.first().cloned().unwrap_or_default(),
        argv,
        argv_truncated: false,
    })
}

fn exit(tgid: u32, ktime_ns: u64, status: i32) -> KernelEvent {
    KernelEvent::Exit(ExitRecord {
        tgid,
        ktime_ns,
        exit_status: Some(status),
        signal: None,
        tracked: TrackedKind::Runtime,
    })
}

fn run_once(c: &mut Correlator<&FakeNode>, tgid: u32, argv: Vec<String>, status: i32) -> Span {
    assert!(
        c.on_event(exec(tgid, 1_000 * u64::from(tgid), ExecRole::Runtime, argv))
            .is_none()
    );
    c.on_event(exit(tgid, 1_000 * u64::from(tgid) + 500, status))
        .expect("the exit completes a span")
}

#[test]
fn a_sandbox_lifecycle_is_attributed_from_the_bundle_then_the_cache() {
    let f = Fixture::new();
    let bundle = f.bundle(SANDBOX, true);
    let mut c = f.correlator();
    let create = run_once(
        &mut c,
        10,
        f.runc(
            SANDBOX,
            &[
                "create",
                "--bundle",
                bundle.to_str().expect("utf-8"),
                SANDBOX,
            ],
        ),
        0,
    );
    assert_eq!(create.name, "runc create");
    assert_eq!(create.service, "runc");
    assert_eq!(create.trace_id, TraceId::from_pod_uid(POD_UID));
    let pod = create.pod.clone().expect("attributed");
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("shop", "web-0")
    );
    assert_eq!(create.attr_str(keys::CONTAINER_ID), Some(SANDBOX));
    assert_eq!(create.attr_str(keys::ATTRIBUTION_SOURCE), Some("bundle"));
    assert_eq!(create.attr_str(keys::NODE_NAME), Some("node-a"));
    assert_eq!(create.attr_int(keys::PROCESS_EXIT_CODE), Some(0));
    assert_eq!(create.duration_ns(), 500);

    // The bundle is gone after delete; later runs come from the cache.
    std::fs::remove_dir_all(&bundle).expect("remove bundle");
    let kill = run_once(&mut c, 11, f.runc(SANDBOX, &["kill", SANDBOX, "9"]), 0);
    assert_eq!(kill.name, "runc kill");
    assert_eq!(kill.attr_str(keys::OCI_SIGNAL), Some("SIGKILL"));
    assert_eq!(kill.attr_str(keys::ATTRIBUTION_SOURCE), Some("cache"));
    assert_eq!(kill.pod, Some(pod));
    assert_eq!(kill.trace_id, create.trace_id);
    assert_eq!(c.stats().spans.load(Ordering::Relaxed), 2);
}

#[test]
fn the_entrypoint_is_tied_to_its_container_by_the_pid_file() {
    let f = Fixture::new();
    let bundle = f.bundle(CONTAINER, false);
    let pid_file = bundle.join("init.pid");
    f.node.pid_files.borrow_mut().insert(pid_file.clone(), 4242);
    let mut c = f.correlator();
    let b = bundle.to_str().expect("utf-8");
    let p = pid_file.to_str().expect("utf-8");
    // runc create, with its `runc init` child, whose exit makes no span.
    assert!(
        c.on_event(exec(
            20,
            100,
            ExecRole::Runtime,
            f.runc(
                CONTAINER,
                &["create", "--bundle", b, "--pid-file", p, CONTAINER]
            )
        ))
        .is_none()
    );
    assert!(
        c.on_event(exec(
            21,
            110,
            ExecRole::Runtime,
            vec!["runc".into(), "init".into()]
        ))
        .is_none()
    );
    let create = c.on_event(exit(20, 200, 0)).expect("create span");
    assert_eq!(create.attr_str(keys::CONTAINER_NAME), Some("app"));
    assert_eq!(
        create.attr_str(keys::IMAGE_NAME),
        Some("docker.io/library/busybox:1")
    );
    assert!(
        c.on_event(exit(21, 210, 0)).is_none(),
        "runc init makes no span"
    );
    assert_eq!(c.stats().unmatched_exits.load(Ordering::Relaxed), 0);

    let start = run_once(&mut c, 22, f.runc(CONTAINER, &["start", CONTAINER]), 0);
    assert_eq!(start.name, "runc start");
    assert!(
        c.on_event(exec(
            4242,
            300,
            ExecRole::ContainerProcess,
            vec!["sh".into(), "-c".into(), "exit 1".into()]
        ))
        .is_none()
    );
    let process = c
        .on_event(exit(4242, 900, 1))
        .expect("container process span");
    assert_eq!(process.name, "container process");
    assert_eq!(process.service, "container");
    assert_eq!(process.attr_str(keys::CONTAINER_ID), Some(CONTAINER));
    assert_eq!(process.attr_str(keys::CONTAINER_NAME), Some("app"));
    assert_eq!(process.attr_int(keys::PROCESS_EXIT_CODE), Some(1));
    assert!(matches!(process.status, SpanStatus::Error(_)));
    assert_eq!(process.trace_id, TraceId::from_pod_uid(POD_UID));
}

#[test]
fn an_exec_process_is_named_as_such() {
    let f = Fixture::new();
    let bundle = f.bundle(CONTAINER, false);
    let pid_file = bundle.join("exec-1.pid");
    f.node.pid_files.borrow_mut().insert(pid_file.clone(), 777);
    let mut c = f.correlator();
    let argv = f.runc(
        CONTAINER,
        &[
            "exec",
            "--process",
            "/tmp/runc-process1",
            "--detach",
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
            CONTAINER,
        ],
    );
    // The exec'd process starts before `runc exec --detach` exits.
    assert!(c.on_event(exec(30, 100, ExecRole::Runtime, argv)).is_none());
    let exec_span = c.on_event(exit(30, 200, 0)).expect("exec span");
    assert_eq!(exec_span.name, "runc exec");
    assert_eq!(
        exec_span.attr_str(keys::CONTAINER_NAME),
        Some("app"),
        "found via --log's bundle"
    );
    assert!(
        c.on_event(exec(
            777,
            150,
            ExecRole::ContainerProcess,
            vec!["echo".into(), "hi".into()]
        ))
        .is_none()
    );
    let process = c.on_event(exit(777, 400, 0)).expect("process span");
    assert_eq!(process.name, "exec process");
    assert_eq!(process.status, SpanStatus::Unset);
}

#[test]
fn an_exec_process_that_exits_before_its_runtime_is_named_by_its_parent() {
    let f = Fixture::new();
    f.bundle(CONTAINER, false);
    let mut c = f.correlator();
    let argv = f.runc(
        CONTAINER,
        &[
            "exec",
            "--process",
            "/tmp/p",
            "--detach",
            "--pid-file",
            "/nowhere/exec.pid",
            CONTAINER,
        ],
    );
    assert!(c.on_event(exec(30, 100, ExecRole::Runtime, argv)).is_none());
    let mut child = exec(31, 150, ExecRole::ContainerProcess, vec!["true".into()]);
    if let KernelEvent::Exec(e) = &mut child {
        e.ppid = 30;
    }
    assert!(c.on_event(child).is_none());
    // The process exits before `runc exec` does, and no pid file can be read.
    let process = c.on_event(exit(31, 160, 0)).expect("process span");
    assert_eq!(process.name, "exec process");
    assert_eq!(process.attr_str(keys::CONTAINER_NAME), Some("app"));
    assert!(c.on_event(exit(30, 200, 0)).is_some());
}

#[test]
fn a_process_without_pid_file_is_attributed_by_its_cgroup() {
    let f = Fixture::new();
    f.node.cgroups.borrow_mut().insert(
        55,
        format!("12:memory:/kubepods/besteffort/pod{POD_UID}/{CONTAINER}\n0::/kubepods/besteffort/pod{POD_UID}/{CONTAINER}\n"),
    );
    let mut c = f.correlator();
    assert!(
        c.on_event(exec(
            55,
            100,
            ExecRole::ContainerProcess,
            vec!["sleep".into(), "1".into()]
        ))
        .is_none()
    );
    let span = c.on_event(exit(55, 200, 0)).expect("span");
    assert_eq!(span.pod.as_ref().map(|p| p.uid.as_str()), Some(POD_UID));
    assert_eq!(span.attr_str(keys::CONTAINER_ID), Some(CONTAINER));
    assert_eq!(span.attr_str(keys::ATTRIBUTION_SOURCE), Some("cgroup"));
}

#[test]
fn unattributable_and_unparsable_runs_still_make_spans() {
    let f = Fixture::new();
    let mut c = f.correlator();
    // A container that was never seen and whose bundle does not exist.
    let delete = run_once(&mut c, 40, f.runc("gone", &["delete", "gone"]), 1);
    assert!(delete.pod.is_none());
    assert_eq!(
        delete
            .attributes
            .iter()
            .find(|a| a.key == keys::ATTRIBUTED)
            .map(|a| &a.value),
        Some(&crate::model::AttrValue::Bool(false))
    );
    assert!(
        delete
            .attr_str(keys::ATTRIBUTION_ERROR)
            .is_some_and(|e| e.contains("gone"))
    );
    assert_eq!(
        delete.status,
        SpanStatus::Error("runc delete exited with status 1".into())
    );
    // A command line the parser rejects.
    let odd = run_once(&mut c, 41, vec!["runc".into(), "--root".into()], 2);
    assert_eq!(odd.name, "runc (unparsed command line)");
    assert_eq!(c.stats().unattributed.load(Ordering::Relaxed), 2);
    assert_eq!(c.stats().unparsed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_bundle_outside_the_state_roots_attributes_nothing() {
    let f = Fixture::new();
    let mut c = f.correlator();
    // A look-alike runc pointing at a bundle it planted outside the runtime's state.
    let planted = tempfile::tempdir().expect("temp dir");
    let config = serde_json::json!({ "annotations": {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-uid": POD_UID,
        "io.kubernetes.cri.sandbox-name": "web-0",
        "io.kubernetes.cri.sandbox-namespace": "shop",
    }});
    let bundle = planted.path().join(CONTAINER);
    std::fs::create_dir(&bundle).expect("mkdir");
    std::fs::write(bundle.join("config.json"), config.to_string()).expect("config.json");
    let argv = [
        "runc",
        "create",
        "--bundle",
        bundle.to_str().expect("utf-8"),
        CONTAINER,
    ]
    .map(str::to_owned)
    .to_vec();
    let create = run_once(&mut c, 45, argv, 0);
    assert!(create.pod.is_none(), "{:?}", create.pod);
    let error = create.attr_str(keys::ATTRIBUTION_ERROR).expect("an error");
    assert!(
        error.contains("is not beneath a runtime state root"),
        "{error}"
    );
}

#[test]
fn exits_without_exec_are_counted_and_pending_runs_are_bounded() {
    let f = Fixture::new();
    let mut c = f.correlator();
    assert!(c.on_event(exit(99, 10, 0)).is_none());
    assert_eq!(c.stats().unmatched_exits.load(Ordering::Relaxed), 1);
    for tgid in 100..120 {
        assert!(
            c.on_event(exec(
                tgid,
                u64::from(tgid),
                ExecRole::Runtime,
                f.runc("x", &["state", "x"])
            ))
            .is_none()
        );
    }
    assert_eq!(c.stats().evicted.load(Ordering::Relaxed), 4);
    assert!(
        c.on_event(exit(100, 500, 0)).is_none(),
        "the oldest run was forgotten"
    );
    assert!(
        c.on_event(exit(119, 500, 0)).is_some(),
        "the newest is kept"
    );
}

#[test]
fn a_reused_pid_is_not_evicted_for_its_earlier_run() {
    let f = Fixture::new();
    let mut c = f.correlator();
    let argv = || f.runc("x", &["state", "x"]);
    assert!(c.on_event(exec(7, 1, ExecRole::Runtime, argv())).is_none());
    assert!(c.on_event(exit(7, 2, 0)).is_some());
    for tgid in 200..215 {
        assert!(
            c.on_event(exec(tgid, u64::from(tgid), ExecRole::Runtime, argv()))
                .is_none()
        );
    }
    // pid 7 again, newer than all of the above; then one run too many.
    assert!(
        c.on_event(exec(7, 300, ExecRole::Runtime, argv()))
            .is_none()
    );
    assert!(
        c.on_event(exec(216, 301, ExecRole::Runtime, argv()))
            .is_none()
    );
    assert_eq!(c.stats().evicted.load(Ordering::Relaxed), 1);
    assert!(
        c.on_event(exit(200, 500, 0)).is_none(),
        "the oldest run was evicted"
    );
    assert!(
        c.on_event(exit(7, 500, 0)).is_some(),
        "pid 7's second run is still known"
    );
}

fn cri(
    start: bool,
    method: CriMethod,
    goroutine: u64,
    ktime_ns: u64,
    fields: &[(usize, &str)],
) -> KernelEvent {
    let mut record = CriRecord {
        tgid: 900,
        goroutine,
        ktime_ns,
        method,
        error: false,
        strings: Default::default(),
        numbers: [1, 0],
    };
    for (slot, value) in fields {
        record.strings[*slot] = (*value).to_owned();
    }
    if start {
        KernelEvent::CriStart(record)
    } else {
        KernelEvent::CriEnd(record)
    }
}

#[test]
fn cri_calls_become_spans_and_parent_the_runc_runs_they_cause() {
    let f = Fixture::new();
    let sandbox_bundle = f.bundle(SANDBOX, true);
    let container_bundle = f.bundle(CONTAINER, false);
    let mut c = f.correlator();

    // RunPodSandbox: the request names the pod; runc create runs inside; the response names
    // the sandbox.
    let pod_fields = [
        (cri_slots::POD_NAME, "web-0"),
        (cri_slots::POD_UID, POD_UID),
        (cri_slots::POD_NAMESPACE, "shop"),
    ];
    assert!(
        c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &pod_fields))
            .is_none()
    );
    let b = sandbox_bundle.to_str().expect("utf-8");
    let create = run_once(
        &mut c,
        50,
        f.runc(SANDBOX, &["create", "--bundle", b, SANDBOX]),
        0,
    );
    let run = c
        .on_event(cri(
            false,
            CriMethod::RunPodSandbox,
            1,
            90_000,
            &[(cri_slots::RESPONSE, SANDBOX)],
        ))
        .expect("RunPodSandbox span");
    assert_eq!(run.name, "RunPodSandbox");
    assert_eq!(run.service, "containerd");
    assert_eq!(run.trace_id, TraceId::from_pod_uid(POD_UID));
    assert_eq!(run.attr_str(keys::RPC_METHOD), Some("RunPodSandbox"));
    assert_eq!(run.attr_str(keys::SANDBOX_ID), Some(SANDBOX));
    assert_eq!(run.attr_int(keys::ATTEMPT), Some(1));
    assert_eq!(run.duration_ns(), 80_000);
    assert_eq!(
        create.parent_span_id,
        Some(run.span_id),
        "runc create hangs under RunPodSandbox"
    );

    // CreateContainer learns the container id; StartContainer is tied to the pod through it.
    let create_fields = [
        (cri_slots::ID, SANDBOX),
        (cri_slots::CONTAINER_NAME, "app"),
        (cri_slots::IMAGE, "busybox:1"),
    ];
    assert!(
        c.on_event(cri(
            true,
            CriMethod::CreateContainer,
            2,
            100_000,
            &create_fields
        ))
        .is_none()
    );
    let created = c
        .on_event(cri(
            false,
            CriMethod::CreateContainer,
            2,
            110_000,
            &[(cri_slots::RESPONSE, CONTAINER)],
        ))
        .expect("CreateContainer span");
    assert_eq!(created.pod.as_ref().map(|p| p.name.as_str()), Some("web-0"));
    assert_eq!(created.attr_str(keys::CONTAINER_ID), Some(CONTAINER));
    assert_eq!(created.attr_str(keys::CONTAINER_NAME), Some("app"));

    assert!(
        c.on_event(cri(
            true,
            CriMethod::StartContainer,
            3,
            120_000,
            &[(cri_slots::ID, CONTAINER)]
        ))
        .is_none()
    );
    let cb = container_bundle.to_str().expect("utf-8");
    let runc_create = run_once(
        &mut c,
        130,
        f.runc(CONTAINER, &["create", "--bundle", cb, CONTAINER]),
        0,
    );
    let started = c
        .on_event(cri(false, CriMethod::StartContainer, 3, 200_000, &[]))
        .expect("StartContainer span");
    assert_eq!(started.attr_str(keys::CONTAINER_NAME), Some("app"));
    assert_eq!(started.pod.as_ref().map(|p| p.uid.as_str()), Some(POD_UID));
    assert_eq!(runc_create.parent_span_id, Some(started.span_id));
    assert_eq!(
        runc_create.attr_int(keys::ATTEMPT),
        Some(1),
        "the container's attempt, from CreateContainer"
    );
    // A run after the call ended has no parent.
    let late = run_once(&mut c, 300, f.runc(CONTAINER, &["state", CONTAINER]), 0);
    assert_eq!(late.parent_span_id, None);
}

#[test]
fn a_failed_cri_call_is_an_error_span_and_a_return_without_entry_is_counted() {
    let f = Fixture::new();
    let mut c = f.correlator();
    assert!(
        c.on_event(cri(
            true,
            CriMethod::CreateContainer,
            7,
            1_000,
            &[(cri_slots::ID, SANDBOX)]
        ))
        .is_none()
    );
    let mut end = cri(false, CriMethod::CreateContainer, 7, 2_000, &[]);
    if let KernelEvent::CriEnd(record) = &mut end {
        record.error = true;
    }
    let span = c.on_event(end).expect("span");
    assert!(matches!(span.status, SpanStatus::Error(_)));
    assert!(
        c.on_event(cri(false, CriMethod::StopContainer, 8, 3_000, &[]))
            .is_none()
    );
    assert_eq!(c.stats().unmatched_exits.load(Ordering::Relaxed), 1);
}

#[test]
fn a_container_process_starting_after_its_cri_call_returned_hangs_where_its_runc_start_does() {
    let f = Fixture::new();
    let bundle = f.bundle(SANDBOX, true);
    let pid_file = bundle.join("init.pid");
    f.node.pid_files.borrow_mut().insert(pid_file.clone(), 7000);
    let mut c = f.correlator();
    let pod_fields = [
        (cri_slots::POD_NAME, "web-0"),
        (cri_slots::POD_UID, POD_UID),
        (cri_slots::POD_NAMESPACE, "shop"),
    ];
    assert!(
        c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &pod_fields))
            .is_none()
    );
    let b = bundle.to_str().expect("utf-8");
    let p = pid_file.to_str().expect("utf-8");
    let argv = f.runc(
        SANDBOX,
        &["create", "--bundle", b, "--pid-file", p, SANDBOX],
    );
    run_once(&mut c, 20, argv, 0);
    let start = run_once(&mut c, 30, f.runc(SANDBOX, &["start", SANDBOX]), 0);
    let run = c
        .on_event(cri(
            false,
            CriMethod::RunPodSandbox,
            1,
            31_000,
            &[(cri_slots::RESPONSE, SANDBOX)],
        ))
        .expect("RunPodSandbox span");
    assert_eq!(start.parent_span_id, Some(run.span_id));
    // The pause process execs 1 µs after RunPodSandbox returned.
    assert!(
        c.on_event(exec(
            7000,
            31_001,
            ExecRole::ContainerProcess,
            vec!["/pause".into()]
        ))
        .is_none()
    );
    let pause = c.on_event(exit(7000, 90_000, 0)).expect("pause span");
    assert_eq!(pause.parent_span_id, Some(run.span_id));
}

// --- Secrets in command lines (`--argv-capture`, `--redact-pattern`) ---

/// Every text a stored span carries: name, status, attribute values.
fn span_texts(span: &Span) -> String {
    let mut text = format!("{} {} {:?}", span.name, span.service, span.status);
    for attribute in &span.attributes {
        text.push_str(&format!(" {}={:?}", attribute.key, attribute.value));
    }
    text
}

fn command_args(span: &Span) -> Vec<String> {
    match span
        .attributes
        .iter()
        .find(|a| a.key == keys::PROCESS_COMMAND_ARGS)
        .map(|a| &a.value)
    {
        Some(crate::model::AttrValue::StrList(args)) => args.clone(),
        other => panic!("process.command_args is a string list, not {other:?}"),
    }
}

fn correlator_with(f: &Fixture, capture: crate::redact::ArgvCapture) -> Correlator<&FakeNode> {
    Correlator::new(
        &f.node,
        WallClock::sample(),
        CorrelatorConfig {
            redactor: crate::redact::Redactor::new(capture, &crate::redact::DEFAULT_PATTERNS)
                .expect("default patterns"),
            ..CorrelatorConfig::default()
        },
    )
}

#[test]
fn stored_spans_of_a_runc_exec_and_its_process_hold_no_secret_by_default() {
    let f = Fixture::new();
    let bundle = f.bundle(CONTAINER, false);
    let pid_file = bundle.join("exec-9.pid");
    f.node.pid_files.borrow_mut().insert(pid_file.clone(), 909);
    let mut c = f.correlator();
    let argv = f.runc(
        CONTAINER,
        &[
            "exec",
            "--env",
            "DB_PASSWORD=hunter2",
            "--detach",
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
            CONTAINER,
            "psql",
            "postgres://admin:s3cr3t@db/shop",
        ],
    );
    let arg_count = argv.len();
    assert!(c.on_event(exec(40, 100, ExecRole::Runtime, argv)).is_none());
    let runc = c.on_event(exit(40, 200, 0)).expect("exec span");
    // The parser saw the real argv: the pid file and the container were found.
    assert_eq!(runc.name, "runc exec");
    assert_eq!(runc.attr_str(keys::CONTAINER_NAME), Some("app"));
    let args = command_args(&runc);
    assert_eq!(args.len(), arg_count, "the shape is kept");
    assert!(
        args.contains(&"DB_PASSWORD=<redacted>".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&"postgres://admin:<redacted>@db/shop".to_owned()));

    let entrypoint = [
        "app",
        "--api-key=abc123",
        "--token",
        "xyz789",
        "postgres://u:pw42@db/x",
    ];
    assert!(
        c.on_event(exec(
            909,
            150,
            ExecRole::ContainerProcess,
            entrypoint.iter().map(|s| (*s).to_owned()).collect()
        ))
        .is_none()
    );
    let process = c.on_event(exit(909, 400, 0)).expect("process span");
    assert_eq!(process.attr_str(keys::CONTAINER_ID), Some(CONTAINER));
    assert_eq!(
        command_args(&process),
        [
            "app",
            "--api-key=<redacted>",
            "--token",
            "<redacted>",
            "postgres://u:<redacted>@db/x"
        ]
    );
    for span in [&runc, &process] {
        let text = span_texts(span);
        for secret in ["hunter2", "s3cr3t", "abc123", "xyz789", "pw42"] {
            assert!(!text.contains(secret), "{secret} stored: {text}");
        }
    }
}

#[test]
fn argv_capture_none_keeps_the_program_and_counts_what_was_dropped() {
    let f = Fixture::new();
    let mut c = correlator_with(&f, crate::redact::ArgvCapture::None);
    let argv = f.runc(CONTAINER, &["kill", CONTAINER, "9"]);
    let arg_count = argv.len();
    let kill = run_once(&mut c, 50, argv, 0);
    assert_eq!(command_args(&kill), ["runc"]);
    assert_eq!(
        kill.attr_int(crate::redact::ARGS_DROPPED),
        Some(i64::try_from(arg_count - 1).expect("small"))
    );
    // What the runtime's command line told is still there.
    assert_eq!(kill.name, "runc kill");
    assert_eq!(kill.attr_str(keys::OCI_SIGNAL), Some("SIGKILL"));
    assert_eq!(kill.attr_str(keys::CONTAINER_ID), Some(CONTAINER));
}

#[test]
fn argv_capture_full_stores_the_command_line_as_given() {
    let f = Fixture::new();
    let mut c = correlator_with(&f, crate::redact::ArgvCapture::Full);
    let argv: Vec<String> = ["app", "--password=hunter2"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert!(
        c.on_event(exec(60, 1, ExecRole::ContainerProcess, argv.clone()))
            .is_none()
    );
    let span = c.on_event(exit(60, 2, 0)).expect("process span");
    assert_eq!(command_args(&span), argv);
    assert_eq!(span.attr_int(crate::redact::ARGS_DROPPED), None);
}

#[test]
fn an_unparsed_runtime_command_line_does_not_quote_a_secret_in_its_error() {
    let f = Fixture::new();
    let mut c = f.correlator();
    let argv: Vec<String> = ["runc", "---password=hunter2", "list"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let span = run_once(&mut c, 70, argv, 1);
    assert_eq!(c.stats().unparsed.load(Ordering::Relaxed), 1);
    let text = span_texts(&span);
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn cri_calls_whose_return_never_comes_are_forgotten_oldest_first() {
    let f = Fixture::new();
    let mut c = f.correlator();
    let fields = [(cri_slots::ID, CONTAINER)];
    // Goroutine 0's call is the oldest; 4096 more calls start and none returns.
    for goroutine in 0..=4096u64 {
        let start = cri(
            true,
            CriMethod::StartContainer,
            goroutine,
            1_000 + goroutine,
            &fields,
        );
        assert!(c.on_event(start).is_none());
    }
    let end = |goroutine| cri(false, CriMethod::StartContainer, goroutine, 1_000_000, &[]);
    assert!(
        c.on_event(end(0)).is_none(),
        "the oldest call was forgotten to make room"
    );
    assert!(
        c.on_event(end(4096)).is_some(),
        "the newest call is still in flight"
    );
}

#[test]
fn pending_runs_are_bounded_in_bytes_too() {
    let f = Fixture::new();
    let mut c = Correlator::new(
        &f.node,
        WallClock::sample(),
        CorrelatorConfig {
            max_pending: 1_000,
            max_pending_bytes: 256 << 10,
            ..CorrelatorConfig::default()
        },
    );
    // Container processes with ~16 KiB command lines (the kernel's cap is 4 KiB; the bound does
    // not rely on it): far fewer than max_pending fit in 256 KiB.
    let long = "x".repeat(16 << 10);
    for tgid in 1..=100u32 {
        let argv = vec!["/app".to_owned(), long.clone()];
        let event = exec(tgid, u64::from(tgid), ExecRole::ContainerProcess, argv);
        assert!(c.on_event(event).is_none());
    }
    let evicted = c.stats().evicted.load(Ordering::Relaxed);
    assert!(
        (80..=90).contains(&evicted),
        "{evicted} of 100 runs evicted to stay within 256 KiB"
    );
    assert!(
        c.on_event(exit(1, 500, 0)).is_none(),
        "the oldest was forgotten"
    );
    assert!(
        c.on_event(exit(100, 500, 0)).is_some(),
        "the newest is kept"
    );
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn sandbox_facts() -> crate::runtime_state::SandboxFacts {
    let pod = PodRef {
        uid: POD_UID.to_owned(),
        namespace: "shop".to_owned(),
        name: "web-0".to_owned(),
    };
    crate::runtime_state::SandboxFacts {
        id: SANDBOX.to_owned(),
        metadata: crate::k8s::PodMetadata::from_sandbox(
            &pod,
            &HashMap::from([("app".to_owned(), "web".to_owned())]),
            &HashMap::from([(
                crate::k8s::DEFAULT_TRACE_CONTEXT_ANNOTATION.to_owned(),
                TRACEPARENT.to_owned(),
            )]),
            &crate::k8s::LabelAllowList::new(["app".to_owned()]),
            crate::k8s::DEFAULT_TRACE_CONTEXT_ANNOTATION,
        ),
        pod,
        attempt: 3,
    }
}

#[test]
fn without_the_api_a_new_pod_s_spans_wait_for_its_sandbox_s_annotation() {
    let f = Fixture::new();
    let sandbox_bundle = f.bundle(SANDBOX, true);
    let mut c = f.correlator();
    let (queries, mut asked) = tokio::sync::mpsc::channel(4);
    c.set_sandbox_queries(queries);
    let pod_fields = [
        (cri_slots::POD_UID, POD_UID),
        (cri_slots::POD_NAME, "web-0"),
    ];
    assert!(
        c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &pod_fields))
            .is_none()
    );
    let b = sandbox_bundle.to_str().expect("utf-8");
    c.on_event(exec(
        50,
        20_000,
        ExecRole::Runtime,
        f.runc(SANDBOX, &["create", "--bundle", b, SANDBOX]),
    ));
    assert!(
        c.on_event(exit(50, 30_000, 0)).is_none(),
        "held: the pod is not known yet"
    );
    assert!(
        c.on_event(cri(
            false,
            CriMethod::RunPodSandbox,
            1,
            90_000,
            &[(cri_slots::RESPONSE, SANDBOX)],
        ))
        .is_none(),
        "RunPodSandbox waits for the answer too"
    );
    assert_eq!(c.released().count(), 0);
    let query = asked.try_recv().expect("the runtime is asked");
    assert_eq!(query.sandbox_id, SANDBOX);
    assert_eq!(query.uid, POD_UID);

    c.on_runtime(RuntimeNews::Sandbox {
        uid: POD_UID.to_owned(),
        facts: Some(Box::new(sandbox_facts())),
    });
    let spans: Vec<Span> = c.released().collect();
    assert_eq!(spans.len(), 2, "runc create, then RunPodSandbox");
    let annotated = "4bf92f3577b34da6a3ce929d0e0e4736";
    for span in &spans {
        assert_eq!(span.trace_id.to_hex(), annotated, "{}", span.name);
        assert_eq!(span.attr_str(&keys_of_label("app")), Some("web"));
    }
    let run = &spans[1];
    assert_eq!(run.name, "RunPodSandbox");
    assert_eq!(spans[0].parent_span_id, Some(run.span_id));
    assert_eq!(
        run.parent_span_id.map(|id| id.to_hex()),
        Some("00f067aa0ba902b7".to_owned()),
        "the root hangs under the annotation's span"
    );
    assert_eq!(c.stats().held.load(Ordering::Relaxed), 2);

    // Later spans of the pod get the same trace at once.
    c.on_event(cri(
        true,
        CriMethod::StopPodSandbox,
        2,
        100_000,
        &[(cri_slots::ID, SANDBOX)],
    ));
    let stop = c
        .on_event(cri(false, CriMethod::StopPodSandbox, 2, 110_000, &[]))
        .expect("not held");
    assert_eq!(stop.trace_id.to_hex(), annotated);
}

fn keys_of_label(key: &str) -> String {
    crate::k8s::keys::pod_label(key)
}

#[test]
fn spans_stop_waiting_when_the_runtime_cannot_tell_or_the_call_failed() {
    let f = Fixture::new();
    let mut c = f.correlator();
    let (queries, _asked) = tokio::sync::mpsc::channel(4);
    c.set_sandbox_queries(queries);
    let pod_fields = [(cri_slots::POD_UID, POD_UID)];
    c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &pod_fields));
    assert!(
        c.on_event(cri(
            false,
            CriMethod::RunPodSandbox,
            1,
            20_000,
            &[(cri_slots::RESPONSE, SANDBOX)]
        ))
        .is_none()
    );
    c.on_runtime(RuntimeNews::Sandbox {
        uid: POD_UID.to_owned(),
        facts: None,
    });
    let spans: Vec<Span> = c.released().collect();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id, TraceId::from_pod_uid(POD_UID));

    // A failed RunPodSandbox names no sandbox: nothing to ask, nothing held.
    c.on_event(cri(true, CriMethod::RunPodSandbox, 2, 30_000, &pod_fields));
    let mut failed = match cri(false, CriMethod::RunPodSandbox, 2, 40_000, &[]) {
        KernelEvent::CriEnd(record) => record,
        _ => unreachable!(),
    };
    failed.error = true;
    let span = c.on_event(KernelEvent::CriEnd(failed)).expect("not held");
    assert!(matches!(span.status, SpanStatus::Error(_)));
}

#[test]
fn after_a_restart_the_runtime_s_snapshot_attributes_the_first_call_and_running_processes() {
    use crate::runtime_state::{ContainerFacts, RunningProcess, RuntimeSnapshot};
    let f = Fixture::new();
    let mut c = f.correlator();
    let process = ExecRecord {
        tgid: 4242,
        ppid: 4000,
        role: ExecRole::ContainerProcess,
        cgroup_id: 0,
        ktime_ns: 5_000,
        filename: "sleep".to_owned(),
        argv: vec!["sleep".to_owned(), "3600".to_owned()],
        argv_truncated: false,
    };
    c.on_runtime(RuntimeNews::Snapshot(Box::new(RuntimeSnapshot {
        sandboxes: vec![sandbox_facts()],
        containers: vec![ContainerFacts {
            id: CONTAINER.to_owned(),
            sandbox_id: SANDBOX.to_owned(),
            name: "app".to_owned(),
            attempt: 1,
            image: "busybox:1".to_owned(),
            running: true,
        }],
        processes: vec![RunningProcess {
            container_id: CONTAINER.to_owned(),
            exec: process,
        }],
    })));
    // The first call after the restart names only the container.
    c.on_event(cri(
        true,
        CriMethod::ExecSync,
        7,
        100_000,
        &[(cri_slots::ID, CONTAINER)],
    ));
    let exec_sync = c
        .on_event(cri(false, CriMethod::ExecSync, 7, 120_000, &[]))
        .expect("ExecSync span");
    let annotated = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        exec_sync.pod.as_ref().map(|p| p.uid.as_str()),
        Some(POD_UID)
    );
    assert_eq!(exec_sync.trace_id.to_hex(), annotated);
    assert_eq!(exec_sync.attr_str(keys::CONTAINER_NAME), Some("app"));
    assert_eq!(exec_sync.attr_int(keys::ATTEMPT), Some(1));

    // The container's process, running since before the restart, ends.
    let mut ended = match exit(4242, 200_000, 137) {
        KernelEvent::Exit(record) => record,
        _ => unreachable!(),
    };
    ended.tracked = TrackedKind::ContainerProcess;
    let span = c.on_event(KernelEvent::Exit(ended)).expect("process span");
    assert_eq!(span.service, "container");
    assert_eq!(span.attr_str(keys::CONTAINER_ID), Some(CONTAINER));
    assert!(
        span.attributes
            .iter()
            .any(|a| a.key == keys::PROCESS_SEEN_MID_LIFE
                && a.value == crate::model::AttrValue::Bool(true))
    );
    assert_eq!(span.trace_id.to_hex(), annotated);
    assert_eq!(span.duration_ns(), 195_000, "from its real start");
}
