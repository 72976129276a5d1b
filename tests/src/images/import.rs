//! Imports an image archive into a containerd's `k8s.io` namespace with `ctr`, unpacked
//! for the overlayfs snapshotter, and lists the images `ctr` sees there.

use std::path::Path;
use std::process::Command;

use super::{ImageArchive, ImageError};

/// The `ctr` binary the Debian package installs.
const CTR: &str = "ctr";

/// `ctr -a <socket> -n k8s.io images import --snapshotter overlayfs <archive>`.
pub fn ctr_import(socket: &Path, archive: &ImageArchive) -> Result<(), ImageError> {
    let mut command = ctr(socket);
    command
        .args([
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
            "--platform",
        ])
        .arg("linux/amd64")
        .arg(&archive.path);
    run(command).map(drop)
}

/// The image names `ctr -n k8s.io images ls -q` prints.
pub fn ctr_image_names(socket: &Path) -> Result<Vec<String>, ImageError> {
    let mut command = ctr(socket);
    command.args(["images", "ls", "-q"]);
    let stdout = run(command)?;
    Ok(String::from_utf8_lossy(&stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn ctr(socket: &Path) -> Command {
    let mut command = Command::new(CTR);
    command.arg("-a").arg(socket).args(["-n", "k8s.io"]);
    command
}

fn run(mut command: Command) -> Result<Vec<u8>, ImageError> {
    super::run_tool(&mut command, CTR, " (apt-get install containerd)")
}
