//! x86-64 decoding of one function's machine code, instruction by instruction.
//!
//! A linear sweep is exact for Go code: the Go toolchain puts no data between instructions,
//! and pads between functions with INT3.

use iced_x86::{Decoder, DecoderOptions, Instruction};
use object::Architecture;
use thiserror::Error;

use super::symbols::{Function, GoBinary, SymbolError};

/// Why a function's code could not be decoded.
#[derive(Debug, Error)]
pub enum DisasmError {
    #[error("cannot disassemble a {architecture:?} binary: only x86-64 is supported")]
    UnsupportedArchitecture { architecture: Architecture },
    #[error("invalid instruction in {function} at {address:#x}")]
    InvalidInstruction { function: String, address: u64 },
    #[error(transparent)]
    Code(#[from] SymbolError),
}

/// Decodes a function of the binary.
pub fn decode_function(
    binary: &GoBinary,
    function: &Function,
) -> Result<Vec<Instruction>, DisasmError> {
    let architecture = binary.architecture();
    if architecture != Architecture::X86_64 {
        return Err(DisasmError::UnsupportedArchitecture { architecture });
    }
    decode(&function.name, binary.code(function)?, function.address)
}

/// Decodes `code`, whose first byte is at virtual address `address`; `name` is for messages.
pub fn decode(name: &str, code: &[u8], address: u64) -> Result<Vec<Instruction>, DisasmError> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(DisasmError::InvalidInstruction {
                function: name.to_owned(),
                address: instruction.ip(),
            });
        }
        instructions.push(instruction);
    }
    Ok(instructions)
}
