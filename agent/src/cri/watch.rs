//! Keeps the CRI uprobes on the running container runtime: finds it from its CRI socket (or a
//! binary given on the command line), attaches, and re-attaches within one poll interval when
//! the runtime restarts (new pid) or its binary is replaced. When no runtime or no known
//! symbols are found, OCI tracing goes on and the reason is logged once and shown in /readyz.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};
use tokio::sync::watch;

use crate::{
    api::Readiness,
    ebpf::{CriAttachment, KernelProbes},
    metrics::ProbeCounts,
    oci::binaries::{BinarySearch, RuntimeBinaries},
    runtime_state::RuntimeEndpoint,
};

use super::{
    BinaryIdentity, DiscoverError, ProcFs, RuntimeProcess,
    plan::{ProbePlan, plan},
};

/// The readiness component the watcher reports on.
pub const COMPONENT: &str = "cri";
/// The readiness component of the OCI runtime binaries the exec program follows.
pub const OCI_COMPONENT: &str = "oci-runtimes";

/// Where to look for the runtime.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// CRI sockets, tried in order.
    pub sockets: Vec<PathBuf>,
    /// Probe this binary instead of the one serving a socket.
    pub runtime_binary: Option<PathBuf>,
    /// How often to look for a restarted or replaced runtime.
    pub interval: Duration,
    /// Where the OCI runtime binaries (runc, crun, youki) are looked for.
    pub binaries: BinarySearch,
}

/// What the probes are attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Process {
        pid: u32,
        start_time: u64,
        identity: BinaryIdentity,
        open_path: PathBuf,
        /// The CRI socket the process was found by.
        socket: PathBuf,
    },
    Binary {
        path: PathBuf,
        identity: BinaryIdentity,
    },
}

impl Target {
    fn path(&self) -> &PathBuf {
        match self {
            Self::Process { open_path, .. } => open_path,
            Self::Binary { path, .. } => path,
        }
    }

    fn identity(&self) -> &BinaryIdentity {
        match self {
            Self::Process { identity, .. } | Self::Binary { identity, .. } => identity,
        }
    }
}

/// Finds and follows the runtime; one task owns it.
pub struct CriWatcher {
    config: WatchConfig,
    probes: Arc<Mutex<KernelProbes>>,
    readiness: Readiness,
    counts: Arc<ProbeCounts>,
    service: watch::Sender<String>,
    current: Option<(Target, CriAttachment)>,
    /// The target whose planning failed, so the failure is reported once.
    failed: Option<BinaryIdentity>,
    /// The last "no runtime" reason logged.
    last_absence: Option<String>,
    /// The OCI runtime binaries the kernel side follows now (none before the first look).
    runtime_binaries: Option<RuntimeBinaries>,
    /// Where the runtime serves CRI, for the agent's own read-only client.
    endpoint: Option<watch::Sender<Option<RuntimeEndpoint>>>,
}

impl CriWatcher {
    pub fn new(
        config: WatchConfig,
        probes: Arc<Mutex<KernelProbes>>,
        readiness: Readiness,
        counts: Arc<ProbeCounts>,
        service: watch::Sender<String>,
    ) -> Self {
        readiness.register(COMPONENT);
        readiness.register(OCI_COMPONENT);
        Self {
            config,
            probes,
            readiness,
            counts,
            service,
            current: None,
            failed: None,
            last_absence: None,
            runtime_binaries: None,
            endpoint: None,
        }
    }

    /// Publishes the runtime's CRI endpoint (socket and process) in `endpoint` as it is found.
    pub fn with_endpoint(mut self, endpoint: watch::Sender<Option<RuntimeEndpoint>>) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    fn publish_endpoint(&self, found: Option<&Target>) {
        let Some(sender) = &self.endpoint else { return };
        let endpoint = match found {
            Some(Target::Process {
                pid,
                start_time,
                socket,
                ..
            }) => Some(RuntimeEndpoint {
                socket: socket.clone(),
                pid: *pid,
                start_time: *start_time,
            }),
            _ => None,
        };
        sender.send_if_modified(|current| {
            let changed = *current != endpoint;
            if changed {
                current.clone_from(&endpoint);
            }
            changed
        });
    }

    /// Polls until `stop` turns true, then detaches.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => self.tick().await,
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        self.detach();
    }

    /// One look at the runtime, attaching or re-attaching when it changed, and at the OCI
    /// runtime binaries it uses.
    pub async fn tick(&mut self) {
        let found = self.find();
        let runtime_pid = match &found {
            Ok(Target::Process { pid, .. }) => Some(*pid),
            _ => None,
        };
        let search = self.config.binaries.clone();
        match tokio::task::spawn_blocking(move || search.find(runtime_pid)).await {
            Ok(binaries) => self.follow_runtime_binaries(binaries),
            Err(err) => tracing::warn!(error = %err, "looking for the OCI runtime binaries failed"),
        }
        self.publish_endpoint(found.as_ref().ok());
        let found = match found {
            Ok(target) => target,
            Err(reason) => {
                // The probes stay: they belong to the binary, and a runtime that is restarting
                // comes back on it. They move only when another binary is found.
                if self.last_absence.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(%reason, "CRI calls are not traced; OCI runtime tracing goes on");
                    self.last_absence = Some(reason.clone());
                }
                self.readiness.set_not_ready(COMPONENT, reason);
                return;
            }
        };
        self.last_absence = None;
        if let Target::Process {
            pid, start_time, ..
        } = &found
        {
            super::daemon::follow(&self.probes, &ProcFs::default(), *pid, *start_time);
        }
        if let Some((current, _)) = &mut self.current
            && current.identity() == found.identity()
        {
            // Uprobes belong to the binary (its inode), not to a process: a runtime restarted
            // from the same binary is traced by the probes already attached.
            if *current != found {
                tracing::info!(binary = %found.path().display(), "the runtime restarted; its uprobes stay attached");
                *current = found;
            }
            return;
        }
        if self.failed.as_ref() == Some(found.identity()) {
            return;
        }
        // The new binary is probed first and the old probes detached afterwards: detaching
        // waits for the kernel (~0.1 s per uprobe, one at a time) and an attach queues behind it.
        let path = found.path().clone();
        let planned = tokio::task::spawn_blocking(move || plan(&path)).await;
        let result = match planned {
            Ok(Ok(plan)) => self.attach(&found, plan),
            Ok(Err(err)) => {
                self.counts.refused(err.reason());
                Err(crate::correlate::error_chain(&err))
            }
            Err(err) => Err(format!("planning the CRI probes failed: {err}")),
        };
        if let Err(reason) = result {
            tracing::warn!(
                binary = %found.path().display(),
                %reason,
                "cannot trace CRI calls of this runtime; OCI runtime tracing goes on"
            );
            self.readiness.set_not_ready(COMPONENT, reason);
            self.failed = Some(*found.identity());
        }
    }

    fn attach(&mut self, target: &Target, plan: ProbePlan) -> Result<(), String> {
        let mut probes = self
            .probes
            .lock()
            .map_err(|_| "the probes lock is poisoned".to_owned())?;
        let attachment = probes
            .attach_cri(&plan.binary, plan.offsets, &plan.handlers)
            .map_err(|err| crate::correlate::error_chain(&err))?;
        drop(probes);
        let count = attachment.probes();
        self.counts.uprobes.store(count as u64, Ordering::Relaxed);
        let _ = self.service.send(plan.runtime.name().to_owned());
        tracing::info!(
            runtime = plan.runtime.name(),
            binary = %target.path().display(),
            generator = ?plan.generator,
            built = %plan.built_with(),
            handlers = plan.handlers.len(),
            uprobes = count,
            missing = ?plan.missing,
            "CRI uprobes attached"
        );
        self.readiness.set_ready(COMPONENT);
        self.readiness.set_detail(
            COMPONENT,
            format!(
                "{count} uprobes on {} (inode {}; {}, {}, {} handlers)",
                plan.binary.display(),
                target.identity().inode,
                plan.runtime.name(),
                plan.built_with(),
                plan.handlers.len()
            ),
        );
        self.failed = None;
        if let Some((old_target, old)) = self.current.replace((target.clone(), attachment)) {
            detach_in_background(&old_target, old);
        }
        Ok(())
    }

    /// Hands the kernel side the runtime binaries found, when they changed.
    fn follow_runtime_binaries(&mut self, binaries: RuntimeBinaries) {
        if self.runtime_binaries.as_ref() == Some(&binaries) {
            return;
        }
        let keys = binaries.keys().copied().collect();
        let result = match self.probes.lock() {
            Ok(mut probes) => probes
                .set_runtime_binaries(&keys)
                .map_err(|err| crate::correlate::error_chain(&err)),
            Err(_) => Err("the probes lock is poisoned".to_owned()),
        };
        if let Err(reason) = result {
            tracing::warn!(%reason, "cannot update the OCI runtime binaries the kernel follows");
            self.readiness.set_not_ready(OCI_COMPONENT, reason);
            return;
        }
        let listed: Vec<String> = binaries
            .iter()
            .map(|(key, path)| {
                format!(
                    "{} ({}:{} inode {})",
                    path.display(),
                    key.dev >> 20,
                    key.dev & 0xf_ffff,
                    key.ino
                )
            })
            .collect();
        if binaries.is_empty() {
            tracing::warn!(
                "no OCI runtime binary (runc, crun, youki) found: no runtime run is traced"
            );
            self.readiness.set(
                OCI_COMPONENT,
                crate::api::ComponentState::Degraded(
                    "no OCI runtime binary found (see --oci-runtime-binary)".to_owned(),
                ),
            );
        } else {
            tracing::info!(binaries = ?listed, "following the OCI runtime binaries");
            self.readiness.set_ready(OCI_COMPONENT);
        }
        self.readiness.set_detail(OCI_COMPONENT, listed.join(", "));
        self.runtime_binaries = Some(binaries);
    }

    /// Detaches everything (at shutdown).
    fn detach(&mut self) {
        if let Some((target, attachment)) = self.current.take() {
            self.counts.uprobes.store(0, Ordering::Relaxed);
            self.readiness.set_detail(COMPONENT, "no uprobes attached");
            self.readiness
                .set_not_ready(COMPONENT, "the CRI uprobes are being detached");
            detach_in_background(&target, attachment);
        }
    }

    fn find(&self) -> Result<Target, String> {
        if let Some(path) = &self.config.runtime_binary {
            let metadata = std::fs::metadata(path)
                .map_err(|err| format!("cannot read --runtime-binary {}: {err}", path.display()))?;
            return Ok(Target::Binary {
                path: path.clone(),
                identity: BinaryIdentity::of(&metadata),
            });
        }
        let proc = ProcFs::default();
        let mut reasons = Vec::new();
        for socket in &self.config.sockets {
            match proc.discover(socket) {
                Ok(process) => return Ok(process_target(process, socket)),
                Err(err @ (DiscoverError::NoSocket { .. } | DiscoverError::NoProcess { .. })) => {
                    reasons.push(err.to_string());
                }
                Err(err) => reasons.push(crate::correlate::error_chain(&err)),
            }
        }
        Err(format!("no CRI runtime found: {}", reasons.join("; ")))
    }
}

/// Closing each uprobe waits for the kernel (~0.1 s each, mostly one at a time), so it happens
/// on a thread of its own.
fn detach_in_background(target: &Target, attachment: CriAttachment) {
    tracing::info!(
        binary = %target.path().display(),
        uprobes = attachment.probes(),
        "detaching the CRI uprobes in the background"
    );
    let spawned = std::thread::Builder::new()
        .name("uprobe-detach".to_owned())
        .spawn(move || drop(attachment));
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot detach the CRI uprobes in the background");
    }
}

fn process_target(process: RuntimeProcess, socket: &std::path::Path) -> Target {
    Target::Process {
        pid: process.pid,
        start_time: process.start_time,
        identity: process.identity,
        open_path: process.open_path,
        socket: socket.to_path_buf(),
    }
}
