//! The export task: batches queued spans, exports one request at a time, retries with backoff.
//!
//! One exporter serves every service: before each request it is given the resource of the
//! batch's service (`SpanExporter::set_resource`), and batches hold the spans of one service.
//! The request runs as a future owned by the task, so the queue is drained while it is in
//! flight.

use super::ExportConfig;
use super::backoff::Backoff;
use super::convert::{scope, service_resource, to_span_data};
use super::outbox::{Batch, Outbox};
use super::stats::Counters;
use crate::model::Span;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SpanExporter;
use std::collections::HashMap;
use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::budget::ByteBudget;
use tokio::time::{Instant, sleep_until};

/// An export request under way; it gives the exporter back with the outcome.
type InFlight<E> = Pin<Box<dyn Future<Output = (E, OTelSdkResult)> + Send>>;

pub(super) struct Worker<E> {
    config: ExportConfig,
    queue: mpsc::Receiver<Span>,
    stop: oneshot::Receiver<()>,
    counters: Arc<Counters>,
    /// The pipeline's byte budget: given back as spans leave it (sent or dropped).
    budget: ByteBudget,
    /// `None` while a request is in flight (the request owns it).
    exporter: Option<E>,
    in_flight: Option<InFlight<E>>,
    /// Spans of the batch being filled, and when it must go at the latest.
    pending: Vec<Span>,
    pending_due: Option<Instant>,
    outbox: Outbox,
    backoff: Backoff,
    /// No request before this instant (set after a failure).
    retry_at: Option<Instant>,
    /// The last request failed (for logging the start and end of an outage once).
    failing: bool,
    resources: HashMap<String, Resource>,
    scope: InstrumentationScope,
}

impl<E: SpanExporter + 'static> Worker<E> {
    pub(super) fn new(
        config: ExportConfig,
        exporter: E,
        queue: mpsc::Receiver<Span>,
        stop: oneshot::Receiver<()>,
        counters: Arc<Counters>,
        budget: ByteBudget,
    ) -> Self {
        Self {
            outbox: Outbox::new(config.retry_capacity),
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            pending: Vec::with_capacity(config.max_batch),
            config,
            queue,
            stop,
            counters,
            budget,
            exporter: Some(exporter),
            in_flight: None,
            pending_due: None,
            retry_at: None,
            failing: false,
            resources: HashMap::new(),
            scope: scope(),
        }
    }

    /// Runs until stopped (then sends what is left until the shutdown deadline) or until every
    /// sink is gone and everything was sent.
    pub(super) async fn run(mut self) {
        let mut receiving = true;
        let mut deadline: Option<Instant> = None;
        loop {
            self.start_export_if_due();
            if !receiving && self.pending.is_empty() && self.outbox.is_empty() {
                break;
            }
            let (batch_due, retry_at) = (self.pending_due, self.retry_at);
            tokio::select! {
                biased;
                _ = &mut self.stop, if deadline.is_none() => {
                    deadline = Some(Instant::now() + self.config.shutdown_timeout);
                    self.queue.close();
                }
                () = wait_until(deadline) => {
                    self.give_up();
                    break;
                }
                (exporter, result) = wait_for(&mut self.in_flight) => {
                    self.finish_export(exporter, result);
                }
                span = self.queue.recv(), if receiving => match span {
                    Some(span) => self.add(span),
                    None => {
                        receiving = false;
                        self.flush_pending();
                    }
                },
                () = wait_until(batch_due) => self.flush_pending(),
                () = wait_until(retry_at), if self.in_flight.is_none() => self.retry_at = None,
            }
        }
        if let Some(Err(error)) = self.exporter.take().map(|e| e.shutdown()) {
            tracing::debug!(%error, "otlp exporter shutdown");
        }
    }

    fn add(&mut self, span: Span) {
        self.pending.push(span);
        if self.pending_due.is_none() {
            self.pending_due = Some(Instant::now() + self.config.max_delay);
        }
        if self.pending.len() >= self.config.max_batch {
            self.flush_pending();
        }
    }

    /// Moves the batch being filled to the outbox, one batch per service, converting only the
    /// spans there is room for.
    fn flush_pending(&mut self) {
        self.pending_due = None;
        let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
        for span in self.pending.drain(..) {
            match by_service.iter_mut().find(|(s, _)| *s == span.service) {
                Some((_, spans)) => spans.push(span),
                None => by_service.push((span.service.clone(), vec![span])),
            }
        }
        for (service, spans) in by_service {
            let room = self
                .config
                .retry_capacity
                .saturating_sub(self.outbox.spans());
            let kept = spans.len().min(room);
            let mut dropped = spans.len() - kept;
            let bytes: usize = spans[..kept].iter().map(Span::approx_bytes).sum();
            let left_out: usize = spans[kept..].iter().map(Span::approx_bytes).sum();
            self.budget.release(left_out);
            let spans = spans[..kept]
                .iter()
                .map(|s| to_span_data(s, &self.scope))
                .collect();
            dropped += self.outbox.push(Batch {
                service,
                spans,
                failures: 0,
                bytes,
            });
            if dropped > 0 {
                self.counters.dropped_retry_full(dropped);
                tracing::debug!(dropped, "otlp retry buffer full, spans dropped");
            }
        }
    }

    fn start_export_if_due(&mut self) {
        if self.in_flight.is_some() || self.retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.retry_at = None;
        let Some(batch) = self.outbox.front() else {
            return;
        };
        let Some(mut exporter) = self.exporter.take() else {
            return;
        };
        if batch.failures > 0 {
            self.counters.retried();
        }
        let resource = self
            .resources
            .entry(batch.service.clone())
            .or_insert_with(|| service_resource(&batch.service, &self.config));
        exporter.set_resource(resource);
        let spans = batch.spans.clone();
        self.in_flight = Some(Box::pin(async move {
            let result = exporter.export(spans).await;
            (exporter, result)
        }));
    }

    fn finish_export(&mut self, exporter: E, result: OTelSdkResult) {
        self.in_flight = None;
        self.exporter = Some(exporter);
        match result {
            Ok(()) => {
                self.budget
                    .release(self.outbox.front().map_or(0, |batch| batch.bytes));
                let sent = self.outbox.pop_front();
                self.counters.exported(sent);
                self.backoff.reset();
                if self.failing {
                    self.failing = false;
                    tracing::info!("otlp export works again");
                }
            }
            Err(error) => {
                self.counters.failed_export();
                if let Some(batch) = self.outbox.front_mut() {
                    batch.failures += 1;
                }
                let delay = self.backoff.next_delay();
                self.retry_at = Some(Instant::now() + delay);
                if self.failing {
                    tracing::debug!(%error, ?delay, "otlp export failed again");
                } else {
                    self.failing = true;
                    tracing::warn!(%error, ?delay, "otlp export failed, retrying with backoff");
                }
            }
        }
    }

    /// The shutdown deadline passed: counts every span not sent as dropped.
    fn give_up(&mut self) {
        self.in_flight = None;
        let mut left = self.pending.len() + self.outbox.spans();
        self.queue.close();
        while self.queue.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.counters.dropped_at_shutdown(left);
            tracing::warn!(left, "otlp export shutdown deadline passed, spans dropped");
        }
    }
}

/// Completes at `at`, never when `None`.
async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}

/// The outcome of the request in flight; never completes when there is none.
async fn wait_for<E>(in_flight: &mut Option<InFlight<E>>) -> (E, OTelSdkResult) {
    match in_flight {
        Some(request) => request.await,
        None => pending().await,
    }
}
