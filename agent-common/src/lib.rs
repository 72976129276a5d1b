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
/// Capacity of the allowlist of OCI runtime binaries (device and inode).
pub const RUNTIME_BINARIES_MAX: u32 = 64;

/// Which event a ring-buffer record carries.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An [`ExecEvent`].
    Exec = 1,
    /// An [`ExitEvent`].
    Exit = 2,
    /// A [`CriEvent`] written at the entry of a CRI handler (request fields).
    CriStart = 3,
    /// A [`CriEvent`] written at a RET of a CRI handler (response fields, error flag).
    CriEnd = 4,
    /// A [`CriEvent`] written at the entry of a probed kubelet function (`method` is a
    /// [`KubeletFn`], the strings are in [`kubelet_slots`]).
    KubeletStart = 5,
    /// A [`CriEvent`] written at a RET of a probed kubelet function (error flag only).
    KubeletEnd = 6,
    /// A [`CniOutputEvent`].
    CniOutput = 7,
}

/// Why the kernel side reported an exec.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExecRole {
    /// An OCI runtime binary (runc, crun, youki) started.
    Runtime = 1,
    /// The first exec of a process that an OCI runtime started: the container's own process.
    ContainerProcess = 2,
    /// A CNI plugin run by the CRI runtime daemon (or by another plugin, which delegates to it):
    /// a fork of either whose environment holds `CNI_COMMAND=`. Its argument buffer holds the
    /// `CNI_*` entries of its environment instead of its argv ([`EXEC_FLAG_ARGV_IS_CNI_ENV`]).
    CniPlugin = 3,
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
    /// The CRI runtime daemon (containerd, CRI-O), put in the map by the agent when it finds
    /// the process serving the CRI socket. Its forks are followed to their exec.
    CriDaemon = 4,
    /// A fork of the CRI runtime daemon or of a CNI plugin that has not exec'd yet. At its
    /// exec it becomes a CNI plugin (its environment holds `CNI_COMMAND=`), an OCI runtime
    /// (an allowlisted binary), or is forgotten (a shim, a mount helper, ...).
    CriDaemonChild = 5,
    /// A CNI plugin whose exec was reported; its later execs are not, its forks are followed.
    CniPlugin = 6,
}

/// What the kernel side remembers of a followed process (value of the tracked map).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TrackedProcess {
    /// A [`TrackedKind`] value.
    pub kind: u32,
    /// Inode number of the mount namespace of the verified runtime binary this process comes
    /// from. An exec by one of its forks in that namespace is the runtime re-executing itself
    /// (`runc init`, runc's cloned binary); in another one it is the container's process.
    /// For a [`TrackedKind::CniPlugin`]: how many of its writes to standard output were
    /// reported (at most [`CNI_OUTPUT_WRITES_MAX`]).
    pub runtime_mnt_ns: u32,
}

/// Most bytes of one write of a CNI plugin to its standard output copied into a
/// [`CniOutputEvent`]. A plugin prints its result, or its error, as one JSON document there.
pub const CNI_OUTPUT_MAX_BYTES: usize = 1024;
/// Most writes to standard output reported per CNI plugin run.
pub const CNI_OUTPUT_WRITES_MAX: u32 = 4;

/// A CNI plugin wrote to its standard output (syscalls/sys_enter_write on fd 1).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct CniOutputEvent {
    pub header: EventHeader,
    /// Bytes the write was given; more than `len` when the copy was cut.
    pub count: u64,
    /// Bytes copied into `data`.
    pub len: u32,
    pub _pad: u32,
    pub data: [u8; CNI_OUTPUT_MAX_BYTES],
}

/// An executable file as the kernel names it: `inode->i_sb->s_dev` (the kernel's encoding,
/// `major << 20 | minor`) and `inode->i_ino`. Key of the allowlist of OCI runtime binaries.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryKey {
    pub dev: u64,
    pub ino: u64,
}

impl BinaryKey {
    /// The key of a file from the device number `stat` gives (`st_dev`, glibc's encoding) and
    /// its inode number.
    pub const fn from_stat(st_dev: u64, ino: u64) -> Self {
        // glibc puts the major in bits 8..20 (and 32..44), the minor in bits 0..8 and 20..32;
        // the kernel's dev_t has 12 bits of major and 20 of minor.
        let major = (st_dev >> 8) & 0xfff;
        let minor = (st_dev & 0xff) | ((st_dev >> 12) & 0xf_ff00);
        Self {
            dev: (major << 20) | minor,
            ino,
        }
    }
}

/// Flag in [`ExecEvent::flags`]: the argument block was longer than [`ARGV_MAX_BYTES`].
pub const EXEC_FLAG_ARGV_TRUNCATED: u32 = 1;
/// Flag in [`ExecEvent::flags`]: the executable path was longer than [`FILENAME_MAX_BYTES`].
pub const EXEC_FLAG_FILENAME_TRUNCATED: u32 = 2;
/// Flag in [`ExecEvent::flags`]: `argv` holds the `CNI_*` entries of the process's environment
/// (NUL-separated, in their order there), not its arguments. Set with [`ExecRole::CniPlugin`].
pub const EXEC_FLAG_ARGV_IS_CNI_ENV: u32 = 4;

/// Most environment entries the exec program looks at in a fork of the CRI runtime daemon
/// (or of a CNI plugin) for `CNI_COMMAND=`; an environment with more is not examined further
/// (counted as [`COUNT_CNI_ENV_CUT`]).
pub const CNI_ENV_ENTRIES_MAX: u32 = 256;
/// Bytes of [`ExecEvent::argv`] that the kept `CNI_*` entries may fill; each entry is read
/// in pieces of at most this many bytes, into the rest of the buffer.
pub const CNI_ENV_KEEP_BYTES: usize = ARGV_MAX_BYTES / 2;

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
/// Index of the counter of execs named like a runtime (runc, crun, youki) whose binary is not
/// one of the allowlisted runtime binaries: look-alikes, not followed.
pub const COUNT_RUNTIME_LOOKALIKE: u32 = 3;
/// Index of the counter of container processes not reported because their cgroup had used
/// its event budget ([`EventBudget`]).
pub const DROP_CGROUP_BUDGET: u32 = 4;
/// Index of the counter of forks of the CRI runtime daemon (or of a CNI plugin) whose
/// environment was too long to examine whole ([`CNI_ENV_ENTRIES_MAX`] entries), or whose `CNI_*`
/// entries did not all fit in the event: a CNI plugin may have been missed or cut.
pub const COUNT_CNI_ENV_CUT: u32 = 5;
/// Number of counters in the drop-counter map.
pub const DROP_COUNTERS: u32 = 8;

/// The share of the ring buffer one cgroup may use: a token bucket per cgroup (by cgroup v2 id)
/// for the container processes reported from it (one token each, for its exec and its exit).
/// Set as a read-only global of the eBPF object before it is loaded.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EventBudget {
    /// Tokens added per second.
    pub per_second: u64,
    /// Most tokens a cgroup can save up.
    pub burst: u64,
}

impl Default for EventBudget {
    fn default() -> Self {
        Self {
            per_second: 200,
            burst: 1000,
        }
    }
}

/// Largest rate and burst of an [`EventBudget`] (keeps the eBPF side's token arithmetic in 64
/// bits: 10 s × 1e9 ns × this < 2^64).
pub const EVENT_BUDGET_MAX: u64 = 1_000_000;

/// One cgroup's token bucket, in billionths of a token (so refills need no division).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct TokenBucket {
    pub nano_tokens: u64,
    pub last_ns: u64,
}

/// Cgroups whose token buckets are kept (least recently used ones are forgotten, which
/// refills them: a forgotten bucket is a full one).
pub const CGROUP_BUCKETS_MAX: u32 = 8192;

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
    /// `mm_struct.env_start`
    pub mm_env_start: u32,
    /// `mm_struct.env_end`
    pub mm_env_end: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns` + `ns_common.inum`
    pub mnt_ns_inum: u32,
}

/// CRI methods the uprobes report, as numbered in cookies and events.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CriMethod {
    RunPodSandbox = 1,
    StopPodSandbox = 2,
    RemovePodSandbox = 3,
    CreateContainer = 4,
    StartContainer = 5,
    StopContainer = 6,
    RemoveContainer = 7,
    PullImage = 8,
    ExecSync = 9,
    // Polled by kubelet every second or so: counted, not traced.
    PodSandboxStatus = 32,
    ContainerStatus = 33,
    ListPodSandbox = 34,
    ListContainers = 35,
    ImageStatus = 36,
    ListImages = 37,
    Version = 38,
    Status = 39,
    ContainerStats = 40,
    ListContainerStats = 41,
    // Server-streaming lists of cri-api v0.36 (containerd 2.4, CRI-O 1.36): a kubelet that
    // uses them stops polling the List* methods. Counted like the polled calls.
    StreamPodSandboxes = 42,
    StreamContainers = 43,
    StreamContainerStats = 44,
    StreamPodSandboxStats = 45,
    StreamPodSandboxMetrics = 46,
    StreamImages = 47,
}

impl CriMethod {
    /// Every method, traced ones first.
    pub const ALL: [CriMethod; 25] = [
        Self::RunPodSandbox,
        Self::StopPodSandbox,
        Self::RemovePodSandbox,
        Self::CreateContainer,
        Self::StartContainer,
        Self::StopContainer,
        Self::RemoveContainer,
        Self::PullImage,
        Self::ExecSync,
        Self::PodSandboxStatus,
        Self::ContainerStatus,
        Self::ListPodSandbox,
        Self::ListContainers,
        Self::ImageStatus,
        Self::ListImages,
        Self::Version,
        Self::Status,
        Self::ContainerStats,
        Self::ListContainerStats,
        Self::StreamPodSandboxes,
        Self::StreamContainers,
        Self::StreamContainerStats,
        Self::StreamPodSandboxStats,
        Self::StreamPodSandboxMetrics,
        Self::StreamImages,
    ];

    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|m| *m as u32 == value)
    }

    /// The gRPC method name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RunPodSandbox => "RunPodSandbox",
            Self::StopPodSandbox => "StopPodSandbox",
            Self::RemovePodSandbox => "RemovePodSandbox",
            Self::CreateContainer => "CreateContainer",
            Self::StartContainer => "StartContainer",
            Self::StopContainer => "StopContainer",
            Self::RemoveContainer => "RemoveContainer",
            Self::PullImage => "PullImage",
            Self::ExecSync => "ExecSync",
            Self::PodSandboxStatus => "PodSandboxStatus",
            Self::ContainerStatus => "ContainerStatus",
            Self::ListPodSandbox => "ListPodSandbox",
            Self::ListContainers => "ListContainers",
            Self::ImageStatus => "ImageStatus",
            Self::ListImages => "ListImages",
            Self::Version => "Version",
            Self::Status => "Status",
            Self::ContainerStats => "ContainerStats",
            Self::ListContainerStats => "ListContainerStats",
            Self::StreamPodSandboxes => "StreamPodSandboxes",
            Self::StreamContainers => "StreamContainers",
            Self::StreamContainerStats => "StreamContainerStats",
            Self::StreamPodSandboxStats => "StreamPodSandboxStats",
            Self::StreamPodSandboxMetrics => "StreamPodSandboxMetrics",
            Self::StreamImages => "StreamImages",
        }
    }

    /// Whether a runtime may lack this method and still be fully traced: the streaming lists
    /// exist only in runtimes built on cri-api v0.36 or later.
    pub fn is_optional(self) -> bool {
        (self as u32) >= Self::StreamPodSandboxes as u32
    }

    /// Whether calls of this method become spans (the others are only counted).
    pub fn is_traced(self) -> bool {
        (self as u32) < 32
    }
}

/// Size of the per-method call-counter map (indexed by the method number).
pub const CRI_METHOD_SLOTS: u32 = 64;
/// Cookie bit: the uprobe sits on a RET of the handler, not its entry.
pub const CRI_COOKIE_RETURN: u64 = 1 << 8;
/// Cookie bit: only count the call (polled methods).
pub const CRI_COOKIE_COUNT_ONLY: u64 = 1 << 9;
/// Mask of the method number in a cookie.
pub const CRI_COOKIE_METHOD_MASK: u64 = 0xff;

/// Bytes kept of one string field of a CRI request or response.
pub const CRI_STR_MAX: usize = 256;
/// String fields carried by a [`CriEvent`].
pub const CRI_STR_SLOTS: usize = 5;
/// Flag in [`CriEvent::flags`]: the handler returned a non-nil error.
pub const CRI_FLAG_ERROR: u32 = 1;

/// What string slot and number slot carry, per method (the same layout in start and end
/// events; the end event fills only the response slot).
pub mod cri_slots {
    /// RunPodSandbox: pod name, UID, namespace, runtime handler; response sandbox id.
    pub const POD_NAME: usize = 0;
    pub const POD_UID: usize = 1;
    pub const POD_NAMESPACE: usize = 2;
    pub const RUNTIME_HANDLER: usize = 3;
    /// The id a request names (container or sandbox), or CreateContainer's sandbox id.
    pub const ID: usize = 0;
    /// CreateContainer: container name, image.
    pub const CONTAINER_NAME: usize = 1;
    pub const IMAGE: usize = 2;
    /// PullImage: the image reference asked for; the pod it is pulled for in slots
    /// [`POD_UID`], [`POD_NAMESPACE`] and [`PULL_POD_NAME`].
    pub const IMAGE_REF: usize = 0;
    pub const PULL_POD_NAME: usize = 3;
    /// Response field: sandbox id, container id or image ref.
    pub const RESPONSE: usize = 4;
    /// Numbers: attempt (RunPodSandbox, CreateContainer) or timeout (StopContainer, ExecSync).
    pub const NUMBER: usize = 0;
}

/// Entry or exit of one CRI handler call.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct CriEvent {
    pub header: EventHeader,
    /// The goroutine (its `g` pointer, from R14), which keys entry to exit.
    pub goroutine: u64,
    /// A [`CriMethod`] value.
    pub method: u32,
    /// `CRI_FLAG_*` bits.
    pub flags: u32,
    pub numbers: [u64; 2],
    pub lens: [u32; CRI_STR_SLOTS],
    pub _pad: u32,
    pub strs: [[u8; CRI_STR_MAX]; CRI_STR_SLOTS],
}

/// Marks an offset the binary did not tell (the field is then not read).
pub const CRI_OFFSET_UNKNOWN: u32 = u32::MAX;

/// Offsets of the CRI request/response fields in the runtime binary's generated types, read
/// from its own getters by the agent and stored in a one-element array map;
/// [`CRI_OFFSET_UNKNOWN`] where the binary did not tell. Strings are Go strings (pointer, then
/// length); messages are pointers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriOffsets {
    pub run_pod_sandbox_request_config: u32,
    pub run_pod_sandbox_request_runtime_handler: u32,
    pub pod_sandbox_config_metadata: u32,
    pub pod_sandbox_metadata_name: u32,
    pub pod_sandbox_metadata_uid: u32,
    pub pod_sandbox_metadata_namespace: u32,
    /// A uint32.
    pub pod_sandbox_metadata_attempt: u32,
    pub run_pod_sandbox_response_pod_sandbox_id: u32,
    pub create_container_request_pod_sandbox_id: u32,
    pub create_container_request_config: u32,
    pub create_container_request_sandbox_config: u32,
    pub container_config_metadata: u32,
    pub container_config_image: u32,
    pub container_metadata_name: u32,
    /// A uint32.
    pub container_metadata_attempt: u32,
    pub image_spec_image: u32,
    pub create_container_response_container_id: u32,
    pub start_container_request_container_id: u32,
    pub stop_container_request_container_id: u32,
    /// An int64 (seconds).
    pub stop_container_request_timeout: u32,
    pub remove_container_request_container_id: u32,
    pub stop_pod_sandbox_request_pod_sandbox_id: u32,
    pub remove_pod_sandbox_request_pod_sandbox_id: u32,
    /// A pointer to an `ImageSpec`.
    pub pull_image_request_image: u32,
    /// A pointer to the `PodSandboxConfig` of the pod the image is pulled for.
    pub pull_image_request_sandbox_config: u32,
    pub pull_image_response_image_ref: u32,
    pub exec_sync_request_container_id: u32,
    /// An int64 (seconds).
    pub exec_sync_request_timeout: u32,
}

impl CriOffsets {
    /// Every offset unknown.
    pub const UNKNOWN: CriOffsets = CriOffsets {
        run_pod_sandbox_request_config: CRI_OFFSET_UNKNOWN,
        run_pod_sandbox_request_runtime_handler: CRI_OFFSET_UNKNOWN,
        pod_sandbox_config_metadata: CRI_OFFSET_UNKNOWN,
        pod_sandbox_metadata_name: CRI_OFFSET_UNKNOWN,
        pod_sandbox_metadata_uid: CRI_OFFSET_UNKNOWN,
        pod_sandbox_metadata_namespace: CRI_OFFSET_UNKNOWN,
        pod_sandbox_metadata_attempt: CRI_OFFSET_UNKNOWN,
        run_pod_sandbox_response_pod_sandbox_id: CRI_OFFSET_UNKNOWN,
        create_container_request_pod_sandbox_id: CRI_OFFSET_UNKNOWN,
        create_container_request_config: CRI_OFFSET_UNKNOWN,
        create_container_request_sandbox_config: CRI_OFFSET_UNKNOWN,
        container_config_metadata: CRI_OFFSET_UNKNOWN,
        container_config_image: CRI_OFFSET_UNKNOWN,
        container_metadata_name: CRI_OFFSET_UNKNOWN,
        container_metadata_attempt: CRI_OFFSET_UNKNOWN,
        image_spec_image: CRI_OFFSET_UNKNOWN,
        create_container_response_container_id: CRI_OFFSET_UNKNOWN,
        start_container_request_container_id: CRI_OFFSET_UNKNOWN,
        stop_container_request_container_id: CRI_OFFSET_UNKNOWN,
        stop_container_request_timeout: CRI_OFFSET_UNKNOWN,
        remove_container_request_container_id: CRI_OFFSET_UNKNOWN,
        stop_pod_sandbox_request_pod_sandbox_id: CRI_OFFSET_UNKNOWN,
        remove_pod_sandbox_request_pod_sandbox_id: CRI_OFFSET_UNKNOWN,
        pull_image_request_image: CRI_OFFSET_UNKNOWN,
        pull_image_request_sandbox_config: CRI_OFFSET_UNKNOWN,
        pull_image_response_image_ref: CRI_OFFSET_UNKNOWN,
        exec_sync_request_container_id: CRI_OFFSET_UNKNOWN,
        exec_sync_request_timeout: CRI_OFFSET_UNKNOWN,
    };
}

impl Default for CriOffsets {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Key of an in-flight CRI call.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CriCallKey {
    pub tgid: u32,
    pub _pad: u32,
    pub goroutine: u64,
}

/// Value of an in-flight CRI call.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct CriInflight {
    pub method: u32,
    pub _pad: u32,
    pub start_ktime_ns: u64,
}

/// Index of the counter of CRI entries dropped because the in-flight map was full.
pub const DROP_CRI_INFLIGHT_FULL: u32 = 2;

/// Kubelet functions the uprobes report, as numbered in cookies and events.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KubeletFn {
    /// `pkg/kubelet.(*Kubelet).SyncPod`: one pod sync by its pod worker.
    SyncPod = 1,
    SyncTerminatingPod = 2,
    SyncTerminatedPod = 3,
    /// `volumemanager.(*volumeManager).WaitForAttachAndMount`.
    WaitForVolumes = 4,
    /// `kuberuntime.(*kubeGenericRuntimeManager).SyncPod`: the runtime side of a sync.
    RuntimeSyncPod = 5,
    CreatePodSandbox = 6,
    /// `startContainer`: init, regular and ephemeral containers alike.
    StartContainer = 7,
    /// `images.(*imageManager).EnsureImageExists`: the image check, and the pull it waits for.
    EnsureImageExists = 8,
}

impl KubeletFn {
    pub const ALL: [KubeletFn; 8] = [
        Self::SyncPod,
        Self::SyncTerminatingPod,
        Self::SyncTerminatedPod,
        Self::WaitForVolumes,
        Self::RuntimeSyncPod,
        Self::CreatePodSandbox,
        Self::StartContainer,
        Self::EnsureImageExists,
    ];

    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| *f as u32 == value)
    }
}

/// Cookie of a kubelet uprobe: the function in bits 0..8, [`CRI_COOKIE_RETURN`] for a RET,
/// then which registers hold what (a [`KubeletReg`] number in each field; 0: none).
pub mod kubelet_cookie {
    /// The `*v1.Pod` argument.
    pub const POD_REG_SHIFT: u32 = 16;
    /// A string argument (pointer, then length registers) or, with [`EXTRA_DEREF`], a
    /// pointer to a pointer to a struct that begins with a string.
    pub const EXTRA_PTR_SHIFT: u32 = 20;
    pub const EXTRA_LEN_SHIFT: u32 = 24;
    pub const EXTRA_DEREF: u64 = 1 << 28;
    /// The type word of the returned `error` (at RETs).
    pub const ERROR_REG_SHIFT: u32 = 32;
    pub const REG_MASK: u64 = 0xf;
}

/// Registers of Go's amd64 register ABI, in argument order, as numbered in cookies.
pub mod kubelet_reg {
    pub const RAX: u64 = 1;
    pub const RBX: u64 = 2;
    pub const RCX: u64 = 3;
    pub const RDI: u64 = 4;
    pub const RSI: u64 = 5;
    pub const R8: u64 = 6;
    pub const R9: u64 = 7;
    pub const R10: u64 = 8;
    pub const R11: u64 = 9;
}

/// String slots of a kubelet event.
pub mod kubelet_slots {
    pub const POD_UID: usize = 0;
    pub const POD_NAME: usize = 1;
    pub const POD_NAMESPACE: usize = 2;
    /// The container name (startContainer) or the image (EnsureImageExists).
    pub const EXTRA: usize = 3;
}

/// Offsets in kubelet's `v1.Pod` (read from the binary's own `(*Pod).GetUID`, `GetName` and
/// `GetNamespace`), written by the agent to a one-element array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubeletOffsets {
    pub pod_uid: u32,
    pub pod_name: u32,
    pub pod_namespace: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: four u32 fields, no padding.
    unsafe impl aya::Pod for super::KubeletOffsets {}
    // SAFETY: plain #[repr(C)] data without padding-dependent invariants.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: two u64 fields, no padding.
    unsafe impl aya::Pod for super::BinaryKey {}
    // SAFETY: two u64 fields, no padding.
    unsafe impl aya::Pod for super::EventBudget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CriOffsets {}
    // SAFETY: two u32 fields, no padding.
    unsafe impl aya::Pod for super::TrackedProcess {}
}
