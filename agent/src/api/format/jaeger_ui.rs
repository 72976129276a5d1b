//! Spans as Jaeger query/UI JSON (`model/json` in Jaeger): the body of Jaeger's `/api/traces`,
//! which Jaeger UI also loads from a file. Made from the domain model the way Jaeger's
//! `FromDomain` does it: hex ids, microsecond times, string `refType` and `type`.

use super::jaeger_model::{self as domain, KeyValue};
use super::{TraceSpans, kelemetry};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Response {
    pub data: Vec<Trace>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    /// Always `null` here, as in Jaeger's answers without errors.
    pub errors: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<Span>,
    pub processes: BTreeMap<String, Process>,
    /// `null` without warnings, as Jaeger writes a nil slice.
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub flags: u32,
    pub operation_name: String,
    pub references: Vec<Reference>,
    /// Microseconds since the Unix epoch.
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    pub tags: Vec<Tag>,
    /// Always empty: nodetrace's spans have no logs (Jaeger writes `[]`).
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    /// `null` without warnings, as Jaeger writes a nil slice.
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct Log {
    pub timestamp: u64,
    pub fields: Vec<Tag>,
}

#[derive(Debug, Serialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    pub ref_type: &'static str,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Serialize)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type")]
    pub value_type: &'static str,
    pub value: serde_json::Value,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Compact JSON of the traces.
pub fn encode(traces: &[TraceSpans]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&response(traces))
}

pub fn response(traces: &[TraceSpans]) -> Response {
    let data: Vec<Trace> = traces
        .iter()
        .map(|t| from_domain(&kelemetry::to_jaeger_trace(t)))
        .collect();
    Response {
        total: data.len(),
        data,
        limit: 0,
        offset: 0,
        errors: None,
    }
}

/// One domain trace in UI JSON; processes are keyed by the domain trace's process ids.
pub fn from_domain(trace: &domain::Trace) -> Trace {
    let trace_id = trace
        .spans
        .first()
        .map(|s| s.trace_id.to_hex())
        .unwrap_or_default();
    Trace {
        trace_id,
        spans: trace.spans.iter().map(span).collect(),
        processes: trace
            .process_map
            .iter()
            .map(|m| {
                let process = Process {
                    service_name: m.process.service_name.clone(),
                    tags: m.process.tags.iter().map(tag).collect(),
                };
                (m.process_id.clone(), process)
            })
            .collect(),
        warnings: Some(trace.warnings.clone()).filter(|w| !w.is_empty()),
    }
}

fn span(s: &domain::Span) -> Span {
    Span {
        trace_id: s.trace_id.to_hex(),
        span_id: s.span_id.to_hex(),
        flags: s.flags,
        operation_name: s.operation_name.clone(),
        references: s
            .references
            .iter()
            .map(|r| Reference {
                ref_type: if r.ref_type == domain::SpanRef::FOLLOWS_FROM {
                    "FOLLOWS_FROM"
                } else {
                    "CHILD_OF"
                },
                trace_id: r.trace_id.to_hex(),
                span_id: r.span_id.to_hex(),
            })
            .collect(),
        start_time: s.start_unix_ns / 1000,
        duration: u64::try_from(s.duration_ns / 1000).unwrap_or(0),
        tags: s.tags.iter().map(tag).collect(),
        logs: Vec::new(),
        process_id: s.process_id.clone(),
        warnings: Some(s.warnings.clone()).filter(|w| !w.is_empty()),
    }
}

fn tag(kv: &KeyValue) -> Tag {
    let (value_type, value) = match kv.v_type {
        KeyValue::BOOL => ("bool", serde_json::Value::from(kv.v_bool)),
        KeyValue::INT64 => ("int64", serde_json::Value::from(kv.v_int64)),
        KeyValue::FLOAT64 => ("float64", serde_json::Value::from(kv.v_float64)),
        KeyValue::BINARY => (
            "binary",
            serde_json::Value::from(STANDARD.encode(&kv.v_binary)),
        ),
        _ => ("string", serde_json::Value::from(kv.v_str.as_str())),
    };
    Tag {
        key: kv.key.clone(),
        value_type,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, golden, group_into_traces};
    use super::*;

    #[test]
    fn pod_trace_matches_golden_file() {
        let traces = group_into_traces(fixtures::pod_trace());
        let text = serde_json::to_string_pretty(&response(&traces)).expect("serializes") + "\n";
        golden::assert_golden("jaeger_ui_pod_trace.json", &text);
        let compact = String::from_utf8(encode(&traces).expect("serializes")).expect("utf-8");
        assert_eq!(compact, golden::minify_json(&text));
    }

    #[test]
    fn references_and_units() {
        let traces = group_into_traces(fixtures::pod_trace());
        let ui = &response(&traces).data[0];
        let exec = ui
            .spans
            .iter()
            .find(|s| s.operation_name == "runc exec")
            .expect("exec span");
        assert_eq!(exec.references[0].ref_type, "CHILD_OF");
        assert_eq!(exec.references[0].span_id, fixtures::span_id(9).to_hex());
        assert_eq!(exec.duration, 37_000);
        assert_eq!(exec.start_time, (fixtures::T0 + 5_003_000_000) / 1000);
        assert!(ui.processes.contains_key(&exec.process_id));
    }
}
