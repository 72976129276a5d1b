//! What CNI plugins write to their standard output: a plugin prints its result, or its error
//! (`{"code": 11, "msg": "..."}`), there as JSON, and the runtime reads it from a pipe. The
//! agent puts the error in the plugin's span.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use nodetrace_common::{
    CNI_OUTPUT_MAX_BYTES, CNI_OUTPUT_WRITES_MAX, CniOutputEvent, DROP_RINGBUF_FULL, EventHeader,
    EventKind, TrackedKind, TrackedProcess,
};

use crate::{EVENTS, TRACKED, count_drop};

/// Offsets of `fd`, `buf` and `count` in the syscalls/sys_enter_write record.
const WRITE_FD: usize = 16;
const WRITE_BUF: usize = 24;
const WRITE_COUNT: usize = 32;

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    match try_write(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_write(ctx: &TracePointContext) -> Result<(), i32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Every write on the node comes here: for any process that is not a CNI plugin, this map
    // lookup is all it costs.
    // SAFETY: plain data copied out at once.
    let Some(process) = (unsafe { TRACKED.get(tgid) }).copied() else {
        return Ok(());
    };
    if process.kind != TrackedKind::CniPlugin as u32 {
        return Ok(());
    }
    // SAFETY: reads fields of the tracepoint record at their documented offsets.
    let fd: u64 = unsafe { ctx.read_at(WRITE_FD) }?;
    let reported = process.runtime_mnt_ns;
    if fd != 1 || reported >= CNI_OUTPUT_WRITES_MAX {
        return Ok(());
    }
    let counted = TrackedProcess {
        runtime_mnt_ns: reported + 1,
        ..process
    };
    // Fails only if the entry went away meanwhile (the process exited on another thread).
    let _ = TRACKED.insert(tgid, counted, 0);
    // SAFETY: as above.
    let buf: u64 = unsafe { ctx.read_at(WRITE_BUF) }?;
    // SAFETY: as above.
    let count: u64 = unsafe { ctx.read_at(WRITE_COUNT) }?;
    let Some(mut entry) = EVENTS.reserve::<CniOutputEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    let len = if count > CNI_OUTPUT_MAX_BYTES as u64 {
        CNI_OUTPUT_MAX_BYTES as u32
    } else {
        count as u32
    };
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer record of the right
    // size; every field is written before submit.
    unsafe {
        (*event).header = EventHeader {
            kind: EventKind::CniOutput as u32,
            tgid,
            ktime_ns: bpf_ktime_get_ns(),
        };
        (*event).count = count;
        (*event)._pad = 0;
        let data = core::ptr::addr_of_mut!((*event).data).cast::<u8>();
        (*event).len = if bpf_probe_read_user(data.cast(), len, buf as *const _) == 0 {
            len
        } else {
            0
        };
    }
    entry.submit(0);
    Ok(())
}
