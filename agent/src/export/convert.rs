//! Our spans as the SDK's `SpanData` (ids kept as they are) and the resource of each service.
//!
//! Attribute choices follow the OTLP/JSON encoder of the HTTP API (`api::format::otlp`): span
//! attributes without the resource keys plus the pod's, string lists as arrays, one resource per
//! service with `k8s.node.name` on the resource.

use super::ExportConfig;
use crate::api::format::span_attributes;
use crate::model::{self, AttrValue, Attribute, SpanStatus};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::time::{Duration, SystemTime};

/// The instrumentation scope of every span, as in the HTTP API's OTLP/JSON.
pub(super) const SCOPE_NAME: &str = "nodetrace";

/// The scope spans are reported under.
pub(super) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The resource of one service on this node: `service.name`, `k8s.node.name`,
/// `k8s.cluster.name` and `host.name` (the last three left out when not configured).
pub(super) fn service_resource(service: &str, config: &ExportConfig) -> Resource {
    let mut attributes = vec![KeyValue::new("service.name", service.to_owned())];
    let optional = [
        (model::keys::NODE_NAME, Some(config.node_name.as_str())),
        ("k8s.cluster.name", config.cluster_name.as_deref()),
        ("host.name", Some(config.host_name.as_str())),
    ];
    for (key, value) in optional {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new(key, value.to_owned()));
        }
    }
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

/// One finished span as `SpanData`, with the trace id, span id and parent span id it has.
pub(super) fn to_span_data(span: &model::Span, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id.0),
            SpanId::from_bytes(span.span_id.0),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: span
            .parent_span_id
            .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.0)),
        parent_span_is_remote: false,
        span_kind: match span.kind {
            model::SpanKind::Internal => SpanKind::Internal,
            model::SpanKind::Server => SpanKind::Server,
            model::SpanKind::Client => SpanKind::Client,
        },
        name: span.name.clone().into(),
        start_time: unix_time(span.start_unix_ns),
        end_time: unix_time(span.end_unix_ns),
        attributes: span_attributes(span).iter().map(key_value).collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &span.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Ok => Status::Ok,
            SpanStatus::Error(message) => Status::error(message.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}

fn unix_time(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

fn key_value(attr: &Attribute) -> KeyValue {
    let value = match &attr.value {
        AttrValue::Str(s) => Value::from(s.clone()),
        AttrValue::Int(i) => Value::I64(*i),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::StrList(items) => Value::Array(Array::String(
            items.iter().cloned().map(StringValue::from).collect(),
        )),
    };
    KeyValue::new(attr.key.clone(), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::format::fixtures;
    use crate::model::keys;

    fn attr<'a>(data: &'a SpanData, key: &str) -> Option<&'a Value> {
        data.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn keeps_our_ids_kind_times_and_status() {
        let spans = fixtures::pod_trace();
        let child = spans
            .iter()
            .find(|s| s.parent_span_id.is_some())
            .expect("a child span");
        let data = to_span_data(child, &scope());
        assert_eq!(data.span_context.trace_id().to_bytes(), child.trace_id.0);
        assert_eq!(data.span_context.span_id().to_bytes(), child.span_id.0);
        assert_eq!(
            Some(data.parent_span_id.to_bytes()),
            child.parent_span_id.map(|p| p.0)
        );
        assert!(data.span_context.is_sampled());
        assert_eq!(
            data.end_time.duration_since(data.start_time).unwrap(),
            Duration::from_nanos(child.duration_ns())
        );
        assert_eq!(data.instrumentation_scope.name(), SCOPE_NAME);

        let mut root = child.clone();
        root.parent_span_id = None;
        root.kind = model::SpanKind::Server;
        root.status = SpanStatus::Error("exit status 1".to_owned());
        let data = to_span_data(&root, &scope());
        assert_eq!(data.parent_span_id, SpanId::INVALID);
        assert_eq!(data.span_kind, SpanKind::Server);
        assert_eq!(data.status, Status::error("exit status 1"));
    }

    #[test]
    fn attributes_are_typed_and_include_the_pod() {
        let spans = fixtures::pod_trace();
        let span = spans
            .iter()
            .find(|s| {
                s.attributes
                    .iter()
                    .any(|a| a.key == keys::PROCESS_COMMAND_ARGS)
            })
            .expect("a span with command args");
        let data = to_span_data(span, &scope());
        let Some(AttrValue::StrList(args)) = span
            .attributes
            .iter()
            .find(|a| a.key == keys::PROCESS_COMMAND_ARGS)
            .map(|a| &a.value)
        else {
            panic!("command args are a string list");
        };
        let expected: Vec<StringValue> = args.iter().cloned().map(StringValue::from).collect();
        assert_eq!(
            attr(&data, keys::PROCESS_COMMAND_ARGS),
            Some(&Value::Array(Array::String(expected)))
        );
        assert!(matches!(
            attr(&data, keys::PROCESS_PID),
            Some(Value::I64(_))
        ));
        assert_eq!(
            attr(&data, keys::POD_UID),
            Some(&Value::from(fixtures::POD_UID))
        );
        assert_eq!(attr(&data, keys::NODE_NAME), None, "a resource attribute");
    }

    #[test]
    fn resource_has_service_node_cluster_and_host() {
        let config = ExportConfig {
            node_name: "node-a".to_owned(),
            cluster_name: Some("prod".to_owned()),
            host_name: "node-a.example".to_owned(),
            ..ExportConfig::default()
        };
        let resource = service_resource("runc", &config);
        let get = |key: &'static str| resource.get(&opentelemetry::Key::from_static_str(key));
        assert_eq!(get("service.name"), Some(Value::from("runc")));
        assert_eq!(get("k8s.node.name"), Some(Value::from("node-a")));
        assert_eq!(get("k8s.cluster.name"), Some(Value::from("prod")));
        assert_eq!(get("host.name"), Some(Value::from("node-a.example")));
        assert_eq!(resource.len(), 4);

        let bare = service_resource("runc", &ExportConfig::default());
        assert_eq!(bare.len(), 1);
    }
}
