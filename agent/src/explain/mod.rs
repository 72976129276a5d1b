//! "Why did this pod start slowly, or fail?": the critical path of a pod's start on its node,
//! from the pod's trace (one or several agents' answers, merged), with each step's share of the
//! time, the time no step covers (the kubelet between calls), and what failed, in words.
//!
//! The path runs from the first node activity for the pod (kubelet's `Kubelet.SyncPod`, else
//! RunPodSandbox) to the first process of its last container to start. Its steps are the
//! calls kubelet's pod worker makes one after the other: waiting for volumes, then the CRI
//! calls (RunPodSandbox, PullImage, CreateContainer, StartContainer) of the sandbox and of each
//! container in turn.

mod path;
mod render;

pub use path::{Explanation, Finding, Gap, Step, explain};
pub use render::render;
