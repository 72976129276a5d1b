//! The task that talks to the runtime: a snapshot whenever the runtime is (re)found, and an
//! answer to each of the correlator's sandbox questions.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, watch};

use crate::{correlate::Input, ebpf::KernelProbes};

use super::{
    RuntimeEndpoint, RuntimeNews, RuntimeSnapshot, SandboxQuery,
    client::RuntimeClient,
    facts::{self, BootClock, ContainerFacts, MetadataRules, SandboxFacts},
};

/// Questions the correlator may have queued; beyond, it goes on without asking.
pub const QUERY_QUEUE: usize = 256;
/// Deadline of one call to the runtime.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Owns the CRI client of the agent.
pub struct RuntimeStateTask {
    pub endpoint: watch::Receiver<Option<RuntimeEndpoint>>,
    pub queries: mpsc::Receiver<SandboxQuery>,
    pub news: mpsc::Sender<Input>,
    pub probes: Arc<Mutex<KernelProbes>>,
    pub rules: MetadataRules,
    pub proc_root: PathBuf,
}

impl RuntimeStateTask {
    /// Runs until `stop` turns true or the correlator is gone.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut client: Option<RuntimeClient> = None;
        let mut current: Option<RuntimeEndpoint> = None;
        let mut first = true;
        loop {
            let found = self.endpoint.borrow_and_update().clone();
            if found != current {
                client = match &found {
                    Some(endpoint) => self.connect(endpoint).await,
                    None => None,
                };
                current = found;
                if let Some(client) = &client {
                    // Processes are looked for only at the agent's start: later, the kernel
                    // side has followed every container process from its exec.
                    let snapshot = self.snapshot(client, first).await;
                    first = false;
                    if self
                        .news
                        .send(Input::Runtime(RuntimeNews::Snapshot(Box::new(snapshot))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            tokio::select! {
                changed = self.endpoint.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                query = self.queries.recv() => {
                    let Some(query) = query else { return };
                    let facts = match &client {
                        Some(client) => self.sandbox(client, &query).await,
                        None => None,
                    };
                    let news = RuntimeNews::Sandbox { uid: query.uid, facts: facts.map(Box::new) };
                    if self.news.send(Input::Runtime(news)).await.is_err() {
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    async fn connect(&self, endpoint: &RuntimeEndpoint) -> Option<RuntimeClient> {
        match RuntimeClient::connect(&endpoint.socket, CALL_TIMEOUT).await {
            Ok(client) => Some(client),
            Err(err) => {
                tracing::warn!(
                    error = %crate::correlate::error_chain(&err),
                    "cannot ask the runtime about its pods: spans made before the agent \
                     started and labels without API access are not known"
                );
                None
            }
        }
    }

    async fn sandbox(&self, client: &RuntimeClient, query: &SandboxQuery) -> Option<SandboxFacts> {
        match client.sandboxes(Some(&query.sandbox_id)).await {
            Ok(sandboxes) => sandboxes
                .iter()
                .filter(|sandbox| sandbox.id == query.sandbox_id)
                .find_map(|sandbox| SandboxFacts::from_message(sandbox, &self.rules)),
            Err(err) => {
                tracing::debug!(
                    sandbox = %query.sandbox_id,
                    error = %crate::correlate::error_chain(&err),
                    "the runtime did not describe a new sandbox"
                );
                None
            }
        }
    }

    /// Every sandbox and container, and with `processes` the running containers' processes
    /// (followed in the kernel from now on).
    async fn snapshot(&self, client: &RuntimeClient, processes: bool) -> RuntimeSnapshot {
        let containers: Vec<ContainerFacts> = match client.containers(None).await {
            Ok(list) => list
                .iter()
                .filter_map(ContainerFacts::from_message)
                .collect(),
            Err(err) => {
                tracing::warn!(error = %crate::correlate::error_chain(&err), "cannot list the runtime's containers");
                Vec::new()
            }
        };
        let sandboxes = match client.sandboxes(None).await {
            Ok(list) => list
                .iter()
                .filter_map(|sandbox| SandboxFacts::from_message(sandbox, &self.rules))
                .collect(),
            Err(err) => {
                // Too large a list (many pods with large annotations): one at a time.
                tracing::info!(error = %crate::correlate::error_chain(&err), "listing the sandboxes at once failed; asking for each");
                let mut ids: Vec<&str> = containers.iter().map(|c| c.sandbox_id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut found = Vec::new();
                for id in ids {
                    let query = SandboxQuery {
                        sandbox_id: id.to_owned(),
                        uid: String::new(),
                    };
                    found.extend(self.sandbox(client, &query).await);
                }
                found
            }
        };
        let mut snapshot = RuntimeSnapshot {
            sandboxes,
            containers,
            processes: Vec::new(),
        };
        if processes {
            let clock = BootClock::sample();
            for container in snapshot.containers.iter().filter(|c| c.running) {
                if let Some(process) = self.running_process(client, container, &clock).await {
                    snapshot.processes.push(process);
                }
            }
        }
        tracing::info!(
            sandboxes = snapshot.sandboxes.len(),
            containers = snapshot.containers.len(),
            running_processes = snapshot.processes.len(),
            "the runtime's pods are known"
        );
        snapshot
    }

    /// The process of a running container, followed in the kernel. Its start time is read
    /// again after it is followed: a process that ended meanwhile (its pid maybe reused) is
    /// not followed.
    async fn running_process(
        &self,
        client: &RuntimeClient,
        container: &ContainerFacts,
        clock: &BootClock,
    ) -> Option<facts::RunningProcess> {
        let info = client.container_info(&container.id).await.ok()?;
        let pid = facts::pid_from_info(&info.info)?;
        let process = facts::running_process(&self.proc_root, pid, &container.id, clock)?;
        let mut probes = self.probes.lock().ok()?;
        if let Err(err) = probes.follow_container_process(pid) {
            tracing::warn!(pid, error = %crate::correlate::error_chain(&err), "cannot follow a running container's process");
            return None;
        }
        let again = facts::running_process(&self.proc_root, pid, &container.id, clock);
        if again.as_ref().map(|p| p.exec.ktime_ns) != Some(process.exec.ktime_ns) {
            let _ = probes.unfollow_process(pid);
            return None;
        }
        Some(process)
    }
}
