//! Tears a private containerd's world down, step by step, collecting what it did and
//! what failed instead of stopping at the first problem: pods through the CRI, leftover
//! runtime and container processes, mounts below the work directory, pod cgroups, and
//! finally the work directory itself.

pub mod cgroups;
pub mod mounts;
pub mod processes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::containerd::ContainerdLayout;
use crate::cri::CriClient;
use crate::pod_cgroups::is_pod_cgroup_parent;

/// What a teardown did.
#[derive(Debug, Clone, Default)]
pub struct TeardownReport {
    /// Sandboxes stopped and removed through the CRI.
    pub sandboxes_removed: Vec<String>,
    /// What the CRI could not do (the later steps clean up by force, so these do not
    /// make the teardown fail).
    pub warnings: Vec<String>,
    /// Processes that had to be killed after containerd was gone.
    pub killed: Vec<i32>,
    /// Mount points unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Cgroup directories removed.
    pub cgroups_removed: Vec<PathBuf>,
    /// Whether the work directory is gone.
    pub work_dir_removed: bool,
    /// How long it took.
    pub took: Duration,
}

/// A teardown that left something behind.
#[derive(Debug, thiserror::Error)]
#[error("teardown of {work_dir} incomplete: {}", problems.join("; "))]
pub struct TeardownError {
    /// The work directory.
    pub work_dir: PathBuf,
    /// What went wrong, in order.
    pub problems: Vec<String>,
    /// What was done nonetheless.
    pub report: Box<TeardownReport>,
}

/// A teardown in progress.
#[derive(Debug)]
pub struct Teardown<'a> {
    layout: &'a ContainerdLayout,
    report: TeardownReport,
    problems: Vec<String>,
    started: Instant,
}

impl<'a> Teardown<'a> {
    /// Starts tearing down what lives in `layout`.
    pub fn new(layout: &'a ContainerdLayout) -> Self {
        Self {
            layout,
            report: TeardownReport::default(),
            problems: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Records a problem found by the caller.
    pub fn note(&mut self, problem: String) {
        tracing::warn!(problem = %problem, "teardown");
        self.problems.push(problem);
    }

    /// The pod cgroup parents named by the bundles still on disk.
    pub fn pod_cgroups_in_bundles(&self) -> Vec<String> {
        let mut parents = Vec::new();
        for bundle in processes::subdirectories(&self.layout.bundles_dir()) {
            let Ok(text) = std::fs::read_to_string(bundle.join("config.json")) else {
                continue;
            };
            let Ok(spec) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(parent) = spec["linux"]["cgroupsPath"]
                .as_str()
                .and_then(|p| Path::new(p).parent())
                .map(|p| p.display().to_string())
                .filter(|p| is_pod_cgroup_parent(p))
            {
                parents.push(parent);
            }
        }
        parents
    }

    /// Records something that went wrong but is repaired by a later step.
    pub fn warn(&mut self, warning: String) {
        tracing::info!(warning = %warning, "teardown");
        self.report.warnings.push(warning);
    }

    /// Stops and removes every pod sandbox (with its containers) through the CRI.
    /// Failures are warnings: the later steps remove by force what is left.
    pub fn remove_pods_via_cri(&mut self, timeout: Duration) {
        match remove_all_pods(&self.layout.socket, timeout) {
            Ok((removed, problems)) => {
                self.report.sandboxes_removed.extend(removed);
                for problem in problems {
                    self.warn(problem);
                }
            }
            Err(problem) => self.warn(format!("CRI cleanup: {problem}")),
        }
    }

    /// Kills runtime processes naming the work directory, processes in the given pod
    /// cgroups, and bundle init processes.
    pub fn kill_leftovers(&mut self, pod_cgroups: &[String]) {
        let mut pids = processes::runtime_processes_naming(&self.layout.work_dir);
        for parent in pod_cgroups {
            for dir in cgroups::existing_dirs(parent) {
                pids.extend(processes::processes_in_cgroup_tree(&dir));
            }
        }
        pids.extend(
            processes::subdirectories(&self.layout.bundles_dir())
                .iter()
                .filter_map(|bundle| processes::bundle_init_process(bundle)),
        );
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|&pid| processes::is_alive(pid));
        if pids.is_empty() {
            return;
        }
        tracing::info!(?pids, "killing leftover processes");
        let alive = processes::kill_and_wait(&pids, Duration::from_secs(5));
        if !alive.is_empty() {
            self.note(format!("processes survived SIGKILL: {alive:?}"));
        }
        self.report.killed.extend(pids);
    }

    /// Unmounts everything below the work directory.
    pub fn unmount(&mut self) {
        match mounts::unmount_all_below(&self.layout.work_dir) {
            Ok(unmounted) => self.report.unmounted.extend(unmounted),
            Err((unmounted, problems)) => {
                self.report.unmounted.extend(unmounted);
                for problem in problems {
                    self.note(problem);
                }
            }
        }
    }

    /// Removes the given pod cgroups in every hierarchy.
    pub fn remove_cgroups(&mut self, pod_cgroups: &[String]) {
        for parent in pod_cgroups {
            match cgroups::remove_pod_cgroup(parent, Duration::from_secs(5)) {
                Ok(removed) => self.report.cgroups_removed.extend(removed),
                Err(problem) => self.note(problem),
            }
        }
    }

    /// Deletes the work directory, unless something is still mounted below it.
    pub fn remove_work_dir(&mut self) {
        let dir = &self.layout.work_dir;
        match mounts::mounts_below(dir) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                self.note(format!(
                    "not deleting {}: still mounted below it: {left:?}",
                    dir.display()
                ));
                return;
            }
            Err(e) => {
                self.note(format!("not deleting {}: mountinfo: {e}", dir.display()));
                return;
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => self.report.work_dir_removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.report.work_dir_removed = true;
            }
            Err(e) => self.note(format!("delete {}: {e}", dir.display())),
        }
    }

    /// The report, or the problems with it.
    pub fn finish(mut self) -> Result<TeardownReport, TeardownError> {
        self.report.took = self.started.elapsed();
        if self.problems.is_empty() {
            Ok(self.report)
        } else {
            Err(TeardownError {
                work_dir: self.layout.work_dir.clone(),
                problems: self.problems,
                report: Box::new(self.report),
            })
        }
    }
}

/// Stops and removes every sandbox of the runtime at `socket`, on a thread with its own
/// tokio runtime (so it works from `Drop` and from inside any runtime). Returns the
/// removed sandbox ids and the problems with the others.
fn remove_all_pods(socket: &Path, timeout: Duration) -> Result<(Vec<String>, Vec<String>), String> {
    let socket = socket.to_path_buf();
    let worker = std::thread::Builder::new()
        .name("testbed-cri-cleanup".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            runtime.block_on(async move {
                tokio::time::timeout(timeout, remove_all_pods_async(&socket))
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            })
        })
        .map_err(|e| format!("spawn thread: {e}"))?;
    worker
        .join()
        .map_err(|_| "CRI cleanup thread panicked".to_string())?
}

async fn remove_all_pods_async(socket: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    let client = CriClient::connect(socket)
        .await
        .map_err(|e| e.to_string())?
        .with_call_timeout(Duration::from_secs(10));
    let sandboxes = client
        .list_pod_sandboxes()
        .await
        .map_err(|e| e.to_string())?
        .value;
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    for sandbox in sandboxes {
        if let Err(e) = client.stop_pod_sandbox(&sandbox.id).await {
            problems.push(e.to_string());
        }
        match client.remove_pod_sandbox(&sandbox.id).await {
            Ok(_) => removed.push(sandbox.id),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok((removed, problems))
}
