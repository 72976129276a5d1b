//! Uprobes on the container runtime's CRI handlers: one at each handler's entry (request
//! fields) and one on each of its RET instructions (response fields, error flag). No uretprobes:
//! they break Go's stack handling.
//!
//! Go register ABI (amd64): receiver in RAX, `ctx` in RBX+RCX, the request pointer in RDI;
//! results: response pointer in RAX, the error interface in RBX (type word) + RCX. The current
//! goroutine is in R14 and keys a call's entry to its exit. Which method a probe belongs to
//! comes from its attach cookie.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_probe_read_user as probe_read_user_raw},
    },
    macros::uprobe,
    programs::ProbeContext,
};
use nodetrace_common::{
    CRI_COOKIE_COUNT_ONLY, CRI_COOKIE_METHOD_MASK, CRI_FLAG_ERROR, CRI_OFFSET_UNKNOWN, CRI_STR_MAX,
    CRI_STR_SLOTS, CriCallKey, CriEvent, CriInflight, CriMethod, CriOffsets,
    DROP_CRI_INFLIGHT_FULL, DROP_RINGBUF_FULL, EventHeader, EventKind, cri_slots,
};

use crate::{
    CRI_CALLS, CRI_INFLIGHT, CRI_OFFSETS, EVENTS, count_drop,
    diag::{self, report},
};

/// A second entry of the same call within this time is the handler restarting after growing
/// its goroutine stack, not a new call.
const REENTRY_WINDOW_NS: u64 = 50_000_000;

#[uprobe]
pub fn cri_entry(ctx: ProbeContext) -> u32 {
    match try_entry(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[uprobe]
pub fn cri_return(ctx: ProbeContext) -> u32 {
    match try_return(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn cookie(ctx: &ProbeContext) -> u64 {
    // SAFETY: the helper only reads the cookie of the running link.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

fn count_call(method: u32) {
    if let Some(counter) = CRI_CALLS.get_ptr_mut(method) {
        // SAFETY: a per-CPU slot.
        unsafe { *counter += 1 };
    }
}

fn call_key(ctx: &ProbeContext) -> CriCallKey {
    CriCallKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        // SAFETY: reading the probe context's saved registers.
        goroutine: unsafe { (*ctx.regs).r14 },
    }
}

fn try_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let cookie = cookie(ctx);
    let method = (cookie & CRI_COOKIE_METHOD_MASK) as u32;
    if cookie & CRI_COOKIE_COUNT_ONLY != 0 {
        // Polled methods are counted at their RETs, which fire once per call.
        return Ok(());
    }
    let key = call_key(ctx);
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied out at once.
    if let Some(previous) = unsafe { CRI_INFLIGHT.get(&key) } {
        if previous.method == method
            && now.wrapping_sub(previous.start_ktime_ns) < REENTRY_WINDOW_NS
        {
            return Ok(());
        }
        report(
            diag::ENTRY_WITHOUT_EXIT,
            method,
            key.goroutine,
            u64::from(previous.method),
        );
    }
    let inflight = CriInflight {
        method,
        _pad: 0,
        start_ktime_ns: now,
    };
    if CRI_INFLIGHT.insert(&key, &inflight, 0).is_err() {
        count_drop(DROP_CRI_INFLIGHT_FULL);
        return Ok(());
    }
    count_call(method);
    let Some(mut entry) = EVENTS.reserve::<CriEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved record we own until submit; saved registers are readable.
    unsafe {
        init_event(event, EventKind::CriStart, &key, method, now);
        if let Some(off) = CRI_OFFSETS.get(0) {
            read_request(event, method, (*ctx.regs).rdi, off);
        }
    }
    entry.submit(0);
    Ok(())
}

fn try_return(ctx: &ProbeContext) -> Result<(), i32> {
    let cookie = cookie(ctx);
    let method = (cookie & CRI_COOKIE_METHOD_MASK) as u32;
    if cookie & CRI_COOKIE_COUNT_ONLY != 0 {
        count_call(method);
        return Ok(());
    }
    let key = call_key(ctx);
    // SAFETY: the value is copied out at once.
    let Some(inflight) = (unsafe { CRI_INFLIGHT.get(&key) }).copied() else {
        return Ok(());
    };
    if inflight.method != method {
        report(
            diag::EXIT_OF_OTHER_CALL,
            method,
            u64::from(inflight.method),
            0,
        );
        return Ok(());
    }
    let _ = CRI_INFLIGHT.remove(&key);
    let Some(mut entry) = EVENTS.reserve::<CriEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: as in try_entry.
    unsafe {
        init_event(event, EventKind::CriEnd, &key, method, bpf_ktime_get_ns());
        if (*ctx.regs).rbx != 0 {
            (*event).flags |= CRI_FLAG_ERROR;
        } else if let Some(off) = CRI_OFFSETS.get(0) {
            read_response(event, method, (*ctx.regs).rax, off);
        }
    }
    entry.submit(0);
    Ok(())
}

/// Writes the fixed part of an event and clears its lengths and numbers.
///
/// # Safety
/// `event` must point at a reserved ring-buffer record.
pub(crate) unsafe fn init_event(
    event: *mut CriEvent,
    kind: EventKind,
    key: &CriCallKey,
    method: u32,
    ktime_ns: u64,
) {
    // SAFETY: per the function's contract.
    unsafe {
        (*event).header = EventHeader {
            kind: kind as u32,
            tgid: key.tgid,
            ktime_ns,
        };
        (*event).goroutine = key.goroutine;
        (*event).method = method;
        (*event).flags = 0;
        (*event).numbers = [0; 2];
        (*event).lens = [0; CRI_STR_SLOTS];
        (*event)._pad = 0;
    }
}

fn known(off: u32) -> bool {
    off != CRI_OFFSET_UNKNOWN
}

/// The pointer-sized field at `base + off` of a structure of a call of `method`, or 0 (a nil
/// `base` is an absent optional field; a failed read is reported).
pub(crate) fn read_ptr(method: u32, base: u64, off: u32) -> u64 {
    if base == 0 || !known(off) {
        return 0;
    }
    // SAFETY: user memory, read with the checking helper.
    match unsafe { bpf_probe_read_user((base + u64::from(off)) as *const u64) } {
        Ok(value) => value,
        Err(_) => {
            report(diag::READ_FAILED, method, u64::from(off), base);
            0
        }
    }
}

fn read_u32(method: u32, base: u64, off: u32) -> u64 {
    if base == 0 || !known(off) {
        return 0;
    }
    // SAFETY: user memory, read with the checking helper.
    match unsafe { bpf_probe_read_user((base + u64::from(off)) as *const u32) } {
        Ok(value) => u64::from(value),
        Err(_) => {
            report(diag::READ_FAILED, method, u64::from(off), base);
            0
        }
    }
}

fn read_i64(method: u32, base: u64, off: u32) -> u64 {
    read_ptr(method, base, off)
}

/// Copies the Go string (pointer, length) at `base + off` into string slot `slot`.
///
/// # Safety
/// `event` must point at a reserved ring-buffer record.
#[inline(always)]
pub(crate) unsafe fn read_string(event: *mut CriEvent, slot: usize, base: u64, off: u32) {
    if base == 0 || !known(off) || slot >= CRI_STR_SLOTS {
        return;
    }
    // SAFETY: per the function's contract.
    let method = unsafe { (*event).method };
    let ptr = read_ptr(method, base, off);
    let len = read_ptr(method, base, off.wrapping_add(8));
    if ptr == 0 || len == 0 {
        return;
    }
    if len >= diag::IMPLAUSIBLE_STRING_LEN {
        report(diag::LENGTH_IMPLAUSIBLE, method, len, u64::from(off));
        return;
    }
    let len = if len > CRI_STR_MAX as u64 - 1 {
        report(diag::STRING_CUT, method, len, CRI_STR_MAX as u64 - 1);
        CRI_STR_MAX as u32 - 1
    } else {
        len as u32
    };
    // Bounded again where the verifier can see it.
    let len = len & (2 * CRI_STR_MAX as u32 - 1);
    let len = if len > CRI_STR_MAX as u32 - 1 {
        CRI_STR_MAX as u32 - 1
    } else {
        len
    };
    // SAFETY: the destination is a slot of the record, `len` is below its size.
    unsafe {
        let dst = core::ptr::addr_of_mut!((*event).strs[slot]).cast::<u8>();
        if probe_read_user_raw(dst.cast(), len, ptr as *const _) == 0 {
            (*event).lens[slot] = len;
        }
    }
}

/// # Safety
/// `event` must point at a reserved ring-buffer record.
unsafe fn read_request(event: *mut CriEvent, method: u32, req: u64, off: &CriOffsets) {
    use cri_slots::*;
    // SAFETY: per the function's contract.
    unsafe {
        if method == CriMethod::RunPodSandbox as u32 {
            let config = read_ptr(method, req, off.run_pod_sandbox_request_config);
            let meta = read_ptr(method, config, off.pod_sandbox_config_metadata);
            read_string(event, POD_NAME, meta, off.pod_sandbox_metadata_name);
            read_string(event, POD_UID, meta, off.pod_sandbox_metadata_uid);
            read_string(
                event,
                POD_NAMESPACE,
                meta,
                off.pod_sandbox_metadata_namespace,
            );
            read_string(
                event,
                RUNTIME_HANDLER,
                req,
                off.run_pod_sandbox_request_runtime_handler,
            );
            (*event).numbers[NUMBER] = read_u32(method, meta, off.pod_sandbox_metadata_attempt);
        } else if method == CriMethod::CreateContainer as u32 {
            read_string(event, ID, req, off.create_container_request_pod_sandbox_id);
            let config = read_ptr(method, req, off.create_container_request_config);
            let meta = read_ptr(method, config, off.container_config_metadata);
            read_string(event, CONTAINER_NAME, meta, off.container_metadata_name);
            (*event).numbers[NUMBER] = read_u32(method, meta, off.container_metadata_attempt);
            let image = read_ptr(method, config, off.container_config_image);
            read_string(event, IMAGE, image, off.image_spec_image);
        } else if method == CriMethod::StartContainer as u32 {
            read_string(event, ID, req, off.start_container_request_container_id);
        } else if method == CriMethod::StopContainer as u32 {
            read_string(event, ID, req, off.stop_container_request_container_id);
            (*event).numbers[NUMBER] = read_i64(method, req, off.stop_container_request_timeout);
        } else if method == CriMethod::RemoveContainer as u32 {
            read_string(event, ID, req, off.remove_container_request_container_id);
        } else if method == CriMethod::StopPodSandbox as u32 {
            read_string(event, ID, req, off.stop_pod_sandbox_request_pod_sandbox_id);
        } else if method == CriMethod::RemovePodSandbox as u32 {
            read_string(
                event,
                ID,
                req,
                off.remove_pod_sandbox_request_pod_sandbox_id,
            );
        } else if method == CriMethod::PullImage as u32 {
            let image = read_ptr(method, req, off.pull_image_request_image);
            read_string(event, IMAGE_REF, image, off.image_spec_image);
            let config = read_ptr(method, req, off.pull_image_request_sandbox_config);
            let meta = read_ptr(method, config, off.pod_sandbox_config_metadata);
            read_string(event, POD_UID, meta, off.pod_sandbox_metadata_uid);
            read_string(
                event,
                POD_NAMESPACE,
                meta,
                off.pod_sandbox_metadata_namespace,
            );
            read_string(event, PULL_POD_NAME, meta, off.pod_sandbox_metadata_name);
        } else if method == CriMethod::ExecSync as u32 {
            read_string(event, ID, req, off.exec_sync_request_container_id);
            (*event).numbers[NUMBER] = read_i64(method, req, off.exec_sync_request_timeout);
        }
    }
}

/// # Safety
/// `event` must point at a reserved ring-buffer record.
unsafe fn read_response(event: *mut CriEvent, method: u32, resp: u64, off: &CriOffsets) {
    let field = if method == CriMethod::RunPodSandbox as u32 {
        off.run_pod_sandbox_response_pod_sandbox_id
    } else if method == CriMethod::CreateContainer as u32 {
        off.create_container_response_container_id
    } else if method == CriMethod::PullImage as u32 {
        off.pull_image_response_image_ref
    } else {
        return;
    };
    // SAFETY: per the function's contract.
    unsafe { read_string(event, cri_slots::RESPONSE, resp, field) };
}
