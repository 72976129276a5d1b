//! The busybox image's layer: the host's static busybox at `/bin/busybox`, a symlink per
//! applet it reports, and the empty directories a root filesystem is expected to have.

use std::path::Path;
use std::process::Command;

use super::{ImageError, LayerBuilder, elf::is_static_executable, io_error};

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Applets linked even if `busybox --list` does not name them.
const REQUIRED_APPLETS: &[&str] = &["sh", "sleep", "echo", "cat", "true", "false", "ls", "ps"];

/// Builds the layer from the static busybox at `busybox`.
pub fn busybox_layer(busybox: &Path) -> Result<Vec<u8>, ImageError> {
    let binary = std::fs::read(busybox).map_err(io_error("read", busybox))?;
    if !is_static_executable(&binary) {
        return Err(ImageError::NotStatic(busybox.to_path_buf()));
    }
    let mut applets = list_applets(busybox)?;
    applets.extend(REQUIRED_APPLETS.iter().map(|a| a.to_string()));
    applets.sort();
    applets.dedup();

    let mut layer = LayerBuilder::new();
    for dir in [
        "bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/bin", "var",
    ] {
        layer.dir(dir, 0o755)?;
    }
    layer.dir("tmp", 0o1777)?;
    layer.file("bin/busybox", 0o755, &binary)?;
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    layer.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    layer.file("etc/group", 0o644, b"root:x:0:\n")?;
    layer.finish()
}

/// The applet names `busybox --list` prints (plain names, no directories).
fn list_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let mut command = Command::new(busybox);
    command.arg("--list");
    let stdout = super::run_tool(
        &mut command,
        &busybox.display().to_string(),
        " (apt-get install busybox-static)",
    )?;
    Ok(String::from_utf8_lossy(&stdout)
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(str::to_string)
        .collect())
}
