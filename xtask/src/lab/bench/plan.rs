//! How much each part of the benchmark does, in full and in `--quick` mode.

use serde::Serialize;

/// The parts of the benchmark, in the order they run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    /// fork+exec slowdown: no tracer, nodetrace, bpftrace (and the agent's footprint).
    Exec,
    /// Per-invocation cost of the eBPF programs, and span freshness.
    Kernel,
    /// Pod lifecycles through containerd with and without the agent.
    Cri,
    /// Spans per second through the correlator and the store writer.
    Ingest,
    /// HTTP pod-trace queries on a filled store.
    Query,
    /// Normal pod lifecycles while a tenant floods look-alike runtime execs.
    Hostile,
    /// The CRI probes with the eBPF diagnostics off and on.
    Diagnostics,
    /// A real node (API server, kubelet): agreement with the kubelet's own spans.
    RealNode,
}

impl Part {
    pub const ALL: [Part; 8] = [
        Part::Exec,
        Part::Kernel,
        Part::Cri,
        Part::Ingest,
        Part::Query,
        Part::Hostile,
        Part::Diagnostics,
        Part::RealNode,
    ];
}

/// Sizes of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: &'static str,
    /// fork+exec per variant, split over `exec_rounds` alternating rounds.
    pub execs_per_variant: usize,
    pub exec_rounds: usize,
    /// Unmeasured execs before each measured loop.
    pub exec_warmup: usize,
    /// Seconds the agent is left idle before its idle footprint is read.
    pub idle_seconds: u64,
    /// Execs of /bin/true and of a fake runc while the BPF statistics are on.
    pub stats_execs: usize,
    pub stats_runtime_runs: usize,
    pub freshness_samples: usize,
    /// Baseline/agent alternations of the CRI path, and lifecycles per half.
    pub cri_alternations: usize,
    pub cri_lifecycles_per_round: usize,
    pub ingest_step_seconds: f64,
    pub ingest_rates: Vec<u64>,
    pub ingest_saturate_spans: u64,
    pub query_pods: usize,
    pub query_spans_per_pod: usize,
    pub queries: usize,
    /// Pod lifecycles without and then during the look-alike flood, and the flood's execs.
    pub hostile_lifecycles: usize,
    pub hostile_flood_execs: usize,
    /// Pods created and deleted through the API on the real node.
    pub real_node_pods: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        let rates = |list: &[u64]| list.to_vec();
        if quick {
            Self {
                mode: "quick",
                execs_per_variant: 2_000,
                exec_rounds: 4,
                exec_warmup: 50,
                idle_seconds: 5,
                stats_execs: 2_000,
                stats_runtime_runs: 200,
                freshness_samples: 20,
                cri_alternations: 2,
                cri_lifecycles_per_round: 4,
                ingest_step_seconds: 1.0,
                ingest_rates: rates(&[50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 400_000]),
                ingest_saturate_spans: 100_000,
                query_pods: 1_000,
                query_spans_per_pod: 100,
                queries: 500,
                hostile_lifecycles: 3,
                hostile_flood_execs: 5_000,
                real_node_pods: 3,
            }
        } else {
            Self {
                mode: "full",
                execs_per_variant: 20_000,
                exec_rounds: 10,
                exec_warmup: 200,
                idle_seconds: 10,
                stats_execs: 10_000,
                stats_runtime_runs: 1_000,
                freshness_samples: 50,
                cri_alternations: 3,
                cri_lifecycles_per_round: 20,
                ingest_step_seconds: 3.0,
                ingest_rates: rates(&[
                    25_000, 50_000, 75_000, 100_000, 125_000, 150_000, 200_000, 250_000, 300_000,
                    400_000, 600_000, 800_000,
                ]),
                ingest_saturate_spans: 400_000,
                query_pods: 10_000,
                query_spans_per_pod: 100,
                queries: 2_000,
                hostile_lifecycles: 8,
                hostile_flood_execs: 20_000,
                real_node_pods: 10,
            }
        }
    }
}
