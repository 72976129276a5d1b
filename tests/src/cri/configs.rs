//! Builds the CRI requests' configs the way a kubelet does for a host-network pod
//! (hostname "", network namespace NODE, cgroup parent `/kubepods/besteffort/pod<uid>`)
//! with one container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as api;

/// Who a pod is: the fields of `PodSandboxMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Sandbox attempt.
    pub attempt: u32,
}

impl PodIdentity {
    /// A pod with a fresh random (v4) UID and attempt 0.
    pub fn fresh(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
            attempt: 0,
        }
    }

    /// The pod's cgroup parent as a kubelet with the cgroupfs driver sets it for a
    /// best-effort pod.
    pub fn cgroup_parent(&self) -> String {
        format!("/kubepods/besteffort/pod{}", self.uid)
    }

    /// The pod's log directory below `root`, named like kubelet's
    /// `/var/log/pods/<namespace>_<name>_<uid>`.
    pub fn log_directory(&self, root: &Path) -> PathBuf {
        root.join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
    }
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override (empty: the image's).
    pub command: Vec<String>,
    /// Arguments.
    pub args: Vec<String>,
    /// Container attempt.
    pub attempt: u32,
}

impl ContainerSpec {
    /// A container running `command` in `image`.
    pub fn new(name: &str, image: &str, command: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: Vec::new(),
            attempt: 0,
        }
    }

    /// The same container as attempt `attempt`: what a kubelet creates when it restarts a
    /// container that exited (attempt 1, 2, ...; the log goes to `<name>/<attempt>.log`).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The log path relative to the pod's log directory, `<name>/<attempt>.log`.
    pub fn log_path(&self) -> String {
        format!("{}/{}.log", self.name, self.attempt)
    }
}

/// Namespace options a kubelet sends for a `hostNetwork: true` pod without `hostPID`,
/// `hostIPC` or a shared process namespace.
fn host_network_namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Node as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The `PodSandboxConfig` of a host-network, best-effort pod logging to `log_directory`.
pub fn host_network_sandbox_config(
    pod: &PodIdentity,
    log_directory: &Path,
) -> api::PodSandboxConfig {
    let labels = HashMap::from([
        ("io.kubernetes.pod.name".to_string(), pod.name.clone()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            pod.namespace.clone(),
        ),
        ("io.kubernetes.pod.uid".to_string(), pod.uid.clone()),
    ]);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            attempt: pod.attempt,
        }),
        hostname: String::new(),
        log_directory: log_directory.display().to_string(),
        labels,
        annotations: HashMap::from([(
            "kubernetes.io/config.source".to_string(),
            "nodetrace-testbed".to_string(),
        )]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: pod.cgroup_parent(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(host_network_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `ContainerConfig` of `container` in `pod`.
pub fn container_config(pod: &PodIdentity, container: &ContainerSpec) -> api::ContainerConfig {
    let labels = HashMap::from([
        (
            "io.kubernetes.container.name".to_string(),
            container.name.clone(),
        ),
        ("io.kubernetes.pod.name".to_string(), pod.name.clone()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            pod.namespace.clone(),
        ),
        ("io.kubernetes.pod.uid".to_string(), pod.uid.clone()),
    ]);
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: container.attempt,
        }),
        image: Some(api::ImageSpec {
            image: container.image.clone(),
            ..Default::default()
        }),
        command: container.command.clone(),
        args: container.args.clone(),
        labels,
        log_path: container.log_path(),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(host_network_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_config_is_host_network_with_pod_cgroup() {
        let pod = PodIdentity::fresh("default", "web");
        assert_eq!(
            uuid::Uuid::parse_str(&pod.uid)
                .map(|u| u.get_version_num())
                .ok(),
            Some(4)
        );
        let config = host_network_sandbox_config(&pod, Path::new("/logs/x"));
        assert_eq!(config.hostname, "");
        let linux = config.linux.expect("linux");
        assert_eq!(
            linux.cgroup_parent,
            format!("/kubepods/besteffort/pod{}", pod.uid)
        );
        let ns = linux
            .security_context
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.network, api::NamespaceMode::Node as i32);
        let metadata = config.metadata.expect("metadata");
        assert_eq!(
            (metadata.name.as_str(), metadata.namespace.as_str()),
            ("web", "default")
        );
        assert_eq!(config.log_directory, "/logs/x");
    }

    #[test]
    fn container_log_path_is_relative() {
        let spec = ContainerSpec::new("main", "busybox", &["sh"]);
        let pod = PodIdentity::fresh("default", "web");
        let config = container_config(&pod, &spec);
        assert_eq!(config.log_path, "main/0.log");
        assert_eq!(config.image.map(|i| i.image).as_deref(), Some("busybox"));
        let restarted = container_config(&pod, &spec.with_attempt(1));
        assert_eq!(restarted.log_path, "main/1.log");
        assert_eq!(restarted.metadata.map(|m| m.attempt), Some(1));
    }
}
