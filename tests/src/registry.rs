//! A private image registry for PullImage tests: Debian's `docker-registry` (distribution
//! 2.8) as a child process on 127.0.0.1 with its storage in a directory of ours, images
//! pushed into it from OCI archives with `skopeo`, and the process killed (by its pid) on
//! `stop()` or when dropped.
//!
//! containerd has to be told to pull from it over plain HTTP: start it with
//! [`ContainerdOptions::insecure_registries`](crate::ContainerdOptions) holding
//! [`Registry::host`].

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary of Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The `skopeo` binary (Debian package `skopeo`).
pub const SKOPEO_BIN: &str = "skopeo";

/// How long the registry may take to answer `GET /v2/` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What can go wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file or directory could not be prepared.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No free port could be found.
    #[error("find a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    /// A program could not be started.
    #[error("cannot run {program}: {source} (apt-get install {package})")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The registry exited while starting.
    #[error("docker-registry exited with {status} while starting; end of its log:\n{log_tail}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The registry did not answer in time.
    #[error(
        "docker-registry on {addr} did not answer GET /v2/ within {waited:?} (last: {last_error}); end of its log:\n{log_tail}"
    )]
    NotReady {
        /// Its address.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// The last connection error or answer.
        last_error: String,
        /// The end of its log.
        log_tail: String,
    },
    /// `skopeo copy` failed.
    #[error("{command} failed ({status}): {stderr}")]
    Push {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
    let path = path.to_path_buf();
    move |source| RegistryError::Io {
        action,
        path,
        source,
    }
}

/// A running private registry. Dropping it kills it; its directory is left to the caller.
#[derive(Debug)]
pub struct Registry {
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// Starts `docker-registry serve` on a free port of 127.0.0.1, storing its blobs under
    /// `dir` (created if missing), and waits until it answers `GET /v2/`.
    pub fn start(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir.join("storage")).map_err(io_error("create", dir))?;
        let dir = dir.canonicalize().map_err(io_error("resolve", dir))?;
        let addr = free_port()?;
        let config = dir.join("config.yml");
        std::fs::write(&config, render_config(&dir.join("storage"), addr))
            .map_err(io_error("write", &config))?;
        let log = dir.join("registry.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_error("open", &log))?;
        let err = out.try_clone().map_err(io_error("open", &log))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a terminal's Ctrl-C reaches only the test, which kills it.
            .process_group(0)
            .spawn()
            .map_err(|source| RegistryError::Spawn {
                program: REGISTRY_BIN,
                package: "docker-registry",
                source,
            })?;
        let mut registry = Self {
            addr,
            dir,
            log,
            child: Some(child),
        };
        registry.wait_ready()?;
        tracing::info!(addr = %registry.addr, pid = registry.pid(), "private registry ready");
        Ok(registry)
    }

    /// `127.0.0.1:<port>`: the registry part of image references, and the key of its
    /// containerd mirror entry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `max_bytes` of its log.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => {
                let start = bytes.len().saturating_sub(max_bytes);
                String::from_utf8_lossy(&bytes[start..]).into_owned()
            }
            Err(e) => format!("(cannot read {}: {e})", self.log.display()),
        }
    }

    /// Pushes the single image of the OCI archive at `archive` as `<host>/<repository>`
    /// (`repository` like `nodetrace/busybox:pulled`) with `skopeo copy` over plain HTTP;
    /// returns the full reference.
    pub fn push_oci_archive(
        &self,
        archive: &Path,
        repository: &str,
    ) -> Result<String, RegistryError> {
        let reference = format!("{}/{repository}", self.host());
        let tmp = self.dir.join("skopeo-tmp");
        std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
        let mut command = Command::new(SKOPEO_BIN);
        command
            // No policy.json needed: accept whatever we push ourselves.
            .arg("--insecure-policy")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-no-creds",
            ])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            // skopeo unpacks the archive under TMPDIR; keep that in our directory.
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null());
        let output = command.output().map_err(|source| RegistryError::Spawn {
            program: SKOPEO_BIN,
            package: "skopeo",
            source,
        })?;
        if !output.status.success() {
            let start = output.stderr.len().saturating_sub(2000);
            return Err(RegistryError::Push {
                command: format!("{command:?}"),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr[start..])
                    .trim()
                    .to_string(),
            });
        }
        Ok(reference)
    }

    /// Kills the registry (SIGKILL to its pid) and reaps it.
    pub fn stop(mut self) -> Result<(), String> {
        self.kill()
    }

    fn kill(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        let pid = child.id();
        child
            .kill()
            .and_then(|()| child.wait().map(drop))
            .map_err(|e| format!("kill docker-registry {pid}: {e}"))
    }

    fn wait_ready(&mut self) -> Result<(), RegistryError> {
        let started = Instant::now();
        let mut last_error;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(RegistryError::Exited {
                    status,
                    log_tail: self.log_tail(4096),
                });
            }
            match get_v2(self.addr) {
                Ok(status_line) if status_line.contains(" 200 ") => return Ok(()),
                Ok(status_line) => last_error = status_line,
                Err(e) => last_error = e.to_string(),
            }
            if started.elapsed() >= START_TIMEOUT {
                let waited = started.elapsed();
                let log_tail = self.log_tail(4096);
                // Kill it here: the error is returned instead of a Registry to drop.
                let _ = self.kill();
                return Err(RegistryError::NotReady {
                    addr: self.addr,
                    waited,
                    last_error,
                    log_tail,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Err(problem) = self.kill() {
            tracing::error!(%problem, "private registry teardown on drop");
            eprintln!("nodetrace-testbed: {problem}");
        }
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<SocketAddr, RegistryError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(RegistryError::Port)?;
    listener.local_addr().map_err(RegistryError::Port)
}

/// The status line of `GET /v2/` (the API version check every client starts with).
fn get_v2(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The registry's config: filesystem storage, HTTP on `addr` only, no auth, quiet logs.
fn render_config(storage: &Path, addr: SocketAddr) -> String {
    format!(
        r#"# Generated by nodetrace-testbed: a private registry for tests.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}
"#,
        storage = serde_json::to_string(&storage.display().to_string())
            .unwrap_or_else(|_| format!("{:?}", storage.display().to_string())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_only_and_stores_in_our_dir() {
        let text = render_config(
            Path::new("/tmp/reg/storage"),
            "127.0.0.1:5123".parse().expect("addr"),
        );
        assert!(text.contains("addr: 127.0.0.1:5123\n"), "{text}");
        assert!(
            text.contains(r#"rootdirectory: "/tmp/reg/storage""#),
            "{text}"
        );
        assert!(!text.contains("auth:"), "{text}");
    }
}
