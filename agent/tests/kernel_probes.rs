//! Loads the real eBPF programs into the running kernel and checks what they report for
//! processes this test starts. Needs root (CAP_BPF, CAP_PERFMON, tracefs); skips otherwise.

use nodetrace::ebpf::{KernelEvent, KernelProbes, ReaderStats, VMLINUX_BTF, run_reader};
use nodetrace_common::{ExecRole, TrackedKind};
use std::{os::unix::process::CommandExt as _, path::Path, sync::Arc, time::Duration};
use tokio::sync::mpsc;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn reports_runtime_execs_their_children_and_exit_codes() {
    if !is_root() {
        eprintln!("skipped: loading eBPF programs needs root");
        return;
    }
    let (probes, ring) = KernelProbes::load(Path::new(VMLINUX_BTF)).expect("load and attach");
    assert_eq!(probes.attached().len(), 3);
    let (tx, mut rx) = mpsc::channel(4096);
    let stats = Arc::new(ReaderStats::default());
    let reader = tokio::spawn(run_reader(ring, tx, stats.clone()));

    // A shell installed as `runc` looks like a runtime to the kernel side (its command name and
    // argv[0] are runc's); the commands it forks and execs look like the container processes
    // a runtime starts.
    let dir = tempfile::tempdir().expect("temp dir");
    let fake_runc = dir.path().join("runc");
    std::fs::copy("/bin/sh", &fake_runc).expect("copy /bin/sh");
    let status = std::process::Command::new(&fake_runc)
        .arg0("runc")
        .args(["-c", "/bin/sleep 0.05; /bin/true; exit 3"])
        .status()
        .expect("run sh");
    assert_eq!(status.code(), Some(3));
    // An ordinary exec that must not be reported.
    std::process::Command::new("/bin/true")
        .status()
        .expect("run true");

    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        events.push(event);
        let done = events.iter().any(|e| {
            matches!(e, KernelEvent::Exit(x) if x.tracked == TrackedKind::Runtime && x.exit_status == Some(3))
        });
        if done {
            break;
        }
    }
    let runtime = events
        .iter()
        .find_map(|e| match e {
            KernelEvent::Exec(x)
                if x.role == ExecRole::Runtime
                    && x.argv.first().map(String::as_str) == Some("runc")
                    && x.argv.get(2).is_some_and(|a| a.contains("exit 3")) =>
            {
                Some(x.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no runtime exec among {events:#?}"));
    assert_eq!(
        runtime.argv,
        ["runc", "-c", "/bin/sleep 0.05; /bin/true; exit 3"]
    );
    assert_eq!(runtime.filename, fake_runc.to_str().expect("utf-8 path"));
    assert_eq!(runtime.ppid, std::process::id());
    assert_ne!(runtime.cgroup_id, 0);

    let children: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::Exec(x)
                if x.role == ExecRole::ContainerProcess && x.ppid == runtime.tgid =>
            {
                Some(x.argv.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        children,
        [
            vec!["/bin/sleep".to_owned(), "0.05".to_owned()],
            vec!["/bin/true".to_owned()]
        ]
    );

    let exit = events
        .iter()
        .find_map(|e| match e {
            KernelEvent::Exit(x) if x.tgid == runtime.tgid => Some(x.clone()),
            _ => None,
        })
        .expect("exit of the runtime process");
    assert_eq!(exit.exit_status, Some(3));
    assert!(exit.ktime_ns > runtime.ktime_ns);
    assert!(
        !events.iter().any(|e| matches!(e, KernelEvent::Exec(x) if x.argv == ["/bin/true"] && x.ppid == std::process::id())),
        "an unrelated exec was reported"
    );
    // A process that only calls itself runc in argv[0] is not a runtime: its command name
    // (the file it exec'd) is not runc's.
    let status = std::process::Command::new("/bin/sh")
        .arg0("runc")
        .args(["-c", "exit 4"])
        .status()
        .expect("run sh");
    assert_eq!(status.code(), Some(4));
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, rx.recv()).await {
        if let KernelEvent::Exec(x) = &event {
            assert!(
                !x.argv.iter().any(|a| a == "exit 4"),
                "a process named runc only in argv[0] was followed: {x:?}"
            );
        }
    }
    assert_eq!(probes.drops().expect("drop counters").ringbuf_full, 0);
    drop(rx);
    reader.await.expect("reader task").expect("reader");
}
