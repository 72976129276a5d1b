//! Checks that `cargo xtask` builds on a machine with nothing but the Rust toolchain: the
//! xtask binary is built in a target directory of its own, with `PROTOC` pointing at a file
//! that does not exist and a `PATH` that holds only cargo, rustc and the C linker rustc needs.
//! Every tool `cargo xtask setup` installs (protoc, bpf-linker, containerd, gcc's extras, Go,
//! Python, kubectl...) is out of sight, so a dependency on any of them fails this build.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs the bare build may run: the Rust toolchain (rustup's proxies) and the system
/// linker that rustc drives on Linux (the machine's C compiler and binutils' `ld`).
const ALLOWED: &[&str] = &["cargo", "rustc", "rustup", "cc", "ld"];

/// Where `PROTOC` points: a path that cannot exist.
const NO_PROTOC: &str = "/nonexistent/nodetrace-bare-build/protoc";

pub fn run(workspace: &Path) -> anyhow::Result<()> {
    let dir = workspace.join("target/bare-xtask");
    let bin = dir.join("path");
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    for tool in ALLOWED {
        let found = which(tool).with_context(|| format!("{tool} is not on PATH"))?;
        std::os::unix::fs::symlink(&found, bin.join(tool))
            .with_context(|| format!("cannot link {tool} into {}", bin.display()))?;
    }
    let output = Command::new(bin.join("cargo"))
        .args(["build", "--quiet", "--package", "xtask", "--bin", "xtask"])
        .current_dir(workspace)
        .env_clear()
        .env("PATH", &bin)
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("PROTOC", NO_PROTOC)
        .envs(
            ["RUSTUP_HOME", "CARGO_HOME", "RUSTUP_TOOLCHAIN"]
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .output()
        .context("cannot run cargo for the bare build")?;
    if !output.status.success() {
        bail!(
            "`cargo xtask` does not build with only the Rust toolchain on PATH ({}) and PROTOC={NO_PROTOC}: \
             keep crates that need system tools out of the xtask binary (put them behind the \
             `testbed` feature, built after setup)\n{}",
            ALLOWED.join(", "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The first `name` on the current PATH. The link made to it keeps the name: rustup's proxies
/// dispatch on the name they were run by.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
