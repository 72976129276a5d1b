//! Part 9, the eBPF diagnostics (issue 11): the CRI probes' cost per call with
//! `--ebpf-log-level=off` (the default) against `debug`, in alternating rounds on the same
//! containerd, and the size of the loaded programs (`bytes_xlated`) at each level: off, the
//! verifier removes the logging code, so the programs are smaller, and the calls (which take
//! no rare path) cost the same.

use anyhow::Context as _;
use nodetrace_testbed::Testbed;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

use super::Context;
use super::agent::Agent;
use super::bpfstats::{self, StatsEnabled};
use super::plan::Plan;

/// The CRI programs.
const CRI_PROGRAMS: [&str; 2] = ["cri_entry", "cri_return"];

/// One level's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LevelCost {
    pub level: String,
    /// CRI probe invocations (entries and RETs) over the measured lifecycles.
    pub invocations: u64,
    /// BPF time of cri_entry + cri_return per invocation.
    pub ns_per_invocation: f64,
    /// Loaded size of each CRI program.
    pub bytes_xlated: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnostics {
    pub lifecycles_per_round: usize,
    pub off: LevelCost,
    pub debug: LevelCost,
    /// debug / off, per invocation.
    pub ratio: f64,
}

pub async fn run(ctx: &Context, plan: &Plan) -> anyhow::Result<Diagnostics> {
    let testbed = Testbed::start(&ctx.work.join("diag-testbed"))
        .await
        .context("cannot start the private containerd")?;
    let _stats = StatsEnabled::on()?;
    let socket = testbed.containerd().socket().to_owned();
    let mut totals: BTreeMap<&str, LevelCost> = BTreeMap::new();
    let mut pods = 0usize;
    for round in 0..plan.cri_alternations.max(1) {
        let order = if round % 2 == 0 {
            ["off", "debug"]
        } else {
            ["debug", "off"]
        };
        for level in order {
            let dir = ctx.work.join(format!("diag-agent-{round}-{level}"));
            let agent = Agent::start_with(
                &ctx.bins.agent,
                &dir,
                &socket,
                true,
                &[],
                &["--ebpf-log-level", level],
            )
            .await?;
            pods += 1;
            testbed
                .pod("bench", &format!("diag-{pods}"))
                .run(testbed.cri())
                .await?; // warm-up
            let before = bpfstats::snapshot(agent.pid())?;
            for _ in 0..plan.cri_lifecycles_per_round {
                pods += 1;
                testbed
                    .pod("bench", &format!("diag-{pods}"))
                    .run(testbed.cri())
                    .await?;
            }
            let after = bpfstats::snapshot(agent.pid())?;
            let total = totals.entry(level).or_default();
            total.level = level.to_owned();
            for cost in bpfstats::costs(&before, &after) {
                if CRI_PROGRAMS.contains(&cost.program.as_str()) {
                    total.invocations += cost.invocations;
                    // Summed here, divided at the end.
                    total.ns_per_invocation += cost.run_time_ns as f64;
                }
            }
            for (id, counters) in &after {
                if CRI_PROGRAMS.contains(&counters.name.as_str()) {
                    total
                        .bytes_xlated
                        .insert(counters.name.clone(), xlated_bytes(*id)?);
                }
            }
            agent.stop().await?;
        }
    }
    testbed.stop().context("testbed teardown")?;
    let mut finish = |level: &str| {
        let mut cost = totals.remove(level).unwrap_or_default();
        cost.ns_per_invocation /= cost.invocations.max(1) as f64;
        cost
    };
    let (off, debug) = (finish("off"), finish("debug"));
    eprintln!(
        "[bench] CRI probes: {:.0} ns/invocation with diagnostics off, {:.0} with debug; loaded sizes {:?} / {:?}",
        off.ns_per_invocation, debug.ns_per_invocation, off.bytes_xlated, debug.bytes_xlated
    );
    Ok(Diagnostics {
        lifecycles_per_round: plan.cri_lifecycles_per_round,
        ratio: debug.ns_per_invocation / off.ns_per_invocation.max(f64::MIN_POSITIVE),
        off,
        debug,
    })
}

/// The loaded (translated) size of BPF program `id`, from `bpftool prog show`.
fn xlated_bytes(id: u32) -> anyhow::Result<u64> {
    let output = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .output()
        .context("cannot run bpftool (cargo xtask setup installs it)")?;
    let info: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("bpftool prog show answered no JSON")?;
    info["bytes_xlated"]
        .as_u64()
        .with_context(|| format!("no bytes_xlated for program {id}: {info}"))
}
