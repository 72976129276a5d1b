//! What the node knows about one container: its pod, its kind, its name and image.

use serde::{Deserialize, Serialize};

use crate::model::{Attribute, PodRef, keys};

/// A pod's sandbox (the pause / infra container) or one of its containers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerKind {
    Sandbox,
    Container,
}

impl ContainerKind {
    /// `sandbox` or `container`, as the CRI annotations and `nodetrace.container.type` say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Container => "container",
        }
    }

    /// Reads a CRI container-type annotation value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sandbox" => Some(Self::Sandbox),
            "container" => Some(Self::Container),
            _ => None,
        }
    }
}

/// One container and the pod it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub container_id: String,
    /// `None` when only the cgroup path was known and nothing told sandbox from container.
    pub kind: Option<ContainerKind>,
    /// The id of the pod's sandbox (a sandbox's own id for a sandbox), when known.
    pub sandbox_id: Option<String>,
    /// The pod. From a cgroup path alone only the UID is known: name and namespace are empty.
    pub pod: PodRef,
    /// The container's name in the pod spec (none for a sandbox).
    pub container_name: Option<String>,
    /// The image as the pod spec names it (none for a containerd sandbox).
    pub image: Option<String>,
}

impl ContainerInfo {
    /// The span attributes this tells: pod UID, name and namespace, container id, name, type,
    /// image (empty values left out).
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut attributes = Vec::with_capacity(7);
        let mut push = |key: &str, value: &str| {
            if !value.is_empty() {
                attributes.push(Attribute::str(key, value));
            }
        };
        push(keys::POD_UID, &self.pod.uid);
        push(keys::POD_NAME, &self.pod.name);
        push(keys::NAMESPACE, &self.pod.namespace);
        push(keys::CONTAINER_ID, &self.container_id);
        push(
            keys::CONTAINER_NAME,
            self.container_name.as_deref().unwrap_or_default(),
        );
        push(keys::IMAGE_NAME, self.image.as_deref().unwrap_or_default());
        push(
            keys::CONTAINER_TYPE,
            self.kind.map(ContainerKind::as_str).unwrap_or_default(),
        );
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            ContainerKind::parse("sandbox"),
            Some(ContainerKind::Sandbox)
        );
        assert_eq!(
            ContainerKind::parse("container"),
            Some(ContainerKind::Container)
        );
        assert_eq!(ContainerKind::parse("Sandbox"), None);
        assert_eq!(ContainerKind::Sandbox.as_str(), "sandbox");
    }

    #[test]
    fn attributes_leave_out_what_is_unknown() {
        let info = ContainerInfo {
            container_id: "abc".to_owned(),
            kind: None,
            sandbox_id: None,
            pod: PodRef {
                uid: "u".to_owned(),
                namespace: String::new(),
                name: String::new(),
            },
            container_name: None,
            image: None,
        };
        assert_eq!(
            info.attributes(),
            vec![
                Attribute::str(keys::POD_UID, "u"),
                Attribute::str(keys::CONTAINER_ID, "abc")
            ]
        );
        let full = ContainerInfo {
            kind: Some(ContainerKind::Container),
            pod: PodRef {
                uid: "u".to_owned(),
                namespace: "ns".to_owned(),
                name: "p".to_owned(),
            },
            container_name: Some("app".to_owned()),
            image: Some("busybox".to_owned()),
            ..info
        };
        let attributes = full.attributes();
        assert_eq!(attributes.len(), 7);
        assert!(attributes.contains(&Attribute::str(keys::CONTAINER_TYPE, "container")));
        assert!(attributes.contains(&Attribute::str(keys::IMAGE_NAME, "busybox")));
    }
}
