//! The RET instructions of a Go function: where its exit uprobes go, since uretprobes crash Go
//! programs (the runtime moves goroutine stacks, and the return address the kernel swapped in
//! moves with them).
//!
//! A Go function ends with its stack-growth epilogue (`call runtime.morestack_noctxt;
//! jmp <entry>`) and INT3 padding, neither of which returns; a linear sweep of the function's
//! bytes (exact for Go code) finds only the real RETs.

use iced_x86::{Instruction, Mnemonic};

use super::disasm::{self, DisasmError};
use super::symbols::{Function, GoBinary};

/// One RET instruction of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetSite {
    /// Bytes from the function's first instruction.
    pub offset: u64,
    /// Virtual address.
    pub address: u64,
    /// Offset in the file: what the uprobe is attached at.
    pub file_offset: u64,
}

/// Every near RET (`ret`, `ret imm16`) of a function of the binary.
pub fn ret_offsets(binary: &GoBinary, function: &Function) -> Result<Vec<RetSite>, DisasmError> {
    let instructions = disasm::decode_function(binary, function)?;
    Ok(ret_instructions(&instructions)
        .map(|ret| {
            let offset = ret.ip() - function.address;
            RetSite {
                offset,
                address: ret.ip(),
                file_offset: function.file_offset + offset,
            }
        })
        .collect())
}

/// The offsets, from the start of `code`, of its near RETs; `code` starts at `address`.
pub fn ret_offsets_in(code: &[u8], address: u64) -> Result<Vec<u64>, DisasmError> {
    let instructions = disasm::decode("code", code, address)?;
    Ok(ret_instructions(&instructions)
        .map(|ret| ret.ip() - address)
        .collect())
}

fn ret_instructions(instructions: &[Instruction]) -> impl Iterator<Item = &Instruction> {
    // `Mnemonic::Ret` is the near return only; far returns are `Retf`, never emitted by Go.
    instructions
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Go-shaped function, assembled by hand:
    /// ```text
    /// 00 cmp rsp,[r14+0x10]      49 3b 66 10
    /// 04 jbe 0x20                76 1a         stack check
    /// 06 sub rsp,0x18            48 83 ec 18
    /// 0a test rax,rax            48 85 c0
    /// 0d je 0x14                 74 05
    /// 0f add rsp,0x18            48 83 c4 18
    /// 13 ret                     c3            <- real
    /// 14 mov eax,0xc3            b8 c3 00 00 00  (a C3 byte inside an immediate)
    /// 19 add rsp,0x18            48 83 c4 18
    /// 1d ret 8                   c2 08 00      <- real
    /// 20 call morestack          e8 00 00 00 00  stack-growth epilogue
    /// 25 jmp 0x00                eb d9
    /// 27 int3; int3              cc cc         padding
    /// ```
    const GO_SHAPED: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x76, 0x1a, 0x48, 0x83, 0xec, 0x18, 0x48, 0x85, 0xc0, 0x74, 0x05,
        0x48, 0x83, 0xc4, 0x18, 0xc3, 0xb8, 0xc3, 0x00, 0x00, 0x00, 0x48, 0x83, 0xc4, 0x18, 0xc2,
        0x08, 0x00, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xeb, 0xd9, 0xcc, 0xcc,
    ];

    #[test]
    fn finds_only_real_rets_of_a_hand_assembled_function() {
        let offsets = ret_offsets_in(GO_SHAPED, 0x40_1000).unwrap();
        assert_eq!(offsets, vec![0x13, 0x1d]);
    }

    #[test]
    fn the_epilogue_jumps_back_to_the_entry() {
        let instructions = disasm::decode("t", GO_SHAPED, 0x40_1000).unwrap();
        let jmp = instructions
            .iter()
            .find(|i| i.mnemonic() == Mnemonic::Jmp)
            .unwrap();
        assert_eq!(jmp.near_branch_target(), 0x40_1000);
    }

    #[test]
    fn a_function_without_ret_has_no_sites() {
        // jmp to itself, then padding.
        assert_eq!(
            ret_offsets_in(&[0xeb, 0xfe, 0xcc], 0).unwrap(),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn truncated_code_is_an_error() {
        // `mov eax, imm32` cut after two bytes.
        let err = ret_offsets_in(&[0xc3, 0xb8, 0xc3], 0x1000).unwrap_err();
        assert!(
            matches!(
                err,
                DisasmError::InvalidInstruction {
                    address: 0x1001,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
