//! Part 2, the CRI path: pod lifecycles through a private containerd (the testbed) with no
//! agent and with the agent's CRI uprobes attached, in an ABBA order (B A | A B | B A ...) so
//! that the agent starts only once per two halves; plus the CRI probes' cost from the BPF
//! statistics (part 3) and the agent's footprint while it traces (part 7).

use anyhow::Context as _;
use nodetrace_testbed::{LifecycleReport, Testbed};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

use super::Context;
use super::agent::Agent;
use super::bpfstats::{self, ProgCost, ProgCounters, StatsEnabled};
use super::exec_path::combine;
use super::plan::Plan;
use super::procfs::{Usage, UsageMeter};
use super::wire::Latency;

#[derive(Clone, Debug, Serialize)]
pub struct CallRatio {
    pub call: String,
    pub baseline_p50_ms: f64,
    pub nodetrace_p50_ms: f64,
    pub ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CriPath {
    /// One lifecycle: RunPodSandbox → CreateContainer → StartContainer → ExecSync →
    /// StopContainer → ContainerStatus → RemoveContainer → StopPodSandbox → RemovePodSandbox.
    pub baseline: Latency,
    pub nodetrace: Latency,
    pub median_ratio: f64,
    pub p99_ratio: f64,
    pub per_call: Vec<CallRatio>,
    pub testbed_start_s: f64,
    /// How long each agent took to stop (uprobe detach).
    pub agent_stop_s: Vec<f64>,
    /// The agent's programs over the traced lifecycles.
    pub probe_costs: Vec<ProgCost>,
    pub agent_usage: Usage,
}

/// Lifecycle and per-call durations of one variant, in nanoseconds.
#[derive(Default)]
struct Durations {
    lifecycles: Vec<u64>,
    calls: BTreeMap<String, Vec<u64>>,
}

impl Durations {
    fn add(&mut self, report: &LifecycleReport) {
        if let Some(window) = report.overall_window() {
            self.lifecycles.push(window.duration().as_nanos() as u64);
        }
        for call in &report.calls {
            self.calls
                .entry(call.call.method().to_owned())
                .or_default()
                .push(call.window.duration().as_nanos() as u64);
        }
    }
}

/// The agent while it traces: when it started and what its programs had counted then.
struct Traced {
    agent: Agent,
    counters: BTreeMap<u32, ProgCounters>,
    meter: UsageMeter,
}

pub async fn run(ctx: &Context, plan: &Plan) -> anyhow::Result<CriPath> {
    let started = Instant::now();
    let testbed = Testbed::start(&ctx.work.join("testbed"))
        .await
        .context("cannot start the private containerd")?;
    let testbed_start_s = started.elapsed().as_secs_f64();
    eprintln!("[bench] testbed ready in {testbed_start_s:.1} s");
    let _stats = StatsEnabled::on()?;
    let socket = testbed.containerd().socket().to_owned();

    let mut pods = 0usize;
    lifecycle(&testbed, &mut pods).await?; // warm-up: the first one pays for caches

    let (mut baseline, mut traced_durations) = (Durations::default(), Durations::default());
    let mut traced: Option<Traced> = None;
    let mut agent_stop_s = Vec::new();
    let mut probe_costs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut usage = Vec::new();
    let mut agents = 0;
    for alternation in 0..plan.cri_alternations.max(1) {
        let halves = if alternation % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_agent in halves {
            match (with_agent, traced.is_some()) {
                (true, false) => {
                    agents += 1;
                    let dir = ctx.work.join(format!("cri-agent-{agents}"));
                    let agent = Agent::start(&ctx.bins.agent, &dir, &socket, true, &[]).await?;
                    lifecycle(&testbed, &mut pods).await?; // warm-up after the probes attached
                    traced = Some(Traced {
                        counters: bpfstats::snapshot(agent.pid())?,
                        meter: UsageMeter::start(agent.pid()),
                        agent,
                    });
                }
                (false, true) => {
                    if let Some(t) = traced.take() {
                        stop(t, &mut probe_costs, &mut usage, &mut agent_stop_s).await?;
                    }
                    lifecycle(&testbed, &mut pods).await?; // warm-up after the probes detached
                }
                _ => {}
            }
            let into = if with_agent {
                &mut traced_durations
            } else {
                &mut baseline
            };
            let half = Instant::now();
            for _ in 0..plan.cri_lifecycles_per_round {
                into.add(&lifecycle(&testbed, &mut pods).await?);
            }
            eprintln!(
                "[bench] CRI {} {} lifecycles in {:.1} s",
                if with_agent {
                    "with agent:"
                } else {
                    "no agent:  "
                },
                plan.cri_lifecycles_per_round,
                half.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(t) = traced.take() {
        stop(t, &mut probe_costs, &mut usage, &mut agent_stop_s).await?;
    }
    let teardown = testbed.stop().context("testbed teardown")?;
    eprintln!("[bench] testbed torn down in {:?}", teardown.took);

    let base = Latency::of_ns(&baseline.lifecycles);
    let with = Latency::of_ns(&traced_durations.lifecycles);
    let per_call = baseline
        .calls
        .iter()
        .filter_map(|(call, base_ns)| {
            let with_ns = traced_durations.calls.get(call)?;
            let (b, w) = (
                Latency::of_ns(base_ns).p50_ms,
                Latency::of_ns(with_ns).p50_ms,
            );
            Some(CallRatio {
                call: call.clone(),
                baseline_p50_ms: b,
                nodetrace_p50_ms: w,
                ratio: w / b,
            })
        })
        .collect();
    Ok(CriPath {
        median_ratio: with.p50_ms / base.p50_ms,
        p99_ratio: with.p99_ms / base.p99_ms,
        baseline: base,
        nodetrace: with,
        per_call,
        testbed_start_s,
        agent_stop_s,
        probe_costs: probe_costs
            .into_iter()
            .map(|(program, (invocations, run_time_ns))| ProgCost {
                program,
                invocations,
                run_time_ns,
                ns_per_invocation: run_time_ns as f64 / invocations.max(1) as f64,
            })
            .collect(),
        agent_usage: combine(&usage),
    })
}

/// One pod lifecycle (pod `bench/cri-<n>`).
async fn lifecycle(testbed: &Testbed, pods: &mut usize) -> anyhow::Result<LifecycleReport> {
    *pods += 1;
    let report = testbed
        .pod("bench", &format!("cri-{pods}"))
        .run(testbed.cri())
        .await?;
    Ok(report)
}

/// Reads the agent's counters and usage, then stops it (and times the stop).
async fn stop(
    traced: Traced,
    costs: &mut BTreeMap<String, (u64, u64)>,
    usage: &mut Vec<Usage>,
    stop_s: &mut Vec<f64>,
) -> anyhow::Result<()> {
    usage.push(traced.meter.finish());
    let now = bpfstats::snapshot(traced.agent.pid())?;
    for cost in bpfstats::costs(&traced.counters, &now) {
        let entry = costs.entry(cost.program).or_default();
        entry.0 += cost.invocations;
        entry.1 += cost.run_time_ns;
    }
    let took = traced.agent.stop().await?;
    eprintln!("[bench] the agent stopped in {:.1} s", took.as_secs_f64());
    stop_s.push(took.as_secs_f64());
    Ok(())
}
