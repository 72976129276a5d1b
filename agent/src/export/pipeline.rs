//! Starting the export task, the sink that feeds it and the handle that watches and stops it.

use super::stats::{Counters, ExportStats};
use super::worker::Worker;
use super::{ExportConfig, ExportError, client};
use crate::model::Span;
use opentelemetry_sdk::trace::SpanExporter;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::budget::ByteBudget;
use tokio::task::JoinHandle;

/// Starts the OTLP export task.
#[derive(Debug)]
pub struct Exporter;

impl Exporter {
    /// Builds the OTLP exporter for `config` and spawns the export task on the current tokio
    /// runtime. A collector that is down is not an error: the task retries until it is up.
    pub fn start(config: ExportConfig) -> Result<(ExportSink, ExportHandle), ExportError> {
        config.validate()?;
        tokio::runtime::Handle::try_current()
            .map_err(|source| ExportError::NoRuntime { source })?;
        let exporter = client::build(&config)?;
        Self::start_with_exporter(config, exporter)
    }

    /// Like [`Exporter::start`], through any SDK `SpanExporter` (tests pass an in-memory one).
    pub fn start_with_exporter<E: SpanExporter + 'static>(
        config: ExportConfig,
        exporter: E,
    ) -> Result<(ExportSink, ExportHandle), ExportError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|source| ExportError::NoRuntime { source })?;
        let counters = Arc::new(Counters::default());
        let (queue_tx, queue_rx) = mpsc::channel(config.queue_capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let budget = ByteBudget::new(config.max_bytes);
        let worker = Worker::new(
            config,
            exporter,
            queue_rx,
            stop_rx,
            Arc::clone(&counters),
            budget.clone(),
        );
        let task = runtime.spawn(worker.run());
        let sink = ExportSink {
            queue: queue_tx,
            counters: Arc::clone(&counters),
            budget,
        };
        let handle = ExportHandle {
            task: Some(task),
            stop: Some(stop_tx),
            counters,
        };
        Ok((sink, handle))
    }
}

/// Where finished spans are handed over for export; cheap to clone, never waits.
#[derive(Clone, Debug)]
pub struct ExportSink {
    queue: mpsc::Sender<Span>,
    counters: Arc<Counters>,
    /// Bytes of the spans in the pipeline (queue, batch being filled, outbox).
    budget: ByteBudget,
}

impl ExportSink {
    /// Queues a span for export. When the queue is full (or the task has stopped) the span is
    /// dropped and counted in [`ExportStats::dropped_queue_full`]; returns whether it was queued.
    pub fn send(&self, span: Span) -> bool {
        let bytes = span.approx_bytes();
        if !self.budget.try_take(bytes) {
            self.counters.dropped_queue_full();
            return false;
        }
        match self.queue.try_send(span) {
            Ok(()) => true,
            Err(_) => {
                self.budget.release(bytes);
                self.counters.dropped_queue_full();
                false
            }
        }
    }

    /// The export counters now (for the metrics endpoint).
    pub fn stats(&self) -> ExportStats {
        self.counters.snapshot()
    }
}

/// Reads the export counters and stops the task. Dropping it without
/// [`ExportHandle::shutdown`] stops the task at once, without sending what is left.
#[derive(Debug)]
pub struct ExportHandle {
    task: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    counters: Arc<Counters>,
}

impl ExportHandle {
    /// The export task, for supervision (its end while the agent runs is a failure). Only its
    /// death is watched: a collector that is down makes no progress legitimately.
    pub fn abort_handle(&self) -> Option<tokio::task::AbortHandle> {
        self.task.as_ref().map(JoinHandle::abort_handle)
    }

    /// The counters now.
    pub fn stats(&self) -> ExportStats {
        self.counters.snapshot()
    }

    /// Stops taking spans, sends the ones queued or waiting for a retry until the configured
    /// `shutdown_timeout` passes (what is left then is counted as dropped), and returns the
    /// final counters.
    pub async fn shutdown(mut self) -> Result<ExportStats, ExportError> {
        if let Some(stop) = self.stop.take() {
            // An error means the task has already ended; joining it tells how.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.map_err(|source| ExportError::Task { source })?;
        }
        Ok(self.counters.snapshot())
    }
}

impl Drop for ExportHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
