//! `xtask-lab`: the workflows that drive a real runtime through the testbed (`cargo xtask demo`,
//! `cargo xtask bench`). A binary of its own because the testbed's CRI client needs `protoc` to
//! build, which `cargo xtask setup` installs: `cargo xtask` itself must build on a machine that
//! has nothing but the Rust toolchain, so it runs setup first and then this binary.

mod bench;
mod demo;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "nodetrace workflows on a real runtime (run through `cargo xtask`, after setup)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a private containerd and the agent, run a sample pod lifecycle, print its trace.
    Demo(demo::DemoArgs),
    /// Measure overhead, throughput, freshness and footprint against baselines (as root).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
