//! Keeps the kubelet uprobes on the running kubelet: finds it by the unix socket only the
//! kubelet serves (its device-plugin registration socket), plans and attaches, and re-attaches within one
//! poll interval when the kubelet's binary is replaced (an upgrade). Without a kubelet, or
//! with one this version cannot probe, everything else goes on and /readyz says why.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

use crate::{
    api::Readiness,
    cri::{BinaryIdentity, ProcFs},
    ebpf::{CriAttachment, KernelProbes},
};

/// The readiness component of the kubelet probes.
pub const COMPONENT: &str = "kubelet";
/// The socket of kubelet's device manager, where device plugins register: only the kubelet
/// listens on it, always (its pod-resources socket is behind a feature gate), and always in
/// /var/lib/kubelet, whatever the kubelet's root directory.
pub const DEFAULT_KUBELET_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";

/// Finds and follows the kubelet; one task owns it.
pub struct KubeletWatcher {
    socket: PathBuf,
    interval: Duration,
    probes: Arc<Mutex<KernelProbes>>,
    readiness: Readiness,
    /// The binary probed and its probes.
    current: Option<(BinaryIdentity, CriAttachment)>,
    /// The binary whose planning failed, so the failure is reported once.
    failed: Option<BinaryIdentity>,
}

impl KubeletWatcher {
    pub fn new(
        socket: PathBuf,
        interval: Duration,
        probes: Arc<Mutex<KernelProbes>>,
        readiness: Readiness,
    ) -> Self {
        readiness.register(COMPONENT);
        Self {
            socket,
            interval,
            probes,
            readiness,
            current: None,
            failed: None,
        }
    }

    /// Polls until `stop` turns true, then detaches (on a thread of its own: it waits for the
    /// kernel).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Some((_, attachment)) = self.current.take() {
            let _ = std::thread::Builder::new()
                .name("uprobe-detach".to_owned())
                .spawn(move || drop(attachment));
        }
    }

    /// One look at the kubelet, attaching when its binary is new.
    pub async fn tick(&mut self) {
        let process = match ProcFs::default().discover(&self.socket) {
            Ok(process) => process,
            Err(err) => {
                // Probes stay on a kubelet that is restarting: they belong to its binary.
                if self.current.is_none() {
                    self.readiness.set(
                        COMPONENT,
                        crate::api::ComponentState::Degraded(format!(
                            "no kubelet found: {}",
                            crate::correlate::error_chain(&err)
                        )),
                    );
                }
                return;
            }
        };
        let identity = process.identity;
        if self.current.as_ref().map(|(id, _)| id) == Some(&identity)
            || self.failed == Some(identity)
        {
            return;
        }
        let path = process.open_path.clone();
        let planned = tokio::task::spawn_blocking(move || super::plan(&path)).await;
        let result = match planned {
            Ok(Ok(plan)) => {
                let attached = self
                    .probes
                    .lock()
                    .map_err(|_| "the probes lock is poisoned".to_owned())
                    .and_then(|mut probes| {
                        probes
                            .attach_kubelet(&plan.binary, plan.offsets, &plan.probes)
                            .map_err(|err| crate::correlate::error_chain(&err))
                    });
                attached.map(|attachment| (plan, attachment))
            }
            Ok(Err(err)) => Err(crate::correlate::error_chain(&err)),
            Err(err) => Err(format!("planning the kubelet probes failed: {err}")),
        };
        match result {
            Ok((plan, attachment)) => {
                let detail = format!(
                    "{} uprobes on kubelet {} ({}, inode {})",
                    attachment.probes(),
                    plan.version,
                    plan.binary.display(),
                    identity.inode
                );
                tracing::info!(%detail, "kubelet uprobes attached");
                self.readiness.set_ready(COMPONENT);
                self.readiness.set_detail(COMPONENT, detail);
                self.failed = None;
                if let Some((_, old)) = self.current.replace((identity, attachment)) {
                    let _ = std::thread::Builder::new()
                        .name("uprobe-detach".to_owned())
                        .spawn(move || drop(old));
                }
            }
            Err(reason) => {
                tracing::warn!(%reason, "no kubelet spans; CRI and runtime tracing go on");
                self.readiness
                    .set(COMPONENT, crate::api::ComponentState::Degraded(reason));
                self.failed = Some(identity);
            }
        }
    }
}
