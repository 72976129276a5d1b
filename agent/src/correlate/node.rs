//! What the correlator reads from the node besides kernel events: pid files and process
//! cgroups (bundles are read by `oci::attribute`). A trait so tests can hand in a node of their own.

use std::path::{Path, PathBuf};

/// Read access to the node's files that attribute runtime runs to pods.
pub trait NodeView {
    /// The pid written to a runtime's `--pid-file`.
    fn pid_file(&self, path: &Path) -> Option<u32>;
    /// The content of `/proc/<pid>/cgroup`, while the process lives.
    fn process_cgroups(&self, pid: u32) -> Option<String>;
}

/// The real node, seen through `proc_root` (usually `/proc`; `/host/proc` in a container).
#[derive(Clone, Debug)]
pub struct HostNode {
    pub proc_root: PathBuf,
}

impl Default for HostNode {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl NodeView for HostNode {
    fn pid_file(&self, path: &Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    fn process_cgroups(&self, pid: u32) -> Option<String> {
        std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()
    }
}
