//! Turns a runtime binary into the uprobes to attach: its CRI handlers' entries and RETs as
//! file offsets, and the field offsets of its CRI types.

use std::path::{Path, PathBuf};

use crate::ebpf::HandlerProbe;

use super::{
    CriMethod, CriOffsets, DisasmError, Generator, OffsetError, RuntimeKind, SymbolError,
    cri_types, resolve, ret_offsets, symbols::GoBinary,
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
}

impl ProbePlan {
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

    /// Every runtime binary `cargo xtask setup` built from the Go module proxy (release-like:
    /// stripped, externally linked where upstream's is) gets a full plan whose entries all
    /// passed the stack-check verification. `NODETRACE_RUNTIMES_DIR` names the cache.
    #[test]
    fn every_runtime_built_from_the_go_module_proxy_gets_a_full_verified_plan() {
        let Some(dir) = std::env::var_os("NODETRACE_RUNTIMES_DIR") else {
            eprintln!("skipped: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
            return;
        };
        let entries = std::fs::read_dir(&dir).expect("the runtimes cache (cargo xtask setup)");
        let mut planned = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") || !name.starts_with("containerd-") {
                continue;
            }
            let binary = entry.path().join("containerd");
            let plan = plan(&binary)
                .unwrap_or_else(|e| panic!("{name}: {}", crate::correlate::error_chain(&e)));
            assert_eq!(plan.runtime.name(), "containerd", "{name}");
            assert!(
                plan.missing.is_empty(),
                "{name}: missing {:?}",
                plan.missing
            );
            assert_eq!(plan.handlers.len(), CriMethod::ALL.len(), "{name}");
            assert!(
                plan.handlers.iter().all(|h| !h.ret_offsets.is_empty()),
                "{name}"
            );
            planned.push(format!(
                "{name}: {:?}, {} uprobes",
                plan.generator,
                plan.probe_count()
            ));
        }
        assert!(
            !planned.is_empty(),
            "no runtime in {}",
            dir.to_string_lossy()
        );
        eprintln!("{}", planned.join("\n"));
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
        assert!(plan.missing.is_empty(), "missing {:?}", plan.missing);
        assert_eq!(plan.handlers.len(), CriMethod::ALL.len());
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
