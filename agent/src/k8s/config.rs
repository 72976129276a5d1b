//! What the pod watcher watches and which pod metadata it keeps.

use std::time::Duration;

/// The annotation a pod's trace context is read from by default (Kubernetes tracing KEP 647).
pub const DEFAULT_TRACE_CONTEXT_ANNOTATION: &str = "trace.kubernetes.io/context";

/// Labels kept by default: the recommended `app.kubernetes.io/*` set and the common `app` and
/// `version` (as service meshes use them).
pub const DEFAULT_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app",
    "version",
];

/// Settings of the pod directory and its watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDirectoryConfig {
    /// This node's name (`spec.nodeName` of its pods); only its pods are watched.
    pub node_name: String,
    /// Which pod labels become span attributes.
    pub labels: LabelAllowList,
    /// The annotation holding a pod's W3C `traceparent`.
    pub trace_context_annotation: String,
    /// How long a deleted pod's metadata stays available: the runtime tears a pod down
    /// (RemovePodSandbox) after the API object is gone.
    pub deleted_retention: Duration,
}

impl PodDirectoryConfig {
    /// The defaults for the pods of `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            labels: LabelAllowList::new(DEFAULT_LABELS.iter().map(|l| (*l).to_owned())),
            trace_context_annotation: DEFAULT_TRACE_CONTEXT_ANNOTATION.to_owned(),
            deleted_retention: Duration::from_secs(600),
        }
    }

    /// The field selector that limits the watch to this node's pods.
    pub fn field_selector(&self) -> String {
        format!("spec.nodeName={}", self.node_name)
    }
}

/// Label keys that are kept: exact keys, or prefixes written with a trailing `*`
/// (`app.kubernetes.io/*`). Labels are an allow-list because they can hold anything (and
/// spans are stored and exported for every pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelAllowList {
    patterns: Vec<String>,
}

impl LabelAllowList {
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }

    /// Whether the label `key` is kept.
    pub fn allows(&self, key: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == pattern,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keys_and_prefixes_are_allowed() {
        let list = LabelAllowList::new(["app".to_owned(), "team.example.com/*".to_owned()]);
        assert!(list.allows("app"));
        assert!(!list.allows("app.kubernetes.io/name"));
        assert!(list.allows("team.example.com/owner"));
        assert!(!list.allows("team.example.org/owner"));
        assert!(!LabelAllowList::default().allows("app"));
        assert!(!LabelAllowList::new([String::new()]).allows(""));
    }

    #[test]
    fn defaults_watch_this_node_with_the_kep_annotation() {
        let config = PodDirectoryConfig::new("node-a");
        assert_eq!(config.field_selector(), "spec.nodeName=node-a");
        assert_eq!(
            config.trace_context_annotation,
            "trace.kubernetes.io/context"
        );
        assert!(config.labels.allows("app.kubernetes.io/name"));
        assert!(!config.labels.allows("pod-template-hash"));
    }
}
