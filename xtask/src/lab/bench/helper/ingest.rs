//! The ingest benchmark: the agent's correlator task and store writer, wired as the daemon
//! wires them, fed synthetic `runc` exec + exit pairs at increasing rates; then the same
//! pipeline saturated, and each stage alone.

use anyhow::{Context as _, bail};
use nodetrace::correlate::{Correlator, CorrelatorConfig, CorrelatorStats};
use nodetrace::ebpf::{KernelEvent, WallClock};
use nodetrace::model::Span;
use nodetrace::store::{SpanSink, Store, StoreConfig, WriterHandle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::synth::{self, NoFiles, Pids};
use crate::wire::{Ingest, IngestStep, Latency};

/// The daemon's queue between the ring-buffer reader and the correlator (`KERNEL_EVENT_QUEUE`).
const EVENT_QUEUE: usize = 65_536;
/// The daemon's queue between the correlator and the store writer (`SPAN_QUEUE`).
const SPAN_QUEUE: usize = 65_536;
/// Distinct container ids the synthetic runs name.
const CONTAINERS: u64 = 1024;
/// The store map: large enough that no step evicts (eviction is not what is measured).
const MAP_BYTES: u64 = 16 << 30;
/// How long a step's spans may take to be committed after the source stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the rate steps (stopping after the first that drops), the saturated pipeline and the
/// single stages.
pub async fn run(
    dir: &Path,
    step_seconds: f64,
    rates: &[u64],
    saturate_spans: u64,
) -> anyhow::Result<Ingest> {
    let ids: Arc<Vec<String>> = Arc::new((0..CONTAINERS).map(synth::container_id).collect());
    let mut steps = Vec::new();
    for (n, &rate) in rates.iter().enumerate() {
        let store_dir = dir.join(format!("ingest-step-{n}"));
        let step = paced_step(&store_dir, &ids, rate, step_seconds).await?;
        let _ = std::fs::remove_dir_all(&store_dir);
        eprintln!(
            "[bench] ingest {rate:>9} spans/s offered: {:>9.0} committed/s, dropped {} events + {} spans, backlog {}, drained in {:.0} ms",
            step.committed_per_s,
            step.dropped_events,
            step.dropped_spans,
            step.backlog_at_end,
            step.drain_ms
        );
        let dropped = step.dropped_events + step.dropped_spans + step.lost > 0;
        steps.push(step);
        if dropped {
            break;
        }
    }
    let max_sustained_per_s = steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.offered_per_s)
        .reduce(f64::max);
    let first_drop_per_s = steps
        .iter()
        .find(|s| s.dropped_events + s.dropped_spans + s.lost > 0)
        .map(|s| s.offered_per_s);

    let store_dir = dir.join("ingest-saturated");
    let saturated_per_s = saturated(&store_dir, &ids, saturate_spans).await?;
    let _ = std::fs::remove_dir_all(&store_dir);
    eprintln!("[bench] ingest saturated: {saturated_per_s:.0} spans/s");

    let (correlator_only_per_s, spans) = correlator_only(&ids, saturate_spans);
    let store_dir = dir.join("ingest-store-only");
    let (store_only_per_s, store_commit) =
        tokio::task::block_in_place(|| store_only(&store_dir, &spans))?;
    let _ = std::fs::remove_dir_all(&store_dir);
    eprintln!(
        "[bench] ingest stages alone: correlator {correlator_only_per_s:.0} spans/s, store {store_only_per_s:.0} spans/s"
    );
    Ok(Ingest {
        event_queue: EVENT_QUEUE,
        span_queue: SPAN_QUEUE,
        batch_max_spans: StoreConfig::default().batch_max_spans,
        steps,
        max_sustained_per_s,
        first_drop_per_s,
        saturated_per_s,
        correlator_only_per_s,
        store_only_per_s,
        store_commit,
    })
}

/// The correlator task and the store writer, as the daemon runs them.
struct Pipeline {
    events: mpsc::Sender<KernelEvent>,
    correlator: JoinHandle<()>,
    correlated: Arc<CorrelatorStats>,
    sink: SpanSink,
    writer: WriterHandle,
    dir: PathBuf,
}

impl Pipeline {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        let store = Store::open(
            dir,
            StoreConfig {
                max_size_bytes: MAP_BYTES,
                ..StoreConfig::default()
            },
        )
        .with_context(|| format!("cannot open a store in {}", dir.display()))?;
        let (sink, writer) = store.start_writer(SPAN_QUEUE);
        let (events, mut received) = mpsc::channel::<KernelEvent>(EVENT_QUEUE);
        let mut correlator = correlator();
        let correlated = correlator.stats();
        let spans = sink.clone();
        let correlator = tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                if let Some(span) = correlator.on_event(event) {
                    let _ = spans.send(span);
                }
            }
        });
        Ok(Self {
            events,
            correlator,
            correlated,
            sink,
            writer,
            dir: dir.to_owned(),
        })
    }

    /// Spans committed, dropped by the sink, and lost.
    fn settled(&self) -> (u64, u64, u64) {
        let stats = self.sink.stats();
        (stats.committed, stats.dropped, stats.lost)
    }

    /// Waits until `expected` spans were made and each was committed, dropped or lost.
    async fn drain(&self, expected: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let made = self.correlated.spans.load(Ordering::Relaxed);
            let (committed, dropped, lost) = self.settled();
            if made >= expected && committed + dropped + lost >= made {
                return Ok(started.elapsed());
            }
            if started.elapsed() > DRAIN_TIMEOUT {
                bail!(
                    "the pipeline did not drain within {DRAIN_TIMEOUT:?}: {made} of {expected} spans made, {committed} committed"
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        drop(self.events);
        self.correlator.await.context("correlator task")?;
        self.writer.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

fn correlator() -> Correlator<NoFiles> {
    Correlator::new(
        NoFiles,
        WallClock::sample(),
        CorrelatorConfig {
            node_name: "bench-node".to_owned(),
            ..CorrelatorConfig::default()
        },
    )
}

/// The events of span number `n`: `runc <verb> <id>` by a fresh pid, exiting 1 ms later.
fn span_events(n: u64, ids: &[String], pids: &mut Pids) -> (KernelEvent, KernelEvent) {
    let tgid = pids.next();
    let now = synth::monotonic_ns();
    let id = &ids[(n % CONTAINERS) as usize];
    (
        synth::runc_exec(tgid, now, synth::bundleless_argv(n, id)),
        synth::runc_exit(tgid, now + 1_000_000),
    )
}

/// Offers `rate` spans per second for `seconds`, never waiting for room (a full queue drops,
/// as the kernel's ring buffer would).
async fn paced_step(
    dir: &Path,
    ids: &[String],
    rate: u64,
    seconds: f64,
) -> anyhow::Result<IngestStep> {
    let pipeline = Pipeline::start(dir)?;
    let total = (rate as f64 * seconds) as u64;
    let mut pids = Pids::new();
    let (mut n, mut pairs, mut dropped_events) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while n < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while n < due {
            let (exec, exit) = span_events(n, ids, &mut pids);
            let exec_queued = pipeline.events.try_send(exec).is_ok();
            let exit_queued = pipeline.events.try_send(exit).is_ok();
            dropped_events += u64::from(!exec_queued) + u64::from(!exit_queued);
            pairs += u64::from(exec_queued && exit_queued);
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ran = started.elapsed();
    let (committed_at_end, _, _) = pipeline.settled();
    let drained = pipeline.drain(pairs).await?;
    let (committed, dropped_spans, lost) = pipeline.settled();
    pipeline.stop().await?;
    let backlog_at_end = pairs.saturating_sub(committed_at_end);
    let sustained = dropped_events + dropped_spans + lost == 0
        && backlog_at_end <= (4 * StoreConfig::default().batch_max_spans as u64).max(total / 20);
    Ok(IngestStep {
        offered_per_s: rate as f64,
        duration_s: ran.as_secs_f64(),
        sent: pairs,
        dropped_events,
        dropped_spans,
        lost,
        committed,
        committed_per_s: committed_at_end as f64 / ran.as_secs_f64(),
        backlog_at_end,
        drain_ms: drained.as_secs_f64() * 1e3,
        sustained,
    })
}

/// A source that waits for room in the queue: spans per second the whole pipeline commits.
async fn saturated(dir: &Path, ids: &[String], spans: u64) -> anyhow::Result<f64> {
    let pipeline = Pipeline::start(dir)?;
    let mut pids = Pids::new();
    let started = Instant::now();
    for n in 0..spans {
        let (exec, exit) = span_events(n, ids, &mut pids);
        pipeline
            .events
            .send(exec)
            .await
            .context("correlator gone")?;
        pipeline
            .events
            .send(exit)
            .await
            .context("correlator gone")?;
    }
    pipeline.drain(spans).await?;
    let took = started.elapsed();
    let (committed, dropped, _) = pipeline.settled();
    pipeline.stop().await?;
    if dropped > 0 {
        eprintln!("[bench] saturated ingest: the span queue dropped {dropped} spans");
    }
    Ok(committed as f64 / took.as_secs_f64())
}

/// The correlator alone on this thread, on events built beforehand (at most 200,000 spans
/// worth); returns its rate and its spans.
fn correlator_only(ids: &[String], spans: u64) -> (f64, Vec<Span>) {
    let spans = spans.min(200_000);
    let mut pids = Pids::new();
    let events: Vec<(KernelEvent, KernelEvent)> =
        (0..spans).map(|n| span_events(n, ids, &mut pids)).collect();
    let mut correlator = correlator();
    let mut made = Vec::with_capacity(events.len());
    let started = Instant::now();
    for (exec, exit) in events {
        let _ = correlator.on_event(exec);
        made.extend(correlator.on_event(exit));
    }
    (spans as f64 / started.elapsed().as_secs_f64(), made)
}

/// `put_batch` alone, in batches of the writer's size; its rate and the time of each commit.
fn store_only(dir: &Path, spans: &[Span]) -> anyhow::Result<(f64, Latency)> {
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::open(
        dir,
        StoreConfig {
            max_size_bytes: MAP_BYTES,
            ..StoreConfig::default()
        },
    )?;
    let batch = StoreConfig::default().batch_max_spans;
    let mut commits = Vec::new();
    let started = Instant::now();
    for chunk in spans.chunks(batch) {
        let commit = Instant::now();
        store.put_batch(chunk)?;
        commits.push(commit.elapsed().as_nanos() as u64);
    }
    let rate = spans.len() as f64 / started.elapsed().as_secs_f64();
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok((rate, Latency::of_ns(&commits)))
}
