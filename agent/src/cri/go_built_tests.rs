//! Function addresses on Go binaries built here by the machine's Go toolchain, linked every way
//! a runtime's release is: internally and externally, position-dependent and not, stripped and
//! not. Go 1.26 writes 0 as the table's text start; an externally linked binary has C code
//! before Go's text, so only the moduledata's text start gives the right addresses. Skipped,
//! saying so, when `go` is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use object::{Object as _, ObjectSymbol as _};

use super::symbols::{GoBinary, SymbolSource};

const PROGRAM: &str = r#"package main

import "fmt"

type Service struct{ n int }

// Not a leaf: Go leaves out the stack check of small leaf functions, never of a handler.
//
//go:noinline
func (s *Service) RunPodSandbox(x int) string { return fmt.Sprint(s.n + x) }

func main() {
	s := &Service{n: 1}
	fmt.Println(s.RunPodSandbox(2))
}
"#;

/// The ways the program is built: (name, `go build` arguments).
const BUILDS: [(&str, &[&str]); 5] = [
    ("internal", &[]),
    ("external", &["-ldflags=-linkmode=external"]),
    ("external-stripped", &["-ldflags=-s -w -linkmode=external"]),
    (
        "pie-external",
        &["-buildmode=pie", "-ldflags=-linkmode=external"],
    ),
    (
        "pie-external-stripped",
        &["-buildmode=pie", "-ldflags=-s -w -linkmode=external"],
    ),
];

/// The directory the programs were built in (removed at exit), and each build's path by name.
type Programs = (tempfile::TempDir, Vec<(&'static str, PathBuf)>);

/// The programs, built once per test process; `None` (and a message) without a Go toolchain.
fn programs() -> Option<&'static Programs> {
    static PROGRAMS: OnceLock<Option<Programs>> = OnceLock::new();
    PROGRAMS
        .get_or_init(|| {
            if Command::new("go").arg("version").output().is_err() {
                // `cargo xtask test` requires it: the machine kind has Go.
                assert!(
                    std::env::var_os("NODETRACE_REQUIRE_GO").is_none(),
                    "no Go toolchain (`go`) on PATH, and NODETRACE_REQUIRE_GO is set"
                );
                eprintln!("skipped: no Go toolchain (`go`) on PATH");
                return None;
            }
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("main.go"), PROGRAM).expect("main.go");
            std::fs::write(
                dir.path().join("go.mod"),
                "module example.com/probe\n\ngo 1.22\n",
            )
            .expect("go.mod");
            let built = BUILDS
                .iter()
                .map(|(name, args)| {
                    let out = dir.path().join(name);
                    let status = Command::new("go")
                        .arg("build")
                        .args(*args)
                        .arg("-o")
                        .arg(&out)
                        .arg(".")
                        .current_dir(dir.path())
                        .env("GOFLAGS", "-buildvcs=false")
                        .status()
                        .expect("run go build");
                    assert!(status.success(), "go build {args:?}");
                    (*name, out)
                })
                .collect();
            Some((dir, built))
        })
        .as_ref()
}

fn program(name: &str) -> Option<&'static Path> {
    programs()?
        .1
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| path.as_path())
}

/// Go function symbols of a binary's `.symtab`: name → address.
fn symtab(path: &Path) -> Vec<(String, u64)> {
    let data = std::fs::read(path).expect("read binary");
    let file = object::File::parse(&*data).expect("ELF");
    file.symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.name().ok()?.to_owned(), s.address())))
        .filter(|(name, _)| name.contains('.') && !name.starts_with('_'))
        .collect()
}

#[test]
fn go_table_addresses_equal_the_symbol_table_however_the_binary_is_linked() {
    for name in ["internal", "external", "pie-external"] {
        let Some(path) = program(name) else { return };
        let from_table =
            GoBinary::open_with(path, &[SymbolSource::Gopclntab]).expect("Go function table");
        let (mut matched, mut wrong) = (0, Vec::new());
        let symbols = symtab(path);
        // An assembly function and its ABI wrapper share a name in the Go table (the symbol
        // table tells them apart with `.abi0`): those names are not compared.
        let abi0: std::collections::HashSet<&str> = symbols
            .iter()
            .filter_map(|(name, _)| name.strip_suffix(".abi0"))
            .collect();
        for (symbol, address) in symbols
            .iter()
            .filter(|(name, _)| !abi0.contains(name.as_str()))
        {
            let (symbol, address) = (symbol.clone(), *address);
            if let Some(function) = from_table.lookup(&symbol) {
                matched += 1;
                if function.address != address {
                    wrong.push((symbol, function.address, address));
                }
            }
        }
        assert!(matched > 1000, "{name}: only {matched} functions compared");
        assert!(
            wrong.is_empty(),
            "{name}: {} wrong, e.g. {:x?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
    }
}

#[test]
fn a_stripped_binary_gets_the_addresses_of_its_unstripped_twin() {
    for (stripped, twin) in [
        ("external-stripped", "external"),
        ("pie-external-stripped", "pie-external"),
    ] {
        let (Some(stripped), Some(twin)) = (program(stripped), program(twin)) else {
            return;
        };
        let binary = GoBinary::open(stripped).expect("stripped binary");
        let method = "main.(*Service).RunPodSandbox";
        let found = binary
            .lookup(method)
            .expect("the method, from the Go table");
        let expected = symtab(twin)
            .into_iter()
            .find(|(name, _)| name == method)
            .map(|(_, address)| address)
            .expect("the method in the twin's symbol table");
        assert_eq!(
            found.address,
            expected,
            "{method} in {}",
            stripped.display()
        );
        let instructions = super::disasm::decode_function(&binary, found).expect("its code");
        assert!(
            super::prologue::starts_with_stack_check(&instructions),
            "{method} starts with Go's stack check"
        );
    }
}

/// A moduledata whose text start disagrees with the table (here: moved by 0x100, as falling
/// back to `.text` would) is refused: no addresses, rather than wrong ones.
#[test]
fn a_text_start_that_fails_its_checks_gives_no_addresses() {
    let Some(path) = program("external-stripped") else {
        return;
    };
    let mut data = std::fs::read(path).expect("read binary");
    let (offset, text) = {
        let file = object::File::parse(&*data).expect("ELF");
        let module = object::Object::section_by_name(&file, ".go.module")
            .expect("Go 1.26+ puts moduledata in .go.module");
        let (offset, _) = object::ObjectSection::file_range(&module).expect("in the file");
        let at = usize::try_from(offset).expect("offset") + 22 * 8;
        (
            at,
            u64::from_le_bytes(data[at..at + 8].try_into().expect("word")),
        )
    };
    data[offset..offset + 8].copy_from_slice(&(text - 0x100).to_le_bytes());
    let corrupted = data.clone();
    let binary = GoBinary::from_bytes(path, data, &SymbolSource::ALL)
        .map_err(|e| crate::correlate::error_chain(&e))
        .expect("the cgo exports in .dynsym still give a binary");
    let error = binary.pclntab_error().map(|e| e.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("moduledata.minpc")),
        "{error:?}"
    );
    assert!(
        binary.lookup("main.(*Service).RunPodSandbox").is_none(),
        "no Go function address from a table that failed its check"
    );
    // Planned, the binary is refused with the reason the metric counts.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("runtime");
    std::fs::write(&copy, &corrupted).expect("write the copy");
    let err = super::plan::plan(&copy).expect_err("refused");
    assert_eq!(err.reason(), "unverified_function_table", "{err}");
}
