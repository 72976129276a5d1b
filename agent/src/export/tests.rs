//! Behaviour of the export task through an in-memory exporter: batching, resources, drops,
//! retries and shutdown.

use super::{ExportConfig, ExportHandle, ExportSink, ExportStats, Exporter};
use crate::api::format::fixtures;
use crate::model::Span;
use opentelemetry::Key;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Collector {
    /// Requests to fail before accepting any (`usize::MAX`: always fail).
    fail_first: usize,
    attempts: usize,
    /// (service.name of the resource, spans) of every accepted request.
    received: Vec<(String, Vec<SpanData>)>,
}

#[derive(Debug, Clone)]
struct FakeExporter {
    collector: Arc<Mutex<Collector>>,
    service: String,
}

impl FakeExporter {
    fn new(fail_first: usize) -> (Self, Arc<Mutex<Collector>>) {
        let collector = Arc::new(Mutex::new(Collector {
            fail_first,
            ..Collector::default()
        }));
        let exporter = Self {
            collector: Arc::clone(&collector),
            service: String::new(),
        };
        (exporter, collector)
    }
}

impl SpanExporter for FakeExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut collector = self.collector.lock().unwrap();
        collector.attempts += 1;
        if collector.attempts <= collector.fail_first {
            return Err(OTelSdkError::InternalFailure("collector down".to_owned()));
        }
        collector.received.push((self.service.clone(), batch));
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.service = resource
            .get(&Key::from_static_str("service.name"))
            .map(|v| v.to_string())
            .unwrap_or_default();
    }
}

fn config() -> ExportConfig {
    ExportConfig {
        max_batch: 3,
        max_delay: Duration::from_millis(50),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
        node_name: "node-a".to_owned(),
        ..ExportConfig::default()
    }
}

fn start(
    config: ExportConfig,
    fail_first: usize,
) -> (ExportSink, ExportHandle, Arc<Mutex<Collector>>) {
    let (exporter, collector) = FakeExporter::new(fail_first);
    let (sink, handle) = Exporter::start_with_exporter(config, exporter).unwrap();
    (sink, handle, collector)
}

fn spans_of(service: &str, n: usize) -> Vec<Span> {
    let template = fixtures::pod_trace().remove(0);
    (0..n)
        .map(|i| {
            let mut span = template.clone();
            span.service = service.to_owned();
            span.span_id = fixtures::span_id(u8::try_from(i).unwrap());
            span
        })
        .collect()
}

async fn wait_for(handle: &ExportHandle, done: impl Fn(&ExportStats) -> bool) -> ExportStats {
    for _ in 0..500 {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached; stats {:?}", handle.stats());
}

fn batch_shapes(collector: &Mutex<Collector>) -> Vec<(String, usize)> {
    let collector = collector.lock().unwrap();
    collector
        .received
        .iter()
        .map(|(service, spans)| (service.clone(), spans.len()))
        .collect()
}

#[tokio::test]
async fn batches_by_size_then_by_delay() {
    let (sink, handle, collector) = start(config(), 0);
    for span in spans_of("runc", 7) {
        assert!(sink.send(span));
    }
    wait_for(&handle, |s| s.exported_spans == 7).await;
    assert_eq!(
        batch_shapes(&collector),
        [
            ("runc".to_owned(), 3),
            ("runc".to_owned(), 3),
            ("runc".to_owned(), 1)
        ]
    );
    let ids: Vec<u8> = collector.lock().unwrap().received[1]
        .1
        .iter()
        .map(|s| s.span_context.span_id().to_bytes()[7])
        .collect();
    assert_eq!(ids, [3, 4, 5], "order and ids kept");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_request_per_service_with_its_resource() {
    let (sink, handle, collector) = start(config(), 0);
    let mut spans = spans_of("containerd", 1);
    spans.extend(spans_of("runc", 2));
    for span in spans {
        sink.send(span);
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.exported_spans, 3);
    assert_eq!(
        batch_shapes(&collector),
        [("containerd".to_owned(), 1), ("runc".to_owned(), 2)]
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let config = ExportConfig {
        queue_capacity: 2,
        ..config()
    };
    let (sink, handle, _collector) = start(config, 0);
    // The current-thread runtime does not run the task between these sends.
    let queued: Vec<bool> = spans_of("runc", 5)
        .into_iter()
        .map(|s| sink.send(s))
        .collect();
    assert_eq!(queued, [true, true, false, false, false]);
    assert_eq!(handle.stats().dropped_queue_full, 3);
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.exported_spans, 2);
    assert!(!sink.send(spans_of("runc", 1).remove(0)), "stopped task");
    assert_eq!(stats.dropped_queue_full, 3);
}

#[tokio::test]
async fn spans_beyond_the_byte_budget_are_dropped_and_room_comes_back_once_sent() {
    let one = spans_of("runc", 1).remove(0).approx_bytes();
    let config = ExportConfig {
        max_bytes: 2 * one + one / 2,
        ..config()
    };
    let (sink, handle, _collector) = start(config, 0);
    // The current-thread runtime does not run the task between these sends.
    let queued: Vec<bool> = spans_of("runc", 4)
        .into_iter()
        .map(|s| sink.send(s))
        .collect();
    assert_eq!(queued, [true, true, false, false]);
    assert_eq!(handle.stats().dropped_queue_full, 2);
    wait_for(&handle, |s| s.exported_spans == 2).await;
    assert!(
        sink.send(spans_of("runc", 1).remove(0)),
        "the sent spans gave their room back"
    );
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.exported_spans, 3);
}

#[tokio::test]
async fn failed_batches_are_retried_until_accepted() {
    let (sink, handle, collector) = start(config(), 3);
    for span in spans_of("runc", 3) {
        sink.send(span);
    }
    let stats = wait_for(&handle, |s| s.exported_spans == 3).await;
    assert_eq!(stats.failed_exports, 3);
    assert_eq!(stats.retries, 3);
    assert_eq!(collector.lock().unwrap().attempts, 4);
    assert_eq!(batch_shapes(&collector), [("runc".to_owned(), 3)]);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsent_spans_are_bounded_and_dropped_at_the_shutdown_deadline() {
    let config = ExportConfig {
        retry_capacity: 5,
        shutdown_timeout: Duration::from_millis(200),
        ..config()
    };
    let (sink, handle, _collector) = start(config, usize::MAX);
    for span in spans_of("runc", 8) {
        sink.send(span);
    }
    let stats = wait_for(&handle, |s| s.dropped_retry_full == 3).await;
    assert!(stats.failed_exports >= 1);
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.exported_spans, 0);
    assert_eq!(stats.dropped_at_shutdown, 5);
    assert!(stats.retries >= 1);
}

#[tokio::test]
async fn shutdown_sends_the_batch_being_filled() {
    let config = ExportConfig {
        max_delay: Duration::from_secs(3600),
        ..config()
    };
    let (sink, handle, collector) = start(config, 0);
    for span in spans_of("runc", 2) {
        sink.send(span);
    }
    let stats = tokio::time::timeout(Duration::from_secs(2), handle.shutdown())
        .await
        .expect("shutdown does not wait for max_delay")
        .unwrap();
    assert_eq!(stats.exported_spans, 2);
    assert_eq!(batch_shapes(&collector), [("runc".to_owned(), 2)]);
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let (exporter, _) = FakeExporter::new(0);
    let error = Exporter::start_with_exporter(config(), exporter).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the otlp exporter must be started inside a tokio runtime"
    );
}
