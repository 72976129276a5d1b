//! Exec, fork and exit tracepoints: follow OCI runtime processes (known by their executable's
//! device and inode) and the container processes they start, and the CNI plugins the CRI
//! runtime daemon runs (its forks whose environment holds `CNI_COMMAND=`).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use nodetrace_common::{
    ARGV_MAX_BYTES, BinaryKey, CNI_ENV_ENTRIES_MAX, CNI_ENV_KEEP_BYTES, COUNT_CNI_ENV_CUT,
    COUNT_RUNTIME_LOOKALIKE, DROP_CGROUP_BUDGET, DROP_RINGBUF_FULL, DROP_TRACKED_MAP_FULL,
    EXEC_FLAG_ARGV_IS_CNI_ENV, EXEC_FLAG_ARGV_TRUNCATED, EventHeader, EventKind, ExecEvent,
    ExecRole, ExitEvent, KernelOffsets, TokenBucket, TrackedKind, TrackedProcess,
};

use crate::{
    CGROUP_TOKENS, ENV_WALK, EVENT_BUDGET, EVENTS, KERNEL_OFFSETS, RUNTIME_BINARIES, TRACKED,
    count_drop,
};

/// Offset of `filename` (a `__data_loc`) in the sched_process_exec record.
const EXEC_FILENAME_LOC: usize = 8;
/// Offset of `child_pid` in the sched_process_fork record.
const FORK_CHILD_PID: usize = 20;
/// Bytes of argv[0] examined to recognise a runtime binary.
const ARGV0_PROBE: usize = 64;

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_exec(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_fork(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    match try_exit() {
        Ok(()) | Err(_) => 0,
    }
}

fn offsets() -> KernelOffsets {
    // SAFETY: a read-only global that the loader patched; volatile so it is not constant-folded.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Reads a pointer-sized field at `offset` bytes into the kernel object at `base`.
fn read_kernel_u64(base: u64, offset: u32) -> Result<u64, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u64) }
}

fn read_kernel_u32(base: u64, offset: u32) -> Result<u32, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u32) }
}

/// Whether the string of `len` bytes in `buf` is a path whose last component is `name`.
/// Constant work (no data-dependent loop), which keeps the verifier's state count small.
#[inline(always)]
fn has_basename(buf: &[u8; ARGV0_PROBE], len: usize, name: &[u8]) -> bool {
    let n = name.len();
    if len < n || len >= ARGV0_PROBE {
        return false;
    }
    let start = len - n;
    for (i, expected) in name.iter().enumerate() {
        if buf[(start + i) & (ARGV0_PROBE - 1)] != *expected {
            return false;
        }
    }
    start == 0 || buf[(start - 1) & (ARGV0_PROBE - 1)] == b'/'
}

/// Whether argv[0] of `task` (the current task) names an OCI runtime binary.
fn argv0_is_runtime(task: u64, off: &KernelOffsets) -> Result<bool, i32> {
    let mm = read_kernel_u64(task, off.task_mm)?;
    let arg_start = read_kernel_u64(mm, off.mm_arg_start)?;
    let mut argv0 = [0u8; ARGV0_PROBE];
    // SAFETY: user memory of the current process, read with the checking helper.
    let len = unsafe { bpf_probe_read_user_str_bytes(arg_start as *const u8, &mut argv0) }?.len();
    Ok(is_runtime(&argv0, len))
}

/// Whether argv[0] (`len` bytes in `buf`) names an OCI runtime binary.
fn is_runtime(buf: &[u8; ARGV0_PROBE], len: usize) -> bool {
    has_basename(buf, len, b"runc")
        || has_basename(buf, len, b"crun")
        || has_basename(buf, len, b"youki")
}

/// Whether the task's command name (the base name of the path just exec'd) is a runtime's.
/// A cheap first look: most execs on a node stop here.
fn comm_is_runtime(comm: &[u8; 16]) -> bool {
    let is = |name: &[u8]| {
        let mut equal = comm.get(name.len()) == Some(&0);
        for (i, expected) in name.iter().enumerate() {
            equal &= comm.get(i) == Some(expected);
        }
        equal
    };
    is(b"runc") || is(b"crun") || is(b"youki")
}

/// The kernel's name of the executable `task` runs: device and inode of `mm->exe_file`.
fn executable(task: u64, off: &KernelOffsets) -> Result<BinaryKey, i32> {
    let mm = read_kernel_u64(task, off.task_mm)?;
    let file = read_kernel_u64(mm, off.mm_exe_file)?;
    let inode = read_kernel_u64(file, off.file_inode)?;
    let ino = read_kernel_u64(inode, off.inode_ino)?;
    let sb = read_kernel_u64(inode, off.inode_sb)?;
    let dev = read_kernel_u32(sb, off.sb_dev)?;
    Ok(BinaryKey {
        dev: u64::from(dev),
        ino,
    })
}

/// Whether `task` runs one of the allowlisted OCI runtime binaries.
fn runs_runtime_binary(task: u64, off: &KernelOffsets) -> bool {
    match executable(task, off) {
        // SAFETY: only the presence of the key is used.
        Ok(key) => unsafe { RUNTIME_BINARIES.get(&key) }.is_some(),
        Err(_) => false,
    }
}

/// Inode number of the mount namespace of `task`.
fn mount_namespace(task: u64, off: &KernelOffsets) -> Result<u32, i32> {
    let nsproxy = read_kernel_u64(task, off.task_nsproxy)?;
    let mnt_ns = read_kernel_u64(nsproxy, off.nsproxy_mnt_ns)?;
    read_kernel_u32(mnt_ns, off.mnt_ns_inum)
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i32> {
    let tgid = current_tgid();
    // SAFETY: the value is plain data copied out at once.
    let tracked = unsafe { TRACKED.get(tgid) }.copied();
    // Most execs on a node stop at the command name, before anything else is read; a runtime's
    // name alone is not enough, the executable must be one of the runtime binaries.
    if tracked.is_none() && !comm_is_runtime(&bpf_get_current_comm()?) {
        return Ok(());
    }
    let off = offsets();
    // SAFETY: returns the current task pointer; only dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let role = match tracked {
        None => {
            if !runs_runtime_binary(task, &off) {
                count_drop(COUNT_RUNTIME_LOOKALIKE);
                return Ok(());
            }
            track(tgid, TrackedKind::Runtime, mount_namespace(task, &off)?);
            ExecRole::Runtime
        }
        Some(process)
            if process.kind == TrackedKind::Runtime as u32
                || process.kind == TrackedKind::RuntimeChild as u32 =>
        {
            // A fork of a verified runtime: the runtime re-executing itself (`runc init`, its
            // cloned binary) while it is still in the runtime's mount namespace, else the
            // container's process, which the container chose and may name as it likes.
            let mnt_ns = mount_namespace(task, &off)?;
            let runtime_itself = runs_runtime_binary(task, &off)
                || (mnt_ns == process.runtime_mnt_ns && argv0_is_runtime(task, &off)?);
            if runtime_itself {
                track(tgid, TrackedKind::Runtime, mnt_ns);
                ExecRole::Runtime
            // SAFETY: a helper without preconditions.
            } else if !take_token(unsafe { bpf_get_current_cgroup_id() }) {
                // Over its cgroup's budget: neither this exec nor the exit is reported.
                let _ = TRACKED.remove(tgid);
                count_drop(DROP_CGROUP_BUDGET);
                return Ok(());
            } else {
                track(tgid, TrackedKind::ContainerProcess, process.runtime_mnt_ns);
                ExecRole::ContainerProcess
            }
        }
        Some(process) if process.kind == TrackedKind::CriDaemonChild as u32 => {
            return daemon_child_exec(ctx, tgid, task, &off);
        }
        Some(_) => return Ok(()),
    };
    report_runtime_exec(ctx, tgid, task, &off, role)
}

/// Fills what every exec record carries but its argument buffer and flags.
///
/// # Safety
/// `event` points at a reserved, exclusively owned ring-buffer record of the right size.
#[inline(always)]
unsafe fn fill_exec_header(
    event: *mut ExecEvent,
    ctx: &TracePointContext,
    tgid: u32,
    task: u64,
    off: &KernelOffsets,
    role: ExecRole,
) {
    let parent = read_kernel_u64(task, off.task_real_parent).unwrap_or(0);
    let ppid = if parent == 0 {
        0
    } else {
        read_kernel_u32(parent, off.task_tgid).unwrap_or(0)
    };
    // SAFETY: the caller's promise; every field is written.
    unsafe {
        (*event).header = EventHeader {
            kind: EventKind::Exec as u32,
            tgid,
            ktime_ns: bpf_ktime_get_ns(),
        };
        (*event).ppid = ppid;
        (*event).role = role as u32;
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event)._pad = 0;
        let loc: u32 = ctx.read_at(EXEC_FILENAME_LOC).unwrap_or(0);
        let filename_src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let filename = &mut (*event).filename;
        (*event).filename_len = match bpf_probe_read_kernel_str_bytes(filename_src, filename) {
            Ok(bytes) => bytes.len() as u32,
            Err(_) => 0,
        };
    }
}

/// Reports the exec of an OCI runtime or a container process, with its argument block.
#[inline(always)]
fn report_runtime_exec(
    ctx: &TracePointContext,
    tgid: u32,
    task: u64,
    off: &KernelOffsets,
    role: ExecRole,
) -> Result<(), i32> {
    let mm = read_kernel_u64(task, off.task_mm)?;
    let arg_start = read_kernel_u64(mm, off.mm_arg_start)?;
    let arg_end = read_kernel_u64(mm, off.mm_arg_end)?;

    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    let mut flags = 0;
    let total = arg_end.saturating_sub(arg_start);
    let mut len = total;
    if len > ARGV_MAX_BYTES as u64 {
        len = ARGV_MAX_BYTES as u64;
        flags |= EXEC_FLAG_ARGV_TRUNCATED;
    }
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer record of the right
    // size; every field is written before submit.
    unsafe {
        fill_exec_header(event, ctx, tgid, task, off, role);
        let argv_dst = core::ptr::addr_of_mut!((*event).argv).cast::<u8>();
        let size = (len as u32) & (2 * ARGV_MAX_BYTES as u32 - 1);
        let size = if size > ARGV_MAX_BYTES as u32 {
            ARGV_MAX_BYTES as u32
        } else {
            size
        };
        if bpf_probe_read_user(argv_dst.cast(), size, arg_start as *const _) != 0 {
            (*event).argv_len = 0;
        } else {
            (*event).argv_len = size;
        }
        (*event).flags = flags;
    }
    entry.submit(0);
    Ok(())
}

/// The exec of a fork of the CRI runtime daemon or of a CNI plugin. It is an OCI runtime
/// (CRI-O runs runc itself) when it runs an allowlisted runtime binary; a CNI plugin when its
/// environment holds `CNI_COMMAND=` (libcni sets the `CNI_*` variables for every plugin it
/// runs, and a plugin's delegate inherits them); anything else (a shim, a mount helper) is
/// forgotten. The environment is the daemon's choice, not a tenant's, and is only copied here:
/// the agent parses it.
#[inline(always)]
fn daemon_child_exec(
    ctx: &TracePointContext,
    tgid: u32,
    task: u64,
    off: &KernelOffsets,
) -> Result<(), i32> {
    // Forgotten unless it is found to be a runtime or a plugin below.
    let _ = TRACKED.remove(tgid);
    if comm_is_runtime(&bpf_get_current_comm()?) {
        if !runs_runtime_binary(task, off) {
            count_drop(COUNT_RUNTIME_LOOKALIKE);
            return Ok(());
        }
        track(tgid, TrackedKind::Runtime, mount_namespace(task, off)?);
        return report_runtime_exec(ctx, tgid, task, off, ExecRole::Runtime);
    }
    let mm = read_kernel_u64(task, off.task_mm)?;
    let env_start = read_kernel_u64(mm, off.mm_env_start)?;
    let env_end = read_kernel_u64(mm, off.mm_env_end)?;
    // The record is reserved before the walk so that the CNI entries are copied straight into
    // it; it is discarded when the process is not a plugin.
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `argv` of the reserved record is ARGV_MAX_BYTES bytes, owned here.
    let walk = unsafe {
        cni_environment(
            core::ptr::addr_of_mut!((*event).argv).cast::<u8>(),
            env_start,
            env_end,
        )
    };
    if walk.cut {
        count_drop(COUNT_CNI_ENV_CUT);
    }
    if !walk.command {
        entry.discard(0);
        return Ok(());
    }
    // Plugins run in the runtime's cgroup: its budget bounds what a flood of pod sandboxes can
    // put in the ring buffer.
    // SAFETY: a helper without preconditions.
    if !take_token(unsafe { bpf_get_current_cgroup_id() }) {
        entry.discard(0);
        count_drop(DROP_CGROUP_BUDGET);
        return Ok(());
    }
    track(tgid, TrackedKind::CniPlugin, 0);
    // SAFETY: as above; every field is written before submit.
    unsafe {
        fill_exec_header(event, ctx, tgid, task, off, ExecRole::CniPlugin);
        (*event).argv_len = walk.used;
        (*event).flags = EXEC_FLAG_ARGV_IS_CNI_ENV
            | if walk.cut {
                EXEC_FLAG_ARGV_TRUNCATED
            } else {
                0
            };
    }
    entry.submit(0);
    Ok(())
}

/// What [`cni_environment`] found.
struct EnvWalk {
    /// Bytes of the buffer the kept `CNI_*` entries fill, NULs included.
    used: u32,
    /// An entry starts with `CNI_COMMAND=`.
    command: bool,
    /// The environment was not examined to its end, or a `CNI_*` entry did not fit.
    cut: bool,
}

/// The place of a walk through an environment (the value of `ENV_WALK`); booleans as 0 or 1.
#[repr(C)]
pub(crate) struct EnvWalkState {
    /// Address of the next byte to read.
    pos: u64,
    /// Bytes of the buffer the kept entries fill.
    used: u64,
    /// `pos` is the start of an entry (not the middle of a long one).
    at_start: u64,
    command: u64,
    cut: u64,
}

/// Whether the bytes at `at` start with `prefix`. A shorter string fails at its NUL, which no
/// prefix holds.
///
/// # Safety
/// `at` points at `prefix.len()` readable bytes.
#[inline(always)]
unsafe fn has_prefix(at: *const u8, prefix: &[u8]) -> bool {
    for (i, expected) in prefix.iter().enumerate() {
        // SAFETY: the caller's promise.
        if unsafe { *at.add(i) } != *expected {
            return false;
        }
    }
    true
}

/// Walks the environment block `[env_start, env_end)` of the current process entry by entry
/// (libcni puts the `CNI_*` variables anywhere in it: it deduplicates the environment through
/// a Go map), copying the `CNI_*` entries to the start of `buf`, NUL-separated. Each entry is
/// read with one string read of at most [`CNI_ENV_KEEP_BYTES`] (a longer one in several) just
/// after the entries kept so far, so a kept entry is already in place and any other is
/// overwritten by the next read. At most [`CNI_ENV_ENTRIES_MAX`] reads.
///
/// # Safety
/// `buf` points at [`ARGV_MAX_BYTES`] writable bytes.
#[inline(always)]
unsafe fn cni_environment(buf: *mut u8, env_start: u64, env_end: u64) -> EnvWalk {
    use core::ptr::{read_volatile as load, write_volatile as store};
    const CHUNK: u64 = CNI_ENV_KEEP_BYTES as u64;
    let Some(state) = ENV_WALK.get_ptr_mut(0) else {
        return EnvWalk {
            used: 0,
            command: false,
            cut: true,
        };
    };
    // The walk's place lives in the map (volatile accesses keep the compiler from moving it to
    // registers): see `ENV_WALK`.
    // SAFETY: `state` is this CPU's value of ENV_WALK; the program is not preempted by another
    // one using it (tracepoint programs do not nest on a CPU).
    unsafe {
        store(&raw mut (*state).pos, env_start);
        store(&raw mut (*state).used, 0);
        store(&raw mut (*state).at_start, 1);
        store(&raw mut (*state).command, 0);
        store(&raw mut (*state).cut, 0);
    }
    for _ in 0..CNI_ENV_ENTRIES_MAX {
        // SAFETY: as above, for every access to `state` below.
        let pos = unsafe { load(&raw const (*state).pos) };
        if pos >= env_end {
            break;
        }
        let mut used = unsafe { load(&raw const (*state).used) };
        // Never true; it tells the verifier that the read below stays in `buf`.
        if used > CHUNK {
            used = CHUNK;
        }
        // SAFETY: used + CHUNK <= ARGV_MAX_BYTES: the read below stays in `buf`.
        let dst = unsafe { buf.add(used as usize) };
        // SAFETY: reads user memory with the checking helper into `buf`.
        let n = unsafe { bpf_probe_read_user_str(dst.cast(), CHUNK as u32, pos as *const _) };
        if n <= 0 {
            unsafe { store(&raw mut (*state).cut, 1) };
            break;
        }
        // Bytes read, the NUL included; CHUNK when the entry may go on.
        let n = n as u64;
        let whole = n < CHUNK;
        // SAFETY: `dst` has CHUNK >= 12 bytes.
        if unsafe { load(&raw const (*state).at_start) } != 0 && unsafe { has_prefix(dst, b"CNI_") }
        {
            // SAFETY: as above.
            if unsafe { has_prefix(dst, b"CNI_COMMAND=") } {
                unsafe { store(&raw mut (*state).command, 1) };
            }
            if whole && used + n <= CHUNK {
                unsafe { store(&raw mut (*state).used, used + n) };
            } else {
                unsafe { store(&raw mut (*state).cut, 1) };
            }
        }
        if whole {
            unsafe {
                store(&raw mut (*state).pos, pos + n);
                store(&raw mut (*state).at_start, 1);
            }
        } else {
            // The last byte read is the NUL the helper put in place of the entry's next byte.
            unsafe {
                store(&raw mut (*state).pos, pos + CHUNK - 1);
                store(&raw mut (*state).at_start, 0);
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        let unread = load(&raw const (*state).pos) < env_end;
        let used = load(&raw const (*state).used);
        EnvWalk {
            used: if used > CHUNK {
                CHUNK as u32
            } else {
                used as u32
            },
            command: load(&raw const (*state).command) != 0,
            cut: unread || load(&raw const (*state).cut) != 0,
        }
    }
}

/// Takes one token from the bucket of `cgroup`: false when it has none left.
fn take_token(cgroup: u64) -> bool {
    const NANO: u64 = 1_000_000_000;
    // SAFETY: a read-only global that the loader patched; volatile so it is not constant-folded.
    let budget = unsafe { core::ptr::read_volatile(&EVENT_BUDGET) };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // The agent keeps rate and burst at most EVENT_BUDGET_MAX, so the products below fit in
    // 64 bits (a 128-bit multiply is not available to BPF).
    let full = budget.burst.wrapping_mul(NANO);
    // SAFETY: the value is plain data copied out at once.
    let mut bucket = match unsafe { CGROUP_TOKENS.get(&cgroup) } {
        Some(bucket) => *bucket,
        None => TokenBucket {
            nano_tokens: full,
            last_ns: now,
        },
    };
    // Refill; a long idle bucket is simply full (bounds the product below).
    let elapsed = now.saturating_sub(bucket.last_ns);
    bucket.nano_tokens = if elapsed >= 10 * NANO {
        full
    } else {
        bucket
            .nano_tokens
            .saturating_add(elapsed.wrapping_mul(budget.per_second))
    };
    if bucket.nano_tokens > full {
        bucket.nano_tokens = full;
    }
    bucket.last_ns = now;
    let allowed = bucket.nano_tokens >= NANO;
    if allowed {
        bucket.nano_tokens -= NANO;
    }
    // Updates from two CPUs at once may lose a token either way: the budget is approximate.
    let _ = CGROUP_TOKENS.insert(&cgroup, &bucket, 0);
    allowed
}

fn track(pid: u32, kind: TrackedKind, runtime_mnt_ns: u32) {
    let process = TrackedProcess {
        kind: kind as u32,
        runtime_mnt_ns,
    };
    if TRACKED.insert(pid, process, 0).is_err() {
        count_drop(DROP_TRACKED_MAP_FULL);
    }
}

fn try_fork(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: plain data copied out at once.
    let Some(process) = (unsafe { TRACKED.get(current_tgid()) }).copied() else {
        return Ok(());
    };
    let kind = process.kind;
    let child_kind =
        if kind == TrackedKind::Runtime as u32 || kind == TrackedKind::RuntimeChild as u32 {
            TrackedKind::RuntimeChild
        } else if kind == TrackedKind::CriDaemon as u32 || kind == TrackedKind::CniPlugin as u32 {
            // Looked at when it execs: a CNI plugin, an OCI runtime, or forgotten.
            TrackedKind::CriDaemonChild
        } else {
            return Ok(());
        };
    // SAFETY: reads a field of the tracepoint record at its documented offset.
    let child: i32 = unsafe { ctx.read_at(FORK_CHILD_PID) }?;
    track(child as u32, child_kind, process.runtime_mnt_ns);
    Ok(())
}

fn try_exit() -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let pid = pid_tgid as u32;
    if pid != tgid {
        // A thread: forget it if a runtime's fork put it in the map; threads report nothing.
        let _ = TRACKED.remove(pid);
        return Ok(());
    }
    // SAFETY: plain data copied out at once.
    let Some(kind) = (unsafe { TRACKED.get(tgid) }).map(|process| process.kind) else {
        return Ok(());
    };
    let _ = TRACKED.remove(tgid);
    if kind == TrackedKind::RuntimeChild as u32
        || kind == TrackedKind::CriDaemonChild as u32
        || kind == TrackedKind::CriDaemon as u32
    {
        // A fork that never exec'd (e.g. an intermediate `runc init` stage), or the runtime
        // daemon itself (the agent follows its successor when it finds it).
        return Ok(());
    }
    let off = offsets();
    // SAFETY: the current task pointer, only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let exit_code = read_kernel_u32(task, off.task_exit_code).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    entry.write(ExitEvent {
        header: EventHeader {
            kind: EventKind::Exit as u32,
            tgid,
            // SAFETY: a helper without preconditions.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
        },
        exit_code,
        tracked: kind,
    });
    entry.submit(0);
    Ok(())
}
