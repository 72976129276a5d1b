//! Encodings of stored spans for the HTTP API: Jaeger's domain model for Kelemetry, OTLP/JSON
//! and Jaeger UI JSON, plus what they share (grouping spans into traces, attribute views).

pub mod go_json;
pub mod go_types;
pub mod jaeger_model;
pub mod jaeger_ui;
pub mod kelemetry;
pub mod otlp;

use crate::model::{AttrValue, Attribute, Span, TraceId, keys};
use std::collections::HashMap;

/// The spans of one trace, sorted by start time, with warnings about the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSpans {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
    pub warnings: Vec<String>,
}

/// Sorts spans by (start, end, span id) and groups them by trace id; traces come in the order of
/// their first span.
pub fn group_into_traces(mut spans: Vec<Span>) -> Vec<TraceSpans> {
    spans.sort_by_key(|s| (s.start_unix_ns, s.end_unix_ns, s.span_id));
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    let mut traces: Vec<TraceSpans> = Vec::new();
    for span in spans {
        let at = *index.entry(span.trace_id).or_insert_with(|| {
            traces.push(TraceSpans {
                trace_id: span.trace_id,
                spans: Vec::new(),
                warnings: Vec::new(),
            });
            traces.len() - 1
        });
        if let Some(trace) = traces.get_mut(at) {
            trace.spans.push(span);
        }
    }
    traces
}

/// The response encodings, chosen by the `format` query parameter.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Jaeger's domain model as Go writes it: `{"data":[Trace...]}` (Kelemetry's HTTP extension).
    #[default]
    Kelemetry,
    /// One OTLP/JSON `ExportTraceServiceRequest`.
    Otlp,
    /// Jaeger query/UI JSON (`{"data":[...]}`, loadable in Jaeger UI).
    JaegerUi,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "kelemetry" => Some(Self::Kelemetry),
            "otlp" => Some(Self::Otlp),
            "jaeger" => Some(Self::JaegerUi),
            _ => None,
        }
    }

    /// Compact JSON of the traces in this format.
    pub fn encode(self, traces: &[TraceSpans]) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Kelemetry => kelemetry::encode(traces),
            Self::Otlp => otlp::encode(traces),
            Self::JaegerUi => jaeger_ui::encode(traces),
        }
    }
}

/// Keys that say where a span ran rather than what it did: Jaeger process tags and OTLP resource
/// attributes rather than span attributes.
pub const RESOURCE_KEYS: &[&str] = &[keys::NODE_NAME];

/// A span's own attributes (resource keys left out), followed by the pod attributes it lacks.
pub fn span_attributes(span: &Span) -> Vec<Attribute> {
    let mut out: Vec<Attribute> = span
        .attributes
        .iter()
        .filter(|a| !RESOURCE_KEYS.contains(&a.key.as_str()))
        .cloned()
        .collect();
    if let Some(pod) = &span.pod {
        for (key, value) in [
            (keys::POD_UID, &pod.uid),
            (keys::POD_NAME, &pod.name),
            (keys::NAMESPACE, &pod.namespace),
        ] {
            if !value.is_empty() && !out.iter().any(|a| a.key == key) {
                out.push(Attribute::str(key, value.as_str()));
            }
        }
    }
    out
}

/// The resource attributes of a span's process (service name not included).
pub fn resource_attributes(span: &Span) -> Vec<Attribute> {
    RESOURCE_KEYS
        .iter()
        .filter_map(|key| span.attributes.iter().find(|a| a.key == *key).cloned())
        .collect()
}

/// A string list as one string, the way the OpenTelemetry-to-Jaeger mapping writes arrays: a JSON
/// array.
pub fn list_as_string(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

/// The text of an attribute value for formats without typed lists.
pub fn attr_text(value: &AttrValue) -> String {
    match value {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::StrList(items) => list_as_string(items),
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
pub(crate) mod golden;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_trace_in_start_order() {
        let mut spans = fixtures::pod_trace();
        let mut other = fixtures::pod_trace()[0].clone();
        other.trace_id = TraceId([9; 16]);
        other.start_unix_ns = fixtures::T0 - 1;
        spans.push(other);
        spans.reverse();
        let traces = group_into_traces(spans);
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].trace_id, TraceId([9; 16]));
        let starts: Vec<u64> = traces[1].spans.iter().map(|s| s.start_unix_ns).collect();
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        assert_eq!(starts, sorted);
        assert_eq!(traces[1].spans.len(), fixtures::pod_trace().len());
    }

    #[test]
    fn pod_attributes_are_added_once_and_node_moves_to_the_resource() {
        let span = &fixtures::pod_trace()[0];
        let attrs = span_attributes(span);
        assert_eq!(attrs.iter().filter(|a| a.key == keys::POD_UID).count(), 1);
        assert!(!attrs.iter().any(|a| a.key == keys::NODE_NAME));
        assert_eq!(
            resource_attributes(span),
            vec![Attribute::str(keys::NODE_NAME, "node-a")]
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("kelemetry"), Some(Format::Kelemetry));
        assert_eq!(Format::parse("otlp"), Some(Format::Otlp));
        assert_eq!(Format::parse("jaeger"), Some(Format::JaegerUi));
        assert_eq!(Format::parse("zipkin"), None);
    }
}
