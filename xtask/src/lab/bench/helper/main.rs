//! `nodetrace-bench`: the in-process parts of `cargo xtask bench`, built in release mode with
//! the agent's library: a fork+exec loop, the ingest pipeline fed synthetic events, and HTTP
//! queries on a filled store. Each prints one JSON object (see `wire.rs`) on stdout.

mod exec_loop;
mod ingest;
mod query;
mod synth;
#[path = "../wire.rs"]
mod wire;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "In-process parts of `cargo xtask bench` (not meant to be run by hand)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// fork+exec+wait `program` `count` times (after `warmup` unmeasured ones).
    ExecLoop {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        #[arg(long, default_value = "/bin/true")]
        program: String,
        /// argv of the program, argv[0] first (default: the program's path).
        #[arg(last = true)]
        argv: Vec<String>,
    },
    /// Feed the correlator → store pipeline synthetic runc runs at increasing rates.
    Ingest {
        /// Store directories go under this directory.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds per rate step.
        #[arg(long)]
        step_seconds: f64,
        /// Offered rates, spans per second, in increasing order.
        #[arg(long, value_delimiter = ',')]
        rates: Vec<u64>,
        /// Spans for the saturation and the single-stage measurements.
        #[arg(long)]
        saturate_spans: u64,
    },
    /// Fill a store with `pods` × `spans_per_pod` spans and query it over HTTP.
    Query {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        pods: usize,
        #[arg(long, default_value_t = 100)]
        spans_per_pod: usize,
        /// Queries per kind (by UID, by name).
        #[arg(long)]
        queries: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let json = match Cli::parse().command {
        // Single-threaded on purpose: fork from a process without other threads.
        Command::ExecLoop {
            count,
            warmup,
            program,
            argv,
        } => serde_json::to_string(&exec_loop::run(&program, &argv, warmup, count)?)?,
        Command::Ingest {
            dir,
            step_seconds,
            rates,
            saturate_spans,
        } => {
            let runtime = runtime()?;
            let result =
                runtime.block_on(ingest::run(&dir, step_seconds, &rates, saturate_spans))?;
            serde_json::to_string(&result)?
        }
        Command::Query {
            dir,
            pods,
            spans_per_pod,
            queries,
        } => {
            let runtime = runtime()?;
            let result = runtime.block_on(query::run(&dir, pods, spans_per_pod, queries))?;
            serde_json::to_string(&result)?
        }
    };
    println!("{json}");
    Ok(())
}

/// A runtime like the agent's (`#[tokio::main]`: one worker per CPU).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
