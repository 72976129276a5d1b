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

/// The events of a run, until `done` accepts them or 5 s pass.
async fn events_until(
    rx: &mut mpsc::Receiver<KernelEvent>,
    done: impl Fn(&[KernelEvent]) -> bool,
) -> Vec<KernelEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done(&events) {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        events.push(event);
    }
    events
}

/// The CRI runtime daemon's forks: one whose environment holds the CNI variables is a CNI
/// plugin (reported with those variables only, wherever they sit in the environment and
/// however long the entries before them), and so is the plugin it delegates to; one that runs
/// an allowlisted runtime binary is the runtime (CRI-O runs runc itself); any other is not
/// reported. An environment with more entries than the kernel side looks at is counted.
#[tokio::test]
async fn a_cri_daemons_forks_with_cni_variables_are_cni_plugins() {
    let Some(mut traced) = Traced::start(Default::default()).await else {
        return;
    };
    let (probes, rx) = (&mut traced.probes, &mut traced.events);
    // What plugins write to their standard output (`--cni-error-messages`).
    probes.capture_cni_output().expect("attach sys_enter_write");
    assert_eq!(probes.attached().len(), 4);
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("cni-bin");
    copy_as("/bin/sh", &bin, "bridge");
    copy_as("/bin/sh", &bin, "host-local");
    let runc = copy_as("/bin/sh", &dir.path().join("sbin"), "runc");
    probes
        .set_runtime_binaries(&BTreeSet::from([key_of(&runc)]))
        .expect("allowlist");
    let bin = bin.to_str().expect("utf-8 path");
    // The plugin runs its IPAM plugin, which writes to its standard output, then fails. An entry longer than the kernel side's
    // piece (2 KiB) sits before the CNI variables (`Command` sorts the environment by name).
    let plugin = format!(
        "AAA_LONG=$(printf '%05000d' 0) CNI_COMMAND=ADD CNI_CONTAINERID=sandbox-1 \
         CNI_NETNS=/var/run/netns/cni-1 CNI_IFNAME=eth0 CNI_PATH={bin} \
         CNI_ARGS='IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1' \
         {bin}/bridge -c '{bin}/host-local -c \"echo ipam-said\"; exit 3'"
    );
    // 300 entries before CNI_COMMAND: more than the kernel side examines.
    let crowded: String = (0..300).map(|i| format!("A{i:03}=x ")).collect();
    let script = format!(
        "sleep 0.3; /bin/true not-a-plugin; {plugin}; {runc} -c 'exit 0'; \
         {crowded} CNI_COMMAND=DEL {bin}/bridge -c 'exit 0'; exit 0",
        runc = runc.display()
    );
    let mut daemon = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .spawn()
        .expect("start the daemon");
    let daemon_pid = daemon.id();
    assert!(
        probes
            .follow_cri_daemon(daemon_pid)
            .expect("follow the daemon")
    );
    assert!(
        !probes
            .follow_cri_daemon(daemon_pid)
            .expect("follow the daemon"),
        "followed already"
    );
    let events = events_until(rx, |events| {
        events.iter().any(|e| {
            matches!(e, KernelEvent::Exec(x) if x.role == ExecRole::Runtime && x.ppid == daemon_pid)
        })
    })
    .await;
    assert!(daemon.wait().expect("wait for the daemon").success());
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut events = events;
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet_until, rx.recv()).await {
        events.push(event);
    }
    let plugins: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::Exec(x) if x.role == ExecRole::CniPlugin => Some(x.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(plugins.len(), 2, "bridge and host-local: {plugins:#?}");
    let (caller, delegate) = (&plugins[0], &plugins[1]);
    assert_eq!(caller.filename, format!("{bin}/bridge"));
    assert_eq!(caller.ppid, daemon_pid);
    let mut variables = caller.argv.clone();
    variables.sort();
    assert_eq!(
        variables,
        [
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=sandbox-1",
            "CNI_IFNAME=eth0",
            "CNI_NETNS=/var/run/netns/cni-1",
            &format!("CNI_PATH={bin}"),
        ],
        "the CNI variables, and nothing else of the environment"
    );
    assert!(!caller.argv_truncated);
    assert_eq!(delegate.filename, format!("{bin}/host-local"));
    assert_eq!(delegate.ppid, caller.tgid, "run by the plugin");
    assert!(delegate.argv.iter().any(|v| v == "CNI_COMMAND=ADD"));
    // What a plugin writes to its standard output, where a plugin prints its error.
    let outputs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KernelEvent::CniOutput(x) => Some(x.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 1, "{outputs:#?}");
    assert_eq!(outputs[0].tgid, delegate.tgid);
    assert_eq!(outputs[0].data, b"ipam-said\n");
    assert!(!outputs[0].cut);
    let exit_of = |tgid: u32| {
        events.iter().find_map(|e| match e {
            KernelEvent::Exit(x) if x.tgid == tgid => Some(x.clone()),
            _ => None,
        })
    };
    let caller_exit = exit_of(caller.tgid).expect("the plugin's exit");
    assert_eq!(
        (caller_exit.exit_status, caller_exit.tracked),
        (Some(3), TrackedKind::CniPlugin)
    );
    let delegate_exit = exit_of(delegate.tgid).expect("the delegate's exit");
    assert_eq!(delegate_exit.exit_status, Some(0));
    assert!(
        delegate_exit.ktime_ns < caller_exit.ktime_ns,
        "the delegate ends inside its caller"
    );
    // The runtime the daemon ran itself is one; nothing else of the daemon's is reported.
    let runtime = events
        .iter()
        .find_map(|e| match e {
            KernelEvent::Exec(x) if x.role == ExecRole::Runtime && x.ppid == daemon_pid => {
                Some(x.clone())
            }
            _ => None,
        })
        .expect("the runtime the daemon ran");
    assert_eq!(
        runtime.argv,
        [runc.to_str().expect("utf-8 path"), "-c", "exit 0"]
    );
    let others: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(e, KernelEvent::Exec(x) if x.ppid == daemon_pid
                && x.role != ExecRole::Runtime && x.role != ExecRole::CniPlugin)
        })
        .collect();
    assert!(others.is_empty(), "reported: {others:#?}");
    assert_eq!(
        probes.drops().expect("drop counters").cni_env_cut,
        1,
        "the plugin behind 300 entries is counted as not examined"
    );
    assert_eq!(probes.drops().expect("drop counters").ringbuf_full, 0);
    traced.stop().await;
}
