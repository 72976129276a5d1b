//! Kernel side of nodetrace: follows OCI runtime processes and the container processes they
//! start (`process`), and the CRI handlers of the container runtime (`cri`), reporting through
//! one ring buffer.
//!
//! Only runtime binaries, their forks, and the first exec of such a fork outside the runtime's
//! mount namespace (the container's own process) are followed, and the CRI runtime daemon's
//! forks until they exec (those that run a CNI plugin are followed on, with their forks). A
//! runtime binary is known by what it is, the device and inode of the executable, from an
//! allowlist the agent fills; its command name (runc, crun, youki) is only a cheap first look,
//! so every other exec costs one hash lookup and a comparison of the command name.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use nodetrace_common::{
    BinaryKey, CGROUP_BUCKETS_MAX, CRI_METHOD_SLOTS, CriCallKey, CriInflight, CriOffsets,
    DROP_COUNTERS, EventBudget, KernelOffsets, KubeletOffsets, RING_BUFFER_BYTES,
    RUNTIME_BINARIES_MAX, TRACKED_PROCESSES_MAX, TokenBucket, TrackedProcess,
};

/// Structure offsets from the kernel's BTF, set by the agent before loading.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    task_real_parent: 0,
    task_tgid: 0,
    task_mm: 0,
    task_exit_code: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    mm_exe_file: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
};

/// Each cgroup's share of the ring buffer, set by the agent before loading.
#[unsafe(no_mangle)]
pub(crate) static EVENT_BUDGET: EventBudget = EventBudget {
    per_second: 0,
    burst: 0,
};

/// Token buckets of the cgroups that container processes were reported from.
#[map]
pub(crate) static CGROUP_TOKENS: LruHashMap<u64, TokenBucket> =
    LruHashMap::with_max_entries(CGROUP_BUCKETS_MAX, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUFFER_BYTES, 0);

/// Followed processes: tgid (or tid, for forks) → what is known of them.
#[map]
pub(crate) static TRACKED: HashMap<u32, TrackedProcess> =
    HashMap::with_max_entries(TRACKED_PROCESSES_MAX, 0);

/// The OCI runtime binaries (device and inode), filled and kept current by the agent.
#[map]
pub(crate) static RUNTIME_BINARIES: HashMap<BinaryKey, u32> =
    HashMap::with_max_entries(RUNTIME_BINARIES_MAX, 0);

/// Where the exec program keeps its place while it walks a process's environment (one per
/// CPU). In memory rather than in registers so that the verifier sees every iteration end in
/// the same state and verifies the loop body about once, not once per path and iteration.
#[map]
pub(crate) static ENV_WALK: PerCpuArray<process::EnvWalkState> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU drop counters, indexed by `DROP_*`.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_COUNTERS, 0);

/// Field offsets of the traced runtime's CRI types (one element, written by the agent).
#[map]
pub(crate) static CRI_OFFSETS: Array<CriOffsets> = Array::with_max_entries(1, 0);

/// CRI calls in progress, by (process, goroutine). Least recently used first to go: a call
/// whose return was never seen (a goroutine that died) cannot hold a slot for ever.
#[map]
pub(crate) static CRI_INFLIGHT: LruHashMap<CriCallKey, CriInflight> =
    LruHashMap::with_max_entries(4096, 0);

/// Per-CPU count of CRI handler entries, indexed by method number (polled methods included).
#[map]
pub(crate) static CRI_CALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CRI_METHOD_SLOTS, 0);

/// Field offsets of kubelet's `v1.Pod` (one element, written by the agent).
#[map]
pub(crate) static KUBELET_OFFSETS: Array<KubeletOffsets> = Array::with_max_entries(1, 0);

/// Kubelet function calls in progress, by (process, function, goroutine): a pod worker's
/// goroutine runs nested probed functions.
#[map]
pub(crate) static KUBELET_INFLIGHT: LruHashMap<CriCallKey, CriInflight> =
    LruHashMap::with_max_entries(4096, 0);

mod cri;
mod diag;
mod kubelet;
mod output;
mod process;

pub(crate) fn count_drop(index: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, so no other program writes it concurrently.
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
