//! The query benchmark: a store filled with pods' runc spans made by the real correlator (each
//! pod attributed from its bundle once, then from the correlator's cache), served by the
//! agent's HTTP router in this process, and queried by pod UID and by pod name.

use anyhow::{Context as _, bail};
use nodetrace::api::{ApiState, Readiness};
use nodetrace::correlate::{Correlator, CorrelatorConfig};
use nodetrace::ebpf::WallClock;
use nodetrace::hostfs::StateRoots;
use nodetrace::store::{Store, StoreConfig};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::synth::{self, NoFiles, Pids, RUNC_ROOT};
use crate::wire::{Latency, Query};

/// The store map: large enough that filling it evicts nothing.
const MAP_BYTES: u64 = 16 << 30;
/// The spans are spread over this much of the recent past (inside the API's default window).
const SPREAD_NS: u64 = 3600 * 1_000_000_000;
/// Unmeasured queries before each measured series.
const WARMUP_QUERIES: usize = 50;

pub async fn run(
    dir: &Path,
    pods: usize,
    spans_per_pod: usize,
    queries: usize,
) -> anyhow::Result<Query> {
    let store_dir = dir.join("query-store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = Store::open(
        &store_dir,
        StoreConfig {
            max_size_bytes: MAP_BYTES,
            ..StoreConfig::default()
        },
    )?;
    let started = Instant::now();
    let filling = store.clone();
    let bundle = dir.join("query-bundle");
    tokio::task::spawn_blocking(move || fill(&filling, &bundle, pods, spans_per_pod))
        .await
        .context("fill task")??;
    let fill_s = started.elapsed().as_secs_f64();
    let stats = store.stats()?;
    let data_file = std::fs::metadata(store_dir.join("data.mdb"))?;
    eprintln!(
        "[bench] query store: {} spans of {} pods in {fill_s:.1} s, {} MiB used",
        stats.span_count,
        stats.pod_count,
        stats.used_bytes >> 20
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = nodetrace::api::router(ApiState::new(store, Readiness::new(), None));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("http://{addr}/api/traces");
    let by_uid = |p: usize| format!("{base}?pod_uid={}", pod_uid(p));
    let by_name = |p: usize| format!("{base}?pod={}/{}", namespace(p), pod_name(p));

    let first = client.get(by_uid(0)).send().await?.text().await?;
    let spans_per_answer = count_spans(&first)?;
    if spans_per_answer != spans_per_pod {
        bail!("a pod query answered {spans_per_answer} spans, not {spans_per_pod}: {first:.300}");
    }
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let (by_uid, uid_bytes) = series(&client, queries, pods, &mut random, by_uid).await?;
    let (by_name, name_bytes) = series(&client, queries, pods, &mut random, by_name).await?;
    server.abort();

    let spans = stats.span_count.max(1) as f64;
    Ok(Query {
        pods,
        spans_per_pod,
        spans_stored: stats.span_count,
        fill_s,
        used_bytes: stats.used_bytes,
        disk_bytes: data_file.len(),
        allocated_bytes: data_file.blocks() * 512,
        used_bytes_per_span: stats.used_bytes as f64 / spans,
        disk_bytes_per_span: data_file.len() as f64 / spans,
        by_uid,
        by_name,
        response_bytes: (uid_bytes + name_bytes) as f64 / (2 * queries.max(1)) as f64,
        spans_per_answer,
    })
}

/// `queries` timed GETs of random pods (after a warm-up); their latency and total bytes.
async fn series(
    client: &reqwest::Client,
    queries: usize,
    pods: usize,
    random: &mut XorShift,
    url: impl Fn(usize) -> String,
) -> anyhow::Result<(Latency, usize)> {
    let mut samples = Vec::with_capacity(queries);
    let mut bytes = 0;
    for i in 0..WARMUP_QUERIES + queries {
        let url = url(random.below(pods));
        let started = Instant::now();
        let response = client.get(&url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("{url} answered {status}");
        }
        if i >= WARMUP_QUERIES {
            samples.push(took.as_nanos() as u64);
            bytes += body.len();
        }
    }
    Ok((Latency::of_ns(&samples), bytes))
}

/// Spans in a `{"data":[{"spans":[...]}, ...]}` answer.
fn count_spans(body: &str) -> anyhow::Result<usize> {
    let answer: serde_json::Value = serde_json::from_str(body).context("answer is not JSON")?;
    let traces = answer["data"]
        .as_array()
        .with_context(|| format!("answer has no data array: {body:.300}"))?;
    Ok(traces
        .iter()
        .map(|t| t["spans"].as_array().map_or(0, Vec::len))
        .sum())
}

fn pod_uid(p: usize) -> String {
    format!("be1c0000-0000-4000-8000-{p:012x}")
}

fn namespace(p: usize) -> String {
    format!("bench-{}", p % 50)
}

fn pod_name(p: usize) -> String {
    format!("pod-{p}")
}

/// A sandbox bundle's `config.json` with containerd's CRI annotations for pod `p`.
fn sandbox_config(p: usize, id: &str) -> String {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "process": { "args": ["/pause"] },
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": id,
            "io.kubernetes.cri.sandbox-name": pod_name(p),
            "io.kubernetes.cri.sandbox-namespace": namespace(p),
            "io.kubernetes.cri.sandbox-uid": pod_uid(p),
        }
    })
    .to_string()
}

/// Feeds the correlator `spans_per_pod` rounds over every pod (so pods interleave in time as
/// on a busy node): a `runc create` with the bundle in the first round, bundle-less runs after,
/// and stores the spans in the writer's batch size.
fn fill(store: &Store, bundle: &Path, pods: usize, spans_per_pod: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(bundle)?;
    let bundle_arg = bundle.to_string_lossy().into_owned();
    let mut correlator = Correlator::new(
        NoFiles,
        WallClock::sample(),
        CorrelatorConfig {
            node_name: "bench-node".to_owned(),
            max_containers: pods + 1024,
            // The bundle is read only beneath a runtime state root: its parent stands for one.
            state_roots: StateRoots::new(vec![bundle.parent().unwrap_or(bundle).to_owned()])?,
            ..CorrelatorConfig::default()
        },
    );
    let total = (pods * spans_per_pod).max(1) as u64;
    let now = synth::monotonic_ns();
    let first = now.saturating_sub(SPREAD_NS).max(1);
    let gap = (now - first) / total;
    let batch_size = StoreConfig::default().batch_max_spans;
    let mut batch = Vec::with_capacity(batch_size);
    let mut pids = Pids::new();
    let ids: Vec<String> = (0..pods as u64).map(synth::container_id).collect();
    for round in 0..spans_per_pod {
        for (p, id) in ids.iter().enumerate() {
            let n = (round * pods + p) as u64;
            let argv = if round == 0 {
                std::fs::write(bundle.join("config.json"), sandbox_config(p, id))?;
                [
                    "runc",
                    "--root",
                    RUNC_ROOT,
                    "--log",
                    &format!("{bundle_arg}/log.json"),
                    "--log-format",
                    "json",
                    "create",
                    "--bundle",
                    &bundle_arg,
                    "--pid-file",
                    &format!("{bundle_arg}/init.pid"),
                    id,
                ]
                .map(str::to_owned)
                .to_vec()
            } else {
                synth::bundleless_argv(n, id)
            };
            let start = first + n * gap;
            let tgid = pids.next();
            let _ = correlator.on_event(synth::runc_exec(tgid, start, argv));
            let exit = synth::runc_exit(tgid, start + 2_000_000 + (n % 7) * 1_000_000);
            if let Some(span) = correlator.on_event(exit) {
                batch.push(span);
                if batch.len() == batch_size {
                    store.put_batch(&batch)?;
                    batch.clear();
                }
            }
        }
    }
    store.put_batch(&batch)?;
    Ok(())
}

/// A small deterministic generator for picking pods.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}
