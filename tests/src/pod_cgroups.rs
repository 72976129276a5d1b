//! The record of pod cgroup parents (`/kubepods/besteffort/pod<uid>`) that pods of one
//! testbed were given, shared between the CRI client that creates pods and the teardown
//! that removes the cgroups afterwards.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A shared, cloneable set of cgroup parents, as given in `linux.cgroup_parent`.
#[derive(Debug, Clone, Default)]
pub struct PodCgroups {
    parents: Arc<Mutex<BTreeSet<String>>>,
}

impl PodCgroups {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `parent` if it is a pod cgroup (see [`is_pod_cgroup_parent`]).
    pub fn register(&self, parent: &str) {
        if is_pod_cgroup_parent(parent) {
            self.lock().insert(parent.to_string());
        }
    }

    /// Everything registered so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.parents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `path` names a per-pod cgroup below `/kubepods` (last component `pod<uid>`),
/// the only kind of cgroup the testbed ever removes.
pub fn is_pod_cgroup_parent(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/kubepods/") else {
        return false;
    };
    let components: Vec<&str> = rest.split('/').collect();
    let Some(last) = components.last() else {
        return false;
    };
    components.len() <= 2
        && components
            .iter()
            .all(|c| !c.is_empty() && *c != "." && *c != "..")
        && last.len() > 3
        && last.starts_with("pod")
        && last[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_cgroups_are_accepted() {
        assert!(is_pod_cgroup_parent(
            "/kubepods/besteffort/pod0b7c1f9e-4c55-4ad4-9a55-1b3e0c2f1b11"
        ));
        assert!(is_pod_cgroup_parent("/kubepods/podabc"));
        assert!(!is_pod_cgroup_parent("/kubepods/besteffort"));
        assert!(!is_pod_cgroup_parent("/kubepods"));
        assert!(!is_pod_cgroup_parent("/system.slice/podabc"));
        assert!(!is_pod_cgroup_parent("/kubepods/besteffort/pod"));
        assert!(!is_pod_cgroup_parent("/kubepods/../pod1"));
        assert!(!is_pod_cgroup_parent("/kubepods/a/b/pod1"));
        assert!(!is_pod_cgroup_parent("/kubepods/besteffort/pod1/../../x"));
    }

    #[test]
    fn registry_keeps_pod_cgroups_only() {
        let record = PodCgroups::new();
        record.register("/kubepods/besteffort/pod1");
        record.register("/");
        record.clone().register("/kubepods/besteffort/pod1");
        assert_eq!(
            record.snapshot(),
            vec!["/kubepods/besteffort/pod1".to_string()]
        );
    }
}
