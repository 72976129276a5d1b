//! OpenTelemetry attribute keys for the Kubernetes metadata of a pod (semantic conventions).

pub const POD_UID: &str = "k8s.pod.uid";
pub const POD_NAME: &str = "k8s.pod.name";
pub const NAMESPACE_NAME: &str = "k8s.namespace.name";
pub const NODE_NAME: &str = "k8s.node.name";
pub const DEPLOYMENT_NAME: &str = "k8s.deployment.name";
pub const REPLICASET_NAME: &str = "k8s.replicaset.name";
pub const STATEFULSET_NAME: &str = "k8s.statefulset.name";
pub const DAEMONSET_NAME: &str = "k8s.daemonset.name";
pub const JOB_NAME: &str = "k8s.job.name";
pub const CRONJOB_NAME: &str = "k8s.cronjob.name";
/// Followed by the label key: `k8s.pod.label.app.kubernetes.io/name`.
pub const POD_LABEL_PREFIX: &str = "k8s.pod.label.";

/// The attribute key of a pod label.
pub fn pod_label(label: &str) -> String {
    format!("{POD_LABEL_PREFIX}{label}")
}
