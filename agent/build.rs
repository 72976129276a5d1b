//! Builds the eBPF programs of `agent-ebpf` with aya-build and leaves the object in OUT_DIR.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "nodetrace-ebpf")
        .ok_or_else(|| anyhow!("the nodetrace-ebpf package is not in the workspace"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    // The eBPF crate needs `-Z build-std=core`; RUSTC_BOOTSTRAP=1 lets the stable toolchain
    // accept it (RUNTIME-FACTS.md), so no nightly toolchain is required.
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    aya_build::build_ebpf([ebpf_package], Toolchain::Custom(&toolchain))
}
