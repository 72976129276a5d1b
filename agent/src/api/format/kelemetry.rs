//! Spans as Jaeger domain-model traces (`{"data":[Trace...]}`), the body Kelemetry's HTTP trace
//! extension decodes. Root spans have no references: Kelemetry hangs them under its pod span.
//! So a reference to a span that is not in the answer (the span of a pod's trace-context
//! annotation, made elsewhere) is dropped, its id kept as a tag, and the trace's warnings go on
//! the root spans, where Kelemetry reads them.

use super::jaeger_model::{
    KeyValue, Process, ProcessMapping, Span, SpanRef, Trace, TracesResponse,
};
use super::{TraceSpans, go_json, list_as_string, resource_attributes, span_attributes};
use crate::model::{self, AttrValue, Attribute, SpanKind, SpanStatus};

/// Jaeger's `SampledFlag`.
const FLAG_SAMPLED: u32 = 1;

/// Tag of a span whose parent is not in the answer: the parent's id (hex).
pub const DETACHED_PARENT_TAG: &str = "nodetrace.parent_span_id";

/// `{"data":[...]}` as Go's `json.Marshal` writes it.
pub fn encode(traces: &[TraceSpans]) -> Result<Vec<u8>, serde_json::Error> {
    go_json::to_vec(&response(traces))
}

/// The response body as the Jaeger model, shaped for Kelemetry (see the module doc).
pub fn response(traces: &[TraceSpans]) -> TracesResponse {
    TracesResponse {
        data: traces
            .iter()
            .map(|trace| for_kelemetry(to_jaeger_trace(trace)))
            .collect(),
    }
}

/// Drops references to spans not in `trace` (keeping the parent's id as a tag) and puts the
/// trace's warnings on its root spans.
fn for_kelemetry(mut trace: Trace) -> Trace {
    let ids: std::collections::HashSet<String> =
        trace.spans.iter().map(|s| s.span_id.to_hex()).collect();
    for span in &mut trace.spans {
        let (kept, dropped): (Vec<SpanRef>, Vec<SpanRef>) = std::mem::take(&mut span.references)
            .into_iter()
            .partition(|r| ids.contains(&r.span_id.to_hex()));
        span.references = kept;
        for reference in dropped {
            span.tags.push(KeyValue::string(
                DETACHED_PARENT_TAG,
                reference.span_id.to_hex(),
            ));
        }
        if span.references.is_empty() {
            span.warnings.extend(trace.warnings.iter().cloned());
        }
    }
    trace
}

/// One trace. Every span carries its `process` (what Kelemetry and Jaeger's UI conversion read)
/// and a `process_id` into the trace's `process_map`.
pub fn to_jaeger_trace(trace: &TraceSpans) -> Trace {
    let mut processes: Vec<Process> = Vec::new();
    let spans = trace
        .spans
        .iter()
        .map(|span| {
            let process = Process {
                service_name: span.service.clone(),
                tags: resource_attributes(span).iter().map(key_value).collect(),
            };
            let index = match processes.iter().position(|p| *p == process) {
                Some(index) => index,
                None => {
                    processes.push(process.clone());
                    processes.len() - 1
                }
            };
            to_jaeger_span(span, process, process_id(index))
        })
        .collect();
    Trace {
        spans,
        process_map: processes
            .into_iter()
            .enumerate()
            .map(|(index, process)| ProcessMapping {
                process_id: process_id(index),
                process,
            })
            .collect(),
        warnings: trace.warnings.clone(),
    }
}

fn process_id(index: usize) -> String {
    format!("p{}", index + 1)
}

fn to_jaeger_span(span: &model::Span, process: Process, process_id: String) -> Span {
    Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        operation_name: span.name.clone(),
        references: span
            .parent_span_id
            .map(|parent| vec![SpanRef::child_of(span.trace_id, parent)])
            .unwrap_or_default(),
        flags: FLAG_SAMPLED,
        start_unix_ns: span.start_unix_ns,
        duration_ns: i64::try_from(span.duration_ns()).unwrap_or(i64::MAX),
        tags: span_tags(span),
        logs: Vec::new(),
        process: Some(process),
        process_id,
        warnings: Vec::new(),
    }
}

/// Attributes, then span kind and status as the OpenTelemetry-to-Jaeger mapping writes them
/// (`span.kind` except for internal spans; `otel.status_code`, `otel.status_description` and
/// `error=true` for errors).
fn span_tags(span: &model::Span) -> Vec<KeyValue> {
    let mut tags: Vec<KeyValue> = span_attributes(span).iter().map(key_value).collect();
    match span.kind {
        SpanKind::Server => tags.push(KeyValue::string("span.kind", "server")),
        SpanKind::Client => tags.push(KeyValue::string("span.kind", "client")),
        SpanKind::Internal => {}
    }
    match &span.status {
        SpanStatus::Unset => {}
        SpanStatus::Ok => tags.push(KeyValue::string("otel.status_code", "OK")),
        SpanStatus::Error(message) => {
            tags.push(KeyValue::string("otel.status_code", "ERROR"));
            if !message.is_empty() {
                tags.push(KeyValue::string(
                    "otel.status_description",
                    message.as_str(),
                ));
            }
            tags.push(KeyValue::bool("error", true));
        }
    }
    tags
}

fn key_value(attr: &Attribute) -> KeyValue {
    match &attr.value {
        AttrValue::Str(s) => KeyValue::string(&attr.key, s.as_str()),
        AttrValue::Int(i) => KeyValue::int64(&attr.key, *i),
        AttrValue::Bool(b) => KeyValue::bool(&attr.key, *b),
        AttrValue::StrList(items) => KeyValue::string(&attr.key, list_as_string(items)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, golden, group_into_traces};
    use super::*;

    fn pretty(traces: &[TraceSpans]) -> String {
        let bytes = go_json::to_vec_pretty(&response(traces)).expect("serializes");
        String::from_utf8(bytes).expect("utf-8") + "\n"
    }

    #[test]
    fn pod_trace_matches_golden_file() {
        let traces = group_into_traces(fixtures::pod_trace());
        golden::assert_golden("kelemetry_pod_trace.json", &pretty(&traces));
    }

    #[test]
    fn compact_form_is_the_golden_file_without_whitespace() {
        let traces = group_into_traces(fixtures::pod_trace());
        let compact = String::from_utf8(encode(&traces).expect("serializes")).expect("utf-8");
        assert_eq!(
            compact,
            golden::minify_json(&golden::read("kelemetry_pod_trace.json"))
        );
    }

    #[test]
    fn exact_bytes_of_one_span() {
        let mut span = fixtures::pod_trace()[1].clone();
        span.attributes.truncate(2);
        span.pod = None;
        let trace = to_jaeger_trace(&group_into_traces(vec![span]).remove(0));
        let json = String::from_utf8(go_json::to_vec(&trace.spans[0]).expect("serializes"))
            .expect("utf-8");
        assert_eq!(
            json,
            concat!(
                r#"{"trace_id":"PyobTF1uT3CBkqO0xdbn+A==","span_id":"obLD1AAAAAE=","#,
                r#""operation_name":"RunPodSandbox","references":[],"flags":1,"#,
                r#""start_time":"2024-05-14T09:30:00.123456789Z","duration":412346000,"#,
                r#""tags":[{"key":"rpc.system","v_str":"grpc"},{"key":"span.kind","v_str":"server"}],"#,
                r#""logs":[],"process":{"service_name":"containerd","tags":[{"key":"k8s.node.name","v_str":"node-a"}]},"#,
                r#""process_id":"p1"}"#
            )
        );
    }

    #[test]
    fn decodes_back_to_the_same_model() {
        let traces = group_into_traces(fixtures::pod_trace());
        let bytes = encode(&traces).expect("serializes");
        let back: TracesResponse = serde_json::from_slice(&bytes).expect("parses");
        assert_eq!(back, response(&traces));
        let exec = back.data[0]
            .spans
            .iter()
            .find(|s| s.operation_name == "runc exec")
            .expect("exec span");
        assert_eq!(exec.parent_span_id(), Some(fixtures::span_id(9)));
        assert_eq!(exec.tag("error"), Some(&KeyValue::bool("error", true)));
    }

    #[test]
    fn warnings_and_empty_answers() {
        let mut traces = group_into_traces(fixtures::pod_trace());
        traces[0].warnings.push("cut".to_owned());
        assert_eq!(to_jaeger_trace(&traces[0]).warnings, vec!["cut".to_owned()]);
        let answer = response(&traces);
        for span in &answer.data[0].spans {
            let expected: &[String] = if span.references.is_empty() {
                &traces[0].warnings
            } else {
                &[]
            };
            assert_eq!(
                span.warnings, expected,
                "warnings on the root spans only: {}",
                span.operation_name
            );
        }
        assert_eq!(encode(&[]).expect("serializes"), br#"{"data":[]}"#);
    }

    #[test]
    fn a_parent_outside_the_answer_is_dropped_and_kept_as_a_tag() {
        let mut spans = fixtures::pod_trace();
        let outside = crate::model::SpanId([0xab; 8]);
        let root = spans
            .iter_mut()
            .find(|s| s.parent_span_id.is_none())
            .expect("a root");
        root.parent_span_id = Some(outside);
        let root_id = root.span_id;
        let traces = group_into_traces(spans);
        let answer = response(&traces);
        let span = answer.data[0]
            .spans
            .iter()
            .find(|s| s.span_id == root_id)
            .expect("the span");
        assert!(span.references.is_empty(), "{:?}", span.references);
        assert_eq!(
            span.tag(DETACHED_PARENT_TAG),
            Some(&KeyValue::string(DETACHED_PARENT_TAG, outside.to_hex()))
        );
        // References inside the answer stay.
        assert!(
            answer.data[0]
                .spans
                .iter()
                .any(|s| !s.references.is_empty())
        );
        // Jaeger UI keeps the reference (it shows the parent as missing).
        let ui = super::super::jaeger_ui::response(&traces);
        let ui_span = ui.data[0]
            .spans
            .iter()
            .find(|s| s.span_id == root_id.to_hex())
            .expect("the span");
        assert_eq!(ui_span.references.len(), 1);
    }
}
