//! Jaeger's domain model (`github.com/jaegertracing/jaeger/model`, `model.pb.go`) with the JSON
//! that Go's `encoding/json` gives it: the field names, order and `omitempty` of its struct tags,
//! enums as integers, ids as base64, `time.Time` as RFC 3339, `time.Duration` as nanoseconds.
//! This is what Kelemetry's HTTP trace extension decodes; the CLI decodes it back.

use super::go_types::{self, nullable_vec};
use crate::model::{SpanId, TraceId};
use serde::{Deserialize, Serialize};

/// The body Kelemetry's `TraceResponse{Data []*model.Trace}` decodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TracesResponse {
    #[serde(default, deserialize_with = "nullable_vec")]
    pub data: Vec<Trace>,
}

/// `model.Trace`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub spans: Vec<Span>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub process_map: Vec<ProcessMapping>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub warnings: Vec<String>,
}

/// `model.Trace_ProcessMapping`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessMapping {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub process_id: String,
    #[serde(default)]
    pub process: Process,
}

/// `model.Span`. Times are Unix nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    #[serde(with = "go_types::trace_id")]
    pub trace_id: TraceId,
    #[serde(with = "go_types::span_id")]
    pub span_id: SpanId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation_name: String,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub references: Vec<SpanRef>,
    #[serde(default)]
    pub flags: u32,
    #[serde(rename = "start_time", with = "go_types::time_ns")]
    pub start_unix_ns: u64,
    /// `time.Duration`: signed nanoseconds.
    #[serde(rename = "duration")]
    pub duration_ns: i64,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub tags: Vec<KeyValue>,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub logs: Vec<Log>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub process_id: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub warnings: Vec<String>,
}

impl Span {
    /// The span this one is a `CHILD_OF` in the same trace, if any.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.references
            .iter()
            .find(|r| r.ref_type == SpanRef::CHILD_OF && r.trace_id == self.trace_id)
            .map(|r| r.span_id)
    }

    pub fn tag(&self, key: &str) -> Option<&KeyValue> {
        self.tags.iter().find(|t| t.key == key)
    }
}

/// `model.SpanRef`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanRef {
    #[serde(with = "go_types::trace_id")]
    pub trace_id: TraceId,
    #[serde(with = "go_types::span_id")]
    pub span_id: SpanId,
    /// `model.SpanRefType`: `CHILD_OF` (0, so omitted) or `FOLLOWS_FROM` (1).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub ref_type: i32,
}

impl SpanRef {
    pub const CHILD_OF: i32 = 0;
    pub const FOLLOWS_FROM: i32 = 1;

    pub fn child_of(trace_id: TraceId, span_id: SpanId) -> Self {
        Self {
            trace_id,
            span_id,
            ref_type: Self::CHILD_OF,
        }
    }
}

/// `model.Process`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub tags: Vec<KeyValue>,
}

/// `model.Log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Log {
    #[serde(rename = "timestamp", with = "go_types::time_ns")]
    pub timestamp_unix_ns: u64,
    #[serde(default, deserialize_with = "nullable_vec")]
    pub fields: Vec<KeyValue>,
}

/// `model.KeyValue`: every field `omitempty`, so a string tag has no `v_type` (STRING is 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub v_type: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub v_str: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub v_bool: bool,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub v_int64: i64,
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub v_float64: f64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "go_types::bytes_b64"
    )]
    pub v_binary: Vec<u8>,
}

impl KeyValue {
    /// `model.ValueType` values.
    pub const STRING: i32 = 0;
    pub const BOOL: i32 = 1;
    pub const INT64: i32 = 2;
    pub const FLOAT64: i32 = 3;
    pub const BINARY: i32 = 4;

    pub fn string(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            v_type: Self::STRING,
            v_str: value.into(),
            ..Self::default()
        }
    }

    pub fn bool(key: &str, value: bool) -> Self {
        Self {
            key: key.to_owned(),
            v_type: Self::BOOL,
            v_bool: value,
            ..Self::default()
        }
    }

    pub fn int64(key: &str, value: i64) -> Self {
        Self {
            key: key.to_owned(),
            v_type: Self::INT64,
            v_int64: value,
            ..Self::default()
        }
    }

    /// The value as text, as Jaeger's `KeyValue.AsString` would show it.
    pub fn value_string(&self) -> String {
        match self.v_type {
            Self::BOOL => self.v_bool.to_string(),
            Self::INT64 => self.v_int64.to_string(),
            Self::FLOAT64 => self.v_float64.to_string(),
            Self::BINARY => self.v_binary.iter().map(|b| format!("{b:02x}")).collect(),
            _ => self.v_str.clone(),
        }
    }
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_omit_empty_fields_like_go() {
        let tags = vec![
            KeyValue::string("s", "x"),
            KeyValue::string("empty", ""),
            KeyValue::bool("t", true),
            KeyValue::bool("f", false),
            KeyValue::int64("i", -3),
            KeyValue::int64("zero", 0),
        ];
        let json = String::from_utf8(super::super::go_json::to_vec(&tags).expect("serializes"))
            .expect("utf-8");
        assert_eq!(
            json,
            concat!(
                r#"[{"key":"s","v_str":"x"},{"key":"empty"},{"key":"t","v_type":1,"v_bool":true},"#,
                r#"{"key":"f","v_type":1},{"key":"i","v_type":2,"v_int64":-3},"#,
                r#"{"key":"zero","v_type":2}]"#
            )
        );
        let back: Vec<KeyValue> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, tags);
    }

    #[test]
    fn decodes_go_nulls_and_missing_fields() {
        let json = r#"{"data":[{"spans":[{"trace_id":"AAAAAAAAAAIAAAAAAAAAAQ==",
            "span_id":"AAAAAAAAAAE=","references":null,"start_time":"2024-05-14T09:30:00Z",
            "duration":5,"tags":null,"logs":null,"process":{"service_name":"runc","tags":null}}],
            "process_map":null}]}"#;
        let response: TracesResponse = serde_json::from_str(json).expect("parses");
        let span = &response.data[0].spans[0];
        assert!(span.references.is_empty() && span.tags.is_empty() && span.logs.is_empty());
        assert_eq!(span.start_unix_ns, 1_715_679_000_000_000_000);
        assert_eq!(span.duration_ns, 5);
        assert_eq!(span.parent_span_id(), None);
    }

    #[test]
    fn value_strings() {
        assert_eq!(KeyValue::int64("k", 7).value_string(), "7");
        assert_eq!(KeyValue::bool("k", true).value_string(), "true");
        assert_eq!(KeyValue::string("k", "v").value_string(), "v");
    }
}
