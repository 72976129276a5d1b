//! Runs one pod through the calls a kubelet makes for a host-network pod with one
//! container (RunPodSandbox → CreateContainer → StartContainer → ExecSync →
//! StopContainer → ContainerStatus → RemoveContainer → StopPodSandbox → RemovePodSandbox),
//! recording the wall-clock window of every call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::CallWindow;
use crate::cri::{
    ContainerSpec, CriCall, CriClient, CriError, ExecOutput, PodIdentity, container_config,
    host_network_sandbox_config,
};
use crate::images::BUSYBOX_IMAGE;

/// The default container command: prints a line, then sleeps until SIGTERM, on which it
/// exits 0 at once (a shell as PID 1 would otherwise ignore SIGTERM).
pub const DEFAULT_CONTAINER_COMMAND: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; echo started; sleep 3600 & wait",
];

/// The default ExecSync command.
pub const DEFAULT_EXEC_COMMAND: &[&str] = &["echo", "hello from nodetrace"];

/// One call of a lifecycle and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// The call.
    pub call: CriCall,
    /// Its wall-clock window.
    pub window: CallWindow,
}

/// Handed to the observer after each successful call.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleStep<'a> {
    /// The call that just returned.
    pub call: CriCall,
    /// Its window.
    pub window: CallWindow,
    /// The sandbox id (set from RunPodSandbox on).
    pub sandbox_id: &'a str,
    /// The container id (set from CreateContainer on).
    pub container_id: Option<&'a str>,
}

/// Everything a lifecycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleReport {
    /// The pod.
    pub pod: PodIdentity,
    /// Its sandbox id.
    pub sandbox_id: String,
    /// Its container's id.
    pub container_id: String,
    /// Its container's name.
    pub container_name: String,
    /// Its container's image.
    pub image: String,
    /// What ExecSync returned.
    pub exec: ExecOutput,
    /// The container's exit code after StopContainer (from ContainerStatus).
    pub container_exit_code: i32,
    /// Every call, in order.
    pub calls: Vec<CallRecord>,
}

impl LifecycleReport {
    /// The window of the first `call` made.
    pub fn window(&self, call: CriCall) -> Option<CallWindow> {
        self.calls.iter().find(|r| r.call == call).map(|r| r.window)
    }

    /// From the start of the first call to the end of the last.
    pub fn overall_window(&self) -> Option<CallWindow> {
        Some(CallWindow {
            start_unix_ns: self.calls.first()?.window.start_unix_ns,
            end_unix_ns: self.calls.last()?.window.end_unix_ns,
        })
    }
}

/// A lifecycle that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The pod's log directory could not be created.
    #[error("create pod log directory {path}: {source}")]
    LogDirectory {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A call failed; what had been created was stopped and removed (best effort).
    #[error("pod {}/{} ({}): {call} failed: {source}{}", pod.namespace, pod.name, pod.uid, cleanup_summary(cleanup_problems))]
    Call {
        /// The pod.
        pod: PodIdentity,
        /// The call that failed.
        call: CriCall,
        /// Why.
        #[source]
        source: CriError,
        /// Calls that succeeded before.
        calls: Vec<CallRecord>,
        /// Problems of the cleanup after the failure.
        cleanup_problems: Vec<String>,
    },
}

fn cleanup_summary(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!("; cleanup: {}", problems.join("; "))
    }
}

/// One pod's run through the CRI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLifecycle {
    /// The pod (a fresh UID per lifecycle from [`PodLifecycle::new`]).
    pub pod: PodIdentity,
    /// Its one container.
    pub container: ContainerSpec,
    /// What ExecSync runs.
    pub exec_command: Vec<String>,
    /// ExecSync's timeout.
    pub exec_timeout: Duration,
    /// StopContainer's grace period.
    pub stop_grace: Duration,
    /// Parent of the pod's log directory.
    pub log_root: PathBuf,
}

impl PodLifecycle {
    /// A pod `namespace/name` with a fresh UID and one busybox container `main` running
    /// [`DEFAULT_CONTAINER_COMMAND`]; ExecSync runs [`DEFAULT_EXEC_COMMAND`].
    pub fn new(namespace: &str, name: &str, log_root: &Path) -> Self {
        Self {
            pod: PodIdentity::fresh(namespace, name),
            container: ContainerSpec::new("main", BUSYBOX_IMAGE, DEFAULT_CONTAINER_COMMAND),
            exec_command: DEFAULT_EXEC_COMMAND.iter().map(|s| s.to_string()).collect(),
            exec_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            log_root: log_root.to_path_buf(),
        }
    }

    /// Replaces the ExecSync command.
    pub fn with_exec(mut self, command: &[&str]) -> Self {
        self.exec_command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Replaces the container's command.
    pub fn with_container_command(mut self, command: &[&str]) -> Self {
        self.container.command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs the whole sequence.
    pub async fn run(&self, cri: &CriClient) -> Result<LifecycleReport, LifecycleError> {
        self.run_observed(cri, |_| {}).await
    }

    /// Runs the whole sequence, calling `observe` after every successful call (e.g. to
    /// look at bundles while they exist). On failure, stops and removes what was created.
    pub async fn run_observed<F>(
        &self,
        cri: &CriClient,
        mut observe: F,
    ) -> Result<LifecycleReport, LifecycleError>
    where
        F: FnMut(&LifecycleStep<'_>),
    {
        let log_directory = self.pod.log_directory(&self.log_root);
        let container_log_dir = log_directory.join(&self.container.name);
        std::fs::create_dir_all(&container_log_dir).map_err(|source| {
            LifecycleError::LogDirectory {
                path: container_log_dir.clone(),
                source,
            }
        })?;
        let mut progress = Progress {
            calls: Vec::new(),
            sandbox_id: None,
            container_id: None,
            sandbox_live: false,
            container_live: false,
            observe: &mut observe,
        };
        match self.sequence(cri, &log_directory, &mut progress).await {
            Ok((exec, container_exit_code)) => Ok(LifecycleReport {
                pod: self.pod.clone(),
                sandbox_id: progress.sandbox_id.unwrap_or_default(),
                container_id: progress.container_id.unwrap_or_default(),
                container_name: self.container.name.clone(),
                image: self.container.image.clone(),
                exec,
                container_exit_code,
                calls: progress.calls,
            }),
            Err((call, source)) => {
                let cleanup_problems = clean_up(
                    cri,
                    progress
                        .sandbox_id
                        .as_deref()
                        .filter(|_| progress.sandbox_live),
                    progress
                        .container_id
                        .as_deref()
                        .filter(|_| progress.container_live),
                )
                .await;
                Err(LifecycleError::Call {
                    pod: self.pod.clone(),
                    call,
                    source,
                    calls: progress.calls,
                    cleanup_problems,
                })
            }
        }
    }

    async fn sequence<F>(
        &self,
        cri: &CriClient,
        log_directory: &Path,
        progress: &mut Progress<'_, F>,
    ) -> Result<(ExecOutput, i32), (CriCall, CriError)>
    where
        F: FnMut(&LifecycleStep<'_>),
    {
        use CriCall::*;
        let sandbox_config = host_network_sandbox_config(&self.pod, log_directory);
        let sandbox = cri
            .run_pod_sandbox(&sandbox_config)
            .await
            .map_err(|e| (RunPodSandbox, e))?;
        progress.sandbox_id = Some(sandbox.value.clone());
        progress.sandbox_live = true;
        progress.done(RunPodSandbox, sandbox.window);
        let sandbox_id = sandbox.value;

        let config = container_config(&self.pod, &self.container);
        let container = cri
            .create_container(&sandbox_id, &config, &sandbox_config)
            .await
            .map_err(|e| (CreateContainer, e))?;
        progress.container_id = Some(container.value.clone());
        progress.container_live = true;
        progress.done(CreateContainer, container.window);
        let container_id = container.value;

        let started = cri
            .start_container(&container_id)
            .await
            .map_err(|e| (StartContainer, e))?;
        progress.done(StartContainer, started.window);

        let exec = cri
            .exec_sync(&container_id, &self.exec_command, self.exec_timeout)
            .await
            .map_err(|e| (ExecSync, e))?;
        progress.done(ExecSync, exec.window);

        let stopped = cri
            .stop_container(&container_id, self.stop_grace)
            .await
            .map_err(|e| (StopContainer, e))?;
        progress.done(StopContainer, stopped.window);

        let status = cri
            .container_status(&container_id)
            .await
            .map_err(|e| (ContainerStatus, e))?;
        progress.done(ContainerStatus, status.window);

        let removed = cri
            .remove_container(&container_id)
            .await
            .map_err(|e| (RemoveContainer, e))?;
        progress.container_live = false;
        progress.done(RemoveContainer, removed.window);

        let sandbox_stopped = cri
            .stop_pod_sandbox(&sandbox_id)
            .await
            .map_err(|e| (StopPodSandbox, e))?;
        progress.done(StopPodSandbox, sandbox_stopped.window);

        let sandbox_removed = cri
            .remove_pod_sandbox(&sandbox_id)
            .await
            .map_err(|e| (RemovePodSandbox, e))?;
        progress.sandbox_live = false;
        progress.done(RemovePodSandbox, sandbox_removed.window);
        Ok((exec.value, status.value.exit_code))
    }
}

/// Calls made so far and what exists.
struct Progress<'o, F> {
    calls: Vec<CallRecord>,
    sandbox_id: Option<String>,
    container_id: Option<String>,
    sandbox_live: bool,
    container_live: bool,
    observe: &'o mut F,
}

impl<F> Progress<'_, F>
where
    F: FnMut(&LifecycleStep<'_>),
{
    fn done(&mut self, call: CriCall, window: CallWindow) {
        self.calls.push(CallRecord { call, window });
        (self.observe)(&LifecycleStep {
            call,
            window,
            sandbox_id: self.sandbox_id.as_deref().unwrap_or_default(),
            container_id: self.container_id.as_deref(),
        });
    }
}

/// Best-effort removal of what a failed lifecycle created.
async fn clean_up(
    cri: &CriClient,
    sandbox_id: Option<&str>,
    container_id: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(id) = container_id {
        if let Err(e) = cri.stop_container(id, Duration::ZERO).await {
            problems.push(e.to_string());
        }
        if let Err(e) = cri.remove_container(id).await {
            problems.push(e.to_string());
        }
    }
    if let Some(id) = sandbox_id {
        if let Err(e) = cri.stop_pod_sandbox(id).await {
            problems.push(e.to_string());
        }
        if let Err(e) = cri.remove_pod_sandbox(id).await {
            problems.push(e.to_string());
        }
    }
    problems
}
