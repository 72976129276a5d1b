//! Part 1, the exec path: fork+exec+wait of /bin/true with no tracer, with the nodetrace agent
//! and with bpftrace's execsnoop-style program, in rounds whose order rotates so that drift
//! on the machine falls on every variant alike; and the agent's footprint, idle and during
//! the storm (part 7).

use serde::Serialize;
use std::time::Duration;

use super::agent::Agent;
use super::bpftrace::Bpftrace;
use super::plan::Plan;
use super::procfs::{Usage, UsageMeter};
use super::wire::percentile;
use super::{Context, helper_run};

/// The three ways the exec loop runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Variant {
    Baseline,
    Nodetrace,
    Bpftrace,
}

const VARIANTS: [Variant; 3] = [Variant::Baseline, Variant::Nodetrace, Variant::Bpftrace];

/// One variant's per-exec times.
#[derive(Clone, Debug, Serialize)]
pub struct ExecVariant {
    pub execs: usize,
    pub median_us: f64,
    pub p90_us: f64,
    pub mean_us: f64,
    pub round_medians_us: Vec<f64>,
    /// Median over all rounds against the baseline's, in percent.
    pub slowdown_percent: f64,
    /// Median of the per-round slowdowns (each against the same round's baseline), in percent.
    pub paired_slowdown_percent: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExecPath {
    pub rounds: usize,
    pub baseline: ExecVariant,
    pub nodetrace: ExecVariant,
    /// `None` when bpftrace could not run (see `bpftrace_error`).
    pub bpftrace: Option<ExecVariant>,
    pub bpftrace_error: Option<String>,
}

/// The agent's footprint seen by this part.
#[derive(Clone, Debug, Serialize)]
pub struct ExecFootprint {
    pub idle: Usage,
    /// CPU over every storm round together; the highest resident memory seen.
    pub exec_storm: Usage,
}

pub async fn run(ctx: &Context, plan: &Plan) -> anyhow::Result<(ExecPath, ExecFootprint)> {
    let rounds = plan.exec_rounds.max(1);
    let per_round = plan.execs_per_variant / rounds;
    // samples[variant][round]
    let mut samples: Vec<Vec<Vec<u64>>> = vec![Vec::new(); VARIANTS.len()];
    let mut idle = None;
    let mut storms = Vec::new();
    let mut bpftrace_error = None;
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let variant = VARIANTS[(round + k) % VARIANTS.len()];
            let times = match variant {
                Variant::Baseline => exec_loop(ctx, plan, per_round).await?,
                Variant::Nodetrace => {
                    let dir = ctx.work.join(format!("exec-agent-{round}"));
                    let agent =
                        Agent::start(&ctx.bins.agent, &dir, &ctx.no_runtime, false, &[]).await?;
                    if idle.is_none() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let meter = UsageMeter::start(agent.pid());
                        tokio::time::sleep(Duration::from_secs(plan.idle_seconds)).await;
                        idle = Some(meter.finish());
                    }
                    let meter = UsageMeter::start(agent.pid());
                    let times = exec_loop(ctx, plan, per_round).await?;
                    storms.push(meter.finish());
                    agent.stop().await?;
                    times
                }
                Variant::Bpftrace if bpftrace_error.is_some() => continue,
                Variant::Bpftrace => match Bpftrace::start(&ctx.work.join("bpftrace")).await {
                    Ok(tracer) => {
                        let times = exec_loop(ctx, plan, per_round).await?;
                        tracer.stop().await?;
                        times
                    }
                    Err(error) => {
                        eprintln!("[bench] bpftrace left out: {error:#}");
                        bpftrace_error = Some(format!("{error:#}"));
                        continue;
                    }
                },
            };
            eprintln!(
                "[bench] exec round {}/{rounds} {variant:?}: median {:.1} µs",
                round + 1,
                median_us(&times)
            );
            samples[VARIANTS.iter().position(|v| *v == variant).unwrap_or(0)].push(times);
        }
    }
    let baseline = summarize(&samples[0], None);
    let result = ExecPath {
        rounds,
        nodetrace: summarize(&samples[1], Some(&samples[0])),
        bpftrace: (!samples[2].is_empty()).then(|| summarize(&samples[2], Some(&samples[0]))),
        bpftrace_error,
        baseline,
    };
    let footprint = ExecFootprint {
        idle: idle.unwrap_or_default(),
        exec_storm: combine(&storms),
    };
    Ok((result, footprint))
}

async fn exec_loop(ctx: &Context, plan: &Plan, count: usize) -> anyhow::Result<Vec<u64>> {
    helper_run::exec_loop(&ctx.bins.helper, count, plan.exec_warmup, &[]).await
}

fn median_us(samples: &[u64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 50.0) as f64 / 1e3
}

fn summarize(rounds: &[Vec<u64>], baseline: Option<&[Vec<u64>]>) -> ExecVariant {
    let mut all: Vec<u64> = rounds.iter().flatten().copied().collect();
    all.sort_unstable();
    let median = percentile(&all, 50.0) as f64 / 1e3;
    let round_medians_us: Vec<f64> = rounds.iter().map(|r| median_us(r)).collect();
    let (slowdown_percent, paired_slowdown_percent) = match baseline {
        None => (0.0, 0.0),
        Some(base) => {
            let mut base_all: Vec<u64> = base.iter().flatten().copied().collect();
            base_all.sort_unstable();
            let base_median = percentile(&base_all, 50.0) as f64 / 1e3;
            let mut paired: Vec<f64> = round_medians_us
                .iter()
                .zip(base.iter().map(|r| median_us(r)))
                .map(|(m, b)| 100.0 * (m / b - 1.0))
                .collect();
            paired.sort_by(f64::total_cmp);
            let paired_median = if paired.is_empty() {
                0.0
            } else if paired.len() % 2 == 1 {
                paired[paired.len() / 2]
            } else {
                (paired[paired.len() / 2 - 1] + paired[paired.len() / 2]) / 2.0
            };
            (100.0 * (median / base_median - 1.0), paired_median)
        }
    };
    let sum: u128 = all.iter().map(|&n| u128::from(n)).sum();
    ExecVariant {
        execs: all.len(),
        median_us: median,
        p90_us: percentile(&all, 90.0) as f64 / 1e3,
        mean_us: sum as f64 / all.len().max(1) as f64 / 1e3,
        round_medians_us,
        slowdown_percent,
        paired_slowdown_percent,
    }
}

/// Several measured stretches as one: CPU over their total time, the highest memory.
pub fn combine(parts: &[Usage]) -> Usage {
    let seconds: f64 = parts.iter().map(|u| u.seconds).sum();
    let cpu_seconds: f64 = parts
        .iter()
        .map(|u| u.cpu_percent / 100.0 * u.seconds)
        .sum();
    Usage {
        seconds,
        cpu_percent: 100.0 * cpu_seconds / seconds.max(1e-9),
        rss_mib: parts.iter().map(|u| u.rss_mib).fold(0.0, f64::max),
        rss_peak_mib: parts.iter().map(|u| u.rss_peak_mib).fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdowns_are_against_the_baseline() {
        let base = vec![
            vec![100_000, 100_000, 100_000],
            vec![200_000, 200_000, 200_000],
        ];
        let traced = vec![
            vec![110_000, 110_000, 110_000],
            vec![220_000, 220_000, 220_000],
        ];
        let summary = summarize(&traced, Some(&base));
        assert!((summary.paired_slowdown_percent - 10.0).abs() < 1e-9);
        assert_eq!(summary.execs, 6);
        assert_eq!(summary.round_medians_us, vec![110.0, 220.0]);
    }
}
