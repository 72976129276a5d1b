//! Installs the build and test prerequisites, each only when missing, saying what it does.

use anyhow::{Context as _, bail};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Debian packages the build, the tests and the demo use, with why.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "containerd",
        "the container runtime the end-to-end tests and the demo drive",
    ),
    ("runc", "the OCI runtime nodetrace traces"),
    (
        "libseccomp-dev",
        "seccomp for the runc built from the Go module proxy (cgo, like upstream's release)",
    ),
    ("pkg-config", "finds libseccomp for that cgo build"),
    (
        "crun",
        "the other OCI runtime of the matrix (CRI-O's default), traced like runc",
    ),
    (
        "conmon",
        "CRI-O's container monitor, part of its process tree",
    ),
    (
        "containernetworking-plugins",
        "the bridge and host-local CNI plugins of the test cluster's pod network",
    ),
    (
        "iproute2",
        "`ip`: the test cluster's node address and pod bridge",
    ),
    ("openssl", "the test cluster's service-account signing key"),
    ("busybox-static", "the static busybox inside the test image"),
    (
        "gcc",
        "builds the static pause program of the sandbox image",
    ),
    ("libc6-dev", "static libc for the pause program"),
    (
        "protobuf-compiler",
        "protoc, which the k8s-cri crate of the CRI client needs to build",
    ),
    ("kubectl", "renders the deploy/ kustomizations"),
    (
        "docker-registry",
        "a private image registry for the PullImage end-to-end test",
    ),
    (
        "skopeo",
        "pushes the locally built test image to that registry",
    ),
    (
        "bpftrace",
        "the ad-hoc tracer `cargo xtask bench` compares against",
    ),
    (
        "bpftool",
        "reads the kernel's per-program BPF run times in `cargo xtask bench`",
    ),
];

/// The bpf-linker release known to work with the toolchain's LLVM (RUNTIME-FACTS.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Python packages the tests use, by the module that tells whether it is installed.
const PYTHON_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "kubernetes-validate==1.37.0",
        "kubernetes_validate",
        "validates the rendered deploy/ manifests against the Kubernetes schemas, offline",
    ),
    (
        "rotel==0.0.1a15",
        "rotel",
        "rotel-agent, the real OpenTelemetry collector the OTLP export tests send to",
    ),
];

pub fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let installed = [
        rust_src()?,
        bpf_linker()?,
        debian_packages()?,
        python_packages()?,
        crate::runtimes::ensure_built(step)?,
    ];
    let count: usize = installed.iter().sum();
    let took = started.elapsed().as_secs_f64();
    if count == 0 {
        step(&format!("everything present (checked in {took:.1} s)"));
    } else {
        step(&format!(
            "installed {count} missing piece(s) in {took:.0} s"
        ));
    }
    Ok(())
}

/// Each step returns how many pieces it installed.
fn python_packages() -> anyhow::Result<usize> {
    let mut installed = 0;
    for (requirement, module, why) in PYTHON_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            continue;
        }
        step(&format!(
            "installing the Python package {requirement}: {why}"
        ));
        run_cmd(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--root-user-action=ignore",
            requirement,
        ]))
        .with_context(|| format!("pip install {requirement} failed"))?;
        installed += 1;
    }
    Ok(installed)
}

fn step(what: &str) {
    eprintln!("[xtask setup] {what}");
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn sysroot() -> anyhow::Result<PathBuf> {
    Ok(output(Command::new("rustc").args(["--print", "sysroot"]))?.into())
}

fn rust_src() -> anyhow::Result<usize> {
    let src = sysroot()?.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        return Ok(0);
    }
    step("installing the rust-src component (the eBPF crate builds core from source)");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src"]))
        .context("rust-src is missing and `rustup component add rust-src` failed")?;
    Ok(1)
}

fn bpf_linker() -> anyhow::Result<usize> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(0);
    }
    let lib = sysroot()?.join("lib");
    let (llvm_lib, major) = toolchain_llvm(&lib)?;
    step(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} against the toolchain's own LLVM {major} ({})",
        llvm_lib.display()
    ));
    // bpf-linker's build looks for libLLVM under $LLVM_PREFIX/lib; point it at the toolchain's.
    let prefix = std::env::temp_dir().join("nodetrace-llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    let file_name = llvm_lib
        .file_name()
        .context("libLLVM path without a file name")?;
    for link in [Path::new("libLLVM.so"), Path::new(file_name)] {
        let link = prefix_lib.join(link);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm_lib, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("installing bpf-linker failed")?;
    Ok(1)
}

/// The toolchain's libLLVM (`libLLVM.so.<major>.<minor>-rust-...`) and its major version.
fn toolchain_llvm(lib: &Path) -> anyhow::Result<(PathBuf, u32)> {
    let entries =
        std::fs::read_dir(lib).with_context(|| format!("cannot list {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("libLLVM.so.")
            && let Some(major) = rest.split('.').next().and_then(|m| m.parse().ok())
        {
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "no libLLVM.so.* in {}: the Rust toolchain ships none, so bpf-linker cannot be built against it",
        lib.display()
    )
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn debian_packages() -> anyhow::Result<usize> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(name, _)| !is_installed(name))
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    for (name, why) in DEBIAN_PACKAGES.iter().filter(|(n, _)| missing.contains(n)) {
        step(&format!("installing Debian package {name}: {why}"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages {}: run `cargo xtask setup` as root, or `apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    Ok(missing.len())
}
