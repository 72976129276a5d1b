//! Synthetic kernel events: exec + exit pairs of `runc` runs as the ring-buffer reader would
//! hand them to the correlator, and a node view that has no files to read.

use nodetrace::correlate::NodeView;
use nodetrace::ebpf::{ExecRecord, ExitRecord, KernelEvent};
use nodetrace_common::{ExecRole, TrackedKind};
use std::path::Path;

/// containerd's runc state directory for Kubernetes pods.
pub const RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";

/// A node with no pid files and no process cgroups: attribution comes from command lines,
/// bundles and the correlator's cache only.
pub struct NoFiles;

impl NodeView for NoFiles {
    fn pid_file(&self, _path: &Path) -> Option<u32> {
        None
    }

    fn process_cgroups(&self, _pid: u32) -> Option<String> {
        None
    }
}

/// A 64-hex-digit container id derived from `n`.
pub fn container_id(n: u64) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        n,
        !n,
        n ^ 0x5bd1_e995,
        n.rotate_left(17)
    )
}

/// Hands out tgids that look like real pids (wrapping below the kernel's pid_max).
pub struct Pids(u32);

impl Pids {
    pub fn new() -> Self {
        Self(100_000)
    }

    pub fn next(&mut self) -> u32 {
        self.0 = if self.0 >= 4_000_000 {
            100_000
        } else {
            self.0 + 1
        };
        self.0
    }
}

/// The exec of `runc <argv...>` by process `tgid` at `ktime_ns`.
pub fn runc_exec(tgid: u32, ktime_ns: u64, argv: Vec<String>) -> KernelEvent {
    KernelEvent::Exec(ExecRecord {
        tgid,
        ppid: 4242,
        role: ExecRole::Runtime,
        cgroup_id: 1,
        ktime_ns,
        filename: "/usr/sbin/runc".to_owned(),
        argv,
        argv_truncated: false,
    })
}

/// The exit (status 0) of runtime process `tgid` at `ktime_ns`.
pub fn runc_exit(tgid: u32, ktime_ns: u64) -> KernelEvent {
    KernelEvent::Exit(ExitRecord {
        tgid,
        ktime_ns,
        exit_status: Some(0),
        signal: None,
        tracked: TrackedKind::Runtime,
    })
}

/// The command line of a runc run containerd makes for container `id` that names no bundle:
/// `state`, `kill`, `delete` or `start`, by `n`.
pub fn bundleless_argv(n: u64, id: &str) -> Vec<String> {
    let verb = ["state", "kill", "delete", "start"][(n % 4) as usize];
    let mut argv = vec![
        "runc".to_owned(),
        "--root".to_owned(),
        RUNC_ROOT.to_owned(),
        verb.to_owned(),
        id.to_owned(),
    ];
    if verb == "kill" {
        argv.push("15".to_owned());
    }
    argv
}

/// CLOCK_MONOTONIC now, as the kernel stamps events.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
