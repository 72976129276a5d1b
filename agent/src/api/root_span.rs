//! The synthesized pod root span: for Jaeger and OTLP consumers, one span per pod trace,
//! "pod <namespace>/<name> on <node>", covering the pod's node activity, with every parentless
//! span under it. Flagged `nodetrace.synthesized`; the Kelemetry format leaves it out because
//! Kelemetry parents parentless spans under its own pod span.

use sha2::{Digest, Sha256};

use super::format::TraceSpans;
use crate::model::{Attribute, Span, SpanId, SpanKind, SpanStatus, keys};

/// Marks a span the agent made up at query time rather than observed.
pub const SYNTHESIZED: &str = "nodetrace.synthesized";

/// Adds a root span to every trace whose spans belong to a pod.
pub fn add_pod_roots(traces: &mut [TraceSpans]) {
    for trace in traces {
        let Some(pod) = trace.spans.iter().find_map(|s| s.pod.clone()) else {
            continue;
        };
        let (Some(start), Some(end)) = (
            trace.spans.iter().map(|s| s.start_unix_ns).min(),
            trace.spans.iter().map(|s| s.end_unix_ns).max(),
        ) else {
            continue;
        };
        let node = trace
            .spans
            .iter()
            .find_map(|s| s.attr_str(keys::NODE_NAME))
            .unwrap_or("this node")
            .to_owned();
        let root_id = root_span_id(&trace.trace_id.0, &node);
        // The top spans: parentless, or under a span from outside this node (the pod's
        // trace-context annotation). The root goes between that outside span and them.
        let ids: std::collections::HashSet<SpanId> =
            trace.spans.iter().map(|s| s.span_id).collect();
        let outside: std::collections::HashSet<SpanId> = trace
            .spans
            .iter()
            .filter_map(|s| s.parent_span_id)
            .filter(|p| !ids.contains(p))
            .collect();
        let root_parent = (outside.len() == 1)
            .then(|| outside.iter().copied().next())
            .flatten();
        for span in &mut trace.spans {
            let top = match span.parent_span_id {
                None => true,
                Some(parent) => Some(parent) == root_parent,
            };
            if top {
                span.parent_span_id = Some(root_id);
            }
        }
        let pod_name = if pod.name.is_empty() {
            pod.uid.clone()
        } else {
            format!("{}/{}", pod.namespace, pod.name)
        };
        let mut attributes = vec![
            Attribute::bool(SYNTHESIZED, true),
            Attribute::str(keys::NODE_NAME, node.clone()),
        ];
        if trace
            .spans
            .iter()
            .any(|s| s.status != SpanStatus::Unset && s.status != SpanStatus::Ok)
        {
            attributes.push(Attribute::bool("nodetrace.pod.has_errors", true));
        }
        trace.spans.insert(
            0,
            Span {
                trace_id: trace.trace_id,
                span_id: root_id,
                parent_span_id: root_parent,
                name: format!("pod {pod_name} on {node}"),
                service: "nodetrace".to_owned(),
                kind: SpanKind::Internal,
                start_unix_ns: start,
                end_unix_ns: end,
                pod: Some(pod),
                attributes,
                status: SpanStatus::Unset,
            },
        );
    }
}

/// The same id for the same trace and node on every query, so clients can cache and link it.
fn root_span_id(trace_id: &[u8; 16], node: &str) -> SpanId {
    let digest = Sha256::new()
        .chain_update(b"nodetrace pod root")
        .chain_update(trace_id)
        .chain_update(node.as_bytes())
        .finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    SpanId(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodRef, TraceId};

    fn span(id: u8, parent: Option<u8>, start: u64, end: u64) -> Span {
        Span {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            name: format!("s{id}"),
            service: "runc".to_owned(),
            kind: SpanKind::Internal,
            start_unix_ns: start,
            end_unix_ns: end,
            pod: Some(PodRef {
                uid: "u".to_owned(),
                namespace: "ns".to_owned(),
                name: "web".to_owned(),
            }),
            attributes: vec![Attribute::str(keys::NODE_NAME, "node-a")],
            status: SpanStatus::Unset,
        }
    }

    #[test]
    fn the_root_covers_the_pod_and_adopts_parentless_spans() {
        let mut traces = vec![TraceSpans {
            trace_id: TraceId([7; 16]),
            spans: vec![
                span(1, None, 10, 20),
                span(2, Some(1), 12, 15),
                span(3, None, 30, 50),
            ],
            warnings: Vec::new(),
        }];
        add_pod_roots(&mut traces);
        let spans = &traces[0].spans;
        let root = &spans[0];
        assert_eq!(root.name, "pod ns/web on node-a");
        assert_eq!((root.start_unix_ns, root.end_unix_ns), (10, 50));
        assert_eq!(root.parent_span_id, None);
        assert!(
            root.attributes
                .contains(&Attribute::bool(SYNTHESIZED, true))
        );
        assert_eq!(spans[1].parent_span_id, Some(root.span_id));
        assert_eq!(
            spans[2].parent_span_id,
            Some(SpanId([1; 8])),
            "kept its own parent"
        );
        assert_eq!(spans[3].parent_span_id, Some(root.span_id));

        let mut again = vec![TraceSpans {
            trace_id: TraceId([7; 16]),
            spans: vec![span(9, None, 1, 2)],
            warnings: Vec::new(),
        }];
        add_pod_roots(&mut again);
        assert_eq!(
            again[0].spans[0].span_id, root.span_id,
            "stable across queries"
        );
    }

    #[test]
    fn under_a_trace_context_the_root_sits_between_the_outside_span_and_the_pod() {
        let outside = Some(99);
        let mut traces = vec![TraceSpans {
            trace_id: TraceId([7; 16]),
            spans: vec![
                span(1, outside, 10, 20),
                span(2, Some(1), 12, 15),
                span(3, outside, 30, 50),
            ],
            warnings: Vec::new(),
        }];
        add_pod_roots(&mut traces);
        let spans = &traces[0].spans;
        let root = &spans[0];
        assert_eq!(root.parent_span_id, Some(SpanId([99; 8])));
        assert_eq!(spans[1].parent_span_id, Some(root.span_id));
        assert_eq!(spans[2].parent_span_id, Some(SpanId([1; 8])));
        assert_eq!(spans[3].parent_span_id, Some(root.span_id));
    }

    #[test]
    fn traces_without_a_pod_get_no_root() {
        let mut lone = span(1, None, 1, 2);
        lone.pod = None;
        let mut traces = vec![TraceSpans {
            trace_id: TraceId([7; 16]),
            spans: vec![lone],
            warnings: Vec::new(),
        }];
        add_pod_roots(&mut traces);
        assert_eq!(traces[0].spans.len(), 1);
    }
}
