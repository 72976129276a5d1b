//! Part 3, per-event kernel cost (with `kernel.bpf_stats_enabled=1`): the agent's programs
//! during a storm of /bin/true execs (which they look at and let go) and during runs of a fake
//! `runc` (a copy of /bin/true named runc, which they follow and report), bpftrace's program
//! during the same storm; and, while that agent runs, part 6 (freshness).

use anyhow::Context as _;
use serde::Serialize;
use std::path::{Path, PathBuf};

use super::agent::Agent;
use super::bpfstats::{self, ProgCost, StatsEnabled};
use super::bpftrace::Bpftrace;
use super::freshness::{self, Freshness};
use super::plan::Plan;
use super::{Context, helper_run};

/// argv of the fake runtime runs (argv[0] and the command name are what the agent follows).
const FAKE_RUNC_ARGV: &[&str] = &["runc", "--root", "/run/nodetrace-bench", "state", "bench"];

/// A copy of /bin/true installed as `<dir>/runc`, given to the agent as a runtime binary.
pub fn fake_runc(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("runc");
    std::fs::copy("/bin/true", &path).context("cannot copy /bin/true")?;
    Ok(path)
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelCost {
    /// nodetrace's programs while /bin/true is exec'd (not followed: the common case).
    pub nodetrace_exec_storm: Vec<ProgCost>,
    /// nodetrace's programs while a fake `runc` is exec'd (followed, argv read, events sent).
    pub nodetrace_runtime_runs: Vec<ProgCost>,
    /// bpftrace's execsnoop programs while /bin/true is exec'd.
    pub bpftrace_exec_storm: Vec<ProgCost>,
    pub bpftrace_error: Option<String>,
}

pub async fn run(ctx: &Context, plan: &Plan) -> anyhow::Result<(KernelCost, Freshness)> {
    let _stats = StatsEnabled::on()?;
    // The fake runtime is followed because the agent is told it is a runtime binary.
    let runc = fake_runc(&ctx.work.join("fake-runtime"))?;
    let agent = Agent::start(
        &ctx.bins.agent,
        &ctx.work.join("kernel-agent"),
        &ctx.no_runtime,
        false,
        std::slice::from_ref(&runc),
    )
    .await?;
    let pid = agent.pid();
    let (nodetrace_exec_storm, nodetrace_runtime_runs) = {
        let before = bpfstats::snapshot(pid)?;
        helper_run::exec_loop(&ctx.bins.helper, plan.stats_execs, 0, &[]).await?;
        let storm = bpfstats::snapshot(pid)?;
        helper_run::exec_loop_of(
            &ctx.bins.helper,
            &runc,
            plan.stats_runtime_runs,
            0,
            FAKE_RUNC_ARGV,
        )
        .await?;
        let runs = bpfstats::snapshot(pid)?;
        (
            bpfstats::costs(&before, &storm),
            bpfstats::costs(&storm, &runs),
        )
    };
    let fresh = freshness::measure(
        &agent,
        &runc,
        &ctx.work.join("freshness"),
        plan.freshness_samples,
    )
    .await?;
    agent.stop().await?;

    let (bpftrace_exec_storm, bpftrace_error) = match bpftrace_cost(ctx, plan).await {
        Ok(costs) => (costs, None),
        Err(error) => {
            eprintln!("[bench] bpftrace left out: {error:#}");
            (Vec::new(), Some(format!("{error:#}")))
        }
    };
    let cost = KernelCost {
        nodetrace_exec_storm,
        nodetrace_runtime_runs,
        bpftrace_exec_storm,
        bpftrace_error,
    };
    for (what, costs) in [
        ("nodetrace, /bin/true storm", &cost.nodetrace_exec_storm),
        ("nodetrace, fake runc runs", &cost.nodetrace_runtime_runs),
        ("bpftrace, /bin/true storm", &cost.bpftrace_exec_storm),
    ] {
        eprintln!("[bench] BPF cost, {what}: {}", bpfstats::describe(costs));
    }
    Ok((cost, fresh))
}

async fn bpftrace_cost(ctx: &Context, plan: &Plan) -> anyhow::Result<Vec<ProgCost>> {
    let tracer = Bpftrace::start(&ctx.work.join("bpftrace-stats")).await?;
    let before = bpfstats::snapshot(tracer.pid())?;
    helper_run::exec_loop(&ctx.bins.helper, plan.stats_execs, 0, &[]).await?;
    let after = bpfstats::snapshot(tracer.pid())?;
    tracer.stop().await?;
    Ok(bpfstats::costs(&before, &after))
}
