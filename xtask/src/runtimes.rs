//! The container runtimes built from the Go module proxy, pinned here (the one place their
//! versions are written), built like upstream's release builds and cached by version outside
//! the work tree, so that setup builds only what is missing.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where built runtimes are kept: `<dir>/<name>-<version>/<binary>`. The tests find them here
/// (`NODETRACE_RUNTIMES_DIR`).
pub const CACHE_DIR: &str = "/var/cache/nodetrace/runtimes";

/// One runtime binary and how upstream builds its release.
struct GoRuntime {
    name: &'static str,
    version: &'static str,
    /// The main package, installed with `go install <package>@<version>`.
    package: &'static str,
    binary: &'static str,
    tags: &'static str,
    ldflags: &'static str,
    why: &'static str,
}

/// The pinned runtimes.
const RUNTIMES: &[GoRuntime] = &[GoRuntime {
    name: "containerd",
    version: "v2.4.2",
    package: "github.com/containerd/containerd/v2/cmd/containerd",
    binary: "containerd",
    // Release builds link externally (cgo) and are stripped: the shape Go 1.26 changed.
    tags: "no_btrfs",
    ldflags: "-s -w -linkmode=external",
    why: "the newest containerd 2.x (Go 1.26, externally linked, stripped), probed by the tests",
}];

/// The machine's Go: on PATH, else where the machine kind installs it.
fn go() -> anyhow::Result<PathBuf> {
    for candidate in [Path::new("go"), Path::new("/usr/local/go/bin/go")] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.to_owned());
        }
    }
    bail!("no Go toolchain (`go`, or /usr/local/go/bin/go): the runtimes are built with it")
}

/// Builds every pinned runtime that is not in the cache yet; returns how many were built.
pub fn ensure_built(step: impl Fn(&str)) -> anyhow::Result<usize> {
    let mut built = 0;
    for runtime in RUNTIMES {
        let dir = Path::new(CACHE_DIR).join(format!("{}-{}", runtime.name, runtime.version));
        if dir.join(runtime.binary).is_file() {
            continue;
        }
        let go = go()?;
        step(&format!(
            "building {} {} from the Go module proxy: {} (a few minutes)",
            runtime.name, runtime.version, runtime.why
        ));
        let started = Instant::now();
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let status = Command::new(&go)
            .arg("install")
            .args(["-tags", runtime.tags])
            .arg(format!("-ldflags={}", runtime.ldflags))
            .arg(format!("{}@{}", runtime.package, runtime.version))
            .env("GOBIN", &partial)
            .env("CGO_ENABLED", "1")
            .env("GOFLAGS", "-buildvcs=false")
            .status()
            .context("cannot run go install")?;
        if !status.success() {
            bail!(
                "go install {}@{} failed ({status})",
                runtime.package,
                runtime.version
            );
        }
        std::fs::rename(&partial, &dir)
            .with_context(|| format!("cannot move the build to {}", dir.display()))?;
        step(&format!(
            "built {} {} in {:.0} s",
            runtime.name,
            runtime.version,
            started.elapsed().as_secs_f64()
        ));
        built += 1;
    }
    Ok(built)
}
