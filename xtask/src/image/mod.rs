//! `cargo xtask image`: the agent's container image as an OCI image-layout archive, written
//! here without any container engine, byte for byte the same for the same inputs.
//!
//! Two layers: the Debian bookworm base ([`debs`]: glibc, libgcc_s, CA certificates, base
//! files, the files distroless/cc's Debian 12 image is made of that the agent uses) and the
//! release agent at `/nodetrace`. The config is `deploy/Containerfile`'s: root, port 9750,
//! `ENTRYPOINT ["/nodetrace"]`. Every time in it is `SOURCE_DATE_EPOCH` (default 0).
//!
//! `cargo xtask image --engine` builds `deploy/Containerfile` with podman, docker or buildah
//! instead ([`engine`]).

mod debs;
mod engine;
mod layer;
mod layout;
mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use layer::Layer;
use layout::{Empty, RuntimeConfig};
use tree::Tree;

/// What can go wrong while writing the archive.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source} (it comes with Debian's apt and dpkg)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Tool { command: String, stderr: String },
    #[error(
        "apt-get download {package} failed: {stderr}\n(bookworm's mirror keeps only the newest \
         version of a package: if it moved on, bump the pin in xtask/src/image/debs.rs)"
    )]
    Download { package: String, stderr: String },
    #[error("{path} has sha256 {got}, not the pinned {expected}: delete it to download it again")]
    DebHash {
        path: PathBuf,
        expected: &'static str,
        got: String,
    },
    #[error("two different entries for /{0} in one layer")]
    Conflict(String),
    #[error("path {0} leaves the image root")]
    BadPath(String),
    #[error("{path}: unsupported {what}")]
    Unsupported { path: String, what: String },
    #[error("tar entry {path}: {source}")]
    Tar {
        path: String,
        source: std::io::Error,
    },
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    #[error("serialize the {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl ImageError {
    /// An error constructor for `map_err` on I/O with `path`.
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Name and tag of the image (the manifests use `nodetrace:0.1.0`).
    #[arg(long, default_value = "nodetrace:0.1.0")]
    tag: String,
    /// Build deploy/Containerfile with podman, docker or buildah instead of writing the
    /// archive here.
    #[arg(long)]
    engine: bool,
    /// Where to write the archive [default: <target dir>/nodetrace-image.tar].
    #[arg(long, conflicts_with = "engine")]
    output: Option<PathBuf>,
    /// Put this agent binary in the image instead of building `cargo build --release -p
    /// nodetrace`.
    #[arg(long, conflicts_with = "engine")]
    binary: Option<PathBuf>,
    /// Where the Debian packages are cached [default: /var/cache/nodetrace/image-debs as
    /// root, ~/.cache/nodetrace/image-debs otherwise].
    #[arg(long, conflicts_with = "engine")]
    deb_cache: Option<PathBuf>,
    /// Write the image's files into this (new) directory instead of an archive: what
    /// deploy/Containerfile copies into its `FROM scratch` stage, so that both give the same
    /// files.
    #[arg(long, conflicts_with_all = ["engine", "output"])]
    rootfs: Option<PathBuf>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    /// `sha256:` of the manifest, the image's digest.
    pub manifest_digest: String,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    if args.engine {
        return engine::run(&args.tag);
    }
    let workspace = workspace()?;
    let deb_cache = args.deb_cache.unwrap_or_else(debs::default_cache);
    let binary = match args.binary {
        Some(binary) => binary,
        None => build_agent(&workspace)?,
    };
    if let Some(rootfs) = args.rootfs {
        let (tree, _) = image_trees(&binary, &deb_cache)?;
        let mut all = tree.0;
        all.merge(tree.1)?;
        all.write_to(&rootfs)?;
        eprintln!(
            "[xtask image] wrote the image's files to {}",
            rootfs.display()
        );
        return Ok(());
    }
    let output = match args.output {
        Some(output) => output,
        None => default_output(&workspace)?,
    };
    let written = write_archive(&binary, &deb_cache, &args.tag, &output)?;
    println!("{}", written.manifest_digest);
    Ok(())
}

/// Builds the release agent and writes the archive at the default place: what `cargo xtask
/// test` does before the end-to-end test of the image.
pub fn build_default() -> anyhow::Result<Written> {
    let workspace = workspace()?;
    let binary = build_agent(&workspace)?;
    let output = default_output(&workspace)?;
    write_archive(&binary, &debs::default_cache(), "nodetrace:0.1.0", &output)
}

/// Writes the archive of `binary` on the pinned base, tagged `tag`, to `output`, and says
/// what it wrote.
pub fn write_archive(
    binary: &Path,
    deb_cache: &Path,
    tag: &str,
    output: &Path,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let epoch = source_date_epoch()?;
    let ((base, agent), downloaded) = image_trees(binary, deb_cache)?;
    let base = Layer::build(
        &base,
        epoch,
        &format!("Debian bookworm: {}", debs::versions()),
    )?;
    let agent = Layer::build(&agent, epoch, "the nodetrace agent")?;
    let name = layout::full_reference(tag);
    let image = layout::write(
        &runtime_config(),
        &[base, agent],
        &layout::rfc3339(epoch),
        &name,
        tag,
        epoch,
    )?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written beside and renamed, so a reader never sees half an archive.
    let partial = output.with_extension("tar.partial");
    std::fs::write(&partial, &image.archive)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, output).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            output.display()
        )
    })?;
    let size = image.archive.len() as u64;
    eprintln!(
        "[xtask image] wrote {} ({:.1} MiB) in {:.1} s{}: {name}, manifest {}, image id {}",
        output.display(),
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64(),
        if downloaded {
            ", packages downloaded"
        } else {
            ""
        },
        image.manifest_digest,
        image.config_digest,
    );
    Ok(Written {
        path: output.to_path_buf(),
        manifest_digest: image.manifest_digest,
    })
}

/// The two layers' trees (the Debian base, the agent) and whether packages were downloaded.
fn image_trees(binary: &Path, deb_cache: &Path) -> anyhow::Result<((Tree, Tree), bool)> {
    let (base, downloaded) = debs::base_tree(deb_cache)?;
    let agent_bytes = std::fs::read(binary)
        .with_context(|| format!("cannot read the agent binary {}", binary.display()))?;
    let mut agent = Tree::new();
    agent.file("nodetrace", 0o755, agent_bytes)?;
    Ok(((base, agent), downloaded))
}

/// deploy/Containerfile's run stage, as an image config: keep the two in step.
fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        user: "0:0".into(),
        exposed_ports: BTreeMap::from([("9750/tcp".to_string(), Empty {})]),
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("SSL_CERT_FILE=/{}", debs::CA_BUNDLE),
        ],
        entrypoint: vec!["/nodetrace".into()],
        working_dir: "/".into(),
        labels: BTreeMap::from([
            (
                "org.opencontainers.image.title".to_string(),
                "nodetrace".to_string(),
            ),
            (
                "org.opencontainers.image.description".to_string(),
                "eBPF node agent tracing pod lifecycles".to_string(),
            ),
            (
                "org.opencontainers.image.version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (
                "org.opencontainers.image.licenses".to_string(),
                "Apache-2.0".to_string(),
            ),
        ]),
    }
}

/// `SOURCE_DATE_EPOCH` (the reproducible-builds convention) or 0.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a Unix time")),
        Err(_) => Ok(0),
    }
}

fn workspace() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Cargo's target directory for this workspace (honours `CARGO_TARGET_DIR`).
fn target_dir(workspace: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace)
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata's output")?;
    Ok(PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .context("cargo metadata names no target directory")?,
    ))
}

fn default_output(workspace: &Path) -> anyhow::Result<PathBuf> {
    Ok(target_dir(workspace)?.join("nodetrace-image.tar"))
}

/// `cargo build --release -p nodetrace`; the binary's path.
fn build_agent(workspace: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("[xtask image] cargo build --release --locked -p nodetrace");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-p", "nodetrace"])
        .current_dir(workspace)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p nodetrace failed ({status})");
    }
    Ok(target_dir(workspace)?.join("release/nodetrace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run stage of deploy/Containerfile (after its last `FROM`), instructions joined
    /// across `\` continuations, comments dropped.
    fn run_stage() -> Vec<(String, String)> {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Containerfile"),
        )
        .expect("deploy/Containerfile");
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(part) => current.push_str(part),
                None => {
                    current.push_str(line);
                    let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
                    instructions.push((op.to_string(), rest.trim().to_string()));
                    current.clear();
                }
            }
        }
        let last_from = instructions
            .iter()
            .rposition(|(op, _)| op == "FROM")
            .expect("a FROM");
        instructions.split_off(last_from)
    }

    /// `KEY=value KEY="value with spaces"` pairs.
    fn pairs(text: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut rest = text.trim();
        while let Some((key, after)) = rest.split_once('=') {
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"').expect("closing quote");
                (&quoted[..end], &quoted[end + 1..])
            } else {
                after.split_once(' ').unwrap_or((after, ""))
            };
            out.insert(key.trim().to_string(), value.to_string());
            rest = next.trim();
        }
        out
    }

    /// The archive's config and the Containerfile's run stage say the same: a change to one
    /// without the other fails here.
    #[test]
    fn config_is_the_containerfiles() {
        let config = runtime_config();
        let stage = run_stage();
        let get = |op: &str| -> Vec<&str> {
            stage
                .iter()
                .filter(|(o, _)| o == op)
                .map(|(_, rest)| rest.as_str())
                .collect()
        };
        assert_eq!(get("FROM"), ["scratch"]);
        assert_eq!(get("COPY"), ["--from=build /rootfs/ /"]);
        assert_eq!(get("USER"), [config.user.as_str()]);
        assert_eq!(get("WORKDIR"), [config.working_dir.as_str()]);
        let ports: Vec<String> = get("EXPOSE").iter().map(|p| format!("{p}/tcp")).collect();
        assert_eq!(
            ports,
            config.exposed_ports.keys().cloned().collect::<Vec<_>>()
        );
        let entrypoint: Vec<String> =
            serde_json::from_str(get("ENTRYPOINT")[0]).expect("ENTRYPOINT in JSON form");
        assert_eq!(entrypoint, config.entrypoint);
        let env = pairs(&get("ENV").join(" "));
        let expected_env: BTreeMap<String, String> = config
            .env
            .iter()
            .map(|e| {
                let (k, v) = e.split_once('=').expect("KEY=value");
                (k.to_string(), v.to_string())
            })
            .collect();
        assert_eq!(env, expected_env);
        assert_eq!(pairs(&get("LABEL").join(" ")), config.labels);
    }
}
