//! Spans of a pod held back while the runtime is asked about its new sandbox: without API
//! access, the pod's trace context and labels are only known from the sandbox (kubelet copies
//! the pod's annotations into it), and the sandbox can only be asked about once RunPodSandbox
//! returned. The spans made meanwhile (the sandbox's runtime runs, RunPodSandbox itself) wait,
//! so every span of the pod lands in the pod's one trace. Bounded in pods, spans and time.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::model::Span;

/// Most pods waiting at once; beyond, a new pod's spans are not held.
const PENDING_PODS_MAX: usize = 256;
/// Most spans held for one pod; beyond, they are let go as they are.
const HELD_SPANS_MAX: usize = 128;
/// Longest a pod waits (the runtime answers well before; this is for an answer lost).
const HOLD_MAX: Duration = Duration::from_secs(5);

struct Pending {
    since: Instant,
    spans: Vec<Span>,
}

#[derive(Default)]
pub(super) struct PodHold {
    pending: HashMap<String, Pending>,
}

impl PodHold {
    /// Starts holding the spans of pod `uid`; false when too many pods wait already.
    pub(super) fn begin(&mut self, uid: &str) -> bool {
        if self.pending.contains_key(uid) {
            return true;
        }
        if self.pending.len() >= PENDING_PODS_MAX {
            return false;
        }
        self.pending.insert(
            uid.to_owned(),
            Pending {
                since: Instant::now(),
                spans: Vec::new(),
            },
        );
        true
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Holds `span` when its pod waits; gives it back otherwise. A pod with too many held
    /// spans stops waiting: its spans are given back, the new one last.
    pub(super) fn hold(&mut self, span: Span) -> Result<(), Vec<Span>> {
        let Some(uid) = span.pod.as_ref().map(|pod| pod.uid.as_str()) else {
            return Err(vec![span]);
        };
        let Some(pending) = self.pending.get_mut(uid) else {
            return Err(vec![span]);
        };
        if pending.spans.len() < HELD_SPANS_MAX {
            pending.spans.push(span);
            return Ok(());
        }
        let uid = uid.to_owned();
        let mut spans = self.release(&uid);
        spans.push(span);
        Err(spans)
    }

    /// Stops waiting for pod `uid`; its held spans, oldest first.
    pub(super) fn release(&mut self, uid: &str) -> Vec<Span> {
        self.pending
            .remove(uid)
            .map(|pending| pending.spans)
            .unwrap_or_default()
    }

    /// The pods that waited too long.
    pub(super) fn overdue(&self) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(_, pending)| pending.since.elapsed() > HOLD_MAX)
            .map(|(uid, _)| uid.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodRef, SpanId, SpanKind, SpanStatus, TraceId};

    fn span(uid: &str) -> Span {
        Span {
            trace_id: TraceId::from_pod_uid(uid),
            span_id: SpanId::random(),
            parent_span_id: None,
            name: "runc create".to_owned(),
            service: "runc".to_owned(),
            kind: SpanKind::Internal,
            start_unix_ns: 1,
            end_unix_ns: 2,
            pod: Some(PodRef {
                uid: uid.to_owned(),
                ..PodRef::default()
            }),
            attributes: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    #[test]
    fn spans_of_a_waiting_pod_are_held_until_released() {
        let mut hold = PodHold::default();
        assert!(hold.begin("a"));
        assert!(hold.hold(span("a")).is_ok());
        assert!(hold.hold(span("a")).is_ok());
        assert_eq!(hold.hold(span("b")).expect_err("not waiting").len(), 1);
        assert_eq!(hold.release("a").len(), 2);
        assert!(hold.is_empty());
        assert_eq!(hold.hold(span("a")).expect_err("released").len(), 1);
    }

    #[test]
    fn holding_is_bounded_in_pods_and_spans() {
        let mut hold = PodHold::default();
        for i in 0..PENDING_PODS_MAX {
            assert!(hold.begin(&i.to_string()));
        }
        assert!(!hold.begin("one more"));
        for _ in 0..HELD_SPANS_MAX {
            assert!(hold.hold(span("0")).is_ok());
        }
        let back = hold.hold(span("0")).expect_err("over the bound");
        assert_eq!(back.len(), HELD_SPANS_MAX + 1);
        assert!(hold.hold(span("0")).is_err(), "the pod stopped waiting");
        assert!(hold.overdue().is_empty());
    }
}
