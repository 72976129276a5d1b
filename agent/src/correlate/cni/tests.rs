//! CNI plugin runs: parsing the variables the kernel side copied, and the spans the
//! correlator makes of them on hand-made event sequences.

use super::*;
use crate::{
    correlate::{Correlator, CorrelatorConfig, NodeView},
    ebpf::{CniOutputRecord, CriRecord, KernelEvent, WallClock},
    model::MAX_TENANT_TEXT_BYTES,
};
use nodetrace_common::{CriMethod, ExecRole, TrackedKind, cri_slots};
use proptest::prelude::*;

const POD_UID: &str = "6f2b7d3a-1c9e-4b8f-9a0d-2e5f7c1b3a94";
const SANDBOX: &str = "5a0c1e8b7d2f4a6c9e3b1d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6c8e0b2d4f6a8c";
/// The runtime daemon's pid.
const DAEMON: u32 = 900;
const BIN: &str = "/opt/cni/bin";

struct NoNode;

impl NodeView for NoNode {
    fn pid_file(&self, _: &std::path::Path) -> Option<u32> {
        None
    }

    fn process_cgroups(&self, _: u32) -> Option<String> {
        None
    }
}

fn correlator() -> Correlator<NoNode> {
    Correlator::new(
        NoNode,
        WallClock::sample(),
        CorrelatorConfig {
            node_name: "node-a".to_owned(),
            ..CorrelatorConfig::default()
        },
    )
}

fn strings(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|s| (*s).to_owned()).collect()
}

/// The variables containerd sets for a plugin run of `command` on the test's pod.
fn variables(command: &str) -> Vec<String> {
    vec![
        format!("CNI_COMMAND={command}"),
        format!("CNI_CONTAINERID={SANDBOX}"),
        "CNI_NETNS=/var/run/netns/cni-1234".to_owned(),
        format!(
            "CNI_ARGS=K8S_POD_INFRA_CONTAINER_ID={SANDBOX};IgnoreUnknown=1;\
             K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID={POD_UID}"
        ),
        "CNI_IFNAME=eth0".to_owned(),
        format!("CNI_PATH={BIN}:/usr/lib/cni"),
    ]
}

fn plugin_exec(tgid: u32, ppid: u32, ktime_ns: u64, path: &str, env: Vec<String>) -> KernelEvent {
    KernelEvent::Exec(ExecRecord {
        tgid,
        ppid,
        role: ExecRole::CniPlugin,
        cgroup_id: 1,
        ktime_ns,
        filename: path.to_owned(),
        argv: env,
        argv_truncated: false,
    })
}

fn plugin_exit(tgid: u32, ktime_ns: u64, status: Option<i32>, signal: Option<i32>) -> KernelEvent {
    KernelEvent::Exit(ExitRecord {
        tgid,
        ktime_ns,
        exit_status: status,
        signal,
        tracked: TrackedKind::CniPlugin,
    })
}

fn cri(
    start: bool,
    method: CriMethod,
    goroutine: u64,
    ktime_ns: u64,
    fields: &[(usize, &str)],
) -> KernelEvent {
    let mut record = CriRecord {
        tgid: DAEMON,
        goroutine,
        ktime_ns,
        method,
        error: false,
        strings: Default::default(),
        numbers: [2, 0],
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

const POD_FIELDS: [(usize, &str); 3] = [
    (cri_slots::POD_NAME, "web-0"),
    (cri_slots::POD_UID, POD_UID),
    (cri_slots::POD_NAMESPACE, "shop"),
];

#[test]
fn the_variables_are_read_in_any_order() {
    let mut entries = variables("ADD");
    entries.reverse();
    let env = CniEnv::parse(&entries);
    assert_eq!(env.command.as_deref(), Some("ADD"));
    assert_eq!(env.container_id.as_deref(), Some(SANDBOX));
    assert_eq!(env.netns.as_deref(), Some("/var/run/netns/cni-1234"));
    assert_eq!(env.ifname.as_deref(), Some("eth0"));
    assert_eq!(env.path, [BIN, "/usr/lib/cni"]);
    assert_eq!(
        env.pod,
        Some(PodRef {
            uid: POD_UID.to_owned(),
            namespace: "shop".to_owned(),
            name: "web-0".to_owned(),
        })
    );
    assert!(env.is_about_a_sandbox());
    assert!(env.finds_plugin("/opt/cni/bin/host-local"));
    assert!(env.finds_plugin("/usr/lib/cni/bridge"));
    assert!(!env.finds_plugin("/usr/sbin/iptables"));
}

#[test]
fn a_cut_entry_garbage_and_repeats_are_read_without_failing() {
    let env = CniEnv::parse(&strings(&[
        // The kernel side copies whole entries, but the decoder must not rely on it.
        "MAND=ADD",
        "CNI_COMMAND",
        "=",
        "",
        "CNI_IFNAME=",
        "CNI_COMMAND=DEL",
        "CNI_COMMAND=ADD",
        "CNI_NETNS=/var/run/netns/\u{fffd}x",
        "CNI_ARGS=;;=;K8S_POD_UID;K8S_POD_NAME=a=b;K8S_POD_UID=u-1;K8S_POD_UID=u-2",
        "CNI_ARGS=K8S_POD_UID=u-3",
        "CNI_PATH=::/a::/b:",
    ]));
    assert_eq!(
        env.command.as_deref(),
        Some("DEL"),
        "the first entry counts"
    );
    assert_eq!(env.ifname, None, "an empty value is none");
    assert_eq!(env.netns.as_deref(), Some("/var/run/netns/\u{fffd}x"));
    assert_eq!(env.container_id, None);
    assert!(!env.is_about_a_sandbox(), "no container named");
    let pod = env.pod.expect("a pod");
    assert_eq!((pod.uid.as_str(), pod.name.as_str()), ("u-1", "a=b"));
    assert_eq!(env.path, ["/a", "/b"]);
    assert_eq!(CniEnv::parse(&[]), CniEnv::default());
}

#[test]
fn values_are_capped_and_cni_args_bounded() {
    let long = "x".repeat(3 * MAX_TENANT_TEXT_BYTES);
    let mut args: Vec<String> = (0..CNI_ARGS_MAX).map(|i| format!("K{i}=v")).collect();
    args.push("K8S_POD_UID=beyond-the-bound".to_owned());
    let env = CniEnv::parse(&[
        format!("CNI_CONTAINERID={long}"),
        format!("CNI_ARGS=K8S_POD_NAME={long};{}", args.join(";")),
    ]);
    assert!(env.container_id.expect("an id").len() <= MAX_TENANT_TEXT_BYTES);
    assert_eq!(
        env.pod, None,
        "a UID beyond the pairs looked at is not read"
    );
    let env = CniEnv::parse(&[format!("CNI_ARGS=K8S_POD_NAME={long};K8S_POD_UID=u")]);
    assert!(env.pod.expect("a pod").name.len() <= MAX_TENANT_TEXT_BYTES);
}

#[test]
fn status_and_gc_are_not_about_a_sandbox() {
    for command in ["STATUS", "GC", "status"] {
        assert!(
            !CniEnv::parse(&variables(command)).is_about_a_sandbox(),
            "{command}"
        );
    }
    for command in ["ADD", "DEL", "CHECK", "VERSION?"] {
        assert!(
            CniEnv::parse(&variables(command)).is_about_a_sandbox(),
            "{command}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_entries_parse_within_the_caps(
        entries in prop::collection::vec(
            prop_oneof![
                "CNI_(COMMAND|CONTAINERID|NETNS|IFNAME|ARGS|PATH)=[ -~]{0,700}",
                "CNI_ARGS=([A-Z8_]{0,12}=[ -~]{0,40};){0,40}",
                any::<String>(),
            ],
            0..12,
        ),
    ) {
        let env = CniEnv::parse(&entries);
        let values = [&env.command, &env.container_id, &env.netns, &env.ifname];
        for value in values.into_iter().flatten() {
            prop_assert!(value.len() <= MAX_TENANT_TEXT_BYTES);
        }
        prop_assert!(env.path.len() <= CNI_PATH_MAX);
        if let Some(pod) = &env.pod {
            prop_assert!(!pod.uid.is_empty());
            for text in [&pod.uid, &pod.namespace, &pod.name] {
                prop_assert!(text.len() <= MAX_TENANT_TEXT_BYTES);
            }
        }
    }
}

#[test]
fn a_sandboxs_plugins_hang_under_run_pod_sandbox_and_the_delegate_under_its_caller() {
    let mut c = correlator();
    assert!(
        c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &POD_FIELDS))
            .is_none()
    );
    assert!(
        c.on_event(plugin_exec(
            50,
            DAEMON,
            20_000,
            "/opt/cni/bin/bridge",
            variables("ADD")
        ))
        .is_none()
    );
    // bridge runs its IPAM plugin with the environment it was given.
    assert!(
        c.on_event(plugin_exec(
            51,
            50,
            30_000,
            "/opt/cni/bin/host-local",
            variables("ADD")
        ))
        .is_none()
    );
    let ipam = c
        .on_event(plugin_exit(51, 40_000, Some(0), None))
        .expect("host-local span");
    let bridge = c
        .on_event(plugin_exit(50, 60_000, Some(0), None))
        .expect("bridge span");
    let run = c
        .on_event(cri(
            false,
            CriMethod::RunPodSandbox,
            1,
            90_000,
            &[(cri_slots::RESPONSE, SANDBOX)],
        ))
        .expect("RunPodSandbox span");

    assert_eq!(bridge.name, "CNI ADD bridge");
    assert_eq!(bridge.service, "containerd");
    assert_eq!(bridge.parent_span_id, Some(run.span_id));
    assert_eq!(bridge.trace_id, TraceId::from_pod_uid(POD_UID));
    assert_eq!(bridge.duration_ns(), 40_000);
    assert_eq!(bridge.status, SpanStatus::Unset);
    for (key, value) in [
        (keys::CNI_PLUGIN, "bridge"),
        (keys::CNI_COMMAND, "ADD"),
        (keys::CNI_IFNAME, "eth0"),
        (keys::CNI_NETNS, "/var/run/netns/cni-1234"),
        (keys::CNI_CONTAINER_ID, SANDBOX),
        (keys::CONTAINER_ID, SANDBOX),
        (keys::CONTAINER_TYPE, "sandbox"),
        (keys::POD_UID, POD_UID),
        (keys::NAMESPACE, "shop"),
        (keys::POD_NAME, "web-0"),
        (keys::NODE_NAME, "node-a"),
        (keys::CONTAINER_RUNTIME, "containerd"),
        (keys::ATTRIBUTION_SOURCE, "cni"),
        (keys::PROCESS_EXECUTABLE_PATH, "/opt/cni/bin/bridge"),
    ] {
        assert_eq!(bridge.attr_str(key), Some(value), "{key}");
    }
    assert_eq!(bridge.attr_int(keys::PROCESS_EXIT_CODE), Some(0));
    assert_eq!(bridge.attr_int(keys::PROCESS_PID), Some(50));
    assert_eq!(
        bridge.attr_int(keys::ATTEMPT),
        Some(2),
        "RunPodSandbox's attempt"
    );
    assert_eq!(bridge.pod.as_ref().map(|p| p.name.as_str()), Some("web-0"));

    assert_eq!(ipam.name, "CNI ADD host-local");
    assert_eq!(
        ipam.parent_span_id,
        Some(bridge.span_id),
        "under the plugin that ran it"
    );
    assert_eq!(ipam.trace_id, bridge.trace_id);
    assert_eq!(ipam.attr_str(keys::CNI_PLUGIN), Some("host-local"));
    assert_eq!(ipam.attr_int(keys::PROCESS_PARENT_PID), Some(50));
    assert_eq!(ipam.attr_int(keys::ATTEMPT), Some(2));
    assert_eq!(c.cni.bytes(), 0, "nothing left in progress");
}

#[test]
fn del_hangs_under_the_call_that_stops_its_sandbox() {
    let mut c = correlator();
    // RunPodSandbox makes the sandbox's pod known; a DEL without CNI_ARGS finds it there.
    c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &POD_FIELDS));
    c.on_event(cri(
        false,
        CriMethod::RunPodSandbox,
        1,
        20_000,
        &[(cri_slots::RESPONSE, SANDBOX)],
    ));
    c.on_event(cri(
        true,
        CriMethod::StopPodSandbox,
        2,
        100_000,
        &[(cri_slots::ID, SANDBOX)],
    ));
    let mut env = variables("DEL");
    env.retain(|v| !v.starts_with("CNI_ARGS="));
    c.on_event(plugin_exec(60, DAEMON, 110_000, "/usr/lib/cni/bridge", env));
    let del = c
        .on_event(plugin_exit(60, 120_000, Some(0), None))
        .expect("DEL span");
    let stop = c
        .on_event(cri(false, CriMethod::StopPodSandbox, 2, 130_000, &[]))
        .expect("StopPodSandbox span");
    assert_eq!(del.name, "CNI DEL bridge");
    assert_eq!(del.parent_span_id, Some(stop.span_id));
    assert_eq!(del.attr_str(keys::POD_UID), Some(POD_UID));
    assert_eq!(del.attr_str(keys::ATTRIBUTION_SOURCE), Some("cache"));
    assert_eq!(
        del.attr_int(keys::ATTEMPT),
        Some(2),
        "the sandbox's attempt"
    );

    // A DEL of another sandbox during the same kind of call is not its child.
    c.on_event(cri(
        true,
        CriMethod::StopPodSandbox,
        3,
        200_000,
        &[(cri_slots::ID, SANDBOX)],
    ));
    let mut other = variables("DEL");
    other[1] = "CNI_CONTAINERID=another".to_owned();
    c.on_event(plugin_exec(
        61,
        DAEMON,
        210_000,
        "/usr/lib/cni/bridge",
        other,
    ));
    let stray = c
        .on_event(plugin_exit(61, 220_000, Some(0), None))
        .expect("span");
    assert_eq!(stray.parent_span_id, None);
}

#[test]
fn a_failed_plugin_is_an_error_span_and_so_is_a_killed_one() {
    let mut c = correlator();
    c.on_event(cri(true, CriMethod::RunPodSandbox, 1, 10_000, &POD_FIELDS));
    c.on_event(plugin_exec(
        50,
        DAEMON,
        20_000,
        "/opt/cni/bin/bridge",
        variables("ADD"),
    ));
    c.on_event(plugin_exec(
        51,
        50,
        30_000,
        "/opt/cni/bin/host-local",
        variables("ADD"),
    ));
    let ipam = c
        .on_event(plugin_exit(51, 40_000, Some(1), None))
        .expect("span");
    assert_eq!(
        ipam.status,
        SpanStatus::Error("CNI ADD host-local exited with status 1".to_owned())
    );
    assert_eq!(ipam.attr_int(keys::PROCESS_EXIT_CODE), Some(1));
    let bridge = c
        .on_event(plugin_exit(50, 50_000, None, Some(9)))
        .expect("span");
    assert_eq!(
        bridge.status,
        SpanStatus::Error("CNI ADD bridge was killed by signal 9".to_owned())
    );
    assert_eq!(bridge.attr_int(keys::PROCESS_EXIT_SIGNAL), Some(9));
    assert_eq!(bridge.attr_int(keys::PROCESS_EXIT_CODE), None);
}

#[test]
fn status_and_gc_runs_are_counted_not_traced() {
    let mut c = correlator();
    let status = |cmd: &str| vec![format!("CNI_COMMAND={cmd}"), format!("CNI_PATH={BIN}")];
    c.on_event(plugin_exec(
        70,
        DAEMON,
        1_000,
        "/opt/cni/bin/bridge",
        status("STATUS"),
    ));
    // The plugin asks its IPAM plugin too.
    c.on_event(plugin_exec(
        71,
        70,
        2_000,
        "/opt/cni/bin/host-local",
        status("STATUS"),
    ));
    c.on_event(plugin_exec(
        72,
        DAEMON,
        3_000,
        "/opt/cni/bin/bridge",
        status("GC"),
    ));
    for tgid in [71, 70, 72] {
        assert_eq!(c.on_event(plugin_exit(tgid, 5_000, Some(0), None)), None);
    }
    assert_eq!(c.stats().cni_untraced.load(Ordering::Relaxed), 3);
    assert_eq!(c.stats().spans.load(Ordering::Relaxed), 0);
    assert_eq!(c.stats().unmatched_exits.load(Ordering::Relaxed), 0);
    assert_eq!(c.on_event(plugin_exit(73, 6_000, Some(0), None)), None);
    assert_eq!(c.stats().unmatched_exits.load(Ordering::Relaxed), 1);
}

#[test]
fn a_program_a_plugin_runs_is_named_by_itself_under_the_plugin() {
    let mut c = correlator();
    c.on_event(plugin_exec(
        50,
        DAEMON,
        20_000,
        "/opt/cni/bin/bridge",
        variables("ADD"),
    ));
    // bridge with ipMasq runs iptables, which inherits the CNI variables.
    c.on_event(plugin_exec(
        52,
        50,
        30_000,
        "/usr/sbin/iptables",
        variables("ADD"),
    ));
    let iptables = c
        .on_event(plugin_exit(52, 35_000, Some(4), None))
        .expect("span");
    let bridge = c
        .on_event(plugin_exit(50, 40_000, Some(0), None))
        .expect("span");
    assert_eq!(iptables.name, "iptables");
    assert_eq!(iptables.attr_str(keys::CNI_PLUGIN), None);
    assert_eq!(iptables.attr_str(keys::CNI_COMMAND), Some("ADD"));
    assert_eq!(iptables.parent_span_id, Some(bridge.span_id));
    assert_eq!(
        iptables.status,
        SpanStatus::Error("iptables exited with status 4".to_owned())
    );
    assert_eq!(bridge.parent_span_id, None, "no CRI call was seen");
    assert_eq!(
        bridge.trace_id,
        TraceId::from_pod_uid(POD_UID),
        "the pod's trace"
    );
}

#[test]
fn a_plugin_run_for_no_known_pod_is_kept_unattributed() {
    let mut c = correlator();
    let env = strings(&[
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=nerdctl-1",
        "CNI_IFNAME=eth0",
    ]);
    c.on_event(plugin_exec(80, DAEMON, 1_000, "/opt/cni/bin/bridge", env));
    let span = c
        .on_event(plugin_exit(80, 2_000, Some(0), None))
        .expect("span");
    assert_eq!(span.pod, None);
    assert_eq!(span.attr_str(keys::CNI_CONTAINER_ID), Some("nerdctl-1"));
    assert_eq!(
        span.attributes
            .iter()
            .find(|a| a.key == keys::ATTRIBUTED)
            .map(|a| &a.value),
        Some(&crate::model::AttrValue::Bool(false))
    );
    assert_eq!(c.stats().unattributed.load(Ordering::Relaxed), 1);
}

#[test]
fn the_runtime_names_the_service_and_a_cut_environment_is_flagged() {
    let mut c = correlator();
    c.set_cri_service("cri-o");
    let KernelEvent::Exec(mut exec) =
        plugin_exec(90, DAEMON, 1_000, "/opt/cni/bin/bridge", variables("CHECK"))
    else {
        unreachable!()
    };
    exec.argv_truncated = true;
    c.on_event(KernelEvent::Exec(exec));
    let span = c
        .on_event(plugin_exit(90, 2_000, Some(0), None))
        .expect("span");
    assert_eq!(span.name, "CNI CHECK bridge");
    assert_eq!(span.service, "cri-o");
    assert_eq!(span.attr_str(keys::CONTAINER_RUNTIME), Some("cri-o"));
    assert!(
        span.attributes
            .iter()
            .any(|a| a.key == keys::CNI_ENV_TRUNCATED)
    );
}

#[test]
fn plugin_runs_in_progress_are_bounded() {
    let mut c = correlator();
    let total = PENDING_MAX as u32 + 100;
    for tgid in 0..total {
        c.on_event(plugin_exec(
            10_000 + tgid,
            DAEMON,
            u64::from(tgid) + 1,
            "/opt/cni/bin/bridge",
            variables("ADD"),
        ));
    }
    let kept = c.cni.runs.len();
    assert!(
        kept <= PENDING_MAX && kept > PENDING_MAX / 2,
        "{kept} runs kept"
    );
    assert!(c.cni.bytes() <= PENDING_MAX_BYTES);
    assert_eq!(
        c.stats().evicted.load(Ordering::Relaxed),
        u64::from(total) - kept as u64
    );
    assert_eq!(
        c.on_event(plugin_exit(10_000, 1, Some(0), None)),
        None,
        "the oldest went"
    );
    assert!(
        c.on_event(plugin_exit(10_000 + total - 1, u64::MAX, Some(0), None))
            .is_some()
    );
    // A reused pid replaces its earlier run.
    c.on_event(plugin_exec(
        5,
        DAEMON,
        1,
        "/opt/cni/bin/bridge",
        variables("ADD"),
    ));
    c.on_event(plugin_exec(
        5,
        DAEMON,
        2,
        "/opt/cni/bin/loopback",
        variables("ADD"),
    ));
    let span = c.on_event(plugin_exit(5, 3, Some(0), None)).expect("span");
    assert_eq!(span.name, "CNI ADD loopback");
}

fn plugin_output(tgid: u32, data: &[u8], cut: bool) -> KernelEvent {
    KernelEvent::CniOutput(CniOutputRecord {
        tgid,
        ktime_ns: 1,
        data: data.to_vec(),
        cut,
    })
}

#[test]
fn a_plugins_error_is_read_from_its_json_else_as_text() {
    let error = br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate for range 0","details":"no IP addresses available in range set"}"#;
    assert_eq!(
        error_message(error),
        Some((
            "failed to allocate for range 0: no IP addresses available in range set".to_owned(),
            Some(11)
        ))
    );
    assert_eq!(
        error_message(b"\n {\"code\": 7, \"msg\": \"bad\\nconfig\"}\n"),
        Some(("bad config".to_owned(), Some(7)))
    );
    // Not a CNI error: the text, on one line.
    assert_eq!(
        error_message(b"panic: oops\n\ngoroutine 1 [running]:\n"),
        Some(("panic: oops goroutine 1 [running]:".to_owned(), None))
    );
    assert_eq!(
        error_message(br#"{"code": 3}"#),
        Some((r#"{"code": 3}"#.to_owned(), None)),
        "an error without a message is shown as written"
    );
    assert_eq!(error_message(b" \n\t"), None);
    assert_eq!(error_message(b""), None);
    let (garbage, _) = error_message(&[0xff, 0xfe, b'{', 0]).expect("some text");
    assert!(garbage.contains('\u{fffd}'));
    let (long, _) = error_message(&[b'x'; 4096]).expect("text");
    assert!(long.len() <= MAX_TENANT_TEXT_BYTES);
}

#[test]
fn a_failed_plugin_says_why_and_a_successful_ones_result_is_not_kept() {
    let mut c = correlator();
    c.on_event(plugin_exec(
        50,
        DAEMON,
        20_000,
        "/opt/cni/bin/bridge",
        variables("ADD"),
    ));
    c.on_event(plugin_exec(
        51,
        50,
        30_000,
        "/opt/cni/bin/host-local",
        variables("ADD"),
    ));
    // The error arrives in two writes.
    c.on_event(plugin_output(
        51,
        br#"{"code":11,"msg":"no IP addresses "#,
        false,
    ));
    c.on_event(plugin_output(51, br#"available in range set"}"#, false));
    let ipam = c
        .on_event(plugin_exit(51, 40_000, Some(1), None))
        .expect("span");
    assert_eq!(
        ipam.status,
        SpanStatus::Error(
            "CNI ADD host-local exited with status 1: no IP addresses available in range set"
                .to_owned()
        )
    );
    assert_eq!(
        ipam.attr_str(keys::CNI_ERROR_MESSAGE),
        Some("no IP addresses available in range set")
    );
    assert_eq!(ipam.attr_int(keys::CNI_ERROR_CODE), Some(11));
    assert!(
        !ipam
            .attributes
            .iter()
            .any(|a| a.key == keys::CNI_ERROR_MESSAGE_TRUNCATED)
    );

    c.on_event(plugin_output(
        50,
        br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}"#,
        false,
    ));
    let bridge = c
        .on_event(plugin_exit(50, 50_000, Some(0), None))
        .expect("span");
    assert_eq!(bridge.status, SpanStatus::Unset);
    assert_eq!(bridge.attr_str(keys::CNI_ERROR_MESSAGE), None);
    assert!(
        !bridge
            .attributes
            .iter()
            .any(|a| span_text(a).contains("10.0.0.2"))
    );

    // Output beyond the bound is cut and said so; output of a run without a span, or of no
    // run, is dropped.
    c.on_event(plugin_exec(
        52,
        DAEMON,
        60_000,
        "/opt/cni/bin/bridge",
        variables("ADD"),
    ));
    for _ in 0..3 {
        c.on_event(plugin_output(52, &[b'x'; 1024], false));
    }
    let cut = c
        .on_event(plugin_exit(52, 70_000, Some(1), None))
        .expect("span");
    assert!(
        cut.attributes
            .iter()
            .any(|a| a.key == keys::CNI_ERROR_MESSAGE_TRUNCATED)
    );
    c.on_event(plugin_exec(
        53,
        DAEMON,
        80_000,
        "/opt/cni/bin/bridge",
        variables("STATUS"),
    ));
    c.on_event(plugin_output(53, b"{}", false));
    c.on_event(plugin_output(999, b"{}", false));
    assert_eq!(c.on_event(plugin_exit(53, 90_000, Some(1), None)), None);
    assert_eq!(c.cni.bytes(), 0);
}

fn span_text(attribute: &crate::model::Attribute) -> String {
    format!("{:?}", attribute.value)
}
