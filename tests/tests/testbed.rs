//! The testbed against the real containerd + runc of this machine: a pod goes through the
//! whole CRI lifecycle, its bundles carry the pod's identity, containerd survives a
//! restart with a pod running, and teardown leaves nothing behind, also after containerd
//! was killed. Needs root; skips loudly otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodetrace_testbed::containerd::ContainerdLayout;
use nodetrace_testbed::cri::{
    ContainerSpec, PodIdentity, container_config, host_network_sandbox_config,
};
use nodetrace_testbed::lifecycle::LifecycleStep;
use nodetrace_testbed::teardown::{cgroups, mounts, processes};
use nodetrace_testbed::{BUSYBOX_IMAGE, CriCall, PAUSE_IMAGE, Testbed, images};

const TIME_LIMIT: Duration = Duration::from_secs(60);

fn skip_unless_root(test: &str) -> bool {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    // Written to the stderr handle, not with eprintln!, so that the test harness does not
    // capture it: a skip must be visible.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped: needs root because it runs a private containerd and runc \
         (overlay mounts, namespaces, cgroups)"
    );
    true
}

/// A fresh, short work directory (unix socket paths are limited to 107 bytes).
fn work_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("ntb-")
        .tempdir_in("/tmp")
        .expect("create work dir")
        .keep()
}

/// What the bundle of `id` says about the pod.
#[derive(Debug)]
struct BundleFacts {
    sandbox_uid: Option<String>,
    container_type: Option<String>,
    cgroups_path: Option<String>,
}

fn read_bundle(layout: &ContainerdLayout, id: &str) -> Result<BundleFacts, String> {
    let path = layout.bundle(id).join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let annotation = |key: &str| spec["annotations"][key].as_str().map(str::to_string);
    Ok(BundleFacts {
        sandbox_uid: annotation("io.kubernetes.cri.sandbox-uid"),
        container_type: annotation("io.kubernetes.cri.container-type"),
        cgroups_path: spec["linux"]["cgroupsPath"].as_str().map(str::to_string),
    })
}

/// Asserts that nothing of the testbed in `work` is left.
fn assert_nothing_left(work: &Path, containerd_pid: u32, pod_cgroups: &[String]) {
    assert!(!work.exists(), "work dir {} still exists", work.display());
    let left = mounts::mounts_below(work).expect("mountinfo");
    assert!(
        left.is_empty(),
        "mounts left below {}: {left:?}",
        work.display()
    );
    assert!(
        !processes::is_alive(containerd_pid as i32),
        "containerd {containerd_pid} still runs"
    );
    let ours = processes::runtime_processes_naming(work);
    assert!(ours.is_empty(), "runtime processes left: {ours:?}");
    for parent in pod_cgroups {
        let dirs = cgroups::existing_dirs(parent);
        assert!(dirs.is_empty(), "pod cgroup left: {dirs:?}");
    }
}

/// Starts pod `nodetrace-test/name` with one busybox container `main` that sleeps for an hour;
/// answers the pod, its sandbox id and its container id.
async fn start_sleeping_pod(testbed: &Testbed, name: &str) -> (PodIdentity, String, String) {
    let pod = PodIdentity::fresh("nodetrace-test", name);
    let log_dir = pod.log_directory(testbed.containerd().pod_log_root());
    std::fs::create_dir_all(log_dir.join("main")).expect("log dir");
    let sandbox_config = host_network_sandbox_config(&pod, &log_dir);
    let sandbox_id = testbed
        .cri()
        .run_pod_sandbox(&sandbox_config)
        .await
        .expect("RunPodSandbox")
        .value;
    let spec = ContainerSpec::new("main", BUSYBOX_IMAGE, &["sleep", "3600"]);
    let container_id = testbed
        .cri()
        .create_container(&sandbox_id, &container_config(&pod, &spec), &sandbox_config)
        .await
        .expect("CreateContainer")
        .value;
    testbed
        .cri()
        .start_container(&container_id)
        .await
        .expect("StartContainer");
    (pod, sandbox_id, container_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_lifecycle_on_private_containerd_then_nothing_left() {
    if skip_unless_root("pod_lifecycle_on_private_containerd_then_nothing_left") {
        return;
    }
    let started = Instant::now();
    let mut testbed = Testbed::start(&work_dir()).await.expect("start testbed");
    let layout = testbed.containerd().layout().clone();
    eprintln!(
        "testbed up in {:?} at {}",
        started.elapsed(),
        layout.work_dir.display()
    );

    let version = testbed.cri().version().await.expect("Version").value;
    assert_eq!(version.runtime_name, "containerd");
    let names = images::ctr_image_names(testbed.containerd().socket()).expect("ctr images ls");
    for name in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    let lifecycle = testbed.pod("nodetrace-test", "lifecycle").with_exec(&[
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let uid = lifecycle.pod.uid.clone();
    let mut seen = Vec::new();
    let report = lifecycle
        .run_observed(testbed.cri(), |step: &LifecycleStep<'_>| {
            if step.call == CriCall::ExecSync {
                let container_id = step.container_id.unwrap_or_default();
                seen.push((
                    read_bundle(&layout, step.sandbox_id),
                    read_bundle(&layout, container_id),
                    cgroups::existing_dirs(&format!("/kubepods/besteffort/pod{uid}")),
                ));
            }
        })
        .await
        .expect("pod lifecycle");

    assert_eq!(report.exec.stdout_text(), "out\n");
    assert_eq!(report.exec.stderr_text(), "err\n");
    assert_eq!(report.exec.exit_code, 3);
    assert_eq!(
        report.container_exit_code, 0,
        "container should exit 0 on SIGTERM"
    );
    assert_eq!(report.image, BUSYBOX_IMAGE);
    assert_eq!(report.container_name, "main");

    let [(sandbox, container, pod_cgroup_dirs)] = <[_; 1]>::try_from(seen).expect("one ExecSync");
    let sandbox = sandbox.expect("sandbox bundle during ExecSync");
    let container = container.expect("container bundle during ExecSync");
    assert_eq!(sandbox.sandbox_uid.as_deref(), Some(uid.as_str()));
    assert_eq!(container.sandbox_uid.as_deref(), Some(uid.as_str()));
    assert_eq!(sandbox.container_type.as_deref(), Some("sandbox"));
    assert_eq!(container.container_type.as_deref(), Some("container"));
    assert_eq!(
        container.cgroups_path,
        Some(format!(
            "/kubepods/besteffort/pod{uid}/{}",
            report.container_id
        ))
    );
    assert!(
        pod_cgroup_dirs
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/unified")),
        "pod cgroup missing from cgroup2: {pod_cgroup_dirs:?}"
    );
    assert!(
        !layout.bundle(&report.sandbox_id).exists(),
        "sandbox bundle outlived RemovePodSandbox"
    );
    assert!(
        !layout.bundle(&report.container_id).exists(),
        "container bundle outlived RemoveContainer"
    );

    let expected = [
        CriCall::RunPodSandbox,
        CriCall::CreateContainer,
        CriCall::StartContainer,
        CriCall::ExecSync,
        CriCall::StopContainer,
        CriCall::ContainerStatus,
        CriCall::RemoveContainer,
        CriCall::StopPodSandbox,
        CriCall::RemovePodSandbox,
    ];
    let container_log = report
        .pod
        .log_directory(testbed.containerd().pod_log_root())
        .join("main/0.log");
    let log = std::fs::read_to_string(&container_log).expect("container log");
    assert!(log.contains(" stdout F started"), "container log: {log:?}");
    let calls: Vec<CriCall> = report.calls.iter().map(|r| r.call).collect();
    assert_eq!(calls, expected);
    for pair in report.calls.windows(2) {
        assert!(pair[0].window.start_unix_ns <= pair[0].window.end_unix_ns);
        assert!(pair[0].window.end_unix_ns <= pair[1].window.start_unix_ns);
    }
    for record in &report.calls {
        eprintln!(
            "{:>16}: {:?}",
            record.call.method(),
            record.window.duration()
        );
    }

    // A second pod stays up across a containerd restart and is left for teardown.
    let (pod, sandbox_id, container_id) = start_sleeping_pod(&testbed, "survivor").await;
    let old_pid = testbed.containerd().pid().expect("containerd pid");
    let restart_started = Instant::now();
    testbed
        .restart_containerd()
        .await
        .expect("restart containerd");
    eprintln!("containerd restarted in {:?}", restart_started.elapsed());
    let new_pid = testbed.containerd().pid().expect("containerd pid");
    assert_ne!(old_pid, new_pid);
    let exec = testbed
        .cri()
        .exec_sync(
            &container_id,
            &["cat".into(), "/proc/1/cmdline".into()],
            Duration::from_secs(5),
        )
        .await
        .expect("ExecSync after restart")
        .value;
    assert_eq!(exec.stdout_text(), "sleep\u{0}3600\u{0}");

    let pod_cgroups = vec![
        format!("/kubepods/besteffort/pod{uid}"),
        pod.cgroup_parent(),
    ];
    let work = layout.work_dir.clone();
    let teardown = testbed.stop().expect("teardown");
    eprintln!("teardown: {teardown:?}");
    assert_eq!(teardown.sandboxes_removed, vec![sandbox_id]);
    assert_nothing_left(&work, new_pid, &pod_cgroups);
    assert!(
        started.elapsed() < TIME_LIMIT,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_containerd_was_killed_leaves_nothing() {
    if skip_unless_root("drop_after_containerd_was_killed_leaves_nothing") {
        return;
    }
    let started = Instant::now();
    let testbed = Testbed::start(&work_dir()).await.expect("start testbed");
    let work = testbed.containerd().work_dir().to_path_buf();
    let (pod, _, _) = start_sleeping_pod(&testbed, "orphan").await;

    let pid = testbed.containerd().pid().expect("containerd pid");
    let shims = processes::runtime_processes_naming(&work);
    assert!(!shims.is_empty(), "no shim names {}", work.display());
    for process in &shims {
        eprintln!(
            "runtime process {process}: {:?}",
            processes::cmdline(*process)
        );
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    drop(testbed);
    assert_nothing_left(&work, pid, &[pod.cgroup_parent()]);
    assert!(shims.iter().all(|&p| !processes::is_alive(p)));
    assert!(
        started.elapsed() < TIME_LIMIT,
        "took {:?}",
        started.elapsed()
    );
}
