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
    cargo(
        &[
            "clippy",
            "-p",
            "xtask",
            "--features",
            "bench-helper",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        "clippy lints of the benchmark helper",
    )?;
    eprintln!(
        "[xtask test] `cargo xtask` builds with only the Rust toolchain (no protoc, no setup tools)"
    );
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    crate::bare_build::run(workspace)?;
    eprintln!("[xtask test] deploy/ manifests");
    crate::deploy_check::run()?;
    // The image archive, written without an engine like `cargo xtask image` does: the
    // release agent on the pinned Debian base. tests/tests/e2e_image.rs imports and runs it;
    // naming it makes that test fail, not skip, if it were missing.
    eprintln!("[xtask test] the image archive (cargo xtask image)");
    let image = crate::image::build_default()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "[xtask test] not root: the eBPF, containerd and end-to-end tests will skip themselves"
        );
    }
    run_tests(&image.path)
}

/// Runs the test suites, passing their output through, and closes with one summary line.
fn run_tests(image_archive: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    let args = ["test", "--", "--test-threads=1"];
    eprintln!("[xtask test] cargo {}", args.join(" "));
    // The collector the OTLP tests need is installed by setup, and Go comes with the machine
    // kind: missing, either is a failure.
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .env("NODETRACE_REQUIRE_ROTEL", "1")
        // The Go test programs of the symbol tests: the machine kind has Go (/usr/local/go).
        .env("NODETRACE_REQUIRE_GO", "1")
        // The runtimes setup built from the Go module proxy, which the probe-plan tests probe.
        .env("NODETRACE_RUNTIMES_DIR", crate::runtimes::CACHE_DIR)
        // ... every one of which must be there.
        .env("NODETRACE_RUNTIMES", crate::runtimes::pinned().join(" "))
        // The image tests/tests/e2e_image.rs runs in containerd.
        .env("NODETRACE_IMAGE_ARCHIVE", image_archive)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let stdout = child.stdout.take().context("no stdout from cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            passed += count(counts, " passed");
            failed += count(counts, " failed");
            ignored += count(counts, " ignored");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("tests failed (cargo {})", args.join(" "));
    }
    Ok(())
}

/// The number before `label` in a `test result:` line (`ok. 12 passed; 0 failed; ...`).
fn count(counts: &str, label: &str) -> u64 {
    counts
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
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
