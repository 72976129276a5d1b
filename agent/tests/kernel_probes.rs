//! Loads the real eBPF programs into the running kernel and checks what they report for
//! processes this test starts. Needs root (CAP_BPF, CAP_PERFMON, tracefs); skips otherwise.

use nodetrace::budget::ByteBudget;
use nodetrace::ebpf::{
    EbpfLogLevel, KernelEvent, KernelProbes, ReaderStats, VMLINUX_BTF, run_reader,
};
use nodetrace_common::{BinaryKey, ExecRole, TrackedKind};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::{os::unix::process::CommandExt as _, path::Path, sync::Arc, time::Duration};
use tokio::sync::mpsc;

/// Each test loads its own programs, which see every exec on the machine: one at a time, so
/// that one test's runtime is not another's look-alike.
static KERNEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The programs of one test, loaded and read: the test's one-at-a-time turn, the probes and
/// the events they report.
struct Traced {
    probes: KernelProbes,
    events: mpsc::Receiver<KernelEvent>,
    reader: tokio::task::JoinHandle<Result<(), nodetrace::ebpf::EbpfError>>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Traced {
    /// Loads the programs with `budget` (after the other tests' turns); `None`, saying so,
    /// when not root.
    async fn start(budget: nodetrace_common::EventBudget) -> Option<Self> {
        if !is_root() {
            eprintln!("skipped: loading eBPF programs needs root");
            return None;
        }
        let turn = KERNEL.lock().await;
        let (probes, ring) =
            KernelProbes::load_with(Path::new(VMLINUX_BTF), budget, EbpfLogLevel::Off)
                .expect("load and attach");
        let (tx, events) = mpsc::channel(65_536);
        let reader = tokio::spawn(run_reader(
            ring,
            tx,
            Arc::new(ReaderStats::default()),
            ByteBudget::unbounded(),
        ));
        Some(Self {
            probes,
            events,
            reader,
            _turn: turn,
        })
    }

    /// Detaches the programs and waits for the reader to end.
    async fn stop(self) {
        let Self {
            probes,
            events,
            reader,
            ..
        } = self;
        drop(probes);
        drop(events);
        reader.await.expect("reader task").expect("reader");
    }
}

/// The allowlist key of a file.
fn key_of(path: &Path) -> BinaryKey {
    let meta = std::fs::metadata(path).expect("stat");
    BinaryKey::from_stat(meta.dev(), meta.ino())
}

/// A copy of `program` at `dir/<name>`.
fn copy_as(program: &str, dir: &Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join(name);
    std::fs::copy(program, &path).expect("copy program");
    path
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn reports_runtime_execs_their_children_and_exit_codes() {
    let Some(mut traced) = Traced::start(Default::default()).await else {
        return;
    };
    let (probes, rx) = (&mut traced.probes, &mut traced.events);
    assert_eq!(probes.attached().len(), 3);

    // A shell installed as `runc` and allowlisted is a runtime to the kernel side (by its
    // device and inode); the commands it forks and execs look like the container processes a
    // runtime starts.
    let dir = tempfile::tempdir().expect("temp dir");
    let fake_runc = copy_as("/bin/sh", dir.path(), "runc");
    probes
        .set_runtime_binaries(&BTreeSet::from([key_of(&fake_runc)]))
        .expect("allowlist");
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
    // Look-alikes: a process that only calls itself runc in argv[0], and a copy of a program
    // installed as `runc` (command name and argv[0] runc's) that is not an allowlisted binary.
    let lookalikes_before = probes.drops().expect("drop counters").runtime_lookalikes;
    let status = std::process::Command::new("/bin/sh")
        .arg0("runc")
        .args(["-c", "exit 4"])
        .status()
        .expect("run sh");
    assert_eq!(status.code(), Some(4));
    let lookalike = copy_as("/bin/sh", &dir.path().join("tenant"), "runc");
    let status = std::process::Command::new(&lookalike)
        .arg0("runc")
        .args(["-c", "exit 5"])
        .status()
        .expect("run the look-alike");
    assert_eq!(status.code(), Some(5));
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, rx.recv()).await {
        if let KernelEvent::Exec(x) = &event {
            assert!(
                !x.argv.iter().any(|a| a == "exit 4" || a == "exit 5"),
                "a process named runc that is no runtime binary was followed: {x:?}"
            );
        }
    }
    assert_eq!(
        probes.drops().expect("drop counters").runtime_lookalikes - lookalikes_before,
        1,
        "the copy named runc is counted as a look-alike (the argv[0] one is not named runc)"
    );
    assert_eq!(probes.drops().expect("drop counters").ringbuf_full, 0);
    traced.stop().await;
}

/// The runtime's own re-exec (same mount namespace) stays a runtime; a program named runc that
/// a runtime's fork execs in another mount namespace (a container's entrypoint) does not.
#[tokio::test]
async fn a_runtime_named_entrypoint_in_a_new_mount_namespace_is_a_container_process() {
    let Some(mut traced) = Traced::start(Default::default()).await else {
        return;
    };
    let (probes, rx) = (&mut traced.probes, &mut traced.events);
    let dir = tempfile::tempdir().expect("temp dir");
    // The "runtime": util-linux's unshare installed as runc; it enters a new mount namespace
    // and execs what it is given, as runc init does with the container's entrypoint.
    let runtime = copy_as("/usr/bin/unshare", &dir.path().join("runtime"), "runc");
    let entrypoint = copy_as("/bin/sh", &dir.path().join("image"), "runc");
    let reexec = copy_as("/bin/sh", &dir.path().join("cloned"), "runc");
    probes
        .set_runtime_binaries(&BTreeSet::from([key_of(&runtime)]))
        .expect("allowlist");

    let status = std::process::Command::new(&runtime)
        .arg0("runc")
        .arg("--mount")
        .arg("--propagation=private")
        .arg(&entrypoint)
        .args(["-c", "exit 6"])
        .status()
        .expect("run the runtime");
    assert_eq!(status.code(), Some(6));
    // Without a new mount namespace, the same exec is the runtime running itself again (runc
    // 1.1 re-executes a cloned copy of its binary, named runc, before it sets up namespaces).
    let status = std::process::Command::new(&runtime)
        .arg0("runc")
        .arg(&reexec)
        .args(["-c", "exit 7"])
        .status()
        .expect("run the runtime");
    assert_eq!(status.code(), Some(7));

    let mut roles = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while roles.len() < 2 {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        if let KernelEvent::Exec(x) = event
            && let Some(code) = x.argv.iter().find(|a| a.starts_with("exit "))
        {
            roles.insert(code.clone(), x.role);
        }
    }
    assert_eq!(
        roles.get("exit 6"),
        Some(&ExecRole::ContainerProcess),
        "entrypoint named runc in a new mount namespace: {roles:?}"
    );
    assert_eq!(
        roles.get("exit 7"),
        Some(&ExecRole::Runtime),
        "re-exec in the runtime's mount namespace: {roles:?}"
    );
    traced.stop().await;
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` or, on hybrid hosts, `.../unified`).
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| std::path::PathBuf::from(dir))
    })
}

/// Runs `runtime -c <script>` as a runtime would, in the cgroup2 directory `cgroup` when given.
fn run_in_cgroup(runtime: &Path, script: &str, cgroup: Option<&Path>) {
    let mut command = std::process::Command::new(runtime);
    command.arg0("runc").args(["-c", script]);
    if let Some(cgroup) = cgroup {
        let procs = std::ffi::CString::new(
            cgroup
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("path without NUL");
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let status = command.status().expect("run the runtime");
    assert!(status.success(), "{script}: {status}");
}

/// One cgroup that starts processes faster than its budget loses the ones beyond it (counted);
/// another cgroup's processes are still reported in full.
#[tokio::test]
async fn a_cgroup_over_its_budget_loses_only_its_own_processes() {
    let Some(cgroup2) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup2 hierarchy is mounted");
        return;
    };
    const BURST: u64 = 20;
    let budget = nodetrace_common::EventBudget {
        per_second: 1,
        burst: BURST,
    };
    let Some(mut traced) = Traced::start(budget).await else {
        return;
    };
    let (probes, rx) = (&mut traced.probes, &mut traced.events);
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = copy_as("/bin/sh", &dir.path().join("runtime"), "runc");
    probes
        .set_runtime_binaries(&BTreeSet::from([key_of(&runtime)]))
        .expect("allowlist");
    let noisy = cgroup2.join(format!("nodetrace-test-noisy-{}", std::process::id()));
    let quiet = cgroup2.join(format!("nodetrace-test-quiet-{}", std::process::id()));
    std::fs::create_dir(&noisy).expect("create a cgroup");
    std::fs::create_dir(&quiet).expect("create a cgroup");

    // 200 container processes from the noisy cgroup, then 5 from the quiet one.
    run_in_cgroup(
        &runtime,
        "i=0; while [ $i -lt 200 ]; do /bin/true noisy; i=$((i+1)); done",
        Some(&noisy),
    );
    run_in_cgroup(
        &runtime,
        "for i in 1 2 3 4 5; do /bin/true quiet; done",
        Some(&quiet),
    );

    let (mut noisy_seen, mut quiet_seen) = (0u64, 0u64);
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, rx.recv()).await {
        if let KernelEvent::Exec(x) = event
            && x.role == ExecRole::ContainerProcess
        {
            match x.argv.get(1).map(String::as_str) {
                Some("noisy") => noisy_seen += 1,
                Some("quiet") => quiet_seen += 1,
                _ => {}
            }
        }
    }
    let dropped = probes.drops().expect("drop counters").cgroup_budget;
    traced.stop().await;
    let _ = std::fs::remove_dir(&noisy);
    let _ = std::fs::remove_dir(&quiet);

    // The burst, plus at most a few tokens refilled while the loop ran.
    assert!(
        (BURST..=BURST + 10).contains(&noisy_seen),
        "noisy cgroup: {noisy_seen} of 200 reported"
    );
    assert_eq!(
        dropped,
        200 - noisy_seen,
        "every process over the budget is counted"
    );
    assert_eq!(quiet_seen, 5, "the quiet cgroup keeps its own budget");
}
