//! What the runtime's answers tell the correlator, in the agent's own terms: sandboxes (pod,
//! attempt, labels and trace context), containers (pod, name, image) and the processes of
//! running containers, found again after the agent restarted.

use std::path::Path;

use nodetrace_common::{ARGV_MAX_ARGS, ARGV_MAX_BYTES, ExecRole};

use crate::{
    ebpf::ExecRecord,
    hostfs,
    k8s::{LabelAllowList, PodMetadata},
    model::PodRef,
};

use super::messages::{self, Container, PodSandbox};

/// Which labels and which annotation of a sandbox are kept.
#[derive(Clone, Debug)]
pub struct MetadataRules {
    pub labels: LabelAllowList,
    pub trace_context_annotation: String,
}

/// A pod sandbox as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxFacts {
    pub id: String,
    pub pod: PodRef,
    pub attempt: u64,
    /// Labels and trace context from the sandbox config (kubelet copies the pod's).
    pub metadata: PodMetadata,
}

impl SandboxFacts {
    /// `None` for a sandbox without a pod UID (not made by kubelet).
    pub fn from_message(sandbox: &PodSandbox, rules: &MetadataRules) -> Option<Self> {
        let meta = sandbox.metadata.as_ref()?;
        if meta.uid.is_empty() || sandbox.id.is_empty() {
            return None;
        }
        let pod = PodRef {
            uid: crate::model::capped(&meta.uid),
            namespace: crate::model::capped(&meta.namespace),
            name: crate::model::capped(&meta.name),
        };
        let metadata = PodMetadata::from_sandbox(
            &pod,
            &sandbox.labels,
            &sandbox.annotations,
            &rules.labels,
            &rules.trace_context_annotation,
        );
        Some(Self {
            id: crate::model::capped(&sandbox.id),
            pod,
            attempt: u64::from(meta.attempt),
            metadata,
        })
    }
}

/// A container as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFacts {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u64,
    pub image: String,
    pub running: bool,
}

impl ContainerFacts {
    pub fn from_message(container: &Container) -> Option<Self> {
        if container.id.is_empty() {
            return None;
        }
        let meta = container.metadata.clone().unwrap_or_default();
        Some(Self {
            id: crate::model::capped(&container.id),
            sandbox_id: crate::model::capped(&container.pod_sandbox_id),
            name: crate::model::capped(&meta.name),
            attempt: u64::from(meta.attempt),
            image: crate::model::capped(
                &container
                    .image
                    .as_ref()
                    .map(|image| image.image.clone())
                    .unwrap_or_default(),
            ),
            running: container.state == messages::CONTAINER_RUNNING,
        })
    }
}

/// The process of a running container that was started before the agent was: its exec was
/// not seen, so it is described from `/proc` and marked as seen mid-life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningProcess {
    pub container_id: String,
    pub exec: ExecRecord,
}

/// The pid in the runtime's verbose container status: containerd and CRI-O both put a JSON
/// object with a `pid` number under the `info` key.
pub fn pid_from_info(info: &std::collections::HashMap<String, String>) -> Option<u32> {
    let text = info.get("info")?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let pid = value.get("pid")?.as_u64()?;
    u32::try_from(pid).ok().filter(|pid| *pid > 1)
}

/// Bytes read of `/proc/<pid>/stat` (the command name is at most 16 bytes; the rest numbers).
const STAT_BYTES_MAX: u64 = 4096;

/// How `/proc` start times (clock ticks after boot, boot time counting suspend) map onto the
/// monotonic clock the kernel events use.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    ticks_per_second: u64,
    boottime_minus_monotonic_ns: u64,
}

impl BootClock {
    pub fn sample() -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        Self {
            ticks_per_second: u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100),
            boottime_minus_monotonic_ns: boot.saturating_sub(mono),
        }
    }

    /// The monotonic time of a start time in clock ticks after boot.
    pub fn monotonic_ns(&self, start_ticks: u64) -> u64 {
        let boot_ns = start_ticks.saturating_mul(1_000_000_000) / self.ticks_per_second;
        boot_ns.saturating_sub(self.boottime_minus_monotonic_ns)
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Describes process `pid` of container `container_id` from `/proc` (under `proc_root`): its
/// parent, start time and command line (bounded as the kernel side bounds an exec's).
pub fn running_process(
    proc_root: &Path,
    pid: u32,
    container_id: &str,
    clock: &BootClock,
) -> Option<RunningProcess> {
    let stat = hostfs::read_proc_file(proc_root, pid, "stat", STAT_BYTES_MAX).ok()?;
    let stat = String::from_utf8_lossy(&stat);
    let ppid = u32::try_from(hostfs::stat_field(&stat, 4)?).ok()?;
    let start_ticks = hostfs::stat_field(&stat, 22)?;
    // A command line longer than the kernel side's bound is cut like an exec's.
    let cmdline = match hostfs::read_proc_file(proc_root, pid, "cmdline", ARGV_MAX_BYTES as u64) {
        Ok(bytes) => (bytes, false),
        Err(hostfs::HostFsError::TooLarge { .. }) => (Vec::new(), true),
        Err(_) => (Vec::new(), false),
    };
    let mut argv: Vec<String> = cmdline
        .0
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let truncated = cmdline.1 || argv.len() > ARGV_MAX_ARGS;
    argv.truncate(ARGV_MAX_ARGS);
    Some(RunningProcess {
        container_id: container_id.to_owned(),
        exec: ExecRecord {
            tgid: pid,
            ppid,
            role: ExecRole::ContainerProcess,
            cgroup_id: 0,
            ktime_ns: clock.monotonic_ns(start_ticks),
            filename: argv.first().cloned().unwrap_or_default(),
            argv,
            argv_truncated: truncated,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rules() -> MetadataRules {
        MetadataRules {
            labels: LabelAllowList::new(["app".to_owned()]),
            trace_context_annotation: "trace.kubernetes.io/context".to_owned(),
        }
    }

    #[test]
    fn a_sandbox_gives_its_pod_allowed_labels_and_trace_context() {
        let sandbox = PodSandbox {
            id: "abc".into(),
            metadata: Some(messages::PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-1".into(),
                namespace: "ns".into(),
                attempt: 2,
            }),
            labels: HashMap::from([
                ("app".into(), "web".into()),
                ("secret-ish".into(), "x".into()),
            ]),
            annotations: HashMap::from([(
                "trace.kubernetes.io/context".into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            )]),
            ..PodSandbox::default()
        };
        let facts = SandboxFacts::from_message(&sandbox, &rules()).expect("facts");
        assert_eq!(facts.pod.uid, "uid-1");
        assert_eq!(facts.attempt, 2);
        assert_eq!(
            facts.metadata.labels.keys().collect::<Vec<_>>(),
            vec!["app"]
        );
        let context = facts.metadata.trace_context.expect("trace context");
        assert_eq!(
            context.trace_id.to_hex(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn a_sandbox_without_uid_or_with_a_bad_annotation() {
        let mut sandbox = PodSandbox {
            id: "abc".into(),
            metadata: Some(messages::PodSandboxMetadata::default()),
            ..PodSandbox::default()
        };
        assert!(SandboxFacts::from_message(&sandbox, &rules()).is_none());
        sandbox.metadata = Some(messages::PodSandboxMetadata {
            uid: "u".into(),
            ..Default::default()
        });
        sandbox.annotations =
            HashMap::from([("trace.kubernetes.io/context".into(), "garbage".into())]);
        let facts = SandboxFacts::from_message(&sandbox, &rules()).expect("facts");
        assert_eq!(facts.metadata.trace_context, None);
    }

    #[test]
    fn the_pid_comes_from_the_verbose_info() {
        let info = |text: &str| HashMap::from([("info".to_owned(), text.to_owned())]);
        assert_eq!(
            pid_from_info(&info(r#"{"pid": 4242, "sandboxID": "x"}"#)),
            Some(4242)
        );
        assert_eq!(pid_from_info(&info(r#"{"pid": 0}"#)), None);
        assert_eq!(pid_from_info(&info(r#"{"pid": "4242"}"#)), None);
        assert_eq!(pid_from_info(&info("not json")), None);
        assert_eq!(pid_from_info(&HashMap::new()), None);
    }

    #[test]
    fn this_process_is_described_from_proc() {
        let clock = BootClock::sample();
        let me = std::process::id();
        let found = running_process(Path::new("/proc"), me, "c1", &clock).expect("self");
        assert_eq!(found.exec.tgid, me);
        assert_eq!(found.exec.ppid, std::os::unix::process::parent_id());
        assert!(!found.exec.argv.is_empty());
        // This process started before now, on the monotonic clock.
        assert!(found.exec.ktime_ns <= clock_ns(libc::CLOCK_MONOTONIC));
        assert!(found.exec.ktime_ns > 0);
    }
}
