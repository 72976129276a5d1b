//! End to end, the CRI side: a real containerd + runc with the nodetrace agent running in this
//! process, in one sequence per cell of the runtime matrix (one containerd, one agent per
//! cell: attaching and detaching the CRI uprobes is what costs):
//!
//! - Debian's containerd 1.6 (Go 1.19) with Debian's runc 1.1, upgraded to copies of itself;
//! - containerd 1.7 (built here like its release) with runc 1.5, upgraded to containerd 2.0
//!   (another config format, its state migrated by containerd itself);
//! - containerd 2.2 (Go 1.26, internally linked) with runc 1.5, upgraded to containerd 2.4
//!   (Go 1.26, externally linked: the release shape whose function table has no text start)
//!   and then to a copy of 2.4.
//!
//! The steps:
//!
//! 1. PullImage from a private registry (Debian's `docker-registry` on 127.0.0.1, the testbed's
//!    busybox pushed with `skopeo`) gives a `PullImage` span with the image.
//! 2. A CreateContainer that fails (an image that does not exist) gives an error span with the
//!    pod on it.
//! 3. containerd restarts under the running agent; a whole pod lifecycle after it is traced,
//!    and `/readyz` reports the `cri` component ready.
//! 4. Every runc span of that lifecycle hangs under the CRI call that caused it.
//! 5. Upgrades: containerd restarts from another binary (another release, or a copy: another
//!    inode), twice. Each time the agent moves its uprobes to the new binary (`/readyz` and the
//!    kernel say so) and a pod lifecycle on it is traced; the old uprobes go away.
//!
//! Needs root; skips with a reason otherwise.

mod common;

use common::{
    Agent, LIFECYCLE_CALLS, Ready, Readyz, Step, assert_cri_span, assert_lifecycle_call,
    assert_pod, by_name, component_detail, component_ready, count, describe, end, expected_parent,
    lifecycle_complete, metric, only, short, skipped_unless_root, spans_until, tag, window,
};
use nodetrace::{
    api::{
        client::{Client, DEFAULT_TIMEOUT},
        format::jaeger_model::Span,
    },
    ebpf::VMLINUX_BTF,
    model::{self, SpanStatus, keys},
    store::{Store, StoreConfig},
};
use nodetrace_testbed::{
    BuiltRuntimes, CallWindow, ContainerdOptions, ControllersOnV1, CriCall, CriError, Registry,
    Testbed,
    cri::{ContainerSpec, PodIdentity, container_config, host_network_sandbox_config},
    lifecycle::DEFAULT_CONTAINER_COMMAND,
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Namespace of the test's pods.
const NAMESPACE: &str = "e2e-cri";
/// An image no registry has: CreateContainer with it fails.
const MISSING_IMAGE: &str = "docker.io/nodetrace/missing:none";
/// Where the busybox image is pushed in the private registry.
const PULLED_REPOSITORY: &str = "nodetrace/busybox:pulled";
/// Store size the agent runs with (the store is reopened with it after the agent stopped).
const STORE_MIB: u64 = 64;
/// How long the agent may take to re-attach its CRI probes after it lost the runtime (it
/// polls every 2 s, and attaching takes a moment).
const REATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long spans may take to reach the store after the calls returned.
const SPANS_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the agent may take to move its CRI uprobes to a replaced containerd binary (one
/// 2 s poll, planning the new binary, attaching).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the uprobes on a replaced binary may take to go away (detached in the background).
const OLD_PROBES_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the agent may take to attach its CRI uprobes when it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to stop (detaching the CRI uprobes).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `/readyz` reports the `cri` component (the CRI uprobes) ready.
fn cri_ready(readyz: &Readyz) -> bool {
    component_ready(readyz, "cri")
}

/// Waits until `/readyz` reports the `cri` component ready with its uprobes on `binary`, and
/// answers how many (from the detail) and each detail seen on the way with when it was first
/// seen, measured from `since`.
async fn wait_cri_on(
    agent: &Agent,
    binary: &Path,
    since: Instant,
    timeout: Duration,
) -> (usize, Vec<(Duration, String)>) {
    let on = format!(" uprobes on {} (", binary.display());
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let count = agent
        .wait_readyz(timeout, |answer| {
            let detail = component_detail(answer, "cri");
            if let Some(detail) = detail
                && seen.last().map(|(_, d)| d.as_str()) != Some(detail)
            {
                seen.push((since.elapsed(), detail.to_owned()));
            }
            if cri_ready(answer)
                && let Some((count, _)) = detail.and_then(|d| d.split_once(&on))
            {
                let count = count
                    .parse()
                    .unwrap_or_else(|e| panic!("uprobe count in the cri detail {detail:?}: {e}"));
                return Ok(count);
            }
            Err(format!(
                "the agent did not report its CRI uprobes ready on {} (details seen: {seen:?})",
                binary.display()
            ))
        })
        .await;
    (count, seen)
}

/// The uprobes this process (the agent runs in it) holds, by file, as the kernel reports its
/// bpf links (`BPF_OBJ_GET_INFO_BY_FD` on every `bpf_link` fd; perf-event link details need
/// Linux 6.6). `None` when the kernel tells nothing (older kernel, or no link found).
fn kernel_uprobes() -> Option<std::collections::BTreeMap<String, usize>> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
    const BPF_PERF_EVENT_UPROBE: u32 = 1;
    const BPF_PERF_EVENT_URETPROBE: u32 = 2;
    let mut by_file = std::collections::BTreeMap::new();
    let mut links = 0;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let is_link = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link");
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !is_link {
            continue;
        }
        links += 1;
        // struct bpf_link_info as u64 words (little-endian): type, id, prog_id, then (at 16)
        // perf_event: type, pad, uprobe.file_name (pointer, at 24), uprobe.name_len (at 32).
        let mut name = [0u8; 4096];
        let mut info = [0u64; 32];
        info[3] = name.as_mut_ptr() as u64;
        info[4] = name.len() as u64;
        // union bpf_attr, info: bpf_fd, info_len, info (pointer).
        let mut attr = [0u64; 16];
        attr[0] = u64::from(fd) | ((std::mem::size_of_val(&info) as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        // SAFETY: bpf(2) with a zeroed attr of the right command; the kernel writes only into
        // `info` and `name`, within the lengths given, which outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if ret != 0 {
            continue;
        }
        let link_type = info[0] as u32;
        let event_type = info[2] as u32;
        if link_type != BPF_LINK_TYPE_PERF_EVENT
            || !matches!(event_type, BPF_PERF_EVENT_UPROBE | BPF_PERF_EVENT_URETPROBE)
        {
            continue;
        }
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let file = String::from_utf8_lossy(&name[..len]).into_owned();
        *by_file.entry(file).or_insert(0) += 1;
    }
    (links > 0 && !by_file.is_empty()).then_some(by_file)
}

/// One cell of the runtime matrix.
struct Cell {
    /// How containerd starts (its binary, shim and runc).
    options: ContainerdOptions,
    /// The OCI runtime the agent is told to follow, when not the one on the PATH.
    runc: Option<PathBuf>,
    /// Its name, which starts its spans' names (`runc create`, `crun create`).
    oci: &'static str,
    /// The two upgrades of step 5, in order.
    upgrades: [Upgrade; 2],
    /// Whether the agent runs with the eBPF diagnostics on (`--ebpf-log-level=debug`); step 1
    /// then also pulls an image whose reference is longer than a string slot.
    ebpf_diagnostics: bool,
}

/// What containerd is upgraded to.
enum Upgrade {
    /// A copy of the binary it runs, named so (same code, another inode).
    Copy(&'static str),
    /// Another release: containerd and its shim.
    Release { containerd: PathBuf, shim: PathBuf },
}

/// The runtimes built by `cargo xtask setup`; `None` (and a message) when the cache is not
/// named, so that a plain `cargo test` skips these cells, while `cargo xtask test` (which
/// names it and requires every pinned runtime) runs them.
fn built(test: &str) -> Option<BuiltRuntimes> {
    let built = BuiltRuntimes::from_env();
    if built.is_none() {
        eprintln!("skipped {test}: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
    }
    built
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_containerd_1_6_with_runc_1_1() {
    if skipped_unless_root(
        "debian_containerd_1_6_with_runc_1_1",
        "eBPF uprobes, a private containerd with runc, a registry",
    ) {
        return;
    }
    run_cell(Cell {
        options: ContainerdOptions::default(),
        runc: None,
        oci: "runc",
        upgrades: [Upgrade::Copy("a"), Upgrade::Copy("b")],
        ebpf_diagnostics: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_1_7_upgraded_to_2_0_with_runc_1_5() {
    upgrade_cell(
        "containerd_1_7_upgraded_to_2_0_with_runc_1_5",
        ("v1.7", "v2.0"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_2_2_upgraded_to_2_4_with_runc_1_5() {
    upgrade_cell(
        "containerd_2_2_upgraded_to_2_4_with_runc_1_5",
        ("v2.2", "v2.4"),
        true,
    )
    .await;
}

/// A cell on the built containerd `from` (with its shim) and runc 1.5, upgraded to the built
/// release `to` and then to a copy of it.
async fn upgrade_cell(test: &str, (from, to): (&str, &str), ebpf_diagnostics: bool) {
    if skipped_unless_root(
        test,
        "eBPF uprobes, a private containerd with runc, a registry",
    ) {
        return;
    }
    let Some(built) = built(test) else { return };
    let release = |line: &str| {
        built
            .containerd(line)
            .unwrap_or_else(|| panic!("containerd {line} (cargo xtask setup)"))
    };
    let (from, to) = (release(from), release(to));
    let (_, runc) = built.runc("v1.5").expect("runc 1.5 (cargo xtask setup)");
    // On the heap: the whole sequence's future is too large for a test thread's stack once
    // nested in another future.
    Box::pin(run_cell(Cell {
        options: ContainerdOptions {
            containerd_binary: from.containerd,
            shim_binary: Some(from.shim),
            runc_binary: Some(runc.clone()),
            ..ContainerdOptions::default()
        },
        runc: Some(runc),
        oci: "runc",
        upgrades: [
            Upgrade::Release {
                containerd: to.containerd,
                shim: to.shim,
            },
            Upgrade::Copy("b"),
        ],
        ebpf_diagnostics,
    }))
    .await;
}

/// Debian's crun 1.8.1 knows OCI runtime specs up to 1.1: containerd 2.2 and later write
/// 1.3.0, which it refuses ("OCI runtime create failed: unknown version specified"), so
/// crun runs under containerd 1.7 (spec 1.1.0) here. On this hybrid cgroup layout crun also
/// needs cgroup2 without controllers ([`ControllersOnV1`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_1_7_with_crun_1_8() {
    let test = "containerd_1_7_with_crun_1_8";
    if skipped_unless_root(
        test,
        "eBPF uprobes, a private containerd with crun, a registry",
    ) {
        return;
    }
    let Some(built) = built(test) else { return };
    let containerd = built
        .containerd("v1.7")
        .expect("containerd 1.7 (cargo xtask setup)");
    let crun = PathBuf::from("/usr/bin/crun");
    assert!(crun.is_file(), "crun is installed by cargo xtask setup");
    // crun runs on a hybrid layout only when cgroup2 has no controller.
    let controllers = ControllersOnV1::ensure().expect("move cgroup2's controllers to v1");
    eprintln!(
        "  v1 hierarchies mounted for crun: {:?}",
        controllers.mounted()
    );
    run_cell(Cell {
        options: ContainerdOptions {
            containerd_binary: containerd.containerd,
            shim_binary: Some(containerd.shim),
            runc_binary: Some(crun.clone()),
            ..ContainerdOptions::default()
        },
        runc: Some(crun),
        oci: "crun",
        upgrades: [Upgrade::Copy("a"), Upgrade::Copy("b")],
        ebpf_diagnostics: false,
    })
    .await;
}

/// The whole sequence on one cell.
async fn run_cell(cell: Cell) {
    let started = Instant::now();
    eprintln!(
        "[cell] containerd {}, runc {}",
        cell.options.containerd_binary.display(),
        cell.runc
            .as_deref()
            .map_or("from the PATH".to_owned(), |r| r.display().to_string())
    );
    let work = tempfile::tempdir().expect("temp dir");

    // Setup: the registry first (containerd's config names it), then containerd, then the agent.
    let step = Step::start(started, "setup: private registry, containerd, agent");
    let registry_dir = work.path().join("registry");
    let registry = tokio::task::spawn_blocking(move || Registry::start(&registry_dir))
        .await
        .expect("registry task")
        .expect("start docker-registry");
    let mut testbed = Testbed::start_with(
        &work.path().join("testbed"),
        ContainerdOptions {
            insecure_registries: vec![registry.host()],
            ..cell.options
        },
    )
    .await
    .expect("start the testbed");
    let agent = Agent::start(
        &work.path().join("agent-data"),
        testbed.containerd().socket(),
        [
            "--node-name=e2e-node".to_owned(),
            "--retention=1h".to_owned(),
            format!("--max-store-mib={STORE_MIB}"),
            format!("--btf={VMLINUX_BTF}"),
        ]
        .into_iter()
        .chain(
            cell.runc
                .iter()
                .map(|runc| format!("--oci-runtime-binary={}", runc.display())),
        )
        .chain(
            cell.ebpf_diagnostics
                .then(|| "--ebpf-log-level=debug".to_owned()),
        ),
        Ready::Components {
            names: &["cri"],
            within: READY_TIMEOUT,
        },
    )
    .await;
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    drop(step);

    // 1. PullImage from the registry. The span is checked at the end, from the store: a pull
    //    is not tied to a pod, and /api/traces only answers per pod.
    let step = Step::start(started, "1. PullImage from the private registry");
    let archive = testbed.images().busybox.path.clone();
    // skopeo takes a second or so: let the runtime move other tasks off this thread.
    let reference =
        tokio::task::block_in_place(|| registry.push_oci_archive(&archive, PULLED_REPOSITORY))
            .expect("push busybox with skopeo");
    let cri = testbed.cri().clone();
    assert_eq!(
        cri.image_status(&reference)
            .await
            .expect("ImageStatus")
            .value,
        None,
        "{reference} must not be in containerd before the pull"
    );
    let pulled = cri.pull_image(&reference).await.unwrap_or_else(|e| {
        panic!(
            "PullImage {reference}: {e}\ncontainerd log:\n{}\nregistry log:\n{}",
            testbed.containerd().log_tail(3000),
            registry.log_tail(2000)
        )
    });
    let (image_ref, pull_window) = pulled.into_parts();
    assert_eq!(
        image_ref,
        testbed.images().busybox.config_digest,
        "containerd answers the image id"
    );
    assert_eq!(
        cri.image_status(&reference)
            .await
            .expect("ImageStatus")
            .value
            .as_deref(),
        Some(image_ref.as_str()),
        "the pulled image is there"
    );
    eprintln!(
        "  pulled {reference} -> {image_ref} in {:?}",
        pull_window.duration()
    );
    if cell.ebpf_diagnostics {
        // A reference longer than the probe's string slot: the eBPF diagnostics say it was
        // cut (a debug record), whatever the pull's outcome.
        let long = format!("{}/nodetrace/{}:long", registry.host(), "x".repeat(300));
        let pulled = cri.pull_image(&long).await;
        eprintln!(
            "  PullImage of a {}-byte reference: {:?}",
            long.len(),
            pulled.map(|p| p.into_parts().0)
        );
        let deadline = Instant::now() + SPANS_TIMEOUT;
        loop {
            let scrape = agent.scrape().await;
            let debug = metric(
                &scrape,
                r#"nodetrace_ebpf_log_records_total{level="debug"}"#,
            );
            if debug.is_some_and(|n| n >= 1.0) {
                eprintln!("  eBPF debug records: {debug:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no eBPF debug record of the cut string within {SPANS_TIMEOUT:?}: {debug:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(step);

    // 2. A CreateContainer that fails.
    let step = Step::start(started, "2. CreateContainer with a missing image fails");
    let broken = PodIdentity::fresh(NAMESPACE, "broken");
    let log_dir = broken.log_directory(testbed.containerd().pod_log_root());
    std::fs::create_dir_all(log_dir.join("main")).expect("pod log dir");
    let sandbox_config = host_network_sandbox_config(&broken, &log_dir);
    let (sandbox_id, run_window) = cri
        .run_pod_sandbox(&sandbox_config)
        .await
        .expect("RunPodSandbox of the broken pod")
        .into_parts();
    let container = container_config(
        &broken,
        &ContainerSpec::new("main", MISSING_IMAGE, DEFAULT_CONTAINER_COMMAND),
    );
    let (created, create_window) =
        CallWindow::measure(cri.create_container(&sandbox_id, &container, &sandbox_config)).await;
    match created {
        Err(CriError::Call {
            call: CriCall::CreateContainer,
            status,
        }) => eprintln!("  CreateContainer failed as expected: {}", status.message()),
        other => panic!("CreateContainer with {MISSING_IMAGE} must fail, got {other:?}"),
    }
    let stop_window = cri
        .stop_pod_sandbox(&sandbox_id)
        .await
        .expect("StopPodSandbox of the broken pod")
        .window;
    let remove_window = cri
        .remove_pod_sandbox(&sandbox_id)
        .await
        .expect("RemovePodSandbox of the broken pod")
        .window;
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, "broken"),
        SPANS_TIMEOUT,
        |spans| count(spans, "RemovePodSandbox") == 1 && count(spans, "CreateContainer") == 1,
    )
    .await;
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    for span in &spans {
        assert_pod(span, &broken);
    }
    let failed = only(&spans, "CreateContainer");
    assert_cri_span(failed, "CreateContainer", create_window);
    let failed_what = format!("the failed CreateContainer:\n{}", describe(&[failed]));
    assert_eq!(
        tag(failed, "error").as_deref(),
        Some("true"),
        "{failed_what}"
    );
    assert_eq!(
        tag(failed, "otel.status_code").as_deref(),
        Some("ERROR"),
        "{failed_what}"
    );
    assert_eq!(
        tag(failed, "k8s.pod.sandbox.id").as_deref(),
        Some(sandbox_id.as_str()),
        "{failed_what}"
    );
    assert_eq!(
        tag(failed, "k8s.container.name").as_deref(),
        Some("main"),
        "{failed_what}"
    );
    assert_eq!(
        tag(failed, "container.image.name").as_deref(),
        Some(MISSING_IMAGE),
        "{failed_what}"
    );
    eprintln!(
        "  its status description: {:?}",
        tag(failed, "otel.status_description")
    );
    assert_eq!(
        tag(failed, "container.id"),
        None,
        "no container was created: {failed_what}"
    );
    for (method, window) in [
        ("RunPodSandbox", run_window),
        ("StopPodSandbox", stop_window),
        ("RemovePodSandbox", remove_window),
    ] {
        let span = only(&spans, method);
        assert_cri_span(span, method, window);
        assert_eq!(tag(span, "error"), None, "{method} succeeded");
        assert_eq!(
            tag(span, "k8s.pod.sandbox.id").as_deref(),
            Some(sandbox_id.as_str()),
            "{method}"
        );
    }
    drop(step);

    // 3. containerd restarts under the agent; a whole lifecycle afterwards is traced.
    let step = Step::start(started, "3. restart containerd, then a whole pod lifecycle");
    let old_pid = testbed.containerd().pid();
    let restart_started = Instant::now();
    testbed
        .restart_containerd()
        .await
        .expect("restart containerd");
    let new_pid = testbed.containerd().pid();
    assert_ne!(old_pid, new_pid, "containerd runs as a new process");
    eprintln!(
        "  containerd restarted in {:?}: pid {old_pid:?} -> {new_pid:?}",
        restart_started.elapsed()
    );
    // The uprobes belong to the binary, so they normally outlive the process and the calls
    // below are traced at once. If the agent's watcher happened to poll while containerd was
    // down, it dropped its probes: /readyz says so until it re-attached (within a poll or two).
    let readyz = agent.readyz().await;
    if cri_ready(&readyz) {
        eprintln!("  /readyz right after the restart: cri ready");
    } else {
        eprintln!(
            "  AGENT: the watcher saw containerd down and detached its CRI probes; /readyz: {readyz:?}"
        );
        agent
            .wait_ready(Ready::Components {
                names: &["cri"],
                within: REATTACH_TIMEOUT,
            })
            .await;
    }

    let cri = testbed.cri().clone();
    let lifecycle = testbed.pod(NAMESPACE, "after-restart");
    let pod = lifecycle.pod.clone();
    let report = lifecycle
        .run(&cri)
        .await
        .expect("pod lifecycle after the restart");
    let (sandbox, container) = (report.sandbox_id.clone(), report.container_id.clone());
    let complete = lifecycle_complete(&report);
    let traces = spans_until(
        &client,
        &by_name(NAMESPACE, "after-restart"),
        SPANS_TIMEOUT,
        |spans| {
            LIFECYCLE_CALLS
                .iter()
                .all(|c| count(spans, c.method()) >= 1)
                && complete(spans)
        },
    )
    .await;
    assert_eq!(traces.len(), 1, "one pod, one trace");
    let spans: Vec<&Span> = traces[0].spans.iter().collect();
    for span in &spans {
        assert_pod(span, &pod);
    }
    for call in LIFECYCLE_CALLS {
        assert_lifecycle_call(&spans, &report, call);
    }
    let runc_spans: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| s.operation_name.starts_with(&format!("{} ", cell.oci)))
        .collect();
    for verb in ["create", "start", "kill", "delete"] {
        for id in [&sandbox, &container] {
            assert!(
                runc_spans
                    .iter()
                    .any(|s| s.operation_name == format!("{} {verb}", cell.oci)
                        && tag(s, "container.id").as_deref() == Some(id.as_str())),
                "no `{} {verb}` span for {id}; spans:\n{}",
                cell.oci,
                describe(&spans)
            );
        }
    }
    assert!(
        runc_spans
            .iter()
            .any(|s| s.operation_name == format!("{} exec", cell.oci)),
        "no `{} exec` span; spans:\n{}",
        cell.oci,
        describe(&spans)
    );
    let readyz = agent.readyz().await;
    assert!(
        cri_ready(&readyz),
        "/readyz after the lifecycle: {readyz:?}"
    );
    drop(step);

    // 4. Every runc span (and the processes runc started) hangs under its CRI call.
    let step = Step::start(started, "4. runc spans are children of their CRI calls");
    let parent = |span: &Span| {
        let id = span.parent_span_id()?;
        spans.iter().copied().find(|s| s.span_id == id)
    };
    for span in &spans {
        let what = format!(
            "{} of {:?}",
            span.operation_name,
            tag(span, "container.id").as_deref().map(short)
        );
        if span.operation_name.starts_with(&format!("{} ", cell.oci)) {
            let parent = parent(span).unwrap_or_else(|| {
                panic!(
                    "{what} has no parent in the trace; spans:\n{}",
                    describe(&spans)
                )
            });
            assert!(
                tag(parent, "rpc.method").is_some(),
                "{what} hangs under {}, not a CRI span",
                parent.operation_name
            );
        }
        if let Some(expected) = expected_parent(span) {
            if span.operation_name == "container process" && parent(span).is_none() {
                // A known race in the agent, tolerated here: runc start returns before the
                // container's init execs its process, and the CRI call may return in between,
                // so the process starts after its CRI span ended and the time-window match
                // finds no parent. A wrong parent still fails below.
                eprintln!(
                    "  AGENT: {what} has no parent (starts {} ns after its {expected} ended)",
                    spans
                        .iter()
                        .filter(|s| s.operation_name == expected)
                        .map(|s| span.start_unix_ns as i64 - end(s) as i64)
                        .min_by_key(|d| d.abs())
                        .unwrap_or_default()
                );
                continue;
            }
            assert_eq!(
                parent(span).map(|p| p.operation_name.as_str()),
                Some(expected),
                "parent of {what}; spans:\n{}",
                describe(&spans)
            );
        }
    }
    drop(step);

    // 5. Upgrades: containerd restarts from another binary (another release, or a copy of the
    //    one it runs: same code, another inode, so the agent sees a replaced binary), twice.
    let step = Step::start(
        started,
        "5. upgrade: containerd restarts from another release or a copy, twice",
    );
    let inode = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .ino()
    };
    let mut inodes = vec![inode(testbed.containerd().binary())];
    let mut last_reattach = Instant::now();
    let before = kernel_uprobes();
    eprintln!("  uprobes before, by file (from the kernel): {before:?}");
    let mut current = testbed.containerd().binary().to_path_buf();
    for (upgrade, name) in cell.upgrades.iter().zip(["upgrade-a", "upgrade-b"]) {
        let previous = testbed.containerd().binary().to_path_buf();
        let (copy, shim) = match upgrade {
            Upgrade::Copy(copy) => (
                testbed
                    .copy_containerd_binary(copy)
                    .unwrap_or_else(|e| panic!("copy {} to the work dir: {e}", previous.display())),
                None,
            ),
            Upgrade::Release { containerd, shim } => (containerd.clone(), Some(shim.as_path())),
        };
        let copy = &copy;
        inodes.push(inode(copy));
        assert!(
            !inodes[..inodes.len() - 1].contains(&inode(copy)),
            "{} is another file: inodes {inodes:?}",
            copy.display()
        );
        let upgrade_started = Instant::now();
        testbed
            .upgrade_containerd(copy, shim)
            .await
            .unwrap_or_else(|e| panic!("restart containerd onto {}: {e}", copy.display()));
        current = copy.clone();
        let restarted = upgrade_started.elapsed();
        let pid = testbed.containerd().pid().expect("containerd runs");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("containerd's exe");
        assert_eq!(&exe, copy, "containerd {pid} runs from the copy");
        let (uprobes, details) = wait_cri_on(&agent, copy, upgrade_started, UPGRADE_TIMEOUT).await;
        let reattached = upgrade_started.elapsed();
        last_reattach = Instant::now();
        eprintln!(
            "  {} -> {}: containerd up after {restarted:?}, the agent's uprobes on it after \
             {reattached:?}; /readyz's cri detail (first seen at):",
            previous.display(),
            copy.display()
        );
        for (at, detail) in &details {
            eprintln!("    {at:>12.2?}  {detail}");
        }
        assert!(uprobes > 0, "uprobes on {}: {details:?}", copy.display());
        let metric = metric(
            &agent.scrape().await,
            r#"nodetrace_probes_attached{kind="uprobe"}"#,
        );
        assert_eq!(
            metric,
            Some(uprobes as f64),
            "nodetrace_probes_attached{{kind=\"uprobe\"}} against /readyz's {uprobes} uprobes"
        );
        if let Some(kernel) = kernel_uprobes() {
            let on_copy = kernel.get(&copy.display().to_string()).copied();
            assert_eq!(
                on_copy,
                Some(uprobes),
                "the kernel's uprobes of this process on {}, by file: {kernel:?}",
                copy.display()
            );
        } else {
            eprintln!("  (the kernel does not tell the uprobes' files: not checked)");
        }

        let cri = testbed.cri().clone();
        let lifecycle = testbed.pod(NAMESPACE, name);
        let pod = lifecycle.pod.clone();
        let report = lifecycle.run(&cri).await.unwrap_or_else(|e| {
            panic!(
                "pod lifecycle on {}: {e}\ncontainerd log:\n{}",
                copy.display(),
                testbed.containerd().log_tail(3000)
            )
        });
        let lifecycle_done = upgrade_started.elapsed();
        let traces = spans_until(&client, &by_name(NAMESPACE, name), SPANS_TIMEOUT, |spans| {
            LIFECYCLE_CALLS
                .iter()
                .all(|c| count(spans, c.method()) >= 1)
        })
        .await;
        let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
        for call in LIFECYCLE_CALLS {
            let method = call.method();
            let span = only(&spans, method);
            assert_cri_span(span, method, window(&report, call));
            assert_pod(span, &pod);
            assert_eq!(tag(span, "error"), None, "{method} succeeded");
        }
        eprintln!(
            "  {name}: lifecycle done after {lifecycle_done:?}, its {} CRI spans after {:?}",
            LIFECYCLE_CALLS.len(),
            upgrade_started.elapsed()
        );
    }
    // The uprobes on the binaries containerd no longer runs are detached in the background.
    let current = current.display().to_string();
    match kernel_uprobes() {
        None => eprintln!("  (the kernel does not tell the uprobes' files: old ones not checked)"),
        Some(_) => loop {
            let kernel = kernel_uprobes().unwrap_or_default();
            let old: Vec<(&String, &usize)> = kernel
                .iter()
                .filter(|(file, _)| **file != current)
                .collect();
            if old.is_empty() {
                eprintln!(
                    "  no uprobes left on the old binaries {:?} after the last re-attach; \
                     now: {kernel:?}",
                    last_reattach.elapsed()
                );
                break;
            }
            assert!(
                last_reattach.elapsed() < OLD_PROBES_TIMEOUT,
                "uprobes on binaries containerd no longer runs were not detached within \
                 {OLD_PROBES_TIMEOUT:?}: {old:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        },
    }
    let readyz = agent.readyz().await;
    assert!(cri_ready(&readyz), "/readyz after the upgrade: {readyz:?}");
    drop(step);

    // Stop the agent; its store then tells the PullImage span of step 1.
    let step = Step::start(started, "stop the agent");
    let data_dir = agent.data_dir.clone();
    agent.stop(STOP_TIMEOUT).await;
    drop(step);

    let step = Step::start(
        started,
        "1 (checked): the PullImage span, from the agent's store",
    );
    let store = Store::open(
        &data_dir,
        StoreConfig {
            max_size_bytes: STORE_MIB * 1024 * 1024,
            ..StoreConfig::default()
        },
    )
    .expect("reopen the agent's store");
    // A second either side: a span sticking out of the window is reported, not missed.
    let unattributed = store
        .unattributed_spans(
            pull_window.start_unix_ns - 1_000_000_000,
            pull_window.end_unix_ns + 1_000_000_000,
            10_000,
        )
        .expect("read the unattributed spans");
    // (Not the pull of the over-long reference of a cell with the eBPF diagnostics on.)
    let pulls: Vec<&model::Span> = unattributed
        .iter()
        .filter(|s| {
            s.name == "PullImage"
                && !s
                    .attr_str(keys::IMAGE_NAME)
                    .is_some_and(|image| image.contains("/nodetrace/xxxx"))
        })
        .collect();
    let pull = match pulls.as_slice() {
        [pull] => *pull,
        _ => panic!(
            "expected one PullImage span among the unattributed spans, got {}: {:#?}",
            pulls.len(),
            unattributed
                .iter()
                .map(|s| (&s.name, s.start_unix_ns, &s.attributes))
                .collect::<Vec<_>>()
        ),
    };
    let pull_what = format!("{pull:#?}");
    assert_eq!(pull.service, "containerd", "{pull_what}");
    assert_eq!(
        pull.attr_str(keys::RPC_METHOD),
        Some("PullImage"),
        "{pull_what}"
    );
    assert_eq!(
        pull.attr_str(keys::RPC_SERVICE),
        Some("runtime.v1.ImageService"),
        "{pull_what}"
    );
    assert!(
        pull_window.encloses(pull.start_unix_ns, pull.end_unix_ns),
        "PullImage span [{}, {}] is not inside the window the client measured [{}, {}]",
        pull.start_unix_ns,
        pull.end_unix_ns,
        pull_window.start_unix_ns,
        pull_window.end_unix_ns
    );
    assert_eq!(pull.status, SpanStatus::Unset, "{pull_what}");
    let image = pull.attr_str(keys::IMAGE_NAME);
    assert!(
        image == Some(reference.as_str()) || image == Some(image_ref.as_str()),
        "container.image.name of PullImage is {image:?}, neither the reference asked for \
         ({reference}) nor the one answered ({image_ref}): {pull_what}"
    );
    eprintln!("  PullImage span: container.image.name = {image:?}");
    drop(store);
    drop(step);

    let step = Step::start(started, "teardown");
    let teardown = testbed.stop().expect("the testbed leaves nothing behind");
    registry.stop().expect("stop the registry");
    eprintln!("  teardown: {teardown:?}");
    drop(step);
    eprintln!("[{:>6.2?}] done", started.elapsed());
}
