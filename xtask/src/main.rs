//! `cargo xtask`: every project workflow one command away (setup, test, demo).

mod bench;
mod demo;
mod deploy_check;
mod image;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "nodetrace project workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (rust-src, bpf-linker, Debian packages). Idempotent.
    Setup,
    /// Everything CI checks: fmt, clippy, unit, root integration and end-to-end tests.
    Test,
    /// Start a private containerd and the agent, run a sample pod lifecycle, print its trace.
    Demo(demo::DemoArgs),
    /// Build the agent's container image (deploy/Containerfile) with podman, docker or buildah.
    Image(image::ImageArgs),
    /// Measure overhead, throughput, freshness and footprint against baselines (as root).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test => {
            setup::run()?;
            test::run()
        }
        Command::Demo(args) => {
            setup::run()?;
            demo::run(args)
        }
        Command::Image(args) => image::run(args),
        Command::Bench(args) => {
            setup::run()?;
            bench::run(args)
        }
    }
}
