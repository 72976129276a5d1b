//! The containerd child process: preparing its directories and config, spawning it with
//! its output in a log file, and terminating it.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    ConfigInputs, ConfigVersion, ContainerdError, ContainerdLayout, ContainerdOptions,
    MAX_SOCKET_PATH,
};

/// The containerd binary the Debian package installs.
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";

/// Directories the runtime stack finds its helpers in (runc is in /usr/sbin on Debian).
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerdError {
    let path = path.to_path_buf();
    move |source| ContainerdError::Io {
        action,
        path,
        source,
    }
}

/// Creates the work directory and its subdirectories and writes the config.
pub(super) fn prepare(
    work_dir: &Path,
    options: &ContainerdOptions,
) -> Result<ContainerdLayout, ContainerdError> {
    std::fs::create_dir_all(work_dir).map_err(io_error("create", work_dir))?;
    let work_dir = work_dir
        .canonicalize()
        .map_err(io_error("resolve", work_dir))?;
    let layout = ContainerdLayout::new(&work_dir);
    let socket_len = layout.ttrpc_socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        return Err(ContainerdError::SocketPathTooLong {
            path: layout.ttrpc_socket.clone(),
            len: socket_len,
        });
    }
    for dir in [
        &layout.root,
        &layout.state,
        &layout.runc_root,
        &layout.pod_logs,
        &layout.images,
        &layout.cni.join("bin"),
        &layout.cni.join("net.d"),
    ] {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    }
    write_config(&layout, options)?;
    Ok(layout)
}

/// Writes the config in the format `options.containerd_binary` reads (and, for containerd
/// 2.x, the registry host files).
pub(super) fn write_config(
    layout: &ContainerdLayout,
    options: &ContainerdOptions,
) -> Result<(), ContainerdError> {
    let (version, cni_bin_dirs) = config_version_of(&options.containerd_binary)?;
    let inputs = ConfigInputs {
        sandbox_image: &options.sandbox_image,
        insecure_registries: &options.insecure_registries,
        shim: options.shim_binary.as_deref(),
        runc: options.runc_binary.as_deref(),
        cni_bin: options.cni.as_ref().map(|cni| cni.bin_dir.as_path()),
        cni_bin_dirs,
    };
    if let Some(cni) = &options.cni {
        let path = layout.cni.join("net.d").join("10-nodetrace.conflist");
        std::fs::write(&path, &cni.conflist).map_err(io_error("write", &path))?;
    }
    if version == ConfigVersion::V3 {
        for host in &options.insecure_registries {
            let (path, text) = layout.registry_hosts_file(host);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
            }
            std::fs::write(&path, text).map_err(io_error("write", &path))?;
        }
    }
    std::fs::write(&layout.config, layout.render(version, &inputs))
        .map_err(io_error("write", &layout.config))
}

/// The config format of a containerd executable, from its `--version` line
/// (`containerd github.com/containerd/containerd/v2 v2.4.2 ...` for 2.x), and whether it
/// reads the CNI plugins' directories as the list `bin_dirs` (2.1 and later).
pub(super) fn config_version_of(binary: &Path) -> Result<(ConfigVersion, bool), ContainerdError> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|source| ContainerdError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let bin_dirs = !text
        .split_whitespace()
        .nth(2)
        .is_some_and(|version| version.starts_with("v2.0."));
    Ok((parse_config_version(&text), bin_dirs))
}

fn parse_config_version(version_line: &str) -> ConfigVersion {
    match version_line.split_whitespace().nth(1) {
        Some(module) if module.ends_with("/v2") => ConfigVersion::V3,
        _ => ConfigVersion::V2,
    }
}

/// Fails unless `binary` is a regular file with an execute bit set.
pub(super) fn check_executable(binary: &Path) -> Result<(), ContainerdError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(binary).map_err(io_error("read", binary))?;
    if metadata.is_file() && metadata.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(ContainerdError::Io {
            action: "run",
            path: binary.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not an executable file",
            ),
        })
    }
}

/// Starts `<binary> --config <config>` in its own process group (a terminal's Ctrl-C
/// reaches only us, and we tear it down), stdout and stderr appended to the log.
pub(super) fn spawn(layout: &ContainerdLayout, binary: &Path) -> Result<Child, ContainerdError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&layout.log)
        .map_err(io_error("open", &layout.log))?;
    let log_err = log.try_clone().map_err(io_error("open", &layout.log))?;
    Command::new(binary)
        .arg("--config")
        .arg(&layout.config)
        .env("PATH", runtime_path())
        .current_dir(&layout.work_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|source| ContainerdError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs and reaps. A no-op without a child.
pub(super) fn terminate(child: &mut Option<Child>, grace: Duration) -> Result<(), String> {
    let Some(mut process) = child.take() else {
        return Ok(());
    };
    if let Ok(Some(_)) = process.try_wait() {
        return Ok(());
    }
    let pid = process.id() as i32;
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = Instant::now();
    while started.elapsed() < grace {
        match process.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait for containerd {pid}: {e}")),
        }
    }
    tracing::warn!(pid, "containerd ignored SIGTERM, killing it");
    process
        .kill()
        .and_then(|()| process.wait().map(drop))
        .map_err(|e| format!("kill containerd {pid}: {e}"))
}

/// The end of the log file, lossily decoded.
pub(super) fn log_tail(log: &Path, max_bytes: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max_bytes);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// Our PATH with the standard system directories appended where missing.
fn runtime_path() -> std::ffi::OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&current).collect();
    for dir in SYSTEM_PATH {
        if !dirs.iter().any(|d| d == Path::new(dir)) {
            dirs.push(PathBuf::from(dir));
        }
    }
    std::env::join_paths(dirs).unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_format_follows_the_major_version() {
        assert_eq!(
            parse_config_version("containerd github.com/containerd/containerd/v2 v2.4.2 5fe3f7d\n"),
            ConfigVersion::V3
        );
        assert_eq!(
            parse_config_version(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n"
            ),
            ConfigVersion::V2
        );
        assert_eq!(parse_config_version(""), ConfigVersion::V2);
    }
}
