//! Readiness the agent's components report (eBPF programs attached, store open, ...), shared
//! between them and `GET /readyz`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

/// The state of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentState {
    /// Registered, not ready yet.
    Starting,
    Ready,
    /// Not ready, with the reason.
    NotReady(String),
    /// Working with less than it should (e.g. the Kubernetes API is unreachable, so pod
    /// metadata is stale) but not holding readiness back: tracing goes on.
    Degraded(String),
}

/// A cheap-to-clone handle every component can update. Ready when at least one component is
/// registered and all are [`ComponentState::Ready`] or [`ComponentState::Degraded`].
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    components: Arc<RwLock<BTreeMap<String, ComponentState>>>,
    /// What each component reports about itself (e.g. which probes are attached), shown in
    /// `/readyz` whatever the state.
    details: Arc<RwLock<BTreeMap<String, String>>>,
}

/// What `/readyz` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub components: BTreeMap<String, ComponentReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentReport {
    /// `starting`, `ready`, `degraded` or `not_ready`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the component reports about itself, e.g. the probes it attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a component's state, registering it if needed.
    pub fn set(&self, component: &str, state: ComponentState) {
        let mut components = self
            .components
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        components.insert(component.to_owned(), state);
    }

    /// Registers a component as [`ComponentState::Starting`].
    pub fn register(&self, component: &str) {
        self.set(component, ComponentState::Starting);
    }

    pub fn set_ready(&self, component: &str) {
        self.set(component, ComponentState::Ready);
    }

    pub fn set_not_ready(&self, component: &str, reason: impl Into<String>) {
        self.set(component, ComponentState::NotReady(reason.into()));
    }

    /// Sets what a component reports about itself (e.g. which probes are attached).
    pub fn set_detail(&self, component: &str, detail: impl Into<String>) {
        let mut details = self.details.write().unwrap_or_else(PoisonError::into_inner);
        details.insert(component.to_owned(), detail.into());
    }

    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    pub fn report(&self) -> ReadinessReport {
        let components = self
            .components
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let ready = !components.is_empty()
            && components
                .values()
                .all(|s| matches!(s, ComponentState::Ready | ComponentState::Degraded(_)));
        let details = self.details.read().unwrap_or_else(PoisonError::into_inner);
        let components = components
            .iter()
            .map(|(name, state)| {
                let report = match state {
                    ComponentState::Starting => ("starting", None),
                    ComponentState::Ready => ("ready", None),
                    ComponentState::NotReady(reason) => ("not_ready", Some(reason.clone())),
                    ComponentState::Degraded(reason) => ("degraded", Some(reason.clone())),
                };
                let report = ComponentReport {
                    state: report.0,
                    reason: report.1,
                    detail: details.get(name).cloned(),
                };
                (name.clone(), report)
            })
            .collect();
        ReadinessReport { ready, components }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degraded_component_is_reported_but_does_not_hold_readiness_back() {
        let readiness = Readiness::new();
        readiness.set_ready("ebpf");
        readiness.set(
            "kube",
            ComponentState::Degraded("api unreachable".to_owned()),
        );
        let report = readiness.report();
        assert!(report.ready);
        assert_eq!(report.components["kube"].state, "degraded");
        assert_eq!(
            report.components["kube"].reason.as_deref(),
            Some("api unreachable")
        );
    }

    #[test]
    fn nothing_registered_is_not_ready() {
        assert!(!Readiness::new().is_ready());
    }

    #[test]
    fn ready_when_every_component_is() {
        let readiness = Readiness::new();
        readiness.register("ebpf");
        readiness.set_ready("store");
        assert!(!readiness.is_ready());
        let other_handle = readiness.clone();
        other_handle.set_ready("ebpf");
        assert!(readiness.is_ready());
        readiness.set_not_ready("ebpf", "runtime restarted, re-attaching");
        let json = serde_json::to_string(&readiness.report()).expect("json");
        assert_eq!(
            json,
            concat!(
                r#"{"ready":false,"components":{"ebpf":{"state":"not_ready","#,
                r#""reason":"runtime restarted, re-attaching"},"store":{"state":"ready"}}}"#
            )
        );
    }
}
