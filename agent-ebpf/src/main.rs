//! Kernel side of nodetrace: follows OCI runtime processes and the container processes they
//! start (`process`), and the CRI handlers of the container runtime (`cri`), reporting through
//! one ring buffer.
//!
//! Only runtime binaries (by the base name of argv[0]: runc, crun, youki), their forks, and the
//! first exec of such a fork (the container's own process) are followed; every other exec costs
//! one argv[0] read and one hash lookup.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use nodetrace_common::{
    CRI_METHOD_SLOTS, CriCallKey, CriInflight, CriOffsets, DROP_COUNTERS, KernelOffsets,
    RING_BUFFER_BYTES, TRACKED_PROCESSES_MAX,
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
};

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUFFER_BYTES, 0);

/// Followed processes: tgid (or tid, for forks) → `TrackedKind`.
#[map]
pub(crate) static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(TRACKED_PROCESSES_MAX, 0);

/// Per-CPU drop counters, indexed by `DROP_*`.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_COUNTERS, 0);

/// Field offsets of the traced runtime's CRI types (one element, written by the agent).
#[map]
pub(crate) static CRI_OFFSETS: Array<CriOffsets> = Array::with_max_entries(1, 0);

/// CRI calls in progress, by (process, goroutine).
#[map]
pub(crate) static CRI_INFLIGHT: HashMap<CriCallKey, CriInflight> =
    HashMap::with_max_entries(4096, 0);

/// Per-CPU count of CRI handler entries, indexed by method number (polled methods included).
#[map]
pub(crate) static CRI_CALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CRI_METHOD_SLOTS, 0);

mod cri;
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
