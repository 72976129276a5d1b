//! Part 8, a hostile tenant (issue 10): normal pod lifecycles while a look-alike runtime (a copy
//! of /bin/true installed as `runc`, not a runtime binary) is exec'd as fast as one core can.
//! Spans of the normal pods lost during the flood (against the same lifecycles without it,
//! goal 0), the look-alikes the kernel counted, drops per reason, and the agent's peak memory.

use anyhow::Context as _;
use nodetrace_testbed::{LifecycleReport, Testbed};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

use super::Context;
use super::agent::Agent;
use super::helper_run;
use super::plan::Plan;
use super::procfs;

/// argv of the look-alike: a runtime's command line pointing at what a careless agent would
/// open (an endless device, for the pid file).
const LOOKALIKE_ARGV: &[&str] = &["runc", "create", "--pid-file", "/dev/zero", "victim"];

#[derive(Clone, Debug, Serialize)]
pub struct Hostile {
    pub lifecycles: usize,
    /// Spans one normal lifecycle gets without the flood (the smallest of the quiet runs).
    pub spans_per_lifecycle: usize,
    /// Spans of the lifecycles during the flood missing against that.
    pub spans_lost: usize,
    pub flood_execs: usize,
    pub flood_execs_per_s: f64,
    /// What the agent counted while flooded.
    pub lookalikes_counted: u64,
    pub kernel_events_received: u64,
    pub drops: BTreeMap<String, u64>,
    pub rss_peak_before_mib: f64,
    pub rss_peak_after_mib: f64,
}

pub async fn run(ctx: &Context, plan: &Plan) -> anyhow::Result<Hostile> {
    let testbed = Testbed::start(&ctx.work.join("hostile-testbed"))
        .await
        .context("cannot start the private containerd")?;
    let socket = testbed.containerd().socket().to_owned();
    let agent = Agent::start(
        &ctx.bins.agent,
        &ctx.work.join("hostile-agent"),
        &socket,
        true,
        &[],
    )
    .await?;
    let client = reqwest::Client::new();
    let mut pods = 0usize;

    let mut quiet = Vec::new();
    for _ in 0..plan.hostile_lifecycles {
        let report = lifecycle(&testbed, &mut pods).await?;
        quiet.push(report);
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut quiet_counts = Vec::new();
    for report in &quiet {
        quiet_counts.push(span_count(&client, &agent, report).await?);
    }
    let spans_per_lifecycle = quiet_counts.iter().copied().min().unwrap_or(0);

    let (_, rss_peak_before_mib) = procfs::rss_mib(agent.pid());
    let before = scrape(&client, &agent).await?;
    let dir = ctx.work.join("hostile-tenant");
    std::fs::create_dir_all(&dir)?;
    let lookalike = dir.join("runc");
    std::fs::copy("/bin/true", &lookalike).context("cannot copy /bin/true")?;
    let flood_started = Instant::now();
    let flood = helper_run::exec_loop_of(
        &ctx.bins.helper,
        &lookalike,
        plan.hostile_flood_execs,
        0,
        LOOKALIKE_ARGV,
    );
    let lifecycles = async {
        let mut reports = Vec::new();
        for _ in 0..plan.hostile_lifecycles {
            reports.push(lifecycle(&testbed, &mut pods).await?);
        }
        anyhow::Ok(reports)
    };
    let (flood, flooded) = tokio::join!(flood, lifecycles);
    let flood_s = flood_started.elapsed().as_secs_f64();
    let flood_execs = flood?.len();
    let flooded = flooded?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut spans_lost = 0;
    for report in &flooded {
        let got = span_count(&client, &agent, report).await?;
        spans_lost += spans_per_lifecycle.saturating_sub(got);
    }
    let after = scrape(&client, &agent).await?;
    let (_, rss_peak_after_mib) = procfs::rss_mib(agent.pid());
    agent.stop().await?;
    testbed.stop().context("testbed teardown")?;

    let moved = |series: &str| {
        (metric(&after, series).unwrap_or(0.0) - metric(&before, series).unwrap_or(0.0)).max(0.0)
            as u64
    };
    let drops = [
        "ringbuf_full",
        "tracked_map_full",
        "cri_inflight_full",
        "cgroup_budget",
        "reader_queue_full",
        "pending_evicted",
        "store_queue_full",
    ]
    .into_iter()
    .map(|reason| {
        let series = format!("nodetrace_events_dropped_total{{reason=\"{reason}\"}}");
        (reason.to_owned(), moved(&series))
    })
    .collect();
    Ok(Hostile {
        lifecycles: plan.hostile_lifecycles,
        spans_per_lifecycle,
        spans_lost,
        flood_execs,
        flood_execs_per_s: flood_execs as f64 / flood_s.max(1e-9),
        lookalikes_counted: moved("nodetrace_runtime_lookalike_execs_total"),
        kernel_events_received: moved("nodetrace_kernel_events_received_total"),
        drops,
        rss_peak_before_mib,
        rss_peak_after_mib,
    })
}

/// One pod lifecycle (pod `bench/hostile-<n>`).
async fn lifecycle(testbed: &Testbed, pods: &mut usize) -> anyhow::Result<LifecycleReport> {
    *pods += 1;
    Ok(testbed
        .pod("bench", &format!("hostile-{pods}"))
        .run(testbed.cri())
        .await?)
}

/// Spans the agent has for the pod of `report`.
async fn span_count(
    client: &reqwest::Client,
    agent: &Agent,
    report: &LifecycleReport,
) -> anyhow::Result<usize> {
    let url = format!("{}/api/traces?pod_uid={}", agent.url, report.pod.uid);
    let body: serde_json::Value =
        serde_json::from_str(&client.get(&url).send().await?.text().await?)?;
    Ok(body["data"].as_array().map_or(0, |traces| {
        traces
            .iter()
            .map(|t| t["spans"].as_array().map_or(0, Vec::len))
            .sum()
    }))
}

async fn scrape(client: &reqwest::Client, agent: &Agent) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{}/metrics", agent.url))
        .send()
        .await?
        .text()
        .await?)
}

/// The value of `series` (labels included, as written) in a Prometheus text scrape.
fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}
