//! `cargo xtask image --engine`: builds the agent's container image from deploy/Containerfile
//! with the container engine found on this machine (podman, then docker, then buildah), or
//! says that none can build here.

use anyhow::{Context as _, bail};
use std::{path::Path, process::Command};

/// The engines tried, each with the arguments that make it build the Containerfile.
const ENGINES: &[(&str, &[&str])] = &[
    (
        "podman",
        &["build", "--ignorefile", "deploy/Containerfile.dockerignore"],
    ),
    ("docker", &["build"]),
    (
        "buildah",
        &["bud", "--ignorefile", "deploy/Containerfile.dockerignore"],
    ),
];

/// Whether the engine answers (for docker: whether its daemon runs).
fn usable(engine: &str) -> bool {
    let probe: &[&str] = if engine == "docker" {
        &["info", "--format", "{{.ServerVersion}}"]
    } else {
        &["version"]
    };
    Command::new(engine)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(tag: &str) -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let Some((engine, build)) = ENGINES.iter().find(|(engine, _)| usable(engine)) else {
        bail!(
            "no container engine can build here: tried podman, docker (with a running daemon) \
             and buildah. Build deploy/Containerfile where one runs (docs/deploy.md)"
        );
    };
    eprintln!("[xtask image] building {} with {engine}", tag);
    let status = Command::new(engine)
        .args(*build)
        .args(["-f", "deploy/Containerfile", "-t", tag, "."])
        .current_dir(workspace)
        .status()
        .with_context(|| format!("cannot run {engine}"))?;
    if !status.success() {
        bail!("{engine} failed to build the image ({status})");
    }
    Ok(())
}
