//! Kubernetes metadata of this node's pods: an optional watcher of the API server that adds
//! workload, labels, node name and the trace-context annotation to a pod's node spans.
//!
//! Everything else works without it: [`PodDirectory::disabled`] knows no pod, and an API
//! outage only freezes what the directory knows (its [`KubeHealth`] says so). Wiring:
//!
//! ```ignore
//! let (directory, watcher) = match PodWatcher::from_environment(PodDirectoryConfig::new(node)).await {
//!     Ok(watcher) => (watcher.directory(), Some(watcher)),
//!     Err(err) => (PodDirectory::disabled(), None), // log `err`: metadata from the node only
//! };
//! let task = watcher.map(|w| tokio::spawn(w.run(stop_rx)));
//! ```
//!
//! RBAC: `list` and `watch` on `pods` (see `owner` for why nothing else).

mod config;
mod directory;
mod health;
pub mod keys;
mod metadata;
mod owner;
mod traceparent;
mod watch;

#[cfg(test)]
mod directory_tests;
#[cfg(test)]
mod watch_tests;

pub use config::{
    DEFAULT_LABELS, DEFAULT_TRACE_CONTEXT_ANNOTATION, LabelAllowList, PodDirectoryConfig,
};
pub use directory::{DirectoryStats, PodDirectory};
pub use health::KubeHealth;
pub use metadata::{PodMetadata, trace_context_of};
pub use owner::{Owner, OwnerKind, POD_TEMPLATE_HASH_LABEL};
pub use traceparent::{TraceContext, TraceparentError};
pub use watch::PodWatcher;

use thiserror::Error;

/// Why the pod watcher cannot start.
#[derive(Debug, Error)]
pub enum K8sError {
    #[error("no Kubernetes API configuration: not in a cluster and no kubeconfig")]
    NoConfig {
        #[source]
        source: kube::config::InferConfigError,
    },
    #[error("cannot use the kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build the Kubernetes API client")]
    Client {
        #[source]
        source: kube::Error,
    },
    #[error("the node name is empty; it selects the pods to watch")]
    NoNodeName,
}
