//! Kubelet's pod syncs: pairs each probed kubelet function's entry with its return into a
//! span, nests the phases of a sync under it (a pod worker runs them on its own goroutine),
//! and finds the kubelet span a CRI call belongs under (same pod, the innermost kubelet call
//! in flight when the CRI call began).

use std::collections::HashMap;

use nodetrace_common::{KubeletFn, kubelet_slots};

use crate::{
    ebpf::{KubeletRecord, WallClock},
    model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, keys},
};

/// Most kubelet calls in flight remembered (a pod worker per pod, a few nested calls each);
/// beyond, the oldest is forgotten: a goroutine that died cannot hold memory for ever.
const INFLIGHT_MAX: usize = 4096;

#[derive(Clone, Debug)]
struct KubeletCall {
    span_id: SpanId,
    parent: Option<SpanId>,
    function: KubeletFn,
    start_unix_ns: u64,
    pod: Option<PodRef>,
    /// The container name (startContainer) or image (EnsureImageExists).
    extra: Option<String>,
}

/// The span name of a kubelet function.
pub fn span_name(function: KubeletFn) -> &'static str {
    match function {
        KubeletFn::SyncPod => "Kubelet.SyncPod",
        KubeletFn::SyncTerminatingPod => "Kubelet.SyncTerminatingPod",
        KubeletFn::SyncTerminatedPod => "Kubelet.SyncTerminatedPod",
        KubeletFn::WaitForVolumes => "VolumeManager.WaitForAttachAndMount",
        KubeletFn::RuntimeSyncPod => "KubeRuntime.SyncPod",
        KubeletFn::CreatePodSandbox => "KubeRuntime.createPodSandbox",
        KubeletFn::StartContainer => "KubeRuntime.startContainer",
        KubeletFn::EnsureImageExists => "ImageManager.EnsureImageExists",
    }
}

#[derive(Debug, Default)]
pub(super) struct KubeletCalls {
    /// (kubelet process, goroutine, function) → the call.
    inflight: HashMap<(u32, u64, KubeletFn), KubeletCall>,
}

impl KubeletCalls {
    pub(super) fn on_start(&mut self, rec: &KubeletRecord, clock: &WallClock) {
        let text = |slot: usize| Some(rec.strings[slot].clone()).filter(|s| !s.is_empty());
        // The innermost call open on the same goroutine is the parent (the pod worker runs a
        // sync's phases one inside the other).
        let enclosing = self
            .inflight
            .iter()
            .filter(|((tgid, goroutine, _), _)| *tgid == rec.tgid && *goroutine == rec.goroutine)
            .map(|(_, call)| call)
            .max_by_key(|call| call.start_unix_ns);
        let pod = text(kubelet_slots::POD_UID)
            .map(|uid| PodRef {
                uid,
                namespace: text(kubelet_slots::POD_NAMESPACE).unwrap_or_default(),
                name: text(kubelet_slots::POD_NAME).unwrap_or_default(),
            })
            .or_else(|| enclosing.and_then(|call| call.pod.clone()));
        let call = KubeletCall {
            span_id: SpanId::random(),
            parent: enclosing.map(|call| call.span_id),
            function: rec.function,
            start_unix_ns: clock.to_unix_ns(rec.ktime_ns),
            pod,
            extra: text(kubelet_slots::EXTRA).map(|s| crate::model::capped(&s)),
        };
        if self.inflight.len() >= INFLIGHT_MAX
            && let Some(oldest) = self
                .inflight
                .iter()
                .min_by_key(|(_, call)| call.start_unix_ns)
                .map(|(key, _)| *key)
        {
            self.inflight.remove(&oldest);
        }
        self.inflight
            .insert((rec.tgid, rec.goroutine, rec.function), call);
    }

    /// Completes a call; its span, or `None` when its entry was not seen.
    pub(super) fn on_end(
        &mut self,
        rec: &KubeletRecord,
        clock: &WallClock,
        node_name: &str,
    ) -> Option<Span> {
        let call = self
            .inflight
            .remove(&(rec.tgid, rec.goroutine, rec.function))?;
        let end = clock.to_unix_ns(rec.ktime_ns).max(call.start_unix_ns);
        let mut attributes = vec![Attribute::str(
            keys::KUBELET_FUNCTION,
            span_name(call.function),
        )];
        if !node_name.is_empty() {
            attributes.push(Attribute::str(keys::NODE_NAME, node_name));
        }
        if let Some(pod) = &call.pod {
            attributes.push(Attribute::str(keys::POD_UID, pod.uid.clone()));
            attributes.push(Attribute::str(keys::NAMESPACE, pod.namespace.clone()));
            attributes.push(Attribute::str(keys::POD_NAME, pod.name.clone()));
        }
        match (call.function, &call.extra) {
            (KubeletFn::StartContainer, Some(name)) => {
                attributes.push(Attribute::str(keys::CONTAINER_NAME, name.clone()));
            }
            (KubeletFn::EnsureImageExists, Some(image)) => {
                attributes.push(Attribute::str(keys::IMAGE_NAME, image.clone()));
            }
            _ => {}
        }
        let trace_id = match &call.pod {
            Some(pod) => TraceId::from_pod_uid(&pod.uid),
            None => TraceId::hashed(&["kubelet", &call.span_id.to_hex()]),
        };
        Some(Span {
            trace_id,
            span_id: call.span_id,
            parent_span_id: call.parent,
            name: span_name(call.function).to_owned(),
            service: "kubelet".to_owned(),
            kind: SpanKind::Internal,
            start_unix_ns: call.start_unix_ns,
            end_unix_ns: end,
            pod: call.pod,
            attributes,
            status: if rec.error {
                SpanStatus::Error(format!("{} returned an error", span_name(call.function)))
            } else {
                SpanStatus::Unset
            },
        })
    }

    /// The kubelet call a CRI call of pod `uid` that began at `start_unix_ns` was made in:
    /// the innermost (latest begun) kubelet call of that pod in flight then.
    pub(super) fn parent_of_cri(&self, uid: &str, start_unix_ns: u64) -> Option<SpanId> {
        self.inflight
            .values()
            .filter(|call| {
                call.start_unix_ns <= start_unix_ns
                    && call.pod.as_ref().is_some_and(|pod| pod.uid == uid)
            })
            .max_by_key(|call| call.start_unix_ns)
            .map(|call| call.span_id)
    }
}
