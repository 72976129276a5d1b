//! Loads the embedded eBPF object, patches in the kernel offsets and attaches the tracepoints.

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, UProbe},
};
use nodetrace_common::{
    BinaryKey, COUNT_CNI_ENV_CUT, COUNT_RUNTIME_LOOKALIKE, DROP_CGROUP_BUDGET,
    DROP_CRI_INFLIGHT_FULL, DROP_RINGBUF_FULL, DROP_TRACKED_MAP_FULL, EventBudget, TrackedKind,
    TrackedProcess,
};
use std::collections::BTreeSet;
use std::path::Path;

use super::{EbpfError, ensure_tracefs, kernel_offsets};

/// The eBPF object built from `agent-ebpf` by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodetrace"));

/// (program name, tracepoint category, tracepoint name) of every program.
pub const TRACEPOINTS: [(&str, &str, &str); 3] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

/// (program name, category, tracepoint name) of the program that copies what CNI plugins
/// write to their standard output (their error messages), attached on request only: every
/// write on the node runs it, and an attached syscall tracepoint slows every syscall's entry
/// and exit a little (see `--cni-error-messages`).
pub const CNI_OUTPUT_TRACEPOINT: (&str, &str, &str) =
    ("sys_enter_write", "syscalls", "sys_enter_write");

/// Counters of what the kernel side could not report.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Processes not followed because the tracked-process map was full.
    pub tracked_map_full: u64,
    /// CRI calls not followed because the in-flight map was full.
    pub cri_inflight_full: u64,
    /// Execs named like a runtime whose binary is not an allowlisted runtime binary.
    pub runtime_lookalikes: u64,
    /// Container processes not reported because their cgroup had used its event budget.
    pub cgroup_budget: u64,
    /// Forks of the CRI runtime daemon whose environment was too long to examine whole, or
    /// whose `CNI_*` entries did not all fit in the event.
    pub cni_env_cut: u64,
}

/// The uprobe programs for CRI handlers and kubelet functions: loaded at start, attached once
/// a runtime (a kubelet) is found.
pub const CRI_PROGRAMS: [&str; 4] = ["cri_entry", "cri_return", "kubelet_entry", "kubelet_return"];

/// The program `name` of the object, as the program type `P`.
pub(super) fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, EbpfError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| EbpfError::Missing {
            what: "program",
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|source| EbpfError::Program {
            name: name.to_owned(),
            source,
        })
}

/// The loaded and attached programs; detached when dropped.
pub struct KernelProbes {
    ebpf: Ebpf,
    attached: Vec<String>,
}

impl KernelProbes {
    /// Loads and attaches everything with the default per-cgroup event budget, returning the
    /// probes and the ring buffer to read.
    pub fn load(btf_path: &Path) -> Result<(Self, RingBuf<MapData>), EbpfError> {
        Self::load_with(btf_path, EventBudget::default(), super::EbpfLogLevel::Off)
    }

    /// Loads and attaches everything; each cgroup may report container processes within
    /// `budget`.
    pub fn load_with(
        btf_path: &Path,
        budget: EventBudget,
        log_level: super::EbpfLogLevel,
    ) -> Result<(Self, RingBuf<MapData>), EbpfError> {
        ensure_tracefs()?;
        let offsets = kernel_offsets(btf_path)?;
        tracing::debug!(
            ?offsets,
            ?budget,
            "kernel structure offsets and event budget"
        );
        let mut ebpf = EbpfLoader::new()
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .override_global("EVENT_BUDGET", &budget, true)
            // A load-time constant: with logging off the verifier drops the logging code.
            .override_global(aya_log::LEVEL, &log_level.aya_level(), true)
            .load(OBJECT)
            .map_err(|source| EbpfError::Load { source })?;
        let mut attached = Vec::new();
        for (name, category, tracepoint) in TRACEPOINTS {
            let program: &mut TracePoint = program(&mut ebpf, name)?;
            let program_error = |source| EbpfError::Program {
                name: name.to_owned(),
                source,
            };
            program.load().map_err(program_error)?;
            program
                .attach(category, tracepoint)
                .map_err(program_error)?;
            attached.push(format!("tracepoint/{category}/{tracepoint}"));
        }
        for name in CRI_PROGRAMS {
            let program: &mut UProbe = program(&mut ebpf, name)?;
            program.load().map_err(|source| EbpfError::Program {
                name: name.to_owned(),
                source,
            })?;
        }
        let events = ebpf.take_map("EVENTS").ok_or_else(|| EbpfError::Missing {
            what: "map",
            name: "EVENTS".to_owned(),
        })?;
        let events = RingBuf::try_from(events).map_err(|source| EbpfError::Map {
            name: "EVENTS".to_owned(),
            source,
        })?;
        Ok((Self { ebpf, attached }, events))
    }

    /// Attaches the program that copies what CNI plugins write to their standard output, so
    /// that a failed plugin's span says why (syscall tracepoints need
    /// `CONFIG_FTRACE_SYSCALLS`).
    pub fn capture_cni_output(&mut self) -> Result<(), EbpfError> {
        let (name, category, tracepoint) = CNI_OUTPUT_TRACEPOINT;
        let program: &mut TracePoint = program(&mut self.ebpf, name)?;
        let program_error = |source| EbpfError::Program {
            name: name.to_owned(),
            source,
        };
        program.load().map_err(program_error)?;
        program
            .attach(category, tracepoint)
            .map_err(program_error)?;
        self.attached
            .push(format!("tracepoint/{category}/{tracepoint}"));
        Ok(())
    }

    /// The reader of the programs' diagnostics (`--ebpf-log-level` above off).
    pub fn take_log_reader(
        &mut self,
        counts: std::sync::Arc<super::EbpfLogCounts>,
    ) -> Result<super::EbpfLogReader, EbpfError> {
        super::EbpfLogReader::take(&mut self.ebpf, counts)
    }

    /// What is attached, for readiness reports.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub(super) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Sums the per-CPU drop counters.
    pub fn drops(&self) -> Result<KernelDrops, EbpfError> {
        let map_error = |source| EbpfError::Map {
            name: "DROPS".to_owned(),
            source,
        };
        let map = self.ebpf.map("DROPS").ok_or_else(|| EbpfError::Missing {
            what: "map",
            name: "DROPS".to_owned(),
        })?;
        let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error)?;
        let sum = |index| -> Result<u64, EbpfError> {
            Ok(drops.get(&index, 0).map_err(map_error)?.iter().sum())
        };
        Ok(KernelDrops {
            ringbuf_full: sum(DROP_RINGBUF_FULL)?,
            tracked_map_full: sum(DROP_TRACKED_MAP_FULL)?,
            cri_inflight_full: sum(DROP_CRI_INFLIGHT_FULL)?,
            runtime_lookalikes: sum(COUNT_RUNTIME_LOOKALIKE)?,
            cgroup_budget: sum(DROP_CGROUP_BUDGET)?,
            cni_env_cut: sum(COUNT_CNI_ENV_CUT)?,
        })
    }

    /// Makes `binaries` the allowlist of OCI runtime binaries the exec program follows: new
    /// ones are added before the ones gone are removed, so a replaced binary is never a gap.
    /// Follows process `pid` as a container process whose exec the kernel side did not see
    /// (it started before the agent): its exit is reported like any container process's.
    pub fn follow_container_process(&mut self, pid: u32) -> Result<(), EbpfError> {
        let mut tracked = self.tracked_map()?;
        let process = TrackedProcess {
            kind: TrackedKind::ContainerProcess as u32,
            runtime_mnt_ns: 0,
        };
        tracked
            .insert(pid, process, 0)
            .map_err(|source| EbpfError::Map {
                name: "TRACKED".to_owned(),
                source,
            })
    }

    /// Stops following `pid` (it turned out not to be the process it was followed as).
    pub fn unfollow_process(&mut self, pid: u32) -> Result<(), EbpfError> {
        let mut tracked = self.tracked_map()?;
        match tracked.remove(&pid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(EbpfError::Map {
                name: "TRACKED".to_owned(),
                source,
            }),
        }
    }

    fn tracked_map(&mut self) -> Result<HashMap<&mut MapData, u32, TrackedProcess>, EbpfError> {
        const NAME: &str = "TRACKED";
        let map = self.ebpf.map_mut(NAME).ok_or_else(|| EbpfError::Missing {
            what: "map",
            name: NAME.to_owned(),
        })?;
        HashMap::try_from(map).map_err(|source| EbpfError::Map {
            name: NAME.to_owned(),
            source,
        })
    }

    pub fn set_runtime_binaries(
        &mut self,
        binaries: &BTreeSet<BinaryKey>,
    ) -> Result<(), EbpfError> {
        const NAME: &str = "RUNTIME_BINARIES";
        let map_error = |source| EbpfError::Map {
            name: NAME.to_owned(),
            source,
        };
        let map = self.ebpf.map_mut(NAME).ok_or_else(|| EbpfError::Missing {
            what: "map",
            name: NAME.to_owned(),
        })?;
        let mut allowlist: HashMap<_, BinaryKey, u32> =
            HashMap::try_from(map).map_err(map_error)?;
        let present: BTreeSet<BinaryKey> = allowlist.keys().filter_map(Result::ok).collect();
        for key in binaries.difference(&present) {
            allowlist.insert(key, 1, 0).map_err(map_error)?;
        }
        for key in present.difference(binaries) {
            allowlist.remove(key).map_err(map_error)?;
        }
        Ok(())
    }

    /// Follows process `pid` as the CRI runtime daemon: the exec program then looks at the
    /// environment of each of its forks when it execs, and follows those that run a CNI plugin.
    /// Answers false when the process was followed as the daemon already. The entry goes away
    /// when the process exits.
    pub fn follow_cri_daemon(&mut self, pid: u32) -> Result<bool, EbpfError> {
        let mut tracked = self.tracked_map()?;
        let map_error = |source| EbpfError::Map {
            name: "TRACKED".to_owned(),
            source,
        };
        if tracked
            .get(&pid, 0)
            .is_ok_and(|process| process.kind == TrackedKind::CriDaemon as u32)
        {
            return Ok(false);
        }
        let daemon = TrackedProcess {
            kind: TrackedKind::CriDaemon as u32,
            runtime_mnt_ns: 0,
        };
        tracked.insert(pid, daemon, 0).map_err(map_error)?;
        Ok(true)
    }

    /// Stops following process `pid` as the CRI runtime daemon (when it is followed as such).
    pub fn unfollow_cri_daemon(&mut self, pid: u32) -> Result<(), EbpfError> {
        let mut tracked = self.tracked_map()?;
        if tracked
            .get(&pid, 0)
            .is_ok_and(|process| process.kind == TrackedKind::CriDaemon as u32)
        {
            tracked.remove(&pid).map_err(|source| EbpfError::Map {
                name: "TRACKED".to_owned(),
                source,
            })?;
        }
        Ok(())
    }
}
