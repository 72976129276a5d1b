//! The whole check CI runs: formatting, lints, unit, root integration and end-to-end tests.

use anyhow::{Context as _, bail};
use std::process::Command;

pub fn run() -> anyhow::Result<()> {
    cargo(
        &["fmt", "--all", "--", "--check"],
        "formatting (run `cargo fmt --all`)",
    )?;
    cargo(
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        "clippy lints",
    )?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "[xtask test] not root: the eBPF, containerd and end-to-end tests will skip themselves"
        );
    }
    cargo(&["test", "--", "--test-threads=1"], "tests")
}

fn cargo(args: &[&str], what: &str) -> anyhow::Result<()> {
    eprintln!("[xtask test] cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("cannot run cargo for {what}"))?;
    if !status.success() {
        bail!("{what} failed (cargo {})", args.join(" "));
    }
    Ok(())
}
