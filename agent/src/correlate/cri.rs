//! CRI calls: pairs each handler's entry with its return into a span, learns sandbox and
//! container ids from the responses, and finds the CRI call a runtime span belongs under.

use std::collections::{HashMap, VecDeque};

use nodetrace_common::{CriMethod, cri_slots};

use crate::{
    ebpf::{CriRecord, WallClock},
    model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, keys},
    oci::{ContainerCache, ContainerInfo, ContainerKind},
};

/// Most finished calls kept for parenting spans that end later than their call. Every runtime
/// span scans them (and the calls in flight), so the list stays short: runtime runs end inside
/// their call, and container processes find their parent through their `runc start`.
const RECENT_CALLS: usize = 256;

/// One CRI call, in flight or finished.
#[derive(Clone, Debug)]
struct CriCall {
    span_id: SpanId,
    method: CriMethod,
    start_unix_ns: u64,
    end_unix_ns: Option<u64>,
    pod: Option<PodRef>,
    /// The sandbox the call is about (StopPodSandbox, CreateContainer, ...).
    sandbox_id: Option<String>,
    /// The container the call is about, or the one it created.
    container_id: Option<String>,
    container_name: Option<String>,
    image: Option<String>,
    /// PullImage's answer: the image's reference (digest) as the runtime stored it.
    image_ref: Option<String>,
    attempt: Option<u64>,
    timeout: Option<u64>,
    runtime_handler: Option<String>,
}

impl CriCall {
    fn trace_id(&self) -> TraceId {
        match &self.pod {
            Some(pod) => TraceId::from_pod_uid(&pod.uid),
            None => TraceId::hashed(&["cri", &self.span_id.to_hex()]),
        }
    }

    /// Whether a span of `container_id` (of `kind`, in `pod_uid`) starting at `at` was caused
    /// by this call.
    fn caused(&self, container_id: &str, is_sandbox: bool, pod_uid: Option<&str>, at: u64) -> bool {
        let in_window = self.start_unix_ns <= at && self.end_unix_ns.is_none_or(|end| at <= end);
        if !in_window {
            return false;
        }
        match self.method {
            // The sandbox id is only known from the response; match by pod.
            CriMethod::RunPodSandbox => {
                is_sandbox
                    && pod_uid.is_some()
                    && self.pod.as_ref().map(|p| p.uid.as_str()) == pod_uid
            }
            CriMethod::StopPodSandbox | CriMethod::RemovePodSandbox => {
                self.sandbox_id.as_deref() == Some(container_id)
            }
            _ => self.container_id.as_deref() == Some(container_id),
        }
    }
}

/// Most CRI calls in flight remembered (as many as the kernel's map holds); beyond, the oldest
/// is forgotten: a call whose return never comes cannot hold memory for ever.
const INFLIGHT_MAX: usize = 4096;

/// Most container and sandbox attempts remembered.
const ATTEMPTS_MAX: usize = 16_384;

/// The CRI side of the correlator.
#[derive(Debug)]
pub(super) struct CriCalls {
    inflight: HashMap<(u32, u64), CriCall>,
    recent: VecDeque<CriCall>,
    /// Container or sandbox id → its attempt (restart count), from the call that created it.
    attempts: HashMap<String, u64>,
    /// Service name of the CRI spans (`containerd`, `cri-o`).
    service: String,
}

impl CriCalls {
    pub(super) fn new(service: &str) -> Self {
        Self {
            inflight: HashMap::new(),
            recent: VecDeque::new(),
            attempts: HashMap::new(),
            service: service.to_owned(),
        }
    }

    pub(super) fn set_service(&mut self, service: &str) {
        service.clone_into(&mut self.service);
    }

    pub(super) fn on_start(
        &mut self,
        rec: &CriRecord,
        clock: &WallClock,
        cache: &mut ContainerCache,
    ) {
        let text = |slot: usize| Some(rec.strings[slot].clone()).filter(|s| !s.is_empty());
        let mut call = CriCall {
            span_id: SpanId::random(),
            method: rec.method,
            start_unix_ns: clock.to_unix_ns(rec.ktime_ns),
            end_unix_ns: None,
            pod: None,
            sandbox_id: None,
            container_id: None,
            container_name: None,
            image: None,
            image_ref: None,
            attempt: None,
            timeout: None,
            runtime_handler: None,
        };
        match rec.method {
            CriMethod::RunPodSandbox => {
                call.pod = text(cri_slots::POD_UID).map(|uid| PodRef {
                    uid,
                    namespace: text(cri_slots::POD_NAMESPACE).unwrap_or_default(),
                    name: text(cri_slots::POD_NAME).unwrap_or_default(),
                });
                call.runtime_handler = text(cri_slots::RUNTIME_HANDLER);
                call.attempt = Some(rec.numbers[cri_slots::NUMBER]);
            }
            CriMethod::CreateContainer => {
                call.sandbox_id = text(cri_slots::ID);
                call.container_name = text(cri_slots::CONTAINER_NAME);
                call.image = text(cri_slots::IMAGE);
                call.attempt = Some(rec.numbers[cri_slots::NUMBER]);
                call.pod = call
                    .sandbox_id
                    .as_deref()
                    .and_then(|id| sandbox_pod(cache, id));
            }
            CriMethod::StopPodSandbox | CriMethod::RemovePodSandbox => {
                call.sandbox_id = text(cri_slots::ID);
                call.pod = call
                    .sandbox_id
                    .as_deref()
                    .and_then(|id| sandbox_pod(cache, id));
            }
            CriMethod::PullImage => {
                call.image = text(cri_slots::IMAGE_REF);
                // kubelet sends the pod the image is pulled for.
                call.pod = text(cri_slots::POD_UID).map(|uid| PodRef {
                    uid,
                    namespace: text(cri_slots::POD_NAMESPACE).unwrap_or_default(),
                    name: text(cri_slots::PULL_POD_NAME).unwrap_or_default(),
                });
            }
            _ => {
                call.container_id = text(cri_slots::ID);
                if matches!(rec.method, CriMethod::StopContainer | CriMethod::ExecSync) {
                    call.timeout = Some(rec.numbers[cri_slots::NUMBER]);
                }
                if let Some(info) = call.container_id.as_deref().and_then(|id| cache.get(id)) {
                    call.pod = Some(info.pod.clone()).filter(|p| !p.uid.is_empty());
                    call.container_name.clone_from(&info.container_name);
                    call.image.clone_from(&info.image);
                    call.sandbox_id.clone_from(&info.sandbox_id);
                }
            }
        }
        if self.inflight.len() >= INFLIGHT_MAX
            && let Some(oldest) = self
                .inflight
                .iter()
                .min_by_key(|(_, call)| call.start_unix_ns)
                .map(|(key, _)| *key)
        {
            self.inflight.remove(&oldest);
        }
        self.inflight.insert((rec.tgid, rec.goroutine), call);
    }

    /// Completes a call; returns its span, or `None` when its entry was not seen.
    pub(super) fn on_end(
        &mut self,
        rec: &CriRecord,
        clock: &WallClock,
        cache: &mut ContainerCache,
        node_name: &str,
    ) -> Option<Span> {
        let mut call = self.inflight.remove(&(rec.tgid, rec.goroutine))?;
        call.end_unix_ns = Some(clock.to_unix_ns(rec.ktime_ns).max(call.start_unix_ns));
        let response = Some(rec.strings[cri_slots::RESPONSE].clone()).filter(|s| !s.is_empty());
        match (call.method, response) {
            (CriMethod::RunPodSandbox, Some(sandbox_id)) => {
                if let Some(pod) = &call.pod {
                    cache.insert_sandbox(&sandbox_id, pod.clone());
                }
                call.sandbox_id = Some(sandbox_id);
            }
            (CriMethod::CreateContainer, Some(container_id)) => {
                if let Some(pod) = &call.pod {
                    cache.insert(ContainerInfo {
                        container_id: container_id.clone(),
                        kind: Some(ContainerKind::Container),
                        sandbox_id: call.sandbox_id.clone(),
                        pod: pod.clone(),
                        container_name: call.container_name.clone(),
                        image: call.image.clone(),
                    });
                }
                call.container_id = Some(container_id);
            }
            (CriMethod::PullImage, Some(image_ref)) => {
                call.image_ref = Some(image_ref);
            }
            _ => {}
        }
        let created = match call.method {
            CriMethod::RunPodSandbox => call.sandbox_id.as_ref(),
            CriMethod::CreateContainer => call.container_id.as_ref(),
            _ => None,
        };
        if let (Some(id), Some(attempt), false) = (created, call.attempt, rec.error) {
            if self.attempts.len() >= ATTEMPTS_MAX {
                self.attempts.clear();
            }
            self.attempts.insert(id.clone(), attempt);
        }
        let span = self.span(&call, rec.error, node_name);
        if self.recent.len() == RECENT_CALLS {
            self.recent.pop_front();
        }
        self.recent.push_back(call);
        Some(span)
    }

    fn span(&self, call: &CriCall, error: bool, node_name: &str) -> Span {
        let service = match call.method {
            CriMethod::PullImage => "runtime.v1.ImageService",
            _ => "runtime.v1.RuntimeService",
        };
        let mut attributes = vec![
            Attribute::str(keys::RPC_SYSTEM, "grpc"),
            Attribute::str(keys::RPC_SERVICE, service),
            Attribute::str(keys::RPC_METHOD, call.method.name()),
            Attribute::str(keys::CONTAINER_RUNTIME, self.service.clone()),
        ];
        if !node_name.is_empty() {
            attributes.push(Attribute::str(keys::NODE_NAME, node_name));
        }
        if let Some(pod) = &call.pod {
            attributes.push(Attribute::str(keys::POD_UID, pod.uid.clone()));
            attributes.push(Attribute::str(keys::NAMESPACE, pod.namespace.clone()));
            attributes.push(Attribute::str(keys::POD_NAME, pod.name.clone()));
        }
        let optional = [
            (keys::CONTAINER_ID, &call.container_id),
            (keys::CONTAINER_NAME, &call.container_name),
            (keys::IMAGE_NAME, &call.image),
            (keys::IMAGE_ID, &call.image_ref),
            (keys::SANDBOX_ID, &call.sandbox_id),
            (keys::RUNTIME_HANDLER, &call.runtime_handler),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(Attribute::str(key, value.clone()));
            }
        }
        let attempt = call.attempt.or_else(|| {
            // Calls that name an existing container or sandbox carry its attempt.
            let id = match call.method {
                CriMethod::StopPodSandbox | CriMethod::RemovePodSandbox => call.sandbox_id.as_ref(),
                _ => call.container_id.as_ref(),
            };
            id.and_then(|id| self.attempt_of(id))
        });
        if let Some(attempt) = attempt {
            attributes.push(Attribute::int(keys::ATTEMPT, attempt as i64));
        }
        if let Some(timeout) = call.timeout {
            attributes.push(Attribute::int(keys::TIMEOUT_SECONDS, timeout as i64));
        }
        Span {
            trace_id: call.trace_id(),
            span_id: call.span_id,
            parent_span_id: None,
            name: call.method.name().to_owned(),
            service: self.service.clone(),
            kind: SpanKind::Server,
            start_unix_ns: call.start_unix_ns,
            end_unix_ns: call.end_unix_ns.unwrap_or(call.start_unix_ns),
            pod: call.pod.clone(),
            attributes,
            status: if error {
                SpanStatus::Error(format!("{} returned an error", call.method.name()))
            } else {
                SpanStatus::Unset
            },
        }
    }

    /// Remembers the attempt of a container or sandbox the runtime reported (it was created
    /// before the agent started).
    pub(super) fn remember_attempt(&mut self, id: &str, attempt: u64) {
        if self.attempts.len() >= ATTEMPTS_MAX {
            self.attempts.clear();
        }
        self.attempts.insert(id.to_owned(), attempt);
    }

    /// The attempt of the container or sandbox `id`, when its creation was seen.
    pub(super) fn attempt_of(&self, id: &str) -> Option<u64> {
        self.attempts.get(id).copied()
    }

    /// The attempt a CRI call (by its span id) was about: what it created, or what it named.
    pub(super) fn attempt_of_call(&self, span_id: SpanId) -> Option<u64> {
        let call = self
            .inflight
            .values()
            .chain(self.recent.iter())
            .find(|call| call.span_id == span_id)?;
        call.attempt.or_else(|| {
            [&call.container_id, &call.sandbox_id]
                .into_iter()
                .flatten()
                .find_map(|id| self.attempt_of(id))
        })
    }

    /// The CRI call (span id, trace id) that caused a runtime or container-process span: the
    /// latest one about the same container whose window holds the span's start.
    pub(super) fn parent_of(&self, span: &Span) -> Option<(SpanId, TraceId)> {
        let container_id = span.attr_str(keys::CONTAINER_ID)?;
        let is_sandbox = span.attr_str(keys::CONTAINER_TYPE) == Some("sandbox");
        let pod_uid = span.pod.as_ref().map(|p| p.uid.as_str());
        self.inflight
            .values()
            .chain(self.recent.iter().rev())
            .filter(|call| call.caused(container_id, is_sandbox, pod_uid, span.start_unix_ns))
            .max_by_key(|call| call.start_unix_ns)
            .map(|call| (call.span_id, call.trace_id()))
    }
}

fn sandbox_pod(cache: &mut ContainerCache, sandbox_id: &str) -> Option<PodRef> {
    if let Some(pod) = cache.sandbox_pod(sandbox_id) {
        return Some(pod.clone());
    }
    cache
        .get(sandbox_id)
        .map(|info| info.pod.clone())
        .filter(|p| !p.uid.is_empty())
}
