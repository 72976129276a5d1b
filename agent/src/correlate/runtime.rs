//! What the runtime says about its pods, in the correlator: a snapshot at the agent's start
//! (every sandbox, container and running process, so the first call after a restart is
//! attributed and keeps the pod's one trace) and the answer about each new sandbox (its labels
//! and trace context, for pods the API does not describe).

use nodetrace_common::ExecRole;

use crate::{
    model::{Span, keys},
    oci::{ContainerInfo, ContainerKind},
    runtime_state::{RuntimeNews, RuntimeSnapshot, SandboxQuery},
};

use super::{Correlator, NodeView, ProcessRole, ProcessRun, Run};

impl<N: NodeView> Correlator<N> {
    /// Asks the runtime-state task about new sandboxes from now on.
    pub fn set_sandbox_queries(&mut self, queries: tokio::sync::mpsc::Sender<SandboxQuery>) {
        self.queries = Some(queries);
    }

    /// Takes what the runtime said.
    pub fn on_runtime(&mut self, news: RuntimeNews) {
        match news {
            RuntimeNews::Snapshot(snapshot) => self.seed(*snapshot),
            RuntimeNews::Sandbox { uid, facts } => {
                if let Some(facts) = facts {
                    self.containers.insert_sandbox(&facts.id, facts.pod.clone());
                    self.pods.remember(facts.metadata);
                }
                self.let_go(&uid);
            }
        }
    }

    /// A RunPodSandbox of pod `uid` began: when nothing is known about the pod yet and the
    /// runtime can be asked, its spans wait for the answer.
    pub(super) fn wait_for_sandbox(&mut self, uid: &str) {
        if uid.is_empty() || self.queries.is_none() || self.pods.knows(uid) {
            return;
        }
        self.hold.begin(uid);
    }

    /// RunPodSandbox returned (its span): ask about the sandbox it made, or stop waiting.
    pub(super) fn ask_about_sandbox(&mut self, span: &Span) {
        let Some(uid) = span.pod.as_ref().map(|pod| pod.uid.clone()) else {
            return;
        };
        let asked = match (span.attr_str(keys::SANDBOX_ID), &self.queries) {
            (Some(id), Some(queries)) if !self.pods.knows(&uid) => queries
                .try_send(SandboxQuery {
                    sandbox_id: id.to_owned(),
                    uid: uid.clone(),
                })
                .is_ok(),
            _ => false,
        };
        if !asked {
            // The span itself is not held yet: only the earlier ones are let go.
            self.let_go(&uid);
        }
    }

    /// Stops waiting for pod `uid`: its held spans get what is known now and go out.
    pub(super) fn let_go(&mut self, uid: &str) {
        for mut span in self.hold.release(uid) {
            self.pods.enrich(&mut span);
            self.released.push(span);
        }
    }

    fn seed(&mut self, snapshot: RuntimeSnapshot) {
        for sandbox in &snapshot.sandboxes {
            self.containers
                .insert_sandbox(&sandbox.id, sandbox.pod.clone());
            self.cri.remember_attempt(&sandbox.id, sandbox.attempt);
            self.pods.remember(sandbox.metadata.clone());
        }
        for container in snapshot.containers {
            let Some(pod) = self.containers.sandbox_pod(&container.sandbox_id).cloned() else {
                continue;
            };
            self.cri.remember_attempt(&container.id, container.attempt);
            self.containers.insert(ContainerInfo {
                container_id: container.id,
                kind: Some(ContainerKind::Container),
                sandbox_id: Some(container.sandbox_id),
                pod,
                container_name: Some(container.name).filter(|n| !n.is_empty()),
                image: Some(container.image).filter(|i| !i.is_empty()),
            });
        }
        for process in snapshot.processes {
            let tgid = process.exec.tgid;
            // A process already followed from its exec keeps that run.
            if self.runs.contains_key(&tgid) || process.exec.role != ExecRole::ContainerProcess {
                continue;
            }
            let cgroups = self.node.process_cgroups(tgid);
            self.insert_run(
                tgid,
                Run::Process(Box::new(ProcessRun {
                    exec: process.exec,
                    cgroups,
                    owner: Some((process.container_id, ProcessRole::Entrypoint)),
                    seen_mid_life: true,
                })),
            );
        }
    }
}
