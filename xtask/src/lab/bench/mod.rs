//! `cargo xtask bench`: what nodetrace costs the node and what it sustains, each figure a ratio
//! or percentile against a baseline measured in the same run (see issue 6). Builds the release
//! agent and the in-process helper, runs the parts in turn, and writes bench/results/. Stops
//! everything it started (agents, bpftrace, containerd) on failure and on Ctrl-C.

mod agent;
mod bpfstats;
mod bpftrace;
mod cri_path;
mod diagnostics;
mod exec_path;
mod freshness;
mod helper_run;
mod hostile;
mod kernel;
mod plan;
mod procfs;
mod real_node;
mod report;
mod wire;

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

use plan::{Part, Plan};
use report::{Footprint, Results};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A reduced run (under 3 minutes) instead of the full one (under 20 minutes).
    #[arg(long)]
    quick: bool,
    /// Run only these parts (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Where the JSON and Markdown results go (default: bench/results in the workspace).
    #[arg(long)]
    results: Option<PathBuf>,
}

/// What every part needs.
pub struct Context {
    pub bins: helper_run::Binaries,
    /// Scratch space of this run (removed at the end).
    pub work: PathBuf,
    /// A CRI socket path nothing serves: the agent of the exec-path parts traces no runtime.
    pub no_runtime: PathBuf,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the benchmark loads eBPF programs, runs containerd and sets sysctls: run it as root"
        );
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_owned();
    let plan = Plan::new(args.quick);
    let parts: Vec<Part> = if args.only.is_empty() {
        Part::ALL.to_vec()
    } else {
        args.only.clone()
    };
    let bins = helper_run::build(&workspace)?;
    let (started_utc, stem) = report::now_utc();
    let work = workspace
        .join("bench/tmp")
        .join(format!("{stem}-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let ctx = Context {
        bins,
        no_runtime: work.join("no-runtime.sock"),
        work: work.clone(),
    };
    eprintln!(
        "[bench] {} run: {}; scratch in {}",
        plan.mode,
        parts
            .iter()
            .map(|p| format!("{p:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        work.display()
    );

    let runtime = tokio::runtime::Runtime::new().context("cannot start a tokio runtime")?;
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        tokio::select! {
            results = run_parts(&ctx, &plan, &parts) => Some(results),
            () = interrupted() => None,
        }
    });
    // Everything the parts started was stopped when their futures were dropped.
    drop(runtime);
    let _ = std::fs::remove_dir_all(&work);
    let Some((parts_done, failures)) = outcome else {
        bail!("interrupted; everything the benchmark started was stopped");
    };
    let results = Results {
        started_utc,
        took_s: started.elapsed().as_secs_f64(),
        plan,
        failures,
        ..parts_done
    };
    let dir = args
        .results
        .unwrap_or_else(|| workspace.join("bench").join("results"));
    let (json, markdown) = report::write(&dir, &stem, &results)?;
    println!("{markdown}");
    eprintln!("[bench] results: {} (and .md, latest.md)", json.display());
    if !results.failures.is_empty() {
        bail!("{} part(s) of the benchmark failed", results.failures.len());
    }
    Ok(())
}

/// Runs each part in turn; a failing part is recorded and the others still run.
async fn run_parts(ctx: &Context, plan: &Plan, parts: &[Part]) -> (Results, Vec<String>) {
    let mut results = Results {
        started_utc: String::new(),
        took_s: 0.0,
        machine: procfs::Machine::read(),
        plan: plan.clone(),
        exec_path: None,
        cri_path: None,
        kernel_cost: None,
        ingest: None,
        query: None,
        freshness: None,
        hostile: None,
        diagnostics: None,
        real_node: None,
        footprint: Footprint::default(),
        failures: Vec::new(),
    };
    let mut failures = Vec::new();
    for &part in parts {
        let started = Instant::now();
        eprintln!("[bench] === {part:?} ===");
        let outcome = match part {
            Part::Exec => exec_path::run(ctx, plan).await.map(|(path, footprint)| {
                results.exec_path = Some(path);
                results.footprint.idle = Some(footprint.idle);
                results.footprint.exec_storm = Some(footprint.exec_storm);
            }),
            Part::Kernel => kernel::run(ctx, plan).await.map(|(cost, fresh)| {
                results.kernel_cost = Some(cost);
                results.freshness = Some(fresh);
            }),
            Part::Cri => cri_path::run(ctx, plan).await.map(|cri| {
                results.footprint.cri_lifecycles = Some(cri.agent_usage.clone());
                results.cri_path = Some(cri);
            }),
            Part::Ingest => ingest(ctx, plan).await.map(|i| results.ingest = Some(i)),
            Part::Query => query(ctx, plan).await.map(|q| results.query = Some(q)),
            Part::Diagnostics => diagnostics::run(ctx, plan)
                .await
                .map(|d| results.diagnostics = Some(d)),
            Part::Hostile => hostile::run(ctx, plan)
                .await
                .map(|h| results.hostile = Some(h)),
            Part::RealNode => real_node::run(ctx, plan)
                .await
                .map(|r| results.real_node = Some(r)),
        };
        match outcome {
            Ok(()) => eprintln!(
                "[bench] {part:?} done in {:.0} s",
                started.elapsed().as_secs_f64()
            ),
            Err(error) => {
                eprintln!("[bench] {part:?} FAILED: {error:#}");
                failures.push(format!("{part:?}: {error:#}"));
            }
        }
    }
    (results, failures)
}

async fn ingest(ctx: &Context, plan: &Plan) -> anyhow::Result<wire::Ingest> {
    let rates: Vec<String> = plan.ingest_rates.iter().map(u64::to_string).collect();
    helper_run::run(
        &ctx.bins.helper,
        [
            "ingest".to_owned(),
            "--dir".to_owned(),
            ctx.work.join("ingest").display().to_string(),
            "--step-seconds".to_owned(),
            plan.ingest_step_seconds.to_string(),
            "--rates".to_owned(),
            rates.join(","),
            "--saturate-spans".to_owned(),
            plan.ingest_saturate_spans.to_string(),
        ],
    )
    .await
}

async fn query(ctx: &Context, plan: &Plan) -> anyhow::Result<wire::Query> {
    let dir = ctx.work.join("query");
    let result = helper_run::run(
        &ctx.bins.helper,
        [
            "query".to_owned(),
            "--dir".to_owned(),
            dir.display().to_string(),
            "--pods".to_owned(),
            plan.query_pods.to_string(),
            "--spans-per-pod".to_owned(),
            plan.query_spans_per_pod.to_string(),
            "--queries".to_owned(),
            plan.queries.to_string(),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { term.as_mut()?.recv().await } => {}
    }
    eprintln!("\n[bench] interrupted; stopping everything the benchmark started");
}
