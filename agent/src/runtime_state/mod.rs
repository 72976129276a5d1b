//! The runtime's own account of the node, asked over its CRI socket with read-only calls: what
//! a restarted agent needs to know at once (every sandbox and container, the processes already
//! running) and what the kernel side cannot read (a sandbox's labels and annotations, kubelet's
//! copy of the pod's, so that labels and the trace context are known without the API).
//!
//! One task owns the client ([`RuntimeStateTask`]); its answers reach the correlator as
//! [`RuntimeNews`], in order with the kernel events.

pub mod client;
pub mod facts;
pub mod messages;
mod task;

use std::path::PathBuf;

pub use facts::{ContainerFacts, MetadataRules, RunningProcess, SandboxFacts};
pub use task::{QUERY_QUEUE, RuntimeStateTask};

/// What the runtime told the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeNews {
    /// What was running when the runtime was found (at the agent's start, or after the runtime
    /// restarted).
    Snapshot(Box<RuntimeSnapshot>),
    /// The answer about one new sandbox of pod `uid`; `None` when the runtime could not tell
    /// (the correlator then goes on without its labels and annotations).
    Sandbox {
        uid: String,
        facts: Option<Box<SandboxFacts>>,
    },
}

/// Every sandbox and container the runtime reported, and the processes of the running ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    pub sandboxes: Vec<SandboxFacts>,
    pub containers: Vec<ContainerFacts>,
    pub processes: Vec<RunningProcess>,
}

/// The correlator's question about a sandbox that RunPodSandbox just made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxQuery {
    pub sandbox_id: String,
    pub uid: String,
}

/// Where the runtime serves CRI, as the watcher found it (the socket verified to belong to
/// the runtime process; see `cri::discover`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEndpoint {
    pub socket: PathBuf,
    pub pid: u32,
    pub start_time: u64,
}
