//! Kubelet's side of a pod's start, by uprobes on the kubelet binary: one span per pod sync
//! (`Kubelet.SyncPod` and the termination syncs) with kubelet's phases under it (waiting for
//! volumes, the runtime sync, the sandbox, each container start, each image check and pull),
//! the parent of the CRI calls kubelet made for the pod. Found like the runtime's handlers:
//! symbols from the pclntab, verified entries, every RET, offsets from the binary's getters.

pub mod plan;
pub mod watch;

pub use plan::{KubeletPlan, KubeletPlanError, plan};
pub use watch::{DEFAULT_KUBELET_SOCKET, KubeletWatcher};
