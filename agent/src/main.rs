//! The `nodetrace` binary: parses the command line and hands over to the daemon or the client.

use clap::Parser as _;
use nodetrace::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // The export stack's own logs would report on the agent's own traffic.
            EnvFilter::new("info,h2=off,hyper=off,tonic=off,tower=off,opentelemetry=off")
        }))
        .with_writer(std::io::stderr)
        .init();
    let args = nodetrace::config_file::expand(std::env::args_os().collect())?;
    match Cli::parse_from(args).command {
        Command::Agent(args) => nodetrace::daemon::run(args).await,
        Command::Trace(args) => nodetrace::query::run(args).await,
        Command::Pods(args) => nodetrace::query::pods(args).await,
        Command::Gateway(args) => nodetrace::gateway::run(args).await,
        Command::Explain(args) => nodetrace::query::explain(args).await,
    }
}
