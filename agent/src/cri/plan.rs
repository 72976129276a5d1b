//! Turns a runtime binary into the uprobes to attach: its CRI handlers' entries and RETs as
//! file offsets, and the field offsets of its CRI types.

use std::path::{Path, PathBuf};

use crate::ebpf::HandlerProbe;

use super::{
    BuildInfo, CriMethod, CriOffsets, DisasmError, Generator, OffsetError, RuntimeKind,
    SymbolError, TextStart, cri_types, resolve, ret_offsets, symbols::GoBinary,
};

/// What to attach to one runtime binary.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    pub binary: PathBuf,
    pub runtime: RuntimeKind,
    pub generator: Generator,
    pub offsets: CriOffsets,
    pub handlers: Vec<HandlerProbe>,
    /// Methods the binary has no handler for.
    pub missing: Vec<CriMethod>,
    /// The Go version and module that built the binary, when it says.
    pub build: Option<BuildInfo>,
    /// Where the function table's text start came from (`None`: ELF symbols only).
    pub text_start: Option<TextStart>,
}

impl ProbePlan {
    /// The runtime's version and Go release as the binary tells them, e.g.
    /// `v2.4.2 built with go1.26.8`.
    pub fn built_with(&self) -> String {
        match &self.build {
            Some(build) => format!(
                "{} built with {}",
                build.module_version().unwrap_or("unknown version"),
                build.go_version
            ),
            None => "no Go build information".to_owned(),
        }
    }

    /// Number of uprobes the plan attaches (entries of traced methods, and every RET).
    pub fn probe_count(&self) -> usize {
        self.handlers
            .iter()
            .map(|h| h.ret_offsets.len() + usize::from(h.method.is_traced()))
            .sum()
    }
}

/// Why a binary cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read the symbols of {path}")]
    Symbols {
        path: PathBuf,
        #[source]
        source: SymbolError,
    },
    #[error("{path} has none of the known CRI handler symbols (containerd 1.6/1.7/2.x, CRI-O)")]
    NotARuntime { path: PathBuf },
    #[error("the Go function table of {path} was not used: {reason}")]
    UnverifiedTable { path: PathBuf, reason: String },
    #[error("cannot read the CRI field offsets of {path}")]
    Offsets {
        path: PathBuf,
        #[source]
        source: OffsetError,
    },
    #[error("cannot find the RET instructions of {function}")]
    Returns {
        function: String,
        #[source]
        source: DisasmError,
    },
    #[error("{function} has no RET instruction to put its exit probe on")]
    NoReturn { function: String },
    #[error(
        "{function} at {address:#x} does not start with Go's stack check (first bytes {bytes}): \
         its address is not a verified function entry, so no uprobe is placed on this binary"
    )]
    NotAnEntry {
        function: String,
        address: u64,
        bytes: String,
    },
}

impl PlanError {
    /// A short, fixed label for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Symbols { .. } => "symbols",
            Self::NotARuntime { .. } => "not_a_runtime",
            Self::UnverifiedTable { .. } => "unverified_function_table",
            Self::Offsets { .. } => "field_offsets",
            Self::Returns { .. } => "returns",
            Self::NoReturn { .. } => "no_return",
            Self::NotAnEntry { .. } => "not_a_function_entry",
        }
    }
}

/// Reads the binary and plans its probes. CPU-heavy (tens of MB, disassembly): call it from
/// a blocking task.
pub fn plan(path: &Path) -> Result<ProbePlan, PlanError> {
    let binary = GoBinary::open(path).map_err(|source| PlanError::Symbols {
        path: path.to_owned(),
        source,
    })?;
    let resolved = match (resolve(&binary), binary.pclntab_error()) {
        (Some(resolved), _) => resolved,
        (None, Some(error)) => {
            return Err(PlanError::UnverifiedTable {
                path: path.to_owned(),
                reason: error.to_string(),
            });
        }
        (None, None) => {
            return Err(PlanError::NotARuntime {
                path: path.to_owned(),
            });
        }
    };
    let types = cri_types(&binary).map_err(|source| PlanError::Offsets {
        path: path.to_owned(),
        source,
    })?;
    let mut handlers = Vec::with_capacity(resolved.handlers.len());
    for handler in &resolved.handlers {
        let function = &handler.function;
        verify_entry(&binary, function)?;
        let rets = ret_offsets(&binary, function).map_err(|source| PlanError::Returns {
            function: function.name.clone(),
            source,
        })?;
        if rets.is_empty() {
            return Err(PlanError::NoReturn {
                function: function.name.clone(),
            });
        }
        handlers.push(HandlerProbe {
            method: handler.method,
            entry_offset: function.file_offset,
            ret_offsets: rets.iter().map(|r| r.file_offset).collect(),
        });
    }
    Ok(ProbePlan {
        binary: path.to_owned(),
        runtime: resolved.runtime,
        generator: types.generator,
        offsets: types.offsets,
        handlers,
        missing: resolved.missing,
        build: binary.build_info().cloned(),
        text_start: binary.text_start(),
    })
}

/// Checks that `function`'s address is a Go function entry (see `prologue`).
fn verify_entry(binary: &GoBinary, function: &super::Function) -> Result<(), PlanError> {
    let not_an_entry = || PlanError::NotAnEntry {
        function: function.name.clone(),
        address: function.address,
        bytes: binary
            .code(function)
            .map(|code| {
                code.iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|_| "unreadable".to_owned()),
    };
    let instructions =
        super::disasm::decode_function(binary, function).map_err(|_| not_an_entry())?;
    if super::prologue::starts_with_stack_check(&instructions) {
        Ok(())
    } else {
        Err(not_an_entry())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binaries of the runtime matrix: Debian's containerd, and every binary in the cache
    /// `cargo xtask setup` fills (`NODETRACE_RUNTIMES_DIR`), each of the pinned runtimes
    /// (`NODETRACE_RUNTIMES`) required. (cell name, binary name, path)
    fn matrix_binaries() -> Option<Vec<(String, String, PathBuf)>> {
        let dir = PathBuf::from(std::env::var_os("NODETRACE_RUNTIMES_DIR")?);
        let mut binaries = Vec::new();
        let debian = Path::new("/usr/bin/containerd");
        if debian.exists() {
            binaries.push((
                "debian containerd".to_owned(),
                "containerd".to_owned(),
                debian.to_owned(),
            ));
        }
        let pinned = std::env::var("NODETRACE_RUNTIMES").unwrap_or_default();
        for name in pinned.split_whitespace() {
            assert!(
                dir.join(name).is_dir(),
                "{name} is pinned but not in {} (cargo xtask setup builds it)",
                dir.display()
            );
        }
        let mut cells: Vec<_> = std::fs::read_dir(&dir)
            .expect("the runtimes cache (cargo xtask setup)")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.extension().is_none_or(|e| e != "partial"))
            // The runtimes; the cache also holds the testbed's Kubernetes components.
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    ["containerd-", "cri-o-", "runc-"]
                        .iter()
                        .any(|r| n.starts_with(r))
                })
            })
            .collect();
        cells.sort();
        for cell in cells {
            let cell_name = cell.file_name().unwrap().to_string_lossy().into_owned();
            let mut files: Vec<_> = std::fs::read_dir(&cell).expect("cell").flatten().collect();
            files.sort_by_key(|f| f.file_name());
            for file in files {
                let name = file.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".txt") {
                    binaries.push((cell_name.clone(), name, file.path()));
                }
            }
        }
        Some(binaries)
    }

    /// Every CRI runtime of the matrix (containerd 1.6 from Debian; containerd 1.7, 2.0, 2.2
    /// and 2.4 and CRI-O 1.36 built from the Go module proxy like upstream's releases) gets a
    /// full plan whose every entry passed the stack-check verification and whose every
    /// handler has its RETs; the other Go programs of the matrix (shims, runc) get none. Prints
    /// the matrix table.
    #[test]
    fn every_runtime_of_the_matrix_gets_a_full_verified_plan() {
        let Some(binaries) = matrix_binaries() else {
            eprintln!("skipped: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
            return;
        };
        let mut table = vec![
            "| runtime | version | Go | type generator | uprobes | checks passed |".to_owned(),
            "|---|---|---|---|---|---|".to_owned(),
        ];
        let mut planned = 0;
        for (cell, name, path) in &binaries {
            let what = format!("{cell}/{name}");
            if !matches!(name.as_str(), "containerd" | "crio") {
                let err = plan(path).expect_err(&format!("{what} is not a CRI runtime"));
                assert_eq!(err.reason(), "not_a_runtime", "{what}: {err}");
                continue;
            }
            let plan = plan(path)
                .unwrap_or_else(|e| panic!("{what}: {}", crate::correlate::error_chain(&e)));
            let expected_kind = if name == "crio" {
                "cri-o"
            } else {
                "containerd"
            };
            assert_eq!(plan.runtime.name(), expected_kind, "{what}");
            let newest_api = cell.starts_with("containerd-v2.4") || cell.starts_with("cri-o-");
            let missing_required: Vec<_> =
                plan.missing.iter().filter(|m| !m.is_optional()).collect();
            assert!(
                missing_required.is_empty(),
                "{what}: missing {missing_required:?}"
            );
            if newest_api {
                assert!(
                    plan.missing.is_empty(),
                    "{what}: missing {:?}",
                    plan.missing
                );
            }
            let methods: std::collections::BTreeSet<_> =
                plan.handlers.iter().map(|h| h.method as u32).collect();
            assert_eq!(
                methods.len(),
                CriMethod::ALL.len() - plan.missing.len(),
                "{what}"
            );
            let rets: usize = plan.handlers.iter().map(|h| h.ret_offsets.len()).sum();
            assert!(
                plan.handlers.iter().all(|h| !h.ret_offsets.is_empty()),
                "{what}"
            );
            assert!(
                plan.handlers
                    .iter()
                    .all(|h| h.ret_offsets.iter().all(|r| *r > h.entry_offset)),
                "{what}: a RET before its function's entry"
            );
            let build = plan.build.as_ref().expect("Go build information");
            if !cell.starts_with("debian") {
                let version = cell.rsplit('-').next().expect("a version");
                assert_eq!(build.module_version(), Some(version), "{what}");
            }
            let text_start = plan.text_start.map_or("ELF symbols", |t| t.describe());
            table.push(format!(
                "| {} | {} | {} | {:?} | {} | text start from {text_start}; {} entries start with Go's stack check; {rets} RETs from each function's own code; {} streaming lists |",
                plan.runtime.name(),
                build.module_version().unwrap_or("(Debian build)"),
                build.go_version,
                plan.generator,
                plan.probe_count(),
                plan.handlers.len(),
                if plan.missing.is_empty() { "with" } else { "without" },
            ));
            planned += 1;
        }
        assert!(planned > 1, "no runtime planned: {binaries:?}");
        eprintln!("{}", table.join("\n"));
    }

    #[test]
    fn the_debian_containerd_gets_a_full_plan() {
        let path = Path::new("/usr/bin/containerd");
        if !path.exists() {
            eprintln!("skipped: /usr/bin/containerd is not installed");
            return;
        }
        let plan = plan(path).expect("plan");
        assert_eq!(plan.runtime.name(), "containerd");
        assert!(
            plan.missing.iter().all(|m| m.is_optional()),
            "missing {:?}",
            plan.missing
        );
        assert_eq!(
            plan.handlers.len(),
            CriMethod::ALL.len() - plan.missing.len()
        );
        assert!(plan.handlers.iter().all(|h| !h.ret_offsets.is_empty()));
        let run = plan
            .handlers
            .iter()
            .find(|h| h.method == CriMethod::RunPodSandbox)
            .expect("RunPodSandbox");
        assert!(run.ret_offsets.iter().all(|r| *r > run.entry_offset));
        assert!(plan.probe_count() > plan.handlers.len());
    }

    #[test]
    fn binaries_without_cri_handlers_are_refused_clearly() {
        // A Go program of the runtime's family, but no CRI server.
        let shim = Path::new("/usr/bin/containerd-shim-runc-v2");
        if shim.exists() {
            let err = plan(shim).expect_err("the shim is not a CRI runtime");
            let text = err.to_string();
            assert!(
                text.contains("none of the known CRI handler symbols"),
                "{text}"
            );
            assert_eq!(err.reason(), "not_a_runtime");
        }
        // Not a Go program at all.
        let err = plan(Path::new("/bin/true")).expect_err("not a runtime");
        assert!(err.to_string().contains("/bin/true"), "{err}");
    }
}
