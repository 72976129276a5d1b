//! Plans the kubelet uprobes: the pod-sync functions of the kubelet version (from the
//! binary's pclntab), each entry verified as a Go function entry, each RET found in the
//! function's own code, the argument registers of the version's signatures checked against the
//! registers the function's stack-growth path saves, and the `v1.Pod` field offsets read from
//! the binary's own `(*Pod).GetUID`, `GetName` and `GetNamespace`.

use std::path::{Path, PathBuf};

use iced_x86::{Code, FlowControl, Instruction, Mnemonic, OpKind, Register};
use nodetrace_common::{
    CRI_OFFSET_UNKNOWN, KubeletFn, KubeletOffsets, kubelet_cookie as ck, kubelet_reg as reg,
};
use thiserror::Error;

use crate::{
    cri::{
        BuildInfo, Function, GoBinary, SymbolError, disasm, getter, prologue, returns::ret_offsets,
    },
    ebpf::KubeletProbe,
};

/// The probes of one kubelet binary.
#[derive(Clone, Debug)]
pub struct KubeletPlan {
    pub binary: PathBuf,
    /// e.g. `v1.37.2`.
    pub version: String,
    pub offsets: KubeletOffsets,
    pub probes: Vec<KubeletProbe>,
    pub build: Option<BuildInfo>,
}

impl KubeletPlan {
    pub fn probe_count(&self) -> usize {
        self.probes.iter().map(|p| 1 + p.ret_offsets.len()).sum()
    }
}

/// Why a kubelet binary gets no probes.
#[derive(Debug, Error)]
pub enum KubeletPlanError {
    #[error("cannot read {path} as a Go binary")]
    Symbols {
        path: PathBuf,
        #[source]
        source: SymbolError,
    },
    #[error("{path} is not a kubelet (its build information names no k8s.io/kubernetes release)")]
    NotAKubelet { path: PathBuf },
    #[error(
        "kubelet {version} is not one whose function signatures nodetrace knows (1.37): no \
         kubelet spans; CRI and runtime tracing go on"
    )]
    UnknownVersion { version: String },
    #[error("{function} is not in the binary")]
    Missing { function: &'static str },
    #[error("{function} at {address:#x} does not begin like a Go function entry")]
    NotAnEntry { function: String, address: u64 },
    #[error("{function} has no RET instruction")]
    NoReturn { function: String },
    #[error(
        "{function} saves {found:?} when its stack grows, not the argument registers \
         {expected:?} of its 1.37 signature: the signature changed"
    )]
    Signature {
        function: String,
        expected: Vec<Register>,
        found: Vec<Register>,
    },
    #[error("cannot read the v1.Pod field offsets from {getter}")]
    Offsets { getter: &'static str },
    #[error("cannot disassemble {function}")]
    Disasm {
        function: String,
        #[source]
        source: disasm::DisasmError,
    },
}

/// One probed function of a kubelet version: its symbol, where the pod (and a container name
/// or an image) is at its entry, where its error is at its RETs, and the registers its
/// stack-growth path saves (its register arguments).
struct Signature {
    function: KubeletFn,
    symbol: &'static str,
    pod: u64,
    extra: Extra,
    error: u64,
    saved: &'static [Register],
}

enum Extra {
    None,
    /// A string argument in (pointer, length) registers.
    String(u64, u64),
    /// A register holding a pointer to a pointer to a struct that begins with a string.
    Deref(u64),
}

use Register::{R8, R9, R10, R11, RAX, RBX, RCX, RDI, RSI};

/// Kubernetes 1.37 (checked on v1.37.2 built with go1.26.8: docs/kubelet.md).
const SIGNATURES_1_37: [Signature; 8] = [
    Signature {
        function: KubeletFn::SyncPod,
        symbol: "k8s.io/kubernetes/pkg/kubelet.(*Kubelet).SyncPod",
        pod: reg::RSI,
        extra: Extra::None,
        error: reg::RCX,
        saved: &[RAX, RBX, RCX, RDI, RSI, R8, R9],
    },
    Signature {
        function: KubeletFn::SyncTerminatingPod,
        symbol: "k8s.io/kubernetes/pkg/kubelet.(*Kubelet).SyncTerminatingPod",
        pod: reg::RDI,
        extra: Extra::None,
        error: reg::RAX,
        saved: &[RAX, RBX, RCX, RDI, RSI, R8, R9],
    },
    Signature {
        function: KubeletFn::SyncTerminatedPod,
        symbol: "k8s.io/kubernetes/pkg/kubelet.(*Kubelet).SyncTerminatedPod",
        pod: reg::RDI,
        extra: Extra::None,
        error: reg::RAX,
        saved: &[RAX, RBX, RCX, RDI, RSI],
    },
    Signature {
        function: KubeletFn::WaitForVolumes,
        symbol: "k8s.io/kubernetes/pkg/kubelet/volumemanager.(*volumeManager).WaitForAttachAndMount",
        pod: reg::RDI,
        extra: Extra::None,
        error: reg::RAX,
        saved: &[RAX, RBX, RCX, RDI],
    },
    Signature {
        function: KubeletFn::RuntimeSyncPod,
        symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).SyncPod",
        pod: reg::RDI,
        extra: Extra::None,
        // PodSyncResult{SyncResults []*SyncResult; SyncError error}: RAX..RCX, then RDI.
        error: reg::RDI,
        saved: &[RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11],
    },
    Signature {
        function: KubeletFn::CreatePodSandbox,
        symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).createPodSandbox",
        pod: reg::RDI,
        extra: Extra::None,
        // (sandboxID, message string, err error)
        error: reg::RSI,
        saved: &[RAX, RBX, RCX, RDI, RSI],
    },
    Signature {
        function: KubeletFn::StartContainer,
        symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).startContainer",
        pod: reg::R10,
        // spec *startSpec: its first field is the *v1.Container, whose first is Name.
        extra: Extra::Deref(reg::R9),
        error: reg::RCX,
        saved: &[RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11],
    },
    Signature {
        function: KubeletFn::EnsureImageExists,
        symbol: "k8s.io/kubernetes/pkg/kubelet/images.(*imageManager).EnsureImageExists",
        pod: reg::RSI,
        extra: Extra::String(reg::R8, reg::R9),
        // (imageRef, message string, err error)
        error: reg::RSI,
        saved: &[RAX, RBX, RCX, RDI, RSI, R8, R9, R10],
    },
];

/// The signatures of a kubelet release (`v1.37.2` → 1.37's).
fn signatures(version: &str) -> Option<&'static [Signature]> {
    let mut parts = version.trim_start_matches('v').split('.');
    match (parts.next()?, parts.next()?) {
        ("1", "37") => Some(&SIGNATURES_1_37),
        _ => None,
    }
}

/// Reads the kubelet binary at `path` and plans its probes. CPU-heavy: a blocking task.
pub fn plan(path: &Path) -> Result<KubeletPlan, KubeletPlanError> {
    let binary = GoBinary::open(path).map_err(|source| KubeletPlanError::Symbols {
        path: path.to_owned(),
        source,
    })?;
    let version =
        kubelet_version(binary.build_info()).ok_or_else(|| KubeletPlanError::NotAKubelet {
            path: path.to_owned(),
        })?;
    let table = signatures(&version).ok_or_else(|| KubeletPlanError::UnknownVersion {
        version: version.clone(),
    })?;
    let offsets = pod_offsets(&binary)?;
    let mut probes = Vec::with_capacity(table.len());
    for signature in table {
        let function = binary
            .lookup(signature.symbol)
            .ok_or(KubeletPlanError::Missing {
                function: signature.symbol,
            })?;
        let instructions = disasm::decode_function(&binary, function).map_err(|source| {
            KubeletPlanError::Disasm {
                function: function.name.clone(),
                source,
            }
        })?;
        if !prologue::starts_with_stack_check(&instructions) {
            return Err(KubeletPlanError::NotAnEntry {
                function: function.name.clone(),
                address: function.address,
            });
        }
        check_saved_registers(function, &instructions, signature.saved)?;
        let rets = ret_offsets(&binary, function).map_err(|source| KubeletPlanError::Disasm {
            function: function.name.clone(),
            source,
        })?;
        if rets.is_empty() {
            return Err(KubeletPlanError::NoReturn {
                function: function.name.clone(),
            });
        }
        probes.push(KubeletProbe {
            function: signature.function,
            entry_offset: function.file_offset,
            ret_offsets: rets.iter().map(|r| r.file_offset).collect(),
            entry_cookie: entry_cookie(signature),
            return_cookie: signature.function as u64 | (signature.error << ck::ERROR_REG_SHIFT),
        });
    }
    Ok(KubeletPlan {
        binary: path.to_owned(),
        version,
        offsets,
        probes,
        build: binary.build_info().cloned(),
    })
}

fn entry_cookie(signature: &Signature) -> u64 {
    let mut cookie = signature.function as u64 | (signature.pod << ck::POD_REG_SHIFT);
    match signature.extra {
        Extra::None => {}
        Extra::String(ptr, len) => {
            cookie |= (ptr << ck::EXTRA_PTR_SHIFT) | (len << ck::EXTRA_LEN_SHIFT);
        }
        Extra::Deref(ptr) => cookie |= (ptr << ck::EXTRA_PTR_SHIFT) | ck::EXTRA_DEREF,
    }
    cookie
}

/// The Kubernetes release a kubelet binary was built from: its main module's version when
/// built by Kubernetes' own build, or the `k8s.io/kubernetes` dependency's when a wrapper
/// module built it.
fn kubelet_version(build: Option<&BuildInfo>) -> Option<String> {
    let build = build?;
    let (module, version) = build.module.as_ref()?;
    let is_kubelet = build
        .main_package
        .as_deref()
        .is_some_and(|p| p.ends_with("/cmd/kubelet"));
    (is_kubelet && module == "k8s.io/kubernetes").then(|| version.clone())
}

/// `v1.Pod` field offsets from the binary's promoted ObjectMeta getters on `*v1.Pod`.
fn pod_offsets(binary: &GoBinary) -> Result<KubeletOffsets, KubeletPlanError> {
    let read = |getter: &'static str| -> Result<u32, KubeletPlanError> {
        let fail = || KubeletPlanError::Offsets { getter };
        let function = binary.lookup(getter).ok_or_else(fail)?;
        let instructions = disasm::decode_function(binary, function).map_err(|_| fail())?;
        getter::field_offset(&instructions)
            .and_then(|offset| u32::try_from(offset).ok())
            .filter(|offset| *offset != CRI_OFFSET_UNKNOWN)
            .ok_or_else(fail)
    };
    Ok(KubeletOffsets {
        pod_uid: read("k8s.io/api/core/v1.(*Pod).GetUID")?,
        pod_name: read("k8s.io/api/core/v1.(*Pod).GetName")?,
        pod_namespace: read("k8s.io/api/core/v1.(*Pod).GetNamespace")?,
        _pad: 0,
    })
}

/// Checks that the registers a function saves before `runtime.morestack` (the block its stack
/// check branches to) are exactly `expected`: Go saves the register arguments there, so a
/// changed signature shows.
fn check_saved_registers(
    function: &Function,
    instructions: &[Instruction],
    expected: &[Register],
) -> Result<(), KubeletPlanError> {
    let target = instructions
        .iter()
        .take(6)
        .find(|i| i.flow_control() == FlowControl::ConditionalBranch)
        .map(Instruction::near_branch_target);
    let mut found: Vec<Register> = Vec::new();
    if let Some(target) = target
        && let Some(start) = instructions.iter().position(|i| i.ip() == target)
    {
        for instruction in &instructions[start..] {
            if instruction.mnemonic() == Mnemonic::Call {
                break;
            }
            let stores_to_stack = instruction.op0_kind() == OpKind::Memory
                && instruction.memory_base() == Register::RSP
                && instruction.op_count() == 2
                && instruction.op1_kind() == OpKind::Register
                && instruction.code() != Code::Nop_rm64;
            if stores_to_stack {
                let register = instruction.op1_register().full_register();
                if !found.contains(&register) {
                    found.push(register);
                }
            }
        }
    }
    let mut sorted_found = found.clone();
    sorted_found.sort_by_key(|r| *r as u32);
    let mut sorted_expected = expected.to_vec();
    sorted_expected.sort_by_key(|r| *r as u32);
    if sorted_found == sorted_expected {
        Ok(())
    } else {
        Err(KubeletPlanError::Signature {
            function: function.name.clone(),
            expected: expected.to_vec(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet_binary() -> Option<PathBuf> {
        let dir = PathBuf::from(std::env::var_os("NODETRACE_RUNTIMES_DIR")?);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path().join("kubelet"))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop()
    }

    #[test]
    fn the_built_kubelet_gets_a_verified_plan() {
        let Some(path) = kubelet_binary() else {
            eprintln!("skipped: no kubelet in NODETRACE_RUNTIMES_DIR (cargo xtask test sets it)");
            return;
        };
        let plan = plan(&path).unwrap_or_else(|e| panic!("{}", crate::correlate::error_chain(&e)));
        assert!(plan.version.starts_with("v1.37."), "{}", plan.version);
        assert_eq!(plan.probes.len(), KubeletFn::ALL.len());
        // The offsets unsafe.Offsetof gives for k8s.io/api v0.37: ObjectMeta at 32 in v1.Pod,
        // Name at 0, Namespace at 32, UID at 64 in ObjectMeta.
        assert_eq!(
            (
                plan.offsets.pod_uid,
                plan.offsets.pod_name,
                plan.offsets.pod_namespace
            ),
            (0x60, 0x20, 0x40)
        );
        for probe in &plan.probes {
            assert!(!probe.ret_offsets.is_empty(), "{:?}", probe.function);
            assert!(
                probe.ret_offsets.iter().all(|r| *r > probe.entry_offset),
                "{:?}",
                probe.function
            );
        }
        eprintln!(
            "kubelet {}: {} uprobes on {} functions",
            plan.version,
            plan.probe_count(),
            plan.probes.len()
        );
    }

    #[test]
    fn other_binaries_and_versions_are_refused_clearly() {
        let err = plan(Path::new("/bin/true")).expect_err("not a kubelet");
        assert!(err.to_string().contains("/bin/true"), "{err}");
        assert!(signatures("v1.36.5").is_none());
        assert!(signatures("v1.37.0").is_some());
        let build = BuildInfo {
            go_version: "go1.26.8".into(),
            main_package: Some("k8s.io/kubernetes/cmd/kube-apiserver".into()),
            module: Some(("k8s.io/kubernetes".into(), "v1.37.2".into())),
        };
        assert_eq!(kubelet_version(Some(&build)), None, "not the kubelet");
    }
}
