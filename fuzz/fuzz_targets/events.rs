//! Fuzzes the ring-buffer record decoder, two ways: the input as a record, and the input laid
//! over a zeroed record of the kind its first byte picks (records are up to 4.4 KiB, mostly
//! zeros, which plain mutation of short inputs would seldom reach).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrace::ebpf::{KernelEvent, parse_record};
use nodetrace_common::{
    ARGV_MAX_ARGS, CNI_OUTPUT_MAX_BYTES, CniOutputEvent, CriEvent, EventKind, ExecEvent, ExitEvent,
};

fn check(bytes: &[u8]) {
    let Ok(event) = parse_record(bytes) else {
        return;
    };
    let size = match &event {
        KernelEvent::Exec(exec) => {
            assert!(exec.argv.len() <= ARGV_MAX_ARGS);
            assert!(!exec.filename.contains('\0'));
            size_of::<ExecEvent>()
        }
        KernelEvent::Exit(exit) => {
            assert!(exit.exit_status.is_some() != exit.signal.is_some());
            size_of::<ExitEvent>()
        }
        KernelEvent::CriStart(_) | KernelEvent::CriEnd(_) => size_of::<CriEvent>(),
        KernelEvent::CniOutput(output) => {
            assert!(output.data.len() <= CNI_OUTPUT_MAX_BYTES);
            size_of::<CniOutputEvent>()
        }
    };
    assert!(
        bytes.len() >= size,
        "a record shorter than its struct was accepted"
    );
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (kind, size) = match selector % 5 {
        0 => (EventKind::Exec, size_of::<ExecEvent>()),
        1 => (EventKind::Exit, size_of::<ExitEvent>()),
        2 => (EventKind::CriStart, size_of::<CriEvent>()),
        3 => (EventKind::CriEnd, size_of::<CriEvent>()),
        _ => (EventKind::CniOutput, size_of::<CniOutputEvent>()),
    };
    // The high bits: trailing bytes after the record (the ring buffer pads to 8), or a cut one.
    let len = match selector >> 2 {
        63 => size - 1,
        extra => size + usize::from(extra % 16),
    };
    let mut record = vec![0u8; len.max(rest.len() + 4)];
    record[..4].copy_from_slice(&(kind as u32).to_ne_bytes());
    record[4..4 + rest.len()].copy_from_slice(rest);
    record.truncate(len);
    check(&record);
});
