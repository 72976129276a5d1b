//! Event types that the nodetrace eBPF programs write to the ring buffer and the agent reads.
//!
//! Every record starts with an [`EventHeader`]; its `kind` says which struct follows. All types
//! are `#[repr(C)]` plain data so both sides agree on the layout byte for byte.
#![no_std]

/// Most bytes of a process's argument block copied into an [`ExecEvent`].
pub const ARGV_MAX_BYTES: usize = 4096;
/// Most arguments the agent keeps from an argument block (the rest is flagged as truncated).
pub const ARGV_MAX_ARGS: usize = 32;
/// Most bytes of the executable path copied into an [`ExecEvent`].
pub const FILENAME_MAX_BYTES: usize = 256;

/// Capacity of the ring buffer shared by all programs, in bytes (a power of two, page aligned).
pub const RING_BUFFER_BYTES: u32 = 4 * 1024 * 1024;
/// Capacity of the map of processes the kernel side follows.
pub const TRACKED_PROCESSES_MAX: u32 = 32 * 1024;

/// Which event a ring-buffer record carries.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An [`ExecEvent`].
    Exec = 1,
    /// An [`ExitEvent`].
    Exit = 2,
}

/// Why the kernel side reported an exec.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExecRole {
    /// An OCI runtime binary (runc, crun, youki) started.
    Runtime = 1,
    /// The first exec of a process that an OCI runtime started: the container's own process.
    ContainerProcess = 2,
}

/// What the kernel side remembers about a followed process (value of the tracked map).
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TrackedKind {
    /// The process runs an OCI runtime binary.
    Runtime = 1,
    /// A fork of a runtime process that has not exec'd yet (e.g. the stages of `runc init`).
    RuntimeChild = 2,
    /// A container process whose first exec was reported; its later execs are not.
    ContainerProcess = 3,
}

/// Flag in [`ExecEvent::flags`]: the argument block was longer than [`ARGV_MAX_BYTES`].
pub const EXEC_FLAG_ARGV_TRUNCATED: u32 = 1;
/// Flag in [`ExecEvent::flags`]: the executable path was longer than [`FILENAME_MAX_BYTES`].
pub const EXEC_FLAG_FILENAME_TRUNCATED: u32 = 2;

/// Common start of every ring-buffer record.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// Thread-group id (the process id userspace sees).
    pub tgid: u32,
    /// `CLOCK_MONOTONIC` time of the event, in nanoseconds.
    pub ktime_ns: u64,
}

/// A followed process called execve (sched/sched_process_exec).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread-group id of the parent (`real_parent`).
    pub ppid: u32,
    /// An [`ExecRole`] value.
    pub role: u32,
    /// cgroup v2 id (inode of the cgroup2 directory) of the process.
    pub cgroup_id: u64,
    /// `EXEC_FLAG_*` bits.
    pub flags: u32,
    /// Bytes used in `argv` (NUL separated, as in `/proc/<pid>/cmdline`).
    pub argv_len: u32,
    /// Bytes used in `filename`, without the terminating NUL.
    pub filename_len: u32,
    pub _pad: u32,
    pub filename: [u8; FILENAME_MAX_BYTES],
    pub argv: [u8; ARGV_MAX_BYTES],
}

/// A followed process exited (sched/sched_process_exit of its last thread).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The raw wait status (`task_struct.exit_code`): exit status in bits 8..16, signal in 0..7.
    pub exit_code: u32,
    /// The [`TrackedKind`] of the process when it exited.
    pub tracked: u32,
}

/// Index of the counter of ring-buffer reservation failures in the drop-counter map.
pub const DROP_RINGBUF_FULL: u32 = 0;
/// Index of the counter of failed inserts into the tracked-process map (map full).
pub const DROP_TRACKED_MAP_FULL: u32 = 1;
/// Number of counters in the drop-counter map.
pub const DROP_COUNTERS: u32 = 2;

/// Byte offsets into kernel structures, read from the kernel's BTF by the agent and set as
/// read-only globals of the eBPF object before it is loaded.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
}

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: plain #[repr(C)] data without padding-dependent invariants.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
