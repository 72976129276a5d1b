//! The functions of a Go executable by name, from `.symtab`, `.dynsym` or the Go `.gopclntab`
//! (whichever knows the name first), each with the file offset a uprobe is attached at.

use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Architecture, Endianness, Object, ObjectSection, ObjectSymbol, SymbolKind};
use thiserror::Error;

use super::buildinfo::{self, BuildInfo};
use super::gopclntab::{self, PclnVersion, PclntabError};
use super::segments::LoadSegments;

/// Section names of the Go function table: plain, and inside RELRO in position-independent
/// binaries.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// Where a function's name and address were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymbolSource {
    /// The static symbol table (absent from stripped binaries).
    Symtab,
    /// The dynamic symbol table (Debian's Go binaries export every Go function there).
    Dynsym,
    /// Go's own function table, present in every Go binary.
    Gopclntab,
}

impl SymbolSource {
    /// Every source, in the order a name is looked up.
    pub const ALL: [Self; 3] = [Self::Symtab, Self::Dynsym, Self::Gopclntab];
}

/// One function of the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Go's full symbol name, e.g. `github.com/x/y.(*T).Method`.
    pub name: String,
    /// Virtual address of the first instruction.
    pub address: u64,
    /// Bytes of code: the symbol's size, or for `.gopclntab` the distance to the next function
    /// (which includes the alignment padding).
    pub size: u64,
    /// Offset of the first instruction in the file: what a uprobe is attached at.
    pub file_offset: u64,
    pub source: SymbolSource,
}

/// Why a binary's functions could not be read.
#[derive(Debug, Error)]
pub enum SymbolError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit ELF file")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("cannot decode the Go function table of {path}")]
    Pclntab {
        path: PathBuf,
        #[source]
        source: PclntabError,
    },
    #[error("{path} has no functions in {sources:?}")]
    NoFunctions {
        path: PathBuf,
        sources: Vec<SymbolSource>,
    },
    #[error("code of {name} ({size} bytes at {address:#x}) is not in the file")]
    CodeNotInFile {
        name: String,
        address: u64,
        size: u64,
    },
}

/// The bytes of a binary: read from its file on demand, only the parts used (headers, symbol
/// tables, the Go function table, the code of the functions looked at), or owned (tests).
///
/// Not mapped: a binary truncated or rewritten in place while mapped (`cp new /usr/bin/x`
/// does that) would kill the agent with SIGBUS at the next read of a page past the new end;
/// a read of a changed file fails cleanly instead. Reading on demand also keeps a 50 MB
/// runtime binary out of the agent's memory.
#[derive(Debug)]
enum Bytes {
    File(object::ReadCache<std::fs::File>),
    Owned(Vec<u8>),
}

impl Bytes {
    /// `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        use object::ReadRef as _;
        match self {
            Self::File(cache) => cache.read_bytes_at(offset, len).ok(),
            Self::Owned(bytes) => bytes.as_slice().read_bytes_at(offset, len).ok(),
        }
    }
}

/// A Go executable, mapped into memory, with its function table.
#[derive(Debug)]
pub struct GoBinary {
    path: PathBuf,
    data: Bytes,
    architecture: Architecture,
    /// Sorted by name, one entry per name.
    functions: Vec<Function>,
    pcln_version: Option<PclnVersion>,
    text_start: Option<TextStart>,
    pclntab_error: Option<PclntabError>,
    build_info: Option<BuildInfo>,
}

impl GoBinary {
    /// Reads `path` and its functions from every source.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SymbolError> {
        Self::open_with(path, &SymbolSource::ALL)
    }

    /// Reads `path` and its functions from the given sources only, in that order of preference.
    pub fn open_with(
        path: impl AsRef<Path>,
        sources: &[SymbolSource],
    ) -> Result<Self, SymbolError> {
        let path = path.as_ref();
        let read_error = |source| SymbolError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        Self::parse(path, Bytes::File(object::ReadCache::new(file)), sources)
    }

    /// Reads the functions of a binary already in memory; `path` names it in messages.
    ///
    /// A `.gopclntab` that fails to decode is an error only when no other source gave any
    /// function; otherwise [`GoBinary::pclntab_error`] keeps it.
    pub fn from_bytes(
        path: impl AsRef<Path>,
        data: Vec<u8>,
        sources: &[SymbolSource],
    ) -> Result<Self, SymbolError> {
        Self::parse(path.as_ref(), Bytes::Owned(data), sources)
    }

    fn parse(path: &Path, data: Bytes, sources: &[SymbolSource]) -> Result<Self, SymbolError> {
        let path = path.to_path_buf();
        let (parsed, build_info) = match &data {
            Bytes::File(cache) => (read_functions(cache, sources), buildinfo::read(cache)),
            Bytes::Owned(bytes) => (
                read_functions(bytes.as_slice(), sources),
                buildinfo::read(bytes.as_slice()),
            ),
        };
        let parsed = parsed.map_err(|source| SymbolError::Parse {
            path: path.clone(),
            source,
        })?;
        let mut functions = parsed.functions;
        if functions.is_empty() {
            return Err(match parsed.pclntab {
                Err(source) => SymbolError::Pclntab { path, source },
                Ok(_) => SymbolError::NoFunctions {
                    path,
                    sources: sources.to_vec(),
                },
            });
        }
        merge_by_name(&mut functions, sources);
        let (pcln_version, text_start, pclntab_error) = match parsed.pclntab {
            Ok(Some((version, text_start))) => (Some(version), Some(text_start), None),
            Ok(None) => (None, None, None),
            Err(error) => (None, None, Some(error)),
        };
        Ok(Self {
            path,
            data,
            architecture: parsed.architecture,
            functions,
            pcln_version,
            text_start,
            pclntab_error,
            build_info,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The format of the Go function table, when the binary has one that was read.
    pub fn pcln_version(&self) -> Option<PclnVersion> {
        self.pcln_version
    }

    /// Where the Go function table's text start came from, when the table was read.
    pub fn text_start(&self) -> Option<TextStart> {
        self.text_start
    }

    /// The Go version and main module the binary was built with, when it says.
    pub fn build_info(&self) -> Option<&BuildInfo> {
        self.build_info.as_ref()
    }

    /// Why the Go function table was not used although other sources were.
    pub fn pclntab_error(&self) -> Option<&PclntabError> {
        self.pclntab_error.as_ref()
    }

    /// Every function, sorted by name.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The function of that exact name.
    pub fn lookup(&self, name: &str) -> Option<&Function> {
        self.functions
            .binary_search_by(|f| f.name.as_str().cmp(name))
            .ok()
            .and_then(|index| self.functions.get(index))
    }

    /// The functions whose name starts with `prefix`, sorted by name.
    pub fn with_prefix(&self, prefix: &str) -> &[Function] {
        let start = self.functions.partition_point(|f| f.name.as_str() < prefix);
        let len = self.functions[start..].partition_point(|f| f.name.starts_with(prefix));
        &self.functions[start..start + len]
    }

    /// A binary made of these functions only, with no code, for tests of name lookups.
    #[cfg(test)]
    pub(crate) fn from_functions(mut functions: Vec<Function>) -> Self {
        merge_by_name(&mut functions, &SymbolSource::ALL);
        Self {
            path: PathBuf::from("test"),
            data: Bytes::Owned(Vec::new()),
            architecture: Architecture::X86_64,
            functions,
            pcln_version: None,
            text_start: None,
            pclntab_error: None,
            build_info: None,
        }
    }

    /// The machine code of a function of this binary.
    pub fn code(&self, function: &Function) -> Result<&[u8], SymbolError> {
        let not_in_file = || SymbolError::CodeNotInFile {
            name: function.name.clone(),
            address: function.address,
            size: function.size,
        };
        self.data
            .read_at(function.file_offset, function.size)
            .ok_or_else(not_in_file)
    }
}

/// What one pass over the ELF file found.
struct ParsedFunctions {
    architecture: Architecture,
    functions: Vec<Function>,
    /// The table's version (`None` when absent or not asked for), or why it failed.
    pclntab: Result<Option<(PclnVersion, TextStart)>, PclntabError>,
}

/// Where the start of Go's text (the base of every function offset in the Go function table)
/// was read from, and what confirmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextStart {
    /// The table's own header (Go 1.18 to 1.25).
    Header,
    /// Go 1.26+: `moduledata.text` in `.go.module`, its `pcHeader` and `minpc` cross-checked.
    ModuleData,
    /// The dynamic relocation of the header word (position-independent binaries).
    Relocation,
    /// The `runtime.text` symbol.
    Symbol,
}

impl TextStart {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Header => "pclntab header",
            Self::ModuleData => ".go.module moduledata (pcHeader and minpc cross-checked)",
            Self::Relocation => "relocated pclntab header",
            Self::Symbol => "runtime.text symbol",
        }
    }
}

fn read_functions<'data, R: object::ReadRef<'data>>(
    data: R,
    sources: &[SymbolSource],
) -> Result<ParsedFunctions, object::Error> {
    let file = ElfFile64::<Endianness, R>::parse(data)?;
    let segments = LoadSegments::from_elf(file.elf_header(), file.endian(), data)?;
    let mut functions = Vec::new();
    let mut pclntab = Ok(None);
    for &source in sources {
        match source {
            SymbolSource::Symtab => {
                elf_functions(file.symbols(), source, &segments, &mut functions)
            }
            SymbolSource::Dynsym => {
                elf_functions(file.dynamic_symbols(), source, &segments, &mut functions);
            }
            SymbolSource::Gopclntab => {
                pclntab = pclntab_functions(&file, &segments, &mut functions);
            }
        }
    }
    Ok(ParsedFunctions {
        architecture: file.architecture(),
        functions,
        pclntab,
    })
}

/// Appends the defined, file-backed function symbols of one ELF symbol table.
fn elf_functions<'data, S: ObjectSymbol<'data>>(
    symbols: impl Iterator<Item = S>,
    source: SymbolSource,
    segments: &LoadSegments,
    out: &mut Vec<Function>,
) {
    for symbol in symbols {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let Some(file_offset) = segments.file_offset(symbol.address()) else {
            continue;
        };
        out.push(Function {
            name: name.to_owned(),
            address: symbol.address(),
            size: symbol.size(),
            file_offset,
            source,
        });
    }
}

/// Appends the functions of the Go function table, if the binary has one.
fn pclntab_functions<'data, R: object::ReadRef<'data>>(
    file: &ElfFile64<'data, Endianness, R>,
    segments: &LoadSegments,
    out: &mut Vec<Function>,
) -> Result<Option<(PclnVersion, TextStart)>, PclntabError> {
    let Some(section) = PCLNTAB_SECTIONS
        .iter()
        .find_map(|name| file.section_by_name(name))
    else {
        return Ok(None);
    };
    let Ok(table) = section.data() else {
        return Ok(None);
    };
    let (fallback, text_start) = if gopclntab::header_text_start(table)? == Some(0) {
        let (text, from) = text_start_of_zero_header(file, section.address(), table)?;
        (Some(text), from)
    } else {
        (None, TextStart::Header)
    };
    let decoded = gopclntab::decode(table, fallback)?;
    for function in decoded.functions {
        let Some(file_offset) = segments.file_offset(function.entry) else {
            continue;
        };
        out.push(Function {
            size: function.end - function.entry,
            name: function.name,
            address: function.entry,
            file_offset,
            source: SymbolSource::Gopclntab,
        });
    }
    Ok(Some((decoded.version, text_start)))
}

/// The text start of a table whose header word is 0: Go 1.26+ leaves it to the moduledata in
/// `.go.module`, and a position-independent binary's loader fills it in through a relocation.
/// Never the start of `.text`: an externally linked binary has C code before Go's text, and
/// every address would be off.
fn text_start_of_zero_header<'data, R: object::ReadRef<'data>>(
    file: &ElfFile64<'data, Endianness, R>,
    table_address: u64,
    table: &[u8],
) -> Result<(u64, TextStart), PclntabError> {
    let from_symbol = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok("runtime.text"))
        .map(|s| s.address());
    if let Some(text) = module_text_start(file, table_address, table)? {
        if let Some(symbol) = from_symbol.filter(|&symbol| symbol != text) {
            return Err(PclntabError::TextStartMismatch {
                text,
                check: "the runtime.text symbol",
                found: symbol,
                expected: text,
            });
        }
        return Ok((text, TextStart::ModuleData));
    }
    let ptr_size = u64::from(*table.get(7).ok_or(PclntabError::NoTextStart)?);
    relocated_word(file, table_address + 8 + 2 * ptr_size)
        .map(|text| (text, TextStart::Relocation))
        .or(from_symbol.map(|text| (text, TextStart::Symbol)))
        .ok_or(PclntabError::NoTextStart)
}

/// Word indices in Go's `runtime.moduledata` (Go 1.26 and, unchanged, since 1.20): the
/// `pcHeader` pointer, `minpc` and `text`.
const MODULEDATA_PCHEADER: u64 = 0;
const MODULEDATA_MINPC: u64 = 20;
const MODULEDATA_TEXT: u64 = 22;

/// `moduledata.text` from the `.go.module` section (Go 1.26+), when the binary has one. It is
/// taken only when the moduledata is this table's (its `pcHeader` is the table's address) and
/// `minpc` is the text start plus the first function's offset; otherwise an error says which
/// check failed.
fn module_text_start<'data, R: object::ReadRef<'data>>(
    file: &ElfFile64<'data, Endianness, R>,
    table_address: u64,
    table: &[u8],
) -> Result<Option<u64>, PclntabError> {
    let Some(module) = file.section_by_name(".go.module") else {
        return Ok(None);
    };
    let Ok(words) = module.data() else {
        return Ok(None);
    };
    let word = |index: u64| -> Option<u64> {
        let at = usize::try_from(index * 8).ok()?;
        let stored = u64::from_le_bytes(words.get(at..at + 8)?.try_into().ok()?);
        if stored != 0 {
            return Some(stored);
        }
        relocated_word(file, module.address() + index * 8)
    };
    let (Some(pc_header), Some(minpc), Some(text)) = (
        word(MODULEDATA_PCHEADER),
        word(MODULEDATA_MINPC),
        word(MODULEDATA_TEXT),
    ) else {
        return Err(PclntabError::NoTextStart);
    };
    if pc_header != table_address {
        return Err(PclntabError::TextStartMismatch {
            text,
            check: "moduledata.pcHeader",
            found: pc_header,
            expected: table_address,
        });
    }
    if let Some(first) = gopclntab::first_entry_offset(table)? {
        let expected = text.saturating_add(u64::from(first));
        if minpc != expected {
            return Err(PclntabError::TextStartMismatch {
                text,
                check: "moduledata.minpc",
                found: minpc,
                expected,
            });
        }
    }
    Ok(Some(text))
}

/// The addend of the dynamic relocation of the word at `address`, when it has one (the value a
/// position-independent binary's loader writes there).
fn relocated_word<'data, R: object::ReadRef<'data>>(
    file: &ElfFile64<'data, Endianness, R>,
    address: u64,
) -> Option<u64> {
    file.dynamic_relocations().and_then(|mut relocations| {
        relocations
            .find(|(offset, _)| *offset == address)
            .and_then(|(_, relocation)| u64::try_from(relocation.addend()).ok())
            .filter(|&addend| addend != 0)
    })
}

/// Sorts by name and keeps one function per name: the one from the earliest source in
/// `sources` (taking a later source's size when the kept symbol has none).
fn merge_by_name(functions: &mut Vec<Function>, sources: &[SymbolSource]) {
    let rank = |source: SymbolSource| sources.iter().position(|&s| s == source);
    functions.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| rank(a.source).cmp(&rank(b.source)))
    });
    functions.dedup_by(|later, kept| {
        if later.name != kept.name {
            return false;
        }
        if kept.size == 0 && later.address == kept.address {
            kept.size = later.size;
        }
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test executable itself: a Rust binary with a `.symtab` and no Go table.
    fn own_executable() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    /// A binary truncated in place while it is open (`cp new old` does that) makes reads fail;
    /// a mapped file would have killed the agent with SIGBUS instead.
    #[test]
    fn a_binary_truncated_while_open_fails_reads_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("binary");
        std::fs::copy(own_executable(), &copy).unwrap();
        let binary = GoBinary::open(&copy).unwrap();
        let main = binary.lookup("main").unwrap().clone();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(0)
            .unwrap();
        let err = binary.code(&main).unwrap_err();
        assert!(matches!(err, SymbolError::CodeNotInFile { .. }), "{err:?}");
    }

    #[test]
    fn reads_the_static_symbol_table_with_file_offsets() {
        let path = own_executable();
        let binary = GoBinary::open(&path).unwrap();
        assert_eq!(binary.pcln_version(), None);
        assert!(binary.pclntab_error().is_none());
        let main = binary.lookup("main").unwrap();
        assert_eq!(main.source, SymbolSource::Symtab);
        assert!(main.size > 0);

        // The offset is the one the section headers give too.
        let data = std::fs::read(&path).unwrap();
        let file = ElfFile64::<Endianness>::parse(&*data).unwrap();
        let text = file.section_by_name(".text").unwrap();
        let (text_offset, _) = text.file_range().unwrap();
        assert_eq!(
            main.file_offset,
            main.address - text.address() + text_offset
        );
        assert_eq!(binary.code(main).unwrap().len() as u64, main.size);
    }

    #[test]
    fn prefix_lookups_return_a_sorted_range() {
        let binary = GoBinary::open(own_executable()).unwrap();
        let all = binary.functions();
        assert!(
            all.windows(2).all(|w| w[0].name < w[1].name),
            "sorted, unique"
        );
        let mains = binary.with_prefix("main");
        assert!(!mains.is_empty());
        assert!(mains.iter().all(|f| f.name.starts_with("main")));
        assert!(binary.with_prefix("no such prefix \u{1}").is_empty());
    }

    #[test]
    fn a_binary_without_the_asked_source_has_no_functions() {
        let err = GoBinary::open_with(own_executable(), &[SymbolSource::Gopclntab]).unwrap_err();
        assert!(matches!(err, SymbolError::NoFunctions { .. }), "{err:?}");
        let err = GoBinary::open("/nonexistent/containerd").unwrap_err();
        assert!(matches!(err, SymbolError::Read { .. }), "{err:?}");
        let err =
            GoBinary::from_bytes("junk", b"not an elf".to_vec(), &SymbolSource::ALL).unwrap_err();
        assert!(matches!(err, SymbolError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn earlier_sources_win_and_lend_their_size() {
        let f = |name: &str, address, size, source| Function {
            name: name.into(),
            address,
            size,
            file_offset: address,
            source,
        };
        let mut functions = vec![
            f("b", 0x20, 0x20, SymbolSource::Gopclntab),
            f("a", 0x10, 0, SymbolSource::Dynsym),
            f("a", 0x10, 0x10, SymbolSource::Gopclntab),
            f("b", 0x20, 0x18, SymbolSource::Dynsym),
        ];
        merge_by_name(&mut functions, &SymbolSource::ALL);
        assert_eq!(
            functions,
            vec![
                f("a", 0x10, 0x10, SymbolSource::Dynsym),
                f("b", 0x20, 0x18, SymbolSource::Dynsym),
            ]
        );
    }
}
