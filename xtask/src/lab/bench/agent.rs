//! The nodetrace agent as a separate process (the release binary): started on a free port with
//! its own data directory, ready when its eBPF programs (and, when asked, its CRI probes) are
//! attached, stopped with SIGTERM; SIGTERM then SIGKILL when dropped.

use anyhow::{Context as _, bail};
use nodetrace_testbed::containerd::ContainerdLayout;
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

use super::procfs;

/// How long the agent may take to load its programs (and find the runtime).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop (detaching ~150 uprobes takes seconds).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Agent {
    child: Child,
    pid: u32,
    pub url: String,
    log: PathBuf,
}

impl Agent {
    /// Starts `binary agent` with data under `dir`, tracing CRI calls on `cri_socket` (and
    /// reading bundles in its state directory when it is a testbed containerd's); when
    /// `with_cri`, waits for the CRI probes too. `runtimes` are followed as OCI runtime
    /// binaries besides the ones found on the machine.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        cri_socket: &Path,
        with_cri: bool,
        runtimes: &[PathBuf],
    ) -> anyhow::Result<Self> {
        Self::start_with(binary, dir, cri_socket, with_cri, runtimes, &[]).await
    }

    /// [`Agent::start`] with `extra` flags.
    pub async fn start_with(
        binary: &Path,
        dir: &Path,
        cri_socket: &Path,
        with_cri: bool,
        runtimes: &[PathBuf],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = dir.join("agent.log");
        let log_file = std::fs::File::create(&log)?;
        let state_root = ContainerdLayout::of_socket(cri_socket)
            .map(|layout| [OsString::from("--runtime-state-root"), layout.state.into()]);
        let child = Command::new(binary)
            .arg("agent")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--cri-socket")
            .arg(cri_socket)
            .args(state_root.into_iter().flatten())
            .args(
                runtimes
                    .iter()
                    .flat_map(|path| [OsString::from("--oci-runtime-binary"), path.into()]),
            )
            .args(["--node-name", "bench-node"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("the agent has no pid")?;
        let mut agent = Self {
            child,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        agent.wait_ready(with_cri).await?;
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait_ready(&mut self, with_cri: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent exited ({status}) while starting:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.url)).send().await
                && let Ok(body) = response.text().await
            {
                if components_ready(&body, with_cri) {
                    return Ok(());
                }
                last = body;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the agent was not ready within {READY_TIMEOUT:?}; last /readyz: {last}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit; returns how long stopping took.
    pub async fn stop(mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        procfs::signal(self.pid, libc::SIGTERM);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the agent exited with {status}:\n{}", self.log_tail());
                }
                Ok(started.elapsed())
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                bail!("the agent did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed")
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("--- {} (tail) ---\n{}", self.log.display(), &text[start..])
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        procfs::signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// Whether a /readyz answer shows the store and the eBPF programs (and the CRI probes) ready.
/// Other components (which need a cluster, say) are not waited for.
fn components_ready(body: &str, with_cri: bool) -> bool {
    let Ok(report) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let ready = |name: &str| report["components"][name]["state"] == "ready";
    ready("store") && ready("ebpf") && (!with_cri || ready("cri"))
}

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_ignores_components_it_does_not_need() {
        let body = r#"{"ready":false,"components":{
            "cri":{"state":"not_ready","reason":"no runtime"},
            "ebpf":{"state":"ready"},"store":{"state":"ready"},"k8s":{"state":"not_ready"}}}"#;
        assert!(components_ready(body, false));
        assert!(!components_ready(body, true));
        assert!(!components_ready("not json", false));
    }
}
