//! Spans as one OTLP/JSON `ExportTraceServiceRequest` (the OTLP JSON encoding: lowerCamelCase
//! names, hex ids, 64-bit integers as decimal strings, enums as integers, default values left
//! out), one resource per service. A collector's `/v1/traces` accepts it as is.

use super::{TraceSpans, resource_attributes, span_attributes};
use crate::model::{self, AttrValue, Attribute, SpanKind, SpanStatus};
use serde::Serialize;

/// The instrumentation scope of every span.
const SCOPE_NAME: &str = "nodetrace";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportTraceServiceRequest {
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpans {
    pub resource: Resource,
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
pub struct ScopeSpans {
    pub scope: Scope,
    pub spans: Vec<Span>,
}

#[derive(Debug, Serialize)]
pub struct Scope {
    pub name: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `SPAN_KIND_INTERNAL` 1, `SERVER` 2, `CLIENT` 3.
    pub kind: u8,
    pub start_time_unix_nano: String,
    pub end_time_unix_nano: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `STATUS_CODE_OK` 1, `STATUS_CODE_ERROR` 2.
    pub code: u8,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: AnyValue,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AnyValue {
    StringValue(String),
    BoolValue(bool),
    /// int64, as a decimal string.
    IntValue(String),
    ArrayValue(ArrayValue),
}

#[derive(Debug, PartialEq, Serialize)]
pub struct ArrayValue {
    pub values: Vec<AnyValue>,
}

/// Compact OTLP/JSON of the traces.
pub fn encode(traces: &[TraceSpans]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&request(traces))
}

/// One request with every span, grouped by resource (service and resource attributes) in the
/// order the resources first appear; spans keep their trace and start order.
pub fn request(traces: &[TraceSpans]) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for span in traces.iter().flat_map(|t| &t.spans) {
        let resource = resource_of(span);
        let at = match resource_spans.iter().position(|r| r.resource == resource) {
            Some(at) => at,
            None => {
                resource_spans.push(ResourceSpans {
                    resource,
                    scope_spans: vec![ScopeSpans {
                        scope: Scope { name: SCOPE_NAME },
                        spans: Vec::new(),
                    }],
                });
                resource_spans.len() - 1
            }
        };
        if let Some(scope) = resource_spans
            .get_mut(at)
            .and_then(|r| r.scope_spans.first_mut())
        {
            scope.spans.push(to_otlp_span(span));
        }
    }
    ExportTraceServiceRequest { resource_spans }
}

fn resource_of(span: &model::Span) -> Resource {
    let mut attributes = vec![KeyValue {
        key: "service.name".to_owned(),
        value: AnyValue::StringValue(span.service.clone()),
    }];
    attributes.extend(resource_attributes(span).iter().map(key_value));
    Resource { attributes }
}

fn to_otlp_span(span: &model::Span) -> Span {
    Span {
        trace_id: span.trace_id.to_hex(),
        span_id: span.span_id.to_hex(),
        parent_span_id: span.parent_span_id.map(|p| p.to_hex()),
        name: span.name.clone(),
        kind: match span.kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
        start_time_unix_nano: span.start_unix_ns.to_string(),
        end_time_unix_nano: span.end_unix_ns.to_string(),
        attributes: span_attributes(span).iter().map(key_value).collect(),
        status: match &span.status {
            SpanStatus::Unset => None,
            SpanStatus::Ok => Some(Status {
                message: String::new(),
                code: 1,
            }),
            SpanStatus::Error(message) => Some(Status {
                message: message.clone(),
                code: 2,
            }),
        },
    }
}

fn key_value(attr: &Attribute) -> KeyValue {
    KeyValue {
        key: attr.key.clone(),
        value: match &attr.value {
            AttrValue::Str(s) => AnyValue::StringValue(s.clone()),
            AttrValue::Int(i) => AnyValue::IntValue(i.to_string()),
            AttrValue::Bool(b) => AnyValue::BoolValue(*b),
            AttrValue::StrList(items) => AnyValue::ArrayValue(ArrayValue {
                values: items.iter().cloned().map(AnyValue::StringValue).collect(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, golden, group_into_traces};
    use super::*;

    #[test]
    fn pod_trace_matches_golden_file() {
        let traces = group_into_traces(fixtures::pod_trace());
        let text = serde_json::to_string_pretty(&request(&traces)).expect("serializes") + "\n";
        golden::assert_golden("otlp_pod_trace.json", &text);
        let compact = String::from_utf8(encode(&traces).expect("serializes")).expect("utf-8");
        assert_eq!(compact, golden::minify_json(&text));
    }

    #[test]
    fn one_resource_per_service() {
        let traces = group_into_traces(fixtures::pod_trace());
        let services: Vec<String> = request(&traces)
            .resource_spans
            .iter()
            .map(|r| match &r.resource.attributes[0].value {
                AnyValue::StringValue(s) => s.clone(),
                other => panic!("service.name is {other:?}"),
            })
            .collect();
        assert_eq!(services, ["containerd", "runc", "container"]);
    }

    #[test]
    fn value_encodings() {
        let json = serde_json::to_string(&key_value(&Attribute::int("n", -5))).expect("json");
        assert_eq!(json, r#"{"key":"n","value":{"intValue":"-5"}}"#);
        let list = Attribute::str_list("l", vec!["a".to_owned()]);
        let json = serde_json::to_string(&key_value(&list)).expect("json");
        assert_eq!(
            json,
            r#"{"key":"l","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}"#
        );
    }
}
