//! Diagnostics of the rare paths of the CRI probes, through aya-log: a field the probe could
//! not read, a string longer than its slot, a string length so large that the field offset
//! must be wrong, a goroutine that entered a handler again without its exit being seen, an
//! exit of another call than the one in flight.
//!
//! Off unless the agent loads the programs with a log level (`--ebpf-log-level`): the level
//! is a load-time constant (`AYA_LOG_LEVEL` in .rodata), so with it off the verifier removes
//! the logging code and the rare paths pay one function call; the hot paths pay nothing.
//! Every report goes through one function kept out of line, so the program's size does not
//! grow with the number of places that report.

use aya_log_ebpf::{debug, info, warn};

/// What happened (the first argument of [`report`]).
pub const READ_FAILED: u32 = 1;
pub const STRING_CUT: u32 = 2;
pub const LENGTH_IMPLAUSIBLE: u32 = 3;
pub const ENTRY_WITHOUT_EXIT: u32 = 4;
pub const EXIT_OF_OTHER_CALL: u32 = 5;

/// A Go string in a CRI request longer than this is no string the runtime holds: the offset it
/// was read at is wrong.
pub const IMPLAUSIBLE_STRING_LEN: u64 = 1 << 20;

/// Logs one diagnostic. `method` is the CRI method number; `a` and `b` depend on `what`.
#[inline(never)]
pub fn report(what: u32, method: u32, a: u64, b: u64) {
    let ctx = ();
    match what {
        READ_FAILED => warn!(
            &ctx,
            "CRI method {}: reading the field at offset {} of {:x} failed", method, a, b
        ),
        STRING_CUT => debug!(
            &ctx,
            "CRI method {}: a string of {} bytes cut to the slot's {} bytes", method, a, b
        ),
        LENGTH_IMPLAUSIBLE => warn!(
            &ctx,
            "CRI method {}: string length {} at field offset {}: offset out of range for this runtime?",
            method,
            a,
            b
        ),
        ENTRY_WITHOUT_EXIT => info!(
            &ctx,
            "CRI method {}: goroutine {:x} entered again; its call of method {} had no exit",
            method,
            a,
            b
        ),
        EXIT_OF_OTHER_CALL => debug!(
            &ctx,
            "CRI method {}: exit seen while method {} is in flight on the goroutine", method, a
        ),
        _ => {}
    }
}
