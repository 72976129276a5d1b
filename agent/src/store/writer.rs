//! The store's single writer task: spans come in on a bounded queue that never blocks its
//! senders, and are committed in batches, by count or by delay; retention runs on a timer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::Store;
use crate::budget::ByteBudget;
use crate::model::Span;

/// How often the writer applies retention (the first run is at start).
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// The span was dropped: the writer's queue was full, or the writer has stopped.
#[derive(Debug, thiserror::Error)]
#[error("span dropped: the store's write queue is full or its writer has stopped")]
pub struct SinkFull;

/// The sending side of the writer's queue. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct SpanSink {
    queue: mpsc::Sender<Span>,
    counters: Arc<WriterCounters>,
    /// Bytes of the spans queued and not yet committed.
    budget: ByteBudget,
}

/// Stops the writer task.
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    counters: Arc<WriterCounters>,
}

/// What the writer did with the spans sent to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Spans in batches the store committed.
    pub committed: u64,
    /// Spans refused by [`SpanSink::send`] (queue full or writer stopped).
    pub dropped: u64,
    /// Spans accepted but lost because the commit of their batch failed.
    pub lost: u64,
}

#[derive(Default)]
struct WriterCounters {
    committed: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
}

impl WriterCounters {
    fn snapshot(&self) -> WriterStats {
        WriterStats {
            committed: self.committed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

impl SpanSink {
    /// Queues a span for the writer. When the queue is full or the writer has stopped, the span
    /// is dropped and counted, and `SinkFull` returned.
    pub fn send(&self, span: Span) -> Result<(), SinkFull> {
        let bytes = span.approx_bytes();
        if !self.budget.try_take(bytes) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(SinkFull);
        }
        self.queue.try_send(span).map_err(|_| {
            self.budget.release(bytes);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            SinkFull
        })
    }

    /// Spans dropped so far because the queue was full or the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Spans queued and not yet taken by the writer.
    pub fn queued(&self) -> u64 {
        (self.queue.max_capacity() - self.queue.capacity()) as u64
    }
}

impl WriterHandle {
    /// The writer task, for supervision (its end while the agent runs is a failure).
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// Stops the writer: it refuses new spans, commits every span already queued, and ends.
    pub async fn shutdown(self) -> WriterStats {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the store writer task failed");
        }
        self.counters.snapshot()
    }
}

impl Store {
    /// Spawns the single writer task on the current tokio runtime and returns the sink that feeds
    /// it (a queue of `queue_capacity` spans, at least one) and the handle that stops it.
    ///
    /// The writer commits a batch when it holds `batch_max_spans` spans or `batch_max_delay` after
    /// the batch's first span, applies retention every minute, and ends when its handle shuts it
    /// down or every sink is dropped. It must be the only writer task of the store.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start_writer(&self, queue_capacity: usize) -> (SpanSink, WriterHandle) {
        let (queue, receiver) = mpsc::channel(queue_capacity.max(1));
        let (stop, stop_receiver) = watch::channel(false);
        let counters = Arc::<WriterCounters>::default();
        let budget = ByteBudget::new(self.config().queue_max_bytes.max(1));
        let writer = Writer {
            store: self.clone(),
            queue: receiver,
            stop: stop_receiver,
            counters: Arc::clone(&counters),
            batch_max_spans: self.config().batch_max_spans.max(1),
            budget: budget.clone(),
        };
        let task = tokio::spawn(writer.run());
        let sink = SpanSink {
            queue,
            counters: Arc::clone(&counters),
            budget,
        };
        (
            sink,
            WriterHandle {
                stop,
                task,
                counters,
            },
        )
    }
}

struct Writer {
    store: Store,
    queue: mpsc::Receiver<Span>,
    stop: watch::Receiver<bool>,
    counters: Arc<WriterCounters>,
    batch_max_spans: usize,
    budget: ByteBudget,
}

/// Most spans in one commit when spans are waiting beyond a full batch.
const BACKLOG_BATCH_MAX: usize = 8192;

impl Writer {
    async fn run(mut self) {
        let mut retention = tokio::time::interval(RETENTION_INTERVAL);
        retention.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.batch_max_spans);
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut self.stop) => break,
                received = self.queue.recv_many(&mut batch, self.batch_max_spans) => {
                    if received == 0 {
                        break;
                    }
                    self.fill(&mut batch).await;
                    self.commit(&mut batch).await;
                }
                _ = retention.tick() => self.retain().await,
            }
        }
        self.queue.close();
        while self.queue.recv_many(&mut batch, self.batch_max_spans).await > 0 {
            self.commit(&mut batch).await;
        }
    }

    /// Adds spans to a started batch until it is full, its delay has passed, or the writer stops.
    async fn fill(&mut self, batch: &mut Vec<Span>) {
        let deadline = Instant::now() + self.store.config().batch_max_delay;
        while batch.len() < self.batch_max_spans {
            let room = self.batch_max_spans - batch.len();
            tokio::select! {
                biased;
                () = stopped(&mut self.stop) => return,
                received = self.queue.recv_many(batch, room) => {
                    if received == 0 {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
        // Under a backlog, one larger transaction costs far less than several small ones.
        let backlog = self
            .queue
            .len()
            .min(BACKLOG_BATCH_MAX.saturating_sub(batch.len()));
        if backlog > 0 {
            self.queue.recv_many(batch, backlog).await;
        }
    }

    async fn commit(&self, batch: &mut Vec<Span>) {
        let spans = std::mem::replace(batch, Vec::with_capacity(self.batch_max_spans));
        let count = spans.len() as u64;
        let bytes: usize = spans.iter().map(Span::approx_bytes).sum();
        let store = self.store.clone();
        let outcome = tokio::task::spawn_blocking(move || store.put_batch(&spans)).await;
        let counters = &self.counters;
        match outcome {
            Ok(Ok(())) => {
                counters.committed.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                counters.lost.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(error = %ErrorChain(&error), spans = count, "could not commit spans");
            }
            Err(error) => {
                counters.lost.fetch_add(count, Ordering::Relaxed);
                tracing::error!(%error, spans = count, "the store commit task failed");
            }
        }
        self.budget.release(bytes);
    }

    async fn retain(&self) {
        let store = self.store.clone();
        let now = now_unix_ns();
        match tokio::task::spawn_blocking(move || store.apply_retention(now)).await {
            Ok(Ok(report)) if report.evicted_by_age + report.evicted_by_size > 0 => {
                tracing::info!(
                    evicted_by_age = report.evicted_by_age,
                    evicted_by_size = report.evicted_by_size,
                    used_bytes = report.used_bytes,
                    "applied store retention"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %ErrorChain(&error), "could not apply store retention");
            }
            Err(error) => tracing::error!(%error, "the store retention task failed"),
        }
    }
}

/// Resolves once the handle asks the writer to stop; never, if the handle was dropped instead.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// An error and its sources, `: `-separated, for logs.
struct ErrorChain<'e>(&'e dyn std::error::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
