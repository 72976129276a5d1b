//! The field offset a generated protobuf getter reads, from its instructions.
//!
//! A getter `func (m *T) GetX() X { if m != nil { return m.X }; return zero }` receives `m` in
//! RAX (Go's register ABI) and loads the field from it: `mov rcx,[rax+0x10]; mov rbx,[rax+0x18]`
//! for a string (pointer, then length), `mov rax,[rax+0x10]` for a pointer or int64,
//! `mov eax,dword ptr [rax+0x30]` for a uint32. The offset is the lowest displacement of the
//! register loads from the receiver, with no index register. The receiver is followed through
//! register copies and forgotten once its register is overwritten; code after a RET is reached
//! by a branch taken at the entry, so the receiver is back in RAX there.

use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};

/// Mnemonics that load a register from memory (and nothing else: no `test`/`cmp` nil checks).
const LOADS: [Mnemonic; 9] = [
    Mnemonic::Mov,
    Mnemonic::Movzx,
    Mnemonic::Movsx,
    Mnemonic::Movsxd,
    Mnemonic::Movups,
    Mnemonic::Movdqu,
    Mnemonic::Movq,
    Mnemonic::Movss,
    Mnemonic::Movsd,
];

/// The offset of the field a getter returns, or `None` when its code is not that shape.
pub fn field_offset(instructions: &[Instruction]) -> Option<u64> {
    let mut factory = InstructionInfoFactory::new();
    let mut receiver = vec![Register::RAX];
    let mut lowest: Option<u64> = None;
    for instruction in instructions {
        if instruction.mnemonic() == Mnemonic::Ret {
            receiver = vec![Register::RAX];
            continue;
        }
        if let Some(displacement) = receiver_load(instruction, &receiver) {
            lowest = Some(lowest.map_or(displacement, |l| l.min(displacement)));
        }
        let copied_to = register_copy(instruction, &receiver);
        let info = factory.info(instruction);
        for used in info.used_registers() {
            let written = matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if written {
                let full = used.register().full_register();
                receiver.retain(|&r| r != full);
            }
        }
        if let Some(copy) = copied_to {
            receiver.push(copy);
        }
    }
    lowest
}

/// The displacement of a register load `reg <- [receiver + disp]`.
fn receiver_load(instruction: &Instruction, receiver: &[Register]) -> Option<u64> {
    let is_load = LOADS.contains(&instruction.mnemonic())
        && instruction.op_count() == 2
        && instruction.op0_kind() == OpKind::Register
        && instruction.op1_kind() == OpKind::Memory
        && instruction.memory_index() == Register::None
        && receiver.contains(&instruction.memory_base().full_register());
    // A negative displacement would be a wrapped-around u64: not a field.
    let displacement = instruction.memory_displacement64();
    (is_load && displacement < 1 << 31).then_some(displacement)
}

/// The register that a `mov reg, receiver` copies the receiver into.
fn register_copy(instruction: &Instruction, receiver: &[Register]) -> Option<Register> {
    let copies = instruction.mnemonic() == Mnemonic::Mov
        && instruction.op0_kind() == OpKind::Register
        && instruction.op1_kind() == OpKind::Register
        && instruction.op0_register().is_gpr64()
        && receiver.contains(&instruction.op1_register());
    copies.then(|| instruction.op0_register())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::disasm;

    fn offset_of(code: &[u8]) -> Option<u64> {
        field_offset(&disasm::decode("getter", code, 0x1000).unwrap())
    }

    #[test]
    fn string_getter() {
        // test rax,rax; je +0xc; mov rcx,[rax+0x10]; mov rbx,[rax+0x18]; mov rax,rcx; ret;
        // xor eax,eax; xor ebx,ebx; ret
        let code = [
            0x48, 0x85, 0xc0, 0x74, 0x0c, 0x48, 0x8b, 0x48, 0x10, 0x48, 0x8b, 0x58, 0x18, 0x48,
            0x89, 0xc8, 0xc3, 0x31, 0xc0, 0x31, 0xdb, 0xc3,
        ];
        assert_eq!(offset_of(&code), Some(0x10));
    }

    #[test]
    fn string_getter_at_offset_zero() {
        // test rax,rax; je; mov rcx,[rax]; mov rbx,[rax+8]; mov rax,rcx; ret; xor...; ret
        let code = [
            0x48, 0x85, 0xc0, 0x74, 0x0b, 0x48, 0x8b, 0x08, 0x48, 0x8b, 0x58, 0x08, 0x48, 0x89,
            0xc8, 0xc3, 0x31, 0xc0, 0x31, 0xdb, 0xc3,
        ];
        assert_eq!(offset_of(&code), Some(0));
    }

    #[test]
    fn uint32_getter() {
        // test rax,rax; je +4; mov eax,[rax+0x30]; ret; xor eax,eax; ret
        let code = [
            0x48, 0x85, 0xc0, 0x74, 0x04, 0x8b, 0x40, 0x30, 0xc3, 0x31, 0xc0, 0xc3,
        ];
        assert_eq!(offset_of(&code), Some(0x30));
    }

    #[test]
    fn nil_branch_first_then_load() {
        // test rax,rax; jne +3; xor eax,eax; ret; mov rax,[rax+0x28]; ret
        let code = [
            0x48, 0x85, 0xc0, 0x75, 0x03, 0x31, 0xc0, 0xc3, 0x48, 0x8b, 0x40, 0x28, 0xc3,
        ];
        assert_eq!(offset_of(&code), Some(0x28));
    }

    #[test]
    fn nil_check_by_memory_test_is_not_a_load() {
        // test byte ptr [rax],al; mov rax,[rax+0x18]; ret
        let code = [0x84, 0x00, 0x48, 0x8b, 0x40, 0x18, 0xc3];
        assert_eq!(offset_of(&code), Some(0x18));
    }

    #[test]
    fn loads_through_an_overwritten_receiver_do_not_count() {
        // mov rax,[rax+0x10]; mov rax,[rax+0x8]; ret: a nested field, the outer offset wins
        // and the inner load (from another object) is ignored.
        let code = [0x48, 0x8b, 0x40, 0x10, 0x48, 0x8b, 0x40, 0x08, 0xc3];
        assert_eq!(offset_of(&code), Some(0x10));
    }

    #[test]
    fn copies_of_the_receiver_are_followed() {
        // mov rdx,rax; xor eax,eax; mov rax,[rdx+0x20]; ret
        let code = [0x48, 0x89, 0xc2, 0x31, 0xc0, 0x48, 0x8b, 0x42, 0x20, 0xc3];
        assert_eq!(offset_of(&code), Some(0x20));
    }

    #[test]
    fn code_without_a_receiver_load_tells_nothing() {
        // xor eax,eax; ret
        assert_eq!(offset_of(&[0x31, 0xc0, 0xc3]), None);
    }
}
