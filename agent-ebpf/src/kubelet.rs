//! Uprobes on kubelet's pod-sync functions: one at each function's entry (the pod, and a
//! container name or image) and one on each of its RET instructions (the error flag). Which
//! function a probe belongs to, and which registers hold what, come from its attach cookie:
//! the agent read them from the kubelet version's signatures and checked them against the
//! binary's own code.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_attach_cookie},
    macros::uprobe,
    programs::ProbeContext,
};
use nodetrace_common::{
    CRI_COOKIE_METHOD_MASK, CriCallKey, CriEvent, CriInflight, DROP_CRI_INFLIGHT_FULL,
    DROP_RINGBUF_FULL, EventKind, kubelet_cookie as ck, kubelet_reg as reg, kubelet_slots,
};

use crate::{
    EVENTS, KUBELET_INFLIGHT, KUBELET_OFFSETS, count_drop,
    cri::{init_event, read_ptr, read_string},
};

/// A second entry of the same function on the same goroutine within this time is the
/// function restarting after growing its stack, not a new call.
const REENTRY_WINDOW_NS: u64 = 50_000_000;

#[uprobe]
pub fn kubelet_entry(ctx: ProbeContext) -> u32 {
    match try_entry(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[uprobe]
pub fn kubelet_return(ctx: ProbeContext) -> u32 {
    match try_return(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn cookie(ctx: &ProbeContext) -> u64 {
    // SAFETY: the helper only reads the cookie of the running link.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// The value of register number `which` (see `kubelet_reg`); 0 for none. Every register is
/// loaded at its own constant offset first: the verifier refuses a load from the context at an
/// offset computed at run time, which a `match` on the context's fields compiles to.
fn register(ctx: &ProbeContext, which: u64) -> u64 {
    // SAFETY: reading the probe context's saved registers, each at a constant offset.
    let values = unsafe {
        let regs = ctx.regs;
        [
            core::ptr::read_volatile(&raw const (*regs).rax),
            core::ptr::read_volatile(&raw const (*regs).rbx),
            core::ptr::read_volatile(&raw const (*regs).rcx),
            core::ptr::read_volatile(&raw const (*regs).rdi),
            core::ptr::read_volatile(&raw const (*regs).rsi),
            core::ptr::read_volatile(&raw const (*regs).r8),
            core::ptr::read_volatile(&raw const (*regs).r9),
            core::ptr::read_volatile(&raw const (*regs).r10),
            core::ptr::read_volatile(&raw const (*regs).r11),
        ]
    };
    match which {
        reg::RAX => values[0],
        reg::RBX => values[1],
        reg::RCX => values[2],
        reg::RDI => values[3],
        reg::RSI => values[4],
        reg::R8 => values[5],
        reg::R9 => values[6],
        reg::R10 => values[7],
        reg::R11 => values[8],
        _ => 0,
    }
}

fn field(cookie: u64, shift: u32) -> u64 {
    (cookie >> shift) & ck::REG_MASK
}

fn call_key(ctx: &ProbeContext, function: u32) -> CriCallKey {
    CriCallKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: function,
        // SAFETY: reading the probe context's saved registers.
        goroutine: unsafe { (*ctx.regs).r14 },
    }
}

fn try_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let cookie = cookie(ctx);
    let function = (cookie & CRI_COOKIE_METHOD_MASK) as u32;
    let key = call_key(ctx, function);
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied out at once.
    if let Some(previous) = unsafe { KUBELET_INFLIGHT.get(&key) }
        && now.wrapping_sub(previous.start_ktime_ns) < REENTRY_WINDOW_NS
    {
        return Ok(());
    }
    let inflight = CriInflight {
        method: function,
        _pad: 0,
        start_ktime_ns: now,
    };
    if KUBELET_INFLIGHT.insert(&key, &inflight, 0).is_err() {
        count_drop(DROP_CRI_INFLIGHT_FULL);
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<CriEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    let pod = register(ctx, field(cookie, ck::POD_REG_SHIFT));
    let extra_ptr = register(ctx, field(cookie, ck::EXTRA_PTR_SHIFT));
    let extra_len = register(ctx, field(cookie, ck::EXTRA_LEN_SHIFT));
    // SAFETY: `event` is a reserved record we own until submit.
    unsafe {
        init_event(event, EventKind::KubeletStart, &key, function, now);
        (*event).numbers[1] = u64::from(function);
        if let Some(off) = KUBELET_OFFSETS.get(0) {
            read_string(event, kubelet_slots::POD_UID, pod, off.pod_uid);
            read_string(event, kubelet_slots::POD_NAME, pod, off.pod_name);
            read_string(event, kubelet_slots::POD_NAMESPACE, pod, off.pod_namespace);
        }
        if cookie & ck::EXTRA_DEREF != 0 {
            // A pointer to a struct whose first field points at a struct beginning with a
            // string (startContainer's spec → container → name).
            let inner = read_ptr(function, extra_ptr, 0);
            read_string(event, kubelet_slots::EXTRA, inner, 0);
        } else if extra_ptr != 0 && extra_len != 0 {
            // A string argument in two registers: read through a two-word copy on the
            // record's own string slot (pointer, then length), as a string field at offset 0.
            read_string_regs(event, extra_ptr, extra_len);
        }
    }
    entry.submit(0);
    Ok(())
}

/// Copies the string (`ptr`, `len`) into the extra slot.
///
/// # Safety
/// `event` must point at a reserved ring-buffer record.
unsafe fn read_string_regs(event: *mut CriEvent, ptr: u64, len: u64) {
    use aya_ebpf::helpers::generated::bpf_probe_read_user as probe_read_user_raw;
    const MAX: u64 = nodetrace_common::CRI_STR_MAX as u64 - 1;
    let len = if len > MAX { MAX } else { len } as u32;
    let len = len & (2 * nodetrace_common::CRI_STR_MAX as u32 - 1);
    let len = if len > MAX as u32 { MAX as u32 } else { len };
    // SAFETY: per the function's contract; `len` is below the slot's size.
    unsafe {
        let dst = core::ptr::addr_of_mut!((*event).strs[kubelet_slots::EXTRA]).cast::<u8>();
        if probe_read_user_raw(dst.cast(), len, ptr as *const _) == 0 {
            (*event).lens[kubelet_slots::EXTRA] = len;
        }
    }
}

fn try_return(ctx: &ProbeContext) -> Result<(), i32> {
    let cookie = cookie(ctx);
    let function = (cookie & CRI_COOKIE_METHOD_MASK) as u32;
    let key = call_key(ctx, function);
    // SAFETY: the value is copied out at once.
    if unsafe { KUBELET_INFLIGHT.get(&key) }.is_none() {
        return Ok(());
    }
    let _ = KUBELET_INFLIGHT.remove(&key);
    let Some(mut entry) = EVENTS.reserve::<CriEvent>(0) else {
        count_drop(DROP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    let error = register(ctx, field(cookie, ck::ERROR_REG_SHIFT));
    // SAFETY: as in try_entry.
    unsafe {
        init_event(
            event,
            EventKind::KubeletEnd,
            &key,
            function,
            bpf_ktime_get_ns(),
        );
        if error != 0 {
            (*event).flags |= nodetrace_common::CRI_FLAG_ERROR;
        }
    }
    entry.submit(0);
    Ok(())
}
