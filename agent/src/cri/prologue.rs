//! Whether an address is a Go function's entry: Go (amd64) begins every function that can
//! grow its stack by comparing the stack pointer with the goroutine's stack guard,
//! `g.stackguard0` at `[r14+0x10]` (R14 holds `g`):
//! - small frames: `cmp rsp, [r14+0x10]` (`49 3b 66 10`);
//! - larger frames: `lea r12, [rsp-frame]` then `cmp r12, [r14+0x10]`;
//! - huge frames: `mov r12, rsp`, `sub r12, frame` (and a carry check), then the same compare.
//!
//! A uprobe planted anywhere else than at an instruction boundary corrupts the traced program;
//! the CRI handlers are never `NOSPLIT`, so an entry without this shape means the address is
//! wrong (a bad text start, a misread table) and nothing is attached.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

/// Most instructions before the compare (the huge-frame form has three).
const BEFORE_COMPARE_MAX: usize = 3;

/// Whether `instructions`, decoded from a function's first byte, begin with Go's stack check.
pub fn starts_with_stack_check(instructions: &[Instruction]) -> bool {
    for (index, instruction) in instructions.iter().enumerate().take(BEFORE_COMPARE_MAX + 1) {
        if compares_with_stack_guard(instruction) {
            return true;
        }
        if index == BEFORE_COMPARE_MAX || !prepares_stack_bound(instruction) {
            return false;
        }
    }
    false
}

/// `cmp rsp|r12, qword ptr [r14+0x10]`.
fn compares_with_stack_guard(instruction: &Instruction) -> bool {
    instruction.code() == Code::Cmp_r64_rm64
        && matches!(instruction.op0_register(), Register::RSP | Register::R12)
        && instruction.op1_kind() == OpKind::Memory
        && instruction.memory_base() == Register::R14
        && instruction.memory_index() == Register::None
        && instruction.memory_displacement64() == 0x10
}

/// `lea r12, [rsp-…]`, `mov r12, rsp`, `sub r12, …`, or a conditional jump on the carry.
fn prepares_stack_bound(instruction: &Instruction) -> bool {
    match instruction.mnemonic() {
        Mnemonic::Lea | Mnemonic::Mov | Mnemonic::Sub => {
            instruction.op0_register() == Register::R12
        }
        Mnemonic::Jb | Mnemonic::Jae => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::disasm::decode;

    fn check(code: &[u8]) -> bool {
        starts_with_stack_check(&decode("test", code, 0x40_1000).expect("valid code"))
    }

    #[test]
    fn small_large_and_huge_frame_prologues_are_entries() {
        // cmp rsp,[r14+0x10]; jbe +0x1a
        assert!(check(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x1a]));
        // lea r12,[rsp-0x80]; cmp r12,[r14+0x10]; jbe
        assert!(check(&[
            0x4c, 0x8d, 0x64, 0x24, 0x80, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x1a
        ]));
        // mov r12,rsp; sub r12,0x10000; jb +5; cmp r12,[r14+0x10]
        assert!(check(&[
            0x49, 0x89, 0xe4, 0x49, 0x81, 0xec, 0x00, 0x00, 0x01, 0x00, 0x72, 0x05, 0x4d, 0x3b,
            0x66, 0x10
        ]));
    }

    #[test]
    fn other_code_is_not_an_entry() {
        // The same bytes one byte in: `3b 66 10` decodes as `cmp esp,[rsi+0x10]`.
        assert!(!check(&[0x3b, 0x66, 0x10, 0x76, 0x1a]));
        // sub rsp,0x18 (a function without the check, or the middle of one).
        assert!(!check(&[0x48, 0x83, 0xec, 0x18, 0xc3]));
        // cmp rsp,[r14+0x18]: not the stack guard.
        assert!(!check(&[0x49, 0x3b, 0x66, 0x18]));
        // Too much before the compare.
        assert!(!check(&[0x90, 0x90, 0x90, 0x90, 0x49, 0x3b, 0x66, 0x10]));
        assert!(!check(&[]));
    }
}
