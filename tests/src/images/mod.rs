//! Container images built on this machine, with no registry: a `pause` image for pod
//! sandboxes and a `busybox` image for containers, written as OCI image-layout archives
//! and imported into a containerd with `ctr`.

mod busybox;
mod elf;
mod import;
mod layer;
mod layout;
mod pause;

use std::path::{Path, PathBuf};

pub use busybox::{BUSYBOX_PATH, busybox_layer};
pub use import::{ctr_image_names, ctr_import};
pub use layer::LayerBuilder;
pub use layout::{ImageArchive, ImageDefinition, write_oci_archive};
pub use pause::{PAUSE_SOURCE, compile_pause};

/// The reference under which the pause image is imported (use it as `sandbox_image`).
pub const PAUSE_IMAGE: &str = "docker.io/nodetrace/pause:test";
/// The reference under which the busybox image is imported.
pub const BUSYBOX_IMAGE: &str = "docker.io/nodetrace/busybox:test";

/// What can go wrong while building or importing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tool (gcc, busybox, ctr) could not be started.
    #[error("cannot run {program}: {source}{hint}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        source: std::io::Error,
        /// How to get the program, if it is missing.
        hint: &'static str,
    },
    /// A tool ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A binary that has to go into an image is not statically linked.
    #[error("{0} is not a static ELF executable")]
    NotStatic(PathBuf),
    /// A tar entry could not be written.
    #[error("tar entry {path}: {source}")]
    Tar {
        /// The path inside the layer.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An image document could not be serialized.
    #[error("serialize {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// The two archives the testbed needs.
#[derive(Debug, Clone)]
pub struct LocalImages {
    /// The pause image ([`PAUSE_IMAGE`]).
    pub pause: ImageArchive,
    /// The busybox image ([`BUSYBOX_IMAGE`]).
    pub busybox: ImageArchive,
}

impl LocalImages {
    /// Builds both archives under `dir` (created if missing): compiles the pause program
    /// with gcc and packs the host's static busybox.
    pub fn build(dir: &Path) -> Result<Self, ImageError> {
        std::fs::create_dir_all(dir).map_err(|source| ImageError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let pause_binary = compile_pause(&dir.join("pause-build"))?;
        let mut pause_layer = LayerBuilder::new();
        pause_layer.file("pause", 0o755, &pause_binary)?;
        let pause = write_oci_archive(
            &ImageDefinition {
                name: PAUSE_IMAGE.to_string(),
                layers: vec![pause_layer.finish()?],
                entrypoint: vec!["/pause".to_string()],
                cmd: Vec::new(),
                env: vec![DEFAULT_PATH_ENV.to_string()],
                working_dir: "/".to_string(),
            },
            &dir.join("pause.oci.tar"),
        )?;
        let busybox = write_oci_archive(
            &ImageDefinition {
                name: BUSYBOX_IMAGE.to_string(),
                layers: vec![busybox_layer(Path::new(BUSYBOX_PATH))?],
                entrypoint: Vec::new(),
                cmd: vec!["sh".to_string()],
                env: vec![DEFAULT_PATH_ENV.to_string()],
                working_dir: "/".to_string(),
            },
            &dir.join("busybox.oci.tar"),
        )?;
        Ok(Self { pause, busybox })
    }

    /// Imports both archives into the `k8s.io` namespace of the containerd at `socket`.
    pub fn import(&self, socket: &Path) -> Result<(), ImageError> {
        ctr_import(socket, &self.pause)?;
        ctr_import(socket, &self.busybox)
    }
}

const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// The last `max` bytes of `bytes` as lossy UTF-8, trimmed.
/// Runs a tool to completion: its stdout, or an error naming the tool (with an install hint
/// when it cannot start) or its failure (with the end of its stderr).
fn run_tool(
    command: &mut std::process::Command,
    program: &str,
    hint: &'static str,
) -> Result<Vec<u8>, ImageError> {
    let output = command.output().map_err(|source| ImageError::Spawn {
        program: program.to_owned(),
        source,
        hint,
    })?;
    if !output.status.success() {
        return Err(ImageError::ToolFailed {
            command: format!("{command:?}"),
            status: output.status,
            stderr: tail_text(&output.stderr, 2000),
        });
    }
    Ok(output.stdout)
}

fn tail_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}
