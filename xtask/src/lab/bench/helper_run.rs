//! Builds the release binaries the benchmark runs (the agent and the `nodetrace-bench` helper)
//! and runs the helper's subcommands, reading the JSON each prints.

use anyhow::{Context as _, bail};
use serde::de::DeserializeOwned;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

use super::wire::ExecLoop;

/// The release binaries.
pub struct Binaries {
    pub agent: PathBuf,
    pub helper: PathBuf,
}

/// `cargo build --release` of the agent and of the helper (xtask's `bench-helper` feature).
pub fn build(workspace: &Path) -> anyhow::Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for args in [
        &[
            "build",
            "--release",
            "-p",
            "nodetrace",
            "--bin",
            "nodetrace",
        ][..],
        &[
            "build",
            "--release",
            "-p",
            "xtask",
            "--features",
            "bench-helper",
            "--bin",
            "nodetrace-bench",
        ][..],
    ] {
        eprintln!("[bench] cargo {}", args.join(" "));
        let status = std::process::Command::new(&cargo)
            .args(args)
            .current_dir(workspace)
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo {} failed", args.join(" "));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("release");
    Ok(Binaries {
        agent: target.join("nodetrace"),
        helper: target.join("nodetrace-bench"),
    })
}

/// Runs `helper <args>` to the end (killed if this future is dropped) and parses its JSON.
pub async fn run<T: DeserializeOwned>(
    helper: &Path,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> anyhow::Result<T> {
    let output = Command::new(helper)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", helper.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", helper.display(), output.status);
    }
    serde_json::from_slice(&output.stdout).context("the helper's output is not the expected JSON")
}

/// `count` measured fork+exec+wait of /bin/true, with `argv` (argv[0] first) when given.
pub async fn exec_loop(
    helper: &Path,
    count: usize,
    warmup: usize,
    argv: &[&str],
) -> anyhow::Result<Vec<u64>> {
    exec_loop_of(helper, Path::new("/bin/true"), count, warmup, argv).await
}

/// `count` measured fork+exec+wait of `program`, with `argv` (argv[0] first) when given.
pub async fn exec_loop_of(
    helper: &Path,
    program: &Path,
    count: usize,
    warmup: usize,
    argv: &[&str],
) -> anyhow::Result<Vec<u64>> {
    let mut args = vec![
        "exec-loop".to_owned(),
        "--program".to_owned(),
        program.display().to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--warmup".to_owned(),
        warmup.to_string(),
    ];
    if !argv.is_empty() {
        args.push("--".to_owned());
        args.extend(argv.iter().map(|a| a.to_string()));
    }
    let result: ExecLoop = run(helper, &args).await?;
    Ok(result.samples_ns)
}
