//! Counters of the export task, shared between the sinks, the task and the handle.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the export counters (all monotonic since start).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported_spans: u64,
    /// Export requests (batches) that failed; each failed attempt counts.
    pub failed_exports: u64,
    /// Spans dropped by [`super::ExportSink::send`]: the queue was full or the task had stopped.
    pub dropped_queue_full: u64,
    /// Spans dropped because the buffer of unsent spans (`retry_capacity`) was full.
    pub dropped_retry_full: u64,
    /// Spans still unsent when the shutdown deadline passed.
    pub dropped_at_shutdown: u64,
    /// Export attempts of a batch that had failed before.
    pub retries: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    exported_spans: AtomicU64,
    failed_exports: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_retry_full: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    retries: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    pub(super) fn exported(&self, spans: usize) {
        add(&self.exported_spans, spans);
    }

    pub(super) fn failed_export(&self) {
        add(&self.failed_exports, 1);
    }

    pub(super) fn dropped_queue_full(&self) {
        add(&self.dropped_queue_full, 1);
    }

    pub(super) fn dropped_retry_full(&self, spans: usize) {
        add(&self.dropped_retry_full, spans);
    }

    pub(super) fn dropped_at_shutdown(&self, spans: usize) {
        add(&self.dropped_at_shutdown, spans);
    }

    pub(super) fn retried(&self) {
        add(&self.retries, 1);
    }

    pub(super) fn snapshot(&self) -> ExportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExportStats {
            exported_spans: get(&self.exported_spans),
            failed_exports: get(&self.failed_exports),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_retry_full: get(&self.dropped_retry_full),
            dropped_at_shutdown: get(&self.dropped_at_shutdown),
            retries: get(&self.retries),
        }
    }
}
