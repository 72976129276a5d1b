//! What the in-process helper (`nodetrace-bench`) prints as JSON and `cargo xtask bench` reads
//! back: shared by both binaries (the helper includes this file by path).

use serde::{Deserialize, Serialize};

/// Per-iteration times of one fork+exec+wait loop.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecLoop {
    /// Nanoseconds from before fork() to after waitpid() returned, one per measured exec.
    pub samples_ns: Vec<u64>,
}

/// Latency percentiles of a series of operations, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of `samples_ns` (nearest rank).
    pub fn of_ns(samples_ns: &[u64]) -> Self {
        let mut sorted = samples_ns.to_vec();
        sorted.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let count = sorted.len();
        if count == 0 {
            return Self::default();
        }
        let sum: u128 = sorted.iter().map(|&n| u128::from(n)).sum();
        Self {
            count,
            p50_ms: ms(percentile(&sorted, 50.0)),
            p90_ms: ms(percentile(&sorted, 90.0)),
            p99_ms: ms(percentile(&sorted, 99.0)),
            max_ms: ms(sorted[count - 1]),
            mean_ms: sum as f64 / count as f64 / 1e6,
        }
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One rate step of the ingest benchmark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestStep {
    /// Spans per second the synthetic source offered (one exec + one exit event per span).
    pub offered_per_s: f64,
    pub duration_s: f64,
    /// Spans whose two events were queued to the correlator.
    pub sent: u64,
    /// Events refused by the full kernel-event queue (what the ring buffer would drop).
    pub dropped_events: u64,
    /// Spans refused by the full span queue (the writer's).
    pub dropped_spans: u64,
    /// Spans accepted but lost by a failed commit.
    pub lost: u64,
    pub committed: u64,
    /// Spans committed per second while the source ran.
    pub committed_per_s: f64,
    /// Spans not yet committed when the source stopped.
    pub backlog_at_end: u64,
    /// From the end of the step until every span was committed.
    pub drain_ms: f64,
    /// No drops, and the backlog at the end was no more than a few batches (or 5% of the step).
    pub sustained: bool,
}

/// The ingest benchmark: the correlator → store-writer pipeline fed synthetic runc events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ingest {
    pub event_queue: usize,
    pub span_queue: usize,
    pub batch_max_spans: usize,
    pub steps: Vec<IngestStep>,
    /// Highest offered rate sustained with no drops.
    pub max_sustained_per_s: Option<f64>,
    /// Lowest offered rate at which spans were dropped.
    pub first_drop_per_s: Option<f64>,
    /// Spans per second with a source that waits for room (never drops): the pipeline's capacity.
    pub saturated_per_s: f64,
    /// The correlator alone (events to spans, one thread, events built beforehand).
    pub correlator_only_per_s: f64,
    /// The store alone (`put_batch` of 512-span batches, one thread).
    pub store_only_per_s: f64,
    /// Time of one 512-span `put_batch` (with its fsync).
    pub store_commit: Latency,
}

/// The query benchmark: an HTTP pod-trace query against a store filled in-process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Query {
    pub pods: usize,
    pub spans_per_pod: usize,
    pub spans_stored: u64,
    pub fill_s: f64,
    /// Pages the store uses (what its size bound counts).
    pub used_bytes: u64,
    /// Size of the data file.
    pub disk_bytes: u64,
    /// Blocks the data file occupies on disk.
    pub allocated_bytes: u64,
    pub used_bytes_per_span: f64,
    pub disk_bytes_per_span: f64,
    /// `GET /api/traces?pod_uid=<uid>` of random pods.
    pub by_uid: Latency,
    /// `GET /api/traces?pod=<namespace>/<name>` of random pods.
    pub by_name: Latency,
    /// Average size of one answer.
    pub response_bytes: f64,
    /// Spans in one answer (checked to be `spans_per_pod`).
    pub spans_per_answer: usize,
}
