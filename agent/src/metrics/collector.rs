//! Reads every stage's counters at scrape time and encodes them.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    correlate::CorrelatorStats,
    ebpf::{KernelProbes, ReaderStats},
    export::ExportSink,
    store::{SpanSink, Store},
};

/// How many probes of each kind are attached now (set by whoever attaches them).
#[derive(Debug, Default)]
pub struct ProbeCounts {
    pub tracepoints: AtomicU64,
    pub uprobes: AtomicU64,
    /// Runtime binaries given no uprobe, by the check that refused them (`PlanError::reason`).
    pub refused_binaries: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Records of the eBPF programs' diagnostics (`--ebpf-log-level`), by level.
    pub ebpf_log: Arc<crate::ebpf::EbpfLogCounts>,
}

impl ProbeCounts {
    /// Counts a runtime binary refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        if let Ok(mut refused) = self.refused_binaries.lock() {
            *refused.entry(reason).or_default() += 1;
        }
    }
}

/// Where the counters live.
#[derive(Clone)]
pub struct MetricSources {
    pub reader: Arc<ReaderStats>,
    pub correlator: Arc<CorrelatorStats>,
    pub sink: SpanSink,
    pub store: Store,
    pub probes: Arc<Mutex<KernelProbes>>,
    pub probe_counts: Arc<ProbeCounts>,
    /// The OTLP export, when configured.
    pub export: Option<ExportSink>,
}

pub(super) struct StageCollector {
    sources: MetricSources,
}

impl std::fmt::Debug for StageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageCollector")
    }
}

impl StageCollector {
    pub(super) fn new(sources: MetricSources) -> Self {
        Self { sources }
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A counter family with one label.
fn labelled_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_label, value) in values {
        let labels = [(label, *value_label)];
        ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for StageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.sources;
        let (kernel_drops, cri_calls) = match s.probes.lock() {
            Ok(probes) => (probes.drops().ok(), probes.cri_calls().ok()),
            Err(_) => (None, None),
        };
        let kernel_drops = kernel_drops.unwrap_or_default();
        counter(
            &mut encoder,
            "kernel_events_received",
            "Records read from the eBPF ring buffer",
            load(&s.reader.received),
        )?;
        let writer = s.sink.stats();
        labelled_counters(
            &mut encoder,
            "events_dropped",
            "Events lost, by where they were dropped",
            "reason",
            &[
                ("ringbuf_full", kernel_drops.ringbuf_full),
                ("tracked_map_full", kernel_drops.tracked_map_full),
                ("cri_inflight_full", kernel_drops.cri_inflight_full),
                ("cgroup_budget", kernel_drops.cgroup_budget),
                ("cni_env_cut", kernel_drops.cni_env_cut),
                ("reader_queue_full", load(&s.reader.queue_full)),
                ("malformed", load(&s.reader.malformed)),
                ("pending_evicted", load(&s.correlator.evicted)),
                ("store_queue_full", writer.dropped),
                ("store_write_failed", writer.lost),
            ],
        )?;
        counter(
            &mut encoder,
            "runtime_lookalike_execs",
            "Execs named like an OCI runtime (runc, crun, youki) whose executable is not one of \
             the runtime binaries: not followed",
            kernel_drops.runtime_lookalikes,
        )?;
        counter(
            &mut encoder,
            "spans",
            "Spans built by the correlator",
            load(&s.correlator.spans),
        )?;
        counter(
            &mut encoder,
            "cni_runs_untraced",
            "CNI plugin runs about no pod sandbox (STATUS, GC): counted, not traced",
            load(&s.correlator.cni_untraced),
        )?;
        counter(
            &mut encoder,
            "spans_unattributed",
            "Spans that could not be tied to a pod",
            load(&s.correlator.unattributed),
        )?;
        counter(
            &mut encoder,
            "unmatched_exits",
            "Process exits and CRI returns whose start was not seen",
            load(&s.correlator.unmatched_exits),
        )?;
        counter(
            &mut encoder,
            "spans_stored",
            "Spans committed to the store",
            writer.committed,
        )?;
        if let Ok(stats) = s.store.stats() {
            gauge(
                &mut encoder,
                "store_spans",
                "Spans in the store",
                None,
                stats.span_count as i64,
            )?;
            gauge(
                &mut encoder,
                "store_size",
                "Bytes the store's data file takes on disk",
                Some(&Unit::Bytes),
                stats.disk_bytes as i64,
            )?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let age = stats
                .oldest_start_unix_ns
                .map_or(0, |oldest| now.saturating_sub(oldest) / 1_000_000_000);
            gauge(
                &mut encoder,
                "store_oldest_span_age",
                "Age of the oldest stored span",
                Some(&Unit::Seconds),
                age as i64,
            )?;
            labelled_counters(
                &mut encoder,
                "retention_deleted_spans",
                "Spans deleted by retention, by reason",
                "reason",
                &[
                    ("age", stats.evicted_by_age),
                    ("size", stats.evicted_by_size),
                ],
            )?;
        }
        gauge(
            &mut encoder,
            "store_write_problem",
            "1 while the store cannot take spans cleanly (its disk is full, or the last commit \
             failed; /readyz says which), else 0",
            None,
            i64::from(s.store.write_problem().is_some()),
        )?;
        if let Some(calls) = cri_calls {
            let values: Vec<(&str, u64)> = calls.iter().map(|(m, n)| (m.name(), *n)).collect();
            labelled_counters(
                &mut encoder,
                "cri_calls",
                "CRI handler calls seen, by method (polled methods included)",
                "method",
                &values,
            )?;
        }
        if let Some(export) = &s.export {
            let stats = export.stats();
            counter(
                &mut encoder,
                "otlp_exported_spans",
                "Spans the OTLP collector accepted",
                stats.exported_spans,
            )?;
            counter(
                &mut encoder,
                "otlp_export_failures",
                "OTLP export requests that failed (each attempt)",
                stats.failed_exports,
            )?;
            labelled_counters(
                &mut encoder,
                "otlp_dropped_spans",
                "Spans not exported, by reason",
                "reason",
                &[
                    ("queue_full", stats.dropped_queue_full),
                    ("retry_buffer_full", stats.dropped_retry_full),
                    ("shutdown", stats.dropped_at_shutdown),
                ],
            )?;
        }
        let refused: Vec<(&str, u64)> = s
            .probe_counts
            .refused_binaries
            .lock()
            .map(|refused| refused.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        labelled_counters(
            &mut encoder,
            "cri_binaries_refused",
            "Runtime binaries given no uprobe, by the check that refused them (/readyz says more)",
            "reason",
            &refused,
        )?;
        labelled_counters(
            &mut encoder,
            "ebpf_log_records",
            "Diagnostics the eBPF programs reported, by level (--ebpf-log-level; the agent's log has them)",
            "level",
            &s.probe_counts.ebpf_log.snapshot(),
        )?;
        let mut probes = encoder.encode_descriptor(
            "probes_attached",
            "eBPF probes attached now, by kind",
            None,
            MetricType::Gauge,
        )?;
        for (kind, value) in [
            ("tracepoint", load(&s.probe_counts.tracepoints)),
            ("uprobe", load(&s.probe_counts.uprobes)),
        ] {
            let labels = [("kind", kind)];
            ConstGauge::new(value as i64).encode(probes.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
