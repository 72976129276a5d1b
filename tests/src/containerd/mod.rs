//! A containerd of our own: started as a child process on a private config and private
//! directories, restartable, and torn down completely (pods, shims, containers, mounts,
//! pod cgroups, work directory) on `stop()` or when dropped.

mod config;
mod process;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub use config::{ConfigInputs, ConfigVersion, ContainerdLayout, MAX_SOCKET_PATH};
pub use process::CONTAINERD_BIN;

use crate::cri::{CriClient, CriError};
use crate::images::PAUSE_IMAGE;
use crate::pod_cgroups::PodCgroups;
use crate::teardown::{Teardown, TeardownError, TeardownReport};

/// How a private containerd is set up.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// The CRI plugin's `sandbox_image` (it must be imported before pods are run).
    pub sandbox_image: String,
    /// How long to wait for the CRI to answer after starting containerd.
    pub start_timeout: Duration,
    /// How long the CRI may take to remove all pods during teardown.
    pub cri_cleanup_timeout: Duration,
    /// Registries (`host:port`) the CRI pulls from over plain HTTP, e.g. a
    /// [`Registry`](crate::registry::Registry)'s [`host`](crate::registry::Registry::host).
    /// Empty by default.
    pub insecure_registries: Vec<String>,
    /// The containerd executable to run ([`CONTAINERD_BIN`] by default). A copy elsewhere
    /// works as long as the shim (`containerd-shim-runc-v2`) is on the PATH, which always
    /// has `/usr/bin` (see [`PrivateContainerd::copy_binary`]).
    pub containerd_binary: PathBuf,
    /// The `containerd-shim-runc-v2` to run (the config's `runtime_path`); `None`: the one
    /// on the PATH.
    pub shim_binary: Option<PathBuf>,
    /// The runc the shim runs (`BinaryName`); `None`: the one on the PATH.
    pub runc_binary: Option<PathBuf>,
    /// A pod network: the CNI plugins' directory and the network's conflist (JSON). `None`:
    /// no CNI network (pods use the host network).
    pub cni: Option<CniNetwork>,
}

/// A CNI network for the CRI's pods.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    /// Where the plugins are (Debian: `/usr/lib/cni`).
    pub bin_dir: PathBuf,
    /// The network configuration list, written to the CRI's private `net.d`.
    pub conflist: String,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        Self {
            sandbox_image: PAUSE_IMAGE.to_string(),
            start_timeout: Duration::from_secs(30),
            cri_cleanup_timeout: Duration::from_secs(30),
            insecure_registries: Vec::new(),
            containerd_binary: PathBuf::from(CONTAINERD_BIN),
            shim_binary: None,
            runc_binary: None,
            cni: None,
        }
    }
}

/// What can go wrong starting a private containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
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
    /// The work directory is so deep that the socket path does not fit in `sun_path`.
    #[error(
        "socket path {path} is {len} bytes, more than a unix socket allows ({MAX_SOCKET_PATH}); use a shorter work directory"
    )]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// containerd could not be started.
    #[error("cannot start {}: {source} (apt-get install containerd runc)", binary.display())]
    Spawn {
        /// The executable.
        binary: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// containerd exited while we waited for it.
    #[error("containerd exited with {status} while starting; end of its log:\n{log_tail}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The CRI did not answer `Version` in time.
    #[error(
        "containerd's CRI did not answer within {waited:?} (last error: {last_error}); end of its log:\n{log_tail}"
    )]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The last connection or call error.
        last_error: String,
        /// The end of its log.
        log_tail: String,
    },
}

/// A running private containerd. Dropping it tears everything down (see
/// [`PrivateContainerd::stop`]), logging problems instead of returning them.
#[derive(Debug)]
pub struct PrivateContainerd {
    layout: ContainerdLayout,
    options: ContainerdOptions,
    child: Option<Child>,
    pod_cgroups: PodCgroups,
    torn_down: bool,
}

impl PrivateContainerd {
    /// Starts containerd with [`ContainerdOptions::default`] in `work_dir` (created if
    /// missing; it belongs to the testbed from now on and is deleted on teardown).
    pub async fn start(work_dir: &Path) -> Result<Self, ContainerdError> {
        Self::start_with(work_dir, ContainerdOptions::default()).await
    }

    /// Starts containerd with `options` in `work_dir`, and waits until its CRI answers.
    pub async fn start_with(
        work_dir: &Path,
        options: ContainerdOptions,
    ) -> Result<Self, ContainerdError> {
        let layout = process::prepare(work_dir, &options)?;
        let mut containerd = Self {
            layout,
            options,
            child: None,
            pod_cgroups: PodCgroups::new(),
            torn_down: false,
        };
        containerd.launch().await?;
        Ok(containerd)
    }

    /// Where everything lives.
    pub fn layout(&self) -> &ContainerdLayout {
        &self.layout
    }

    /// The work directory (absolute, symlinks resolved).
    pub fn work_dir(&self) -> &Path {
        &self.layout.work_dir
    }

    /// The gRPC socket, for CRI clients and `ctr -a`.
    pub fn socket(&self) -> &Path {
        &self.layout.socket
    }

    /// containerd's `state` directory.
    pub fn state_dir(&self) -> &Path {
        &self.layout.state
    }

    /// containerd's `root` directory.
    pub fn root_dir(&self) -> &Path {
        &self.layout.root
    }

    /// What runc gets as `--root` for the CRI's containers (`<work>/runc/k8s.io`).
    pub fn runtime_root(&self) -> PathBuf {
        self.layout.runtime_root()
    }

    /// The bundle of sandbox or container `id`:
    /// `<state>/io.containerd.runtime.v2.task/k8s.io/<id>/`.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.layout.bundle(id)
    }

    /// Parent of the pods' log directories.
    pub fn pod_log_root(&self) -> &Path {
        &self.layout.pod_logs
    }

    /// containerd's log file.
    pub fn log_path(&self) -> &Path {
        &self.layout.log
    }

    /// The last `max_bytes` of containerd's log.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        process::log_tail(&self.layout.log, max_bytes)
    }

    /// containerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pod cgroups created through clients of this containerd.
    pub fn pod_cgroups(&self) -> &PodCgroups {
        &self.pod_cgroups
    }

    /// A CRI client on this containerd's socket that records the pod cgroups it creates
    /// (so teardown removes them).
    pub async fn cri_client(&self) -> Result<CriClient, CriError> {
        Ok(CriClient::connect(&self.layout.socket)
            .await?
            .with_pod_cgroups(self.pod_cgroups.clone()))
    }

    /// The executable containerd runs from (the last one started).
    pub fn binary(&self) -> &Path {
        &self.options.containerd_binary
    }

    /// Copies the containerd executable it runs now to `<work>/bin/<name>/containerd`
    /// (a new file: another inode, same content and mode, same `containerd` process name)
    /// and returns that path, for [`PrivateContainerd::restart_with_binary`]. It is removed
    /// with the work directory on teardown.
    pub fn copy_binary(&self, name: &str) -> Result<PathBuf, ContainerdError> {
        let dir = self.layout.work_dir.join("bin").join(name);
        std::fs::create_dir_all(&dir).map_err(|source| ContainerdError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let copy = dir.join("containerd");
        // fs::copy copies the permission bits too, so the copy is executable.
        std::fs::copy(&self.options.containerd_binary, &copy).map_err(|source| {
            ContainerdError::Io {
                action: "copy containerd to",
                path: copy.clone(),
                source,
            }
        })?;
        Ok(copy)
    }

    /// Stops containerd (SIGTERM, SIGKILL after 5 s) and starts it again on the same
    /// directories; running shims and containers are left alone and reconnected.
    pub async fn restart(&mut self) -> Result<(), ContainerdError> {
        if let Err(problem) = process::terminate(&mut self.child, Duration::from_secs(5)) {
            tracing::warn!(problem = %problem, "stopping containerd for restart");
        }
        self.launch().await
    }

    /// [`PrivateContainerd::restart`] onto another executable, as an upgrade of the runtime
    /// does: the old process stops, `binary` starts on the same config and directories
    /// (and is what later restarts run). Fails before stopping anything when `binary` is
    /// not an executable file.
    pub async fn restart_with_binary(&mut self, binary: &Path) -> Result<(), ContainerdError> {
        self.upgrade(binary, None).await
    }

    /// [`PrivateContainerd::restart_with_binary`], with a new shim too when `shim` is given
    /// (an upgrade to another release): the config is written again for the new binaries
    /// (containerd 2.x reads another format than 1.x, and migrates 1.x's state itself).
    pub async fn upgrade(
        &mut self,
        binary: &Path,
        shim: Option<&Path>,
    ) -> Result<(), ContainerdError> {
        process::check_executable(binary)?;
        if let Some(shim) = shim {
            process::check_executable(shim)?;
            self.options.shim_binary = Some(shim.to_path_buf());
        }
        self.options.containerd_binary = binary.to_path_buf();
        // Another major version reads another config format.
        process::write_config(&self.layout, &self.options)?;
        self.restart().await
    }

    /// Tears everything down: every pod through the CRI, containerd itself, leftover
    /// shims, runc and container processes, mounts below the work directory, the pod
    /// cgroups, and the work directory.
    pub fn stop(mut self) -> Result<TeardownReport, TeardownError> {
        self.teardown()
    }

    async fn launch(&mut self) -> Result<(), ContainerdError> {
        self.child = Some(process::spawn(
            &self.layout,
            &self.options.containerd_binary,
        )?);
        let started = Instant::now();
        let mut last_error = String::from("socket not created yet");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(ContainerdError::Exited {
                    status,
                    log_tail: self.log_tail(4096),
                });
            }
            if self.layout.socket.exists() {
                match self.probe().await {
                    Ok(()) => {
                        tracing::info!(
                            pid = self.pid(),
                            binary = %self.options.containerd_binary.display(),
                            socket = %self.layout.socket.display(),
                            took = ?started.elapsed(),
                            "private containerd ready"
                        );
                        return Ok(());
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            if started.elapsed() >= self.options.start_timeout {
                return Err(ContainerdError::NotReady {
                    waited: started.elapsed(),
                    last_error,
                    log_tail: self.log_tail(4096),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&self) -> Result<(), CriError> {
        CriClient::connect(&self.layout.socket)
            .await?
            .with_call_timeout(Duration::from_secs(2))
            .version()
            .await
            .map(drop)
    }

    fn teardown(&mut self) -> Result<TeardownReport, TeardownError> {
        self.torn_down = true;
        let mut teardown = Teardown::new(&self.layout);
        let mut pod_cgroups = self.pod_cgroups.snapshot();
        pod_cgroups.extend(teardown.pod_cgroups_in_bundles());
        pod_cgroups.sort();
        pod_cgroups.dedup();
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            teardown.remove_pods_via_cri(self.options.cri_cleanup_timeout);
        } else if self.child.is_some() {
            teardown.warn("containerd had exited: pods removed by force only".to_string());
        }
        if let Err(problem) = process::terminate(&mut self.child, Duration::from_secs(5)) {
            teardown.note(problem);
        }
        teardown.kill_leftovers(&pod_cgroups);
        teardown.unmount();
        teardown.remove_cgroups(&pod_cgroups);
        teardown.remove_work_dir();
        teardown.finish()
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "private containerd teardown on drop");
            eprintln!("nodetrace-testbed: {e}");
        }
    }
}
