//! `cargo xtask fuzz`: coverage-guided runs of the fuzz targets in `fuzz/` (cargo-fuzz and
//! libFuzzer) over the parsers of untrusted input, on the stable toolchain.
//!
//! cargo-fuzz builds with `-Z sanitizer=address` and LLVM's coverage passes. Stable rustc takes
//! `-Z` flags when `RUSTC_BOOTSTRAP=1` is set, which this command does; the stable toolchain
//! ships the AddressSanitizer runtime for x86_64 and aarch64 Linux, and libfuzzer-sys builds
//! libFuzzer from its C++ sources. So the run needs: cargo-fuzz (installed here on first use),
//! a C++ compiler, and that runtime; it says which one is missing instead of running.
//! Nothing of this is linked into `cargo xtask` itself: it only runs `cargo fuzz`.

use anyhow::{Context as _, bail};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cargo-fuzz release this was tried with (on Rust 1.95 stable, RUSTC_BOOTSTRAP=1).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// A fuzz target of `fuzz/Cargo.toml` and what its runs get besides the generated corpus.
struct Target {
    name: &'static str,
    /// Seed inputs beyond `fuzz/seeds/<name>`, relative to the workspace.
    extra_seeds: &'static [&'static str],
    /// Extra libFuzzer options.
    options: &'static [&'static str],
}

const TARGETS: &[Target] = &[
    Target {
        name: "argv",
        extra_seeds: &[],
        options: &[],
    },
    Target {
        name: "bundle",
        // The real containerd and CRI-O specs the unit tests read.
        extra_seeds: &["agent/src/oci/testdata"],
        options: &["-max_len=65536"],
    },
    Target {
        name: "events",
        // An exec record is 4.4 KiB; libFuzzer's default cap is 4 KiB.
        extra_seeds: &[],
        options: &["-max_len=8192"],
    },
    Target {
        name: "params",
        extra_seeds: &[],
        options: &[],
    },
];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Run only this target: argv, bundle, events or params (all of them by default).
    #[arg(long)]
    target: Option<String>,
    /// How long to run each target, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// What one run of a target did, from libFuzzer's final statistics.
struct Outcome {
    name: &'static str,
    runs: Option<u64>,
    execs_per_second: Option<u64>,
    new_units: Option<u64>,
    /// The input libFuzzer saved when the target crashed, timed out or ran out of memory.
    reproducer: Option<PathBuf>,
    failed: bool,
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let targets: Vec<&Target> = match &args.target {
        Some(name) => vec![TARGETS.iter().find(|t| t.name == name).with_context(|| {
            format!(
                "no fuzz target {name:?}: the targets are {}",
                names().join(", ")
            )
        })?],
        None => TARGETS.iter().collect(),
    };
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    check_prerequisites()?;
    cargo_fuzz()?;

    step("building the fuzz targets (release, AddressSanitizer; the first build takes minutes)");
    let status = fuzz_command(workspace)
        .arg("build")
        .status()
        .context("cannot run cargo fuzz build")?;
    if !status.success() {
        bail!("`RUSTC_BOOTSTRAP=1 cargo fuzz build` failed ({status})");
    }

    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(workspace, target, args.seconds)?);
    }
    report(&outcomes, args.seconds);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for outcome in &failed {
        match &outcome.reproducer {
            Some(path) => eprintln!(
                "[xtask fuzz] {} failed; reproducer: {}\n  replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run {} {}",
                outcome.name,
                path.display(),
                outcome.name,
                path.display()
            ),
            None => eprintln!(
                "[xtask fuzz] {} failed without saving an input (see its output above)",
                outcome.name
            ),
        }
    }
    bail!(
        "fuzzing found {} failing target(s): {}",
        failed.len(),
        failed.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
    )
}

fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.name).collect()
}

fn step(what: &str) {
    eprintln!("[xtask fuzz] {what}");
}

/// `cargo fuzz` in the workspace, with `-Z` flags allowed on the stable compiler.
fn fuzz_command(workspace: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("fuzz")
        .current_dir(workspace)
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// The C++ compiler and the sanitizer runtime, which this command cannot install.
fn check_prerequisites() -> anyhow::Result<()> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    let has_cxx = Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cxx {
        bail!(
            "cannot fuzz here: libfuzzer-sys builds libFuzzer from C++ sources and there is no \
             C++ compiler (`{cxx}`; set CXX to use another). Install one (Debian: `apt-get install g++`)"
        );
    }
    let rustc = |arg: &str| -> anyhow::Result<String> {
        let out = Command::new("rustc")
            .arg(arg)
            .output()
            .context("cannot run rustc")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = rustc("-vV")?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host")?
        .to_owned();
    let lib = PathBuf::from(rustc("--print=sysroot")?.trim())
        .join("lib/rustlib")
        .join(&host)
        .join("lib");
    let has_asan = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("_rt.asan.a"));
    if !has_asan {
        bail!(
            "cannot fuzz here: cargo-fuzz builds with -Z sanitizer=address, and this toolchain has \
             no AddressSanitizer runtime for {host} (no librustc-*_rt.asan.a in {}). Rust ships it \
             for x86_64 and aarch64 Linux and macOS; fuzz on one of those",
            lib.display()
        );
    }
    if version.contains("-nightly") {
        step("nightly toolchain: -Z flags are native (RUSTC_BOOTSTRAP=1 is harmless)");
    } else {
        step("stable toolchain: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z sanitizer flags");
    }
    Ok(())
}

/// Installs the pinned cargo-fuzz when `cargo fuzz` is missing or another version.
fn cargo_fuzz() -> anyhow::Result<()> {
    let version = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    match version {
        Some(found) if found == wanted => return Ok(()),
        Some(found) => step(&format!(
            "found {found}; installing cargo-fuzz {CARGO_FUZZ_VERSION}, the version this was tried with"
        )),
        None => step(&format!(
            "installing cargo-fuzz {CARGO_FUZZ_VERSION} (first use; about a minute): it drives libFuzzer"
        )),
    }
    let status = Command::new("cargo")
        .args([
            "install",
            "--locked",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        ])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("`cargo install --locked cargo-fuzz@{CARGO_FUZZ_VERSION}` failed ({status})");
    }
    Ok(())
}

/// Runs one target for `seconds`, its output echoed but for libFuzzer's per-input lines, and
/// kept whole in `fuzz/target/xtask-fuzz-<name>.log`.
fn run_target(workspace: &Path, target: &Target, seconds: u64) -> anyhow::Result<Outcome> {
    let fuzz = workspace.join("fuzz");
    let corpus = fuzz.join("corpus").join(target.name);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let mut seeds = vec![fuzz.join("seeds").join(target.name)];
    seeds.extend(target.extra_seeds.iter().map(|s| workspace.join(s)));
    seeds.retain(|dir| dir.is_dir());
    let dict = fuzz.join("dicts").join(format!("{}.dict", target.name));

    step(&format!("running {} for {seconds} s", target.name));
    let mut cmd = fuzz_command(workspace);
    cmd.args(["run", target.name])
        .arg(&corpus)
        .args(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // An input that takes this long is a hang (a parser must answer in microseconds).
        .arg("-timeout=10")
        .args(target.options);
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let mut child = cmd
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo fuzz run")?;
    let log_path = fuzz
        .join("target")
        .join(format!("xtask-fuzz-{}.log", target.name));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut outcome = Outcome {
        name: target.name,
        runs: None,
        execs_per_second: None,
        new_units: None,
        reproducer: None,
        failed: false,
    };
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz output")?;
        writeln!(log, "{line}").context("writing the fuzz log")?;
        let per_input = line.starts_with('#') && !line.contains("DONE");
        if !per_input {
            eprintln!("{line}");
        }
        read_stat(&line, &mut outcome, workspace);
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    outcome.failed = !status.success();
    step(&format!("full output: {}", log_path.display()));
    Ok(outcome)
}

/// Takes what one line of libFuzzer's output tells.
fn read_stat(line: &str, outcome: &mut Outcome, workspace: &Path) {
    let number = |prefix: &str| -> Option<u64> { line.strip_prefix(prefix)?.trim().parse().ok() };
    if let Some(n) = number("stat::number_of_executed_units:") {
        outcome.runs = Some(n);
    } else if let Some(n) = number("stat::average_exec_per_sec:") {
        outcome.execs_per_second = Some(n);
    } else if let Some(n) = number("stat::new_units_added:") {
        outcome.new_units = Some(n);
    } else if let Some((_, path)) = line.split_once("Test unit written to ") {
        let path = Path::new(path.trim());
        outcome.reproducer = Some(if path.is_absolute() {
            path.to_owned()
        } else {
            workspace.join(path)
        });
    }
}

fn report(outcomes: &[Outcome], seconds: u64) {
    let shown = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    eprintln!("\n[xtask fuzz] {seconds} s per target");
    eprintln!(
        "{:<8} {:>12} {:>10} {:>10}  result",
        "target", "runs", "execs/s", "new units"
    );
    for o in outcomes {
        let result = match (&o.reproducer, o.failed) {
            (_, false) => "nothing found".to_owned(),
            (Some(path), true) => format!("FAILED: {}", path.display()),
            (None, true) => "FAILED".to_owned(),
        };
        eprintln!(
            "{:<8} {:>12} {:>10} {:>10}  {result}",
            o.name,
            shown(o.runs),
            shown(o.execs_per_second),
            shown(o.new_units)
        );
    }
}
