//! What the API server adds to a pod's node spans: workload, labels, node and trace context.

use super::config::LabelAllowList;
use super::keys;
use super::owner::Owner;
use super::traceparent::{TraceContext, TraceparentError};
use crate::model::{Attribute, PodRef};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};

/// A pod as the API server describes it, reduced to what spans carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMetadata {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `spec.nodeName` (empty before the pod is scheduled, which a watch by node never shows).
    pub node_name: String,
    /// The allowed labels only.
    pub labels: BTreeMap<String, String>,
    /// The workload the pod belongs to.
    pub owner: Option<Owner>,
    /// From the trace-context annotation, when it holds a valid `traceparent`.
    pub trace_context: Option<TraceContext>,
}

impl PodMetadata {
    /// The metadata of `pod`; `None` for an object without a UID (the API always sets one).
    /// An invalid trace-context annotation gives no context (see [`trace_context_of`]).
    pub fn from_pod(pod: &Pod, labels: &LabelAllowList, annotation: &str) -> Option<Self> {
        let uid = pod.uid()?;
        Some(Self {
            uid,
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .unwrap_or_default(),
            labels: pod
                .labels()
                .iter()
                .filter(|(key, _)| labels.allows(key))
                .map(|(key, value)| (crate::model::capped(key), crate::model::capped(value)))
                .collect(),
            owner: Owner::resolve(pod.owner_references(), pod.labels()),
            trace_context: trace_context_of(pod, annotation).ok().flatten(),
        })
    }

    /// The metadata of a pod as its sandbox carries it on the node: kubelet copies the pod's
    /// labels and annotations into the CRI sandbox config, so labels and the trace context are
    /// known without the API (the workload is not: owner references are not copied).
    pub fn from_sandbox(
        pod: &PodRef,
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
        allowed: &LabelAllowList,
        annotation: &str,
    ) -> Self {
        Self {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node_name: String::new(),
            labels: labels
                .iter()
                .filter(|(key, _)| allowed.allows(key))
                .map(|(key, value)| (crate::model::capped(key), crate::model::capped(value)))
                .collect(),
            owner: None,
            trace_context: annotations
                .get(annotation)
                .and_then(|value| TraceContext::parse_traceparent(value).ok()),
        }
    }

    /// The span attributes: pod identity, node, workload (and the controller it was resolved
    /// through), then `k8s.pod.label.<key>` for each allowed label.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut attributes = vec![
            Attribute::str(keys::POD_UID, &self.uid),
            Attribute::str(keys::POD_NAME, &self.name),
            Attribute::str(keys::NAMESPACE_NAME, &self.namespace),
        ];
        if !self.node_name.is_empty() {
            attributes.push(Attribute::str(keys::NODE_NAME, &self.node_name));
        }
        let mut owner = self.owner.as_ref();
        while let Some(current) = owner {
            if let Some(key) = current.kind.attribute_key() {
                attributes.push(Attribute::str(key, &current.name));
            }
            owner = current.via.as_deref();
        }
        attributes.extend(
            self.labels
                .iter()
                .map(|(key, value)| Attribute::str(&keys::pod_label(key), value)),
        );
        attributes
    }
}

/// The trace context in `pod`'s `annotation`: `Ok(None)` without the annotation, an error when
/// its value is not a valid `traceparent`.
pub fn trace_context_of(
    pod: &Pod,
    annotation: &str,
) -> Result<Option<TraceContext>, TraceparentError> {
    pod.annotations()
        .get(annotation)
        .map(|value| TraceContext::parse_traceparent(value))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::config::PodDirectoryConfig;
    use crate::k8s::owner::OwnerKind;
    use crate::model::AttrValue;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        Pod {
            metadata: ObjectMeta {
                uid: Some("0b7c6a52-8d1e-4c52-9b5e-3f1f9e2a7c10".to_owned()),
                namespace: Some("shop".to_owned()),
                name: Some("web-7d9f8b6c5d-x2x4q".to_owned()),
                labels: Some(map(&[
                    ("app.kubernetes.io/name", "web"),
                    ("pod-template-hash", "7d9f8b6c5d"),
                    ("secret-ish", "do-not-export"),
                ])),
                annotations: Some(map(annotations)),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "ReplicaSet".to_owned(),
                    name: "web-7d9f8b6c5d".to_owned(),
                    uid: "9a1f0c9e-0000-4000-8000-000000000001".to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".to_owned()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn metadata(pod: &Pod) -> PodMetadata {
        let config = PodDirectoryConfig::new("node-a");
        PodMetadata::from_pod(pod, &config.labels, &config.trace_context_annotation).expect("uid")
    }

    #[test]
    fn pod_gives_identity_workload_and_allowed_labels() {
        let meta = metadata(&pod(&[]));
        assert_eq!(meta.uid, "0b7c6a52-8d1e-4c52-9b5e-3f1f9e2a7c10");
        assert_eq!(
            (meta.namespace.as_str(), meta.name.as_str()),
            ("shop", "web-7d9f8b6c5d-x2x4q")
        );
        assert_eq!(meta.node_name, "node-a");
        assert_eq!(
            meta.labels,
            BTreeMap::from([("app.kubernetes.io/name".to_owned(), "web".to_owned())])
        );
        assert_eq!(
            meta.owner.as_ref().map(|o| &o.kind),
            Some(&OwnerKind::Deployment)
        );
        assert_eq!(meta.trace_context, None);
    }

    #[test]
    fn attributes_follow_the_semantic_conventions() {
        let attributes = metadata(&pod(&[])).attributes();
        let pairs: Vec<(&str, &str)> = attributes
            .iter()
            .map(|a| match &a.value {
                AttrValue::Str(value) => (a.key.as_str(), value.as_str()),
                other => panic!("{} is not a string: {other:?}", a.key),
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("k8s.pod.uid", "0b7c6a52-8d1e-4c52-9b5e-3f1f9e2a7c10"),
                ("k8s.pod.name", "web-7d9f8b6c5d-x2x4q"),
                ("k8s.namespace.name", "shop"),
                ("k8s.node.name", "node-a"),
                ("k8s.deployment.name", "web"),
                ("k8s.replicaset.name", "web-7d9f8b6c5d"),
                ("k8s.pod.label.app.kubernetes.io/name", "web"),
            ]
        );
    }

    #[test]
    fn annotation_gives_the_trace_context() {
        let with = pod(&[("trace.kubernetes.io/context", TRACEPARENT)]);
        let context = metadata(&with).trace_context.expect("a context");
        assert_eq!(context.to_traceparent(), TRACEPARENT);
        // Another key is configurable; the default one is then ignored.
        let custom =
            PodMetadata::from_pod(&with, &LabelAllowList::default(), "example.com/traceparent");
        assert_eq!(custom.and_then(|m| m.trace_context), None);
    }

    #[test]
    fn invalid_annotation_gives_no_context_and_an_error() {
        let invalid = pod(&[("trace.kubernetes.io/context", "01-abc")]);
        assert_eq!(metadata(&invalid).trace_context, None);
        assert_eq!(
            trace_context_of(&invalid, "trace.kubernetes.io/context"),
            Err(TraceparentError::Length { len: 6 })
        );
        assert_eq!(
            trace_context_of(&pod(&[]), "trace.kubernetes.io/context"),
            Ok(None)
        );
    }

    #[test]
    fn object_without_uid_is_skipped() {
        let mut nameless = pod(&[]);
        nameless.metadata.uid = None;
        let config = PodDirectoryConfig::new("node-a");
        assert_eq!(
            PodMetadata::from_pod(&nameless, &config.labels, &config.trace_context_annotation),
            None
        );
    }
}
