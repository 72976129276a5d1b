//! `cargo xtask`: every project workflow one command away (setup, test, demo, bench, image).
//!
//! This binary builds with nothing but the Rust toolchain (checked by `cargo xtask test`, see
//! `bare_build.rs`): the workflows that need the testbed live in `xtask-lab`, which it builds
//! and runs once setup has installed what that needs.

mod bare_build;
mod deploy_check;
mod fuzz;
mod image;
mod lab;
mod runtimes;
mod setup;
mod test;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser)]
#[command(about = "nodetrace project workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (rust-src, bpf-linker, Debian and Python packages). Idempotent.
    Setup,
    /// Everything CI checks: fmt, clippy, unit, root integration and end-to-end tests.
    Test,
    /// Start a private containerd and the agent, run a sample pod lifecycle, print its trace.
    #[command(disable_help_flag = true)]
    Demo {
        /// Options of the demo (`cargo xtask demo --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Coverage-guided fuzzing of the parsers of untrusted input (cargo-fuzz, on stable).
    Fuzz(fuzz::FuzzArgs),
    /// Write the agent's container image as an OCI archive, without an engine (`--engine`: with podman, docker or buildah).
    Image(image::ImageArgs),
    /// Measure overhead, throughput, freshness and footprint against baselines (as root).
    #[command(disable_help_flag = true)]
    Bench {
        /// Options of the benchmark (`cargo xtask bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test => {
            setup::run()?;
            test::run()
        }
        Command::Demo { args } => lab::run("demo", &args),
        Command::Image(args) => image::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Bench { args } => lab::run("bench", &args),
    }
}
