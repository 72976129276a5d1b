//! Tells whether an ELF file is a static executable (no program interpreter), so only
//! binaries that run inside an otherwise empty image are packed.

const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// Whether `bytes` is a 64-bit little-endian ELF executable without a `PT_INTERP` header.
pub(crate) fn is_static_executable(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let kind = read_u16(bytes, 0x10);
    if kind != Some(ET_EXEC) && kind != Some(ET_DYN) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        read_u64(bytes, 0x20),
        read_u16(bytes, 0x36),
        read_u16(bytes, 0x38),
    ) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        matches!(read_u32(bytes, at), Some(kind) if kind != PT_INTERP)
    })
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::is_static_executable;

    #[test]
    fn rejects_non_elf() {
        assert!(!is_static_executable(b"#!/bin/sh\necho hi\n"));
    }

    #[test]
    fn dynamic_binary_is_not_static() {
        let bytes = std::fs::read("/bin/ls").expect("read /bin/ls");
        assert!(!is_static_executable(&bytes));
    }

    #[test]
    fn busybox_static_is_static() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else {
            eprintln!("skipped: /bin/busybox is missing (apt-get install busybox-static)");
            return;
        };
        assert!(is_static_executable(&bytes));
    }
}
