//! Decoder of the Go function table (`.gopclntab`): name, entry and end of every Go function,
//! which stays in a binary even when its ELF symbol tables were stripped (`-ldflags=-s -w`).
//!
//! Layout (Go's `runtime/symtab.go`, `pcHeader`): a magic word, two pad bytes, the PC quantum,
//! the pointer size, then pointer-sized words: `nfunc`, `nfiles`, `textStart` (Go 1.18+ only),
//! then the offsets of `funcnametab`, `cutab`, `filetab`, `pctab` and `pclntab` from the start
//! of the header. At `pclntab` lies the function table, `nfunc + 1` sorted entries whose last
//! one holds the end of the text:
//! - Go 1.18+: `{entryoff u32, funcoff u32}`, entry = `textStart + entryoff`;
//! - Go 1.16-1.17: `{entry uintptr, funcoff uintptr}`.
//!
//! `funcoff` points (from the function table's start) at the function's `_func`, whose second
//! field is the name's offset in `funcnametab`: after `entryOff u32` (1.18+) or
//! `entry uintptr` (1.16-1.17). Only little-endian tables are decoded (x86-64, arm64).

use thiserror::Error;

/// Magic of the Go 1.16 and 1.17 tables.
pub const MAGIC_GO116: u32 = 0xffff_fffa;
/// Magic of the Go 1.18 and 1.19 tables.
pub const MAGIC_GO118: u32 = 0xffff_fff0;
/// Magic of the Go 1.20+ tables (same layout as 1.18).
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// Which table format a binary carries, from its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PclnVersion {
    /// Go 1.16 and 1.17: absolute entries, no `textStart`.
    Go116,
    /// Go 1.18 and 1.19: entries relative to `textStart`.
    Go118,
    /// Go 1.20 and later: the 1.18 layout under a new magic.
    Go120,
}

impl PclnVersion {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            MAGIC_GO116 => Some(Self::Go116),
            MAGIC_GO118 => Some(Self::Go118),
            MAGIC_GO120 => Some(Self::Go120),
            _ => None,
        }
    }

    /// Whether the header has a `textStart` word and the entries are 32-bit offsets from it.
    fn relative_entries(self) -> bool {
        !matches!(self, Self::Go116)
    }
}

/// Why a `.gopclntab` could not be decoded.
#[derive(Debug, Error)]
pub enum PclntabError {
    #[error("pclntab is {len} bytes, shorter than its header")]
    TruncatedHeader { len: usize },
    #[error("pclntab magic {magic:#x} is not a supported Go version (1.16+, little-endian)")]
    UnsupportedMagic { magic: u32 },
    #[error("pclntab pointer size {ptr_size} is neither 4 nor 8")]
    BadPointerSize { ptr_size: u8 },
    #[error("pclntab {what} at offset {offset:#x} lies outside the table ({len} bytes)")]
    OutOfBounds {
        what: &'static str,
        offset: u64,
        len: usize,
    },
    #[error("pclntab function table is not sorted at entry {index}")]
    Unsorted { index: usize },
    #[error(
        "pclntab has no text start: the header's is 0 and neither Go's moduledata (.go.module), \
         a relocation of the header word nor a runtime.text symbol gives one; the function \
         addresses cannot be verified, so no uprobe is placed"
    )]
    NoTextStart,
    #[error(
        "the text start of Go's moduledata ({text:#x}) fails its check: {check} is {found:#x}, \
         expected {expected:#x}; the function addresses cannot be trusted, so no uprobe is placed"
    )]
    TextStartMismatch {
        text: u64,
        check: &'static str,
        found: u64,
        expected: u64,
    },
}

/// One function of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PclnFunction {
    /// Go's full symbol name, e.g. `github.com/x/y.(*T).Method`.
    pub name: String,
    /// Virtual address of the first instruction.
    pub entry: u64,
    /// Virtual address where the next function starts (so padding is included).
    pub end: u64,
}

/// The decoded table.
#[derive(Clone, Debug)]
pub struct Pclntab {
    pub version: PclnVersion,
    /// The text start the entries were taken relative to (Go 1.18+), or 0 for Go 1.16-1.17.
    pub text_start: u64,
    /// Functions in table order (ascending entry).
    pub functions: Vec<PclnFunction>,
}

/// Little-endian reader over the table with bounds checks.
struct Reader<'a> {
    data: &'a [u8],
    ptr_size: u8,
}

impl Reader<'_> {
    fn bytes<const N: usize>(
        &self,
        offset: u64,
        what: &'static str,
    ) -> Result<[u8; N], PclntabError> {
        let out_of_bounds = || PclntabError::OutOfBounds {
            what,
            offset,
            len: self.data.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_bounds())?;
        let end = start.checked_add(N).ok_or_else(out_of_bounds)?;
        let slice = self.data.get(start..end).ok_or_else(out_of_bounds)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&self, offset: u64, what: &'static str) -> Result<u32, PclntabError> {
        self.bytes::<4>(offset, what).map(u32::from_le_bytes)
    }

    fn word(&self, offset: u64, what: &'static str) -> Result<u64, PclntabError> {
        if self.ptr_size == 4 {
            self.u32(offset, what).map(u64::from)
        } else {
            self.bytes::<8>(offset, what).map(u64::from_le_bytes)
        }
    }

    /// The `index`-th pointer-sized word after the 8-byte fixed part of the header.
    fn header_word(&self, index: u64, what: &'static str) -> Result<u64, PclntabError> {
        self.word(8 + index * u64::from(self.ptr_size), what)
    }

    /// A NUL-terminated name.
    fn c_string(&self, offset: u64) -> Result<String, PclntabError> {
        let out_of_bounds = || PclntabError::OutOfBounds {
            what: "function name",
            offset,
            len: self.data.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_bounds())?;
        let rest = self.data.get(start..).ok_or_else(out_of_bounds)?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(out_of_bounds)?;
        Ok(String::from_utf8_lossy(&rest[..len]).into_owned())
    }
}

/// Reads the table's format version without decoding it.
pub fn version(data: &[u8]) -> Result<PclnVersion, PclntabError> {
    let magic_bytes: [u8; 4] = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(PclntabError::TruncatedHeader { len: data.len() })?;
    let magic = u32::from_le_bytes(magic_bytes);
    PclnVersion::from_magic(magic).ok_or(PclntabError::UnsupportedMagic { magic })
}

/// The header's `textStart` (Go 1.18+), or `None` for the older format.
pub fn header_text_start(data: &[u8]) -> Result<Option<u64>, PclntabError> {
    let (version, reader) = open(data)?;
    if version.relative_entries() {
        reader.header_word(2, "text start").map(Some)
    } else {
        Ok(None)
    }
}

/// The first function's `entryoff` (Go 1.18+): its distance from the text start.
pub fn first_entry_offset(data: &[u8]) -> Result<Option<u32>, PclntabError> {
    let (version, reader) = open(data)?;
    if !version.relative_entries() {
        return Ok(None);
    }
    let functab_offset = reader.header_word(7, "function table offset")?;
    reader.u32(functab_offset, "function entry").map(Some)
}

fn open(data: &[u8]) -> Result<(PclnVersion, Reader<'_>), PclntabError> {
    let version = version(data)?;
    if data.len() < 8 {
        return Err(PclntabError::TruncatedHeader { len: data.len() });
    }
    let ptr_size = data[7];
    if ptr_size != 4 && ptr_size != 8 {
        return Err(PclntabError::BadPointerSize { ptr_size });
    }
    Ok((version, Reader { data, ptr_size }))
}

/// Decodes every function of the table.
///
/// `text_start_fallback` is used (Go 1.18+) when the header's `textStart` word is 0, as it can
/// be in a position-independent binary whose loader fills it in through a relocation.
pub fn decode(data: &[u8], text_start_fallback: Option<u64>) -> Result<Pclntab, PclntabError> {
    let (version, reader) = open(data)?;
    let nfunc = reader.header_word(0, "function count")?;
    // Word indices after nfunc and nfiles: 1.18+ has textStart first.
    let (text_start, first_offset_word) = if version.relative_entries() {
        let header = reader.header_word(2, "text start")?;
        let text_start = match (header, text_start_fallback) {
            (0, Some(fallback)) => fallback,
            (0, None) => return Err(PclntabError::NoTextStart),
            (value, _) => value,
        };
        (text_start, 3)
    } else {
        (0, 2)
    };
    let funcname_offset = reader.header_word(first_offset_word, "funcnametab offset")?;
    let functab_offset = reader.header_word(first_offset_word + 4, "function table offset")?;

    let ptr = u64::from(reader.ptr_size);
    let relative = version.relative_entries();
    // An entry's address word and its `funcoff` word, and the size of one entry.
    let (entry_word, entry_size) = if relative { (4, 8) } else { (ptr, 2 * ptr) };
    // Reject a count that cannot fit before allocating anything sized by it; the last entry
    // (the end of the text) may consist of its address alone.
    let fits = nfunc
        .checked_mul(entry_size)
        .and_then(|n| n.checked_add(functab_offset))
        .and_then(|n| n.checked_add(entry_word))
        .is_some_and(|end| end <= data.len() as u64);
    if !fits {
        return Err(PclntabError::OutOfBounds {
            what: "function table",
            offset: functab_offset,
            len: data.len(),
        });
    }

    let entry_at = |index: u64| -> Result<u64, PclntabError> {
        let at = functab_offset + index * entry_size;
        if relative {
            Ok(text_start.saturating_add(u64::from(reader.u32(at, "function entry")?)))
        } else {
            reader.word(at, "function entry")
        }
    };
    let func_off_at = |index: u64| -> Result<u64, PclntabError> {
        let at = functab_offset + index * entry_size + entry_word;
        if relative {
            reader.u32(at, "function info offset").map(u64::from)
        } else {
            reader.word(at, "function info offset")
        }
    };
    // Offset of `_func.nameOff` from the start of `_func`: after its entry field.
    let name_field = entry_word;

    let mut functions = Vec::with_capacity(usize::try_from(nfunc).unwrap_or(0));
    let mut entry = entry_at(0)?;
    for index in 0..nfunc {
        let end = entry_at(index + 1)?;
        if end < entry {
            return Err(PclntabError::Unsorted {
                index: usize::try_from(index).unwrap_or(usize::MAX),
            });
        }
        let func_off = func_off_at(index)?;
        let name_at = functab_offset
            .saturating_add(func_off)
            .saturating_add(name_field);
        let name_off = reader.u32(name_at, "function name offset")?;
        let name = reader.c_string(funcname_offset.saturating_add(u64::from(name_off)))?;
        functions.push(PclnFunction { name, entry, end });
        entry = end;
    }
    Ok(Pclntab {
        version,
        text_start,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_word(table: &mut Vec<u8>, value: u64) {
        table.extend_from_slice(&value.to_le_bytes());
    }

    fn push_u32(table: &mut Vec<u8>, value: u32) {
        table.extend_from_slice(&value.to_le_bytes());
    }

    const NAMES: &[u8] = b"main.a\0main.(*T).b\0";
    const NAME_B: u32 = 7;

    /// A Go 1.18+ table of two functions at `text_start + 0` and `+ 0x40`, text ending at
    /// `+ 0x100`.
    fn go118_table(magic: u32, text_start: u64) -> Vec<u8> {
        let header_len = 8 + 8 * 8;
        let funcnames = header_len;
        let functab = funcnames + NAMES.len() as u64 + 1; // one pad byte
        let mut t = Vec::new();
        push_u32(&mut t, magic);
        t.extend_from_slice(&[0, 0, 1, 8]);
        for word in [2, 0, text_start, funcnames, 0, 0, 0, functab] {
            push_word(&mut t, word);
        }
        t.extend_from_slice(NAMES);
        t.push(0);
        // {entryoff, funcoff} x 3, then the two _func {entryOff, nameOff}.
        for (entry_off, func_off) in [(0, 24), (0x40, 32), (0x100, 0)] {
            push_u32(&mut t, entry_off);
            push_u32(&mut t, func_off);
        }
        for (entry_off, name_off) in [(0, 0), (0x40, NAME_B)] {
            push_u32(&mut t, entry_off);
            push_u32(&mut t, name_off);
        }
        t
    }

    /// A Go 1.16 table: absolute entries, no text start, a last entry of its address alone.
    fn go116_table() -> Vec<u8> {
        let header_len = 8 + 7 * 8;
        let funcnames = header_len;
        let functab = funcnames + NAMES.len() as u64 + 1;
        let mut t = Vec::new();
        push_u32(&mut t, MAGIC_GO116);
        t.extend_from_slice(&[0, 0, 1, 8]);
        for word in [2, 0, funcnames, 0, 0, 0, functab] {
            push_word(&mut t, word);
        }
        t.extend_from_slice(NAMES);
        t.push(0);
        // {entry, funcoff} x 2, the end address, then _func {entry u64, nameoff u32}.
        for (entry, func_off) in [(0x40_1000, 40), (0x40_1040, 52)] {
            push_word(&mut t, entry);
            push_word(&mut t, func_off);
        }
        push_word(&mut t, 0x40_1100);
        for (entry, name_off) in [(0x40_1000, 0), (0x40_1040, NAME_B)] {
            push_word(&mut t, entry);
            push_u32(&mut t, name_off);
        }
        t
    }

    fn expected(base: u64) -> Vec<PclnFunction> {
        vec![
            PclnFunction {
                name: "main.a".into(),
                entry: base,
                end: base + 0x40,
            },
            PclnFunction {
                name: "main.(*T).b".into(),
                entry: base + 0x40,
                end: base + 0x100,
            },
        ]
    }

    #[test]
    fn decodes_go118_and_go120_tables_from_their_own_text_start() {
        for (magic, version) in [
            (MAGIC_GO118, PclnVersion::Go118),
            (MAGIC_GO120, PclnVersion::Go120),
        ] {
            let table = go118_table(magic, 0x40_1000);
            let decoded = decode(&table, Some(0x99_0000)).unwrap();
            assert_eq!(decoded.version, version);
            assert_eq!(
                decoded.text_start, 0x40_1000,
                "the header wins over the fallback"
            );
            assert_eq!(decoded.functions, expected(0x40_1000));
        }
    }

    #[test]
    fn decodes_go116_tables() {
        let decoded = decode(&go116_table(), None).unwrap();
        assert_eq!(decoded.version, PclnVersion::Go116);
        assert_eq!(decoded.functions, expected(0x40_1000));
        assert_eq!(header_text_start(&go116_table()).unwrap(), None);
    }

    #[test]
    fn a_zero_text_start_needs_the_fallback() {
        let table = go118_table(MAGIC_GO118, 0);
        assert_eq!(header_text_start(&table).unwrap(), Some(0));
        assert!(matches!(
            decode(&table, None),
            Err(PclntabError::NoTextStart)
        ));
        let decoded = decode(&table, Some(0x55_0000)).unwrap();
        assert_eq!(decoded.functions, expected(0x55_0000));
    }

    #[test]
    fn rejects_other_magics_and_short_tables() {
        let mut old = go118_table(MAGIC_GO118, 0x1000);
        old[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        assert!(matches!(
            decode(&old, None),
            Err(PclntabError::UnsupportedMagic { magic: 0xffff_fffb })
        ));
        assert!(matches!(
            decode(&[0xf0, 0xff], None),
            Err(PclntabError::TruncatedHeader { .. })
        ));
        let table = go118_table(MAGIC_GO118, 0x1000);
        assert!(matches!(
            decode(&table[..100], None),
            Err(PclntabError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn rejects_an_impossible_function_count_without_allocating() {
        let mut table = go118_table(MAGIC_GO118, 0x1000);
        table[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode(&table, None),
            Err(PclntabError::OutOfBounds {
                what: "function table",
                ..
            })
        ));
    }

    #[test]
    fn rejects_an_unsorted_table() {
        let mut table = go118_table(MAGIC_GO118, 0x1000);
        // Second entry's entryoff (0x40) below the first's: functab + 8.
        let functab = 8 + 8 * 8 + NAMES.len() + 1;
        table[functab..functab + 4].copy_from_slice(&0x80u32.to_le_bytes());
        assert!(matches!(
            decode(&table, None),
            Err(PclntabError::Unsorted { index: 0 })
        ));
    }
}
