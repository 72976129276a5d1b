//! The pods of this node by UID, as the watcher keeps them: what the correlator asks.

use super::config::{LabelAllowList, PodDirectoryConfig};
use super::health::{HealthCell, KubeHealth};
use super::metadata::{PodMetadata, trace_context_of};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most this many deleted pods are remembered (a node runs a few hundred pods at most).
const MAX_DELETED: usize = 1024;

/// A cheap-to-clone view of this node's pods. Empty when disabled; during an API outage it
/// keeps answering with what it knew.
#[derive(Clone, Debug)]
pub struct PodDirectory {
    inner: Option<Arc<Inner>>,
    health: HealthCell,
}

/// Counters for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Pods currently on the node according to the API server.
    pub live_pods: usize,
    /// Deleted pods still remembered (see `PodDirectoryConfig::deleted_retention`).
    pub recently_deleted: usize,
    /// Full lists: the first one and every re-list (after a 410 Gone, for example).
    pub lists: u64,
    /// Failed API calls and watch errors, 410 Gone included.
    pub watch_errors: u64,
    /// Pods seen with a trace-context annotation that is not a valid `traceparent`.
    pub invalid_trace_contexts: u64,
}

#[derive(Debug)]
struct Inner {
    store: Store<Pod>,
    labels: LabelAllowList,
    annotation: String,
    deleted_retention: Duration,
    deleted: Mutex<VecDeque<(Instant, PodMetadata)>>,
    /// Pods warned about, with the invalid annotation value, so each value is warned once.
    warned: Mutex<HashMap<String, String>>,
    lists: AtomicU64,
    watch_errors: AtomicU64,
    invalid_trace_contexts: AtomicU64,
}

impl PodDirectory {
    /// A directory without API access: it knows no pod.
    pub fn disabled() -> Self {
        Self {
            inner: None,
            health: HealthCell::new(KubeHealth::Disabled),
        }
    }

    /// A directory over the reflector `store` that the watcher fills.
    pub(crate) fn watching(
        store: Store<Pod>,
        config: &PodDirectoryConfig,
        health: HealthCell,
    ) -> Self {
        let inner = Inner {
            store,
            labels: config.labels.clone(),
            annotation: config.trace_context_annotation.clone(),
            deleted_retention: config.deleted_retention,
            deleted: Mutex::default(),
            warned: Mutex::default(),
            lists: AtomicU64::new(0),
            watch_errors: AtomicU64::new(0),
            invalid_trace_contexts: AtomicU64::new(0),
        };
        Self {
            inner: Some(Arc::new(inner)),
            health,
        }
    }

    /// Whether pods are watched at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The metadata of the pod with this UID: a pod on the node, or one deleted recently.
    pub fn get(&self, uid: &str) -> Option<PodMetadata> {
        let inner = self.inner.as_ref()?;
        let live = inner
            .store
            .find(|pod| pod.metadata.uid.as_deref() == Some(uid));
        if let Some(pod) = live {
            return PodMetadata::from_pod(&pod, &inner.labels, &inner.annotation);
        }
        let mut deleted = lock(&inner.deleted);
        inner.prune(&mut deleted);
        deleted
            .iter()
            .rev()
            .find(|(_, meta)| meta.uid == uid)
            .map(|(_, meta)| meta.clone())
    }

    /// The stored object of a live pod, as the watcher keeps it.
    #[cfg(test)]
    pub(crate) fn live_pod(&self, uid: &str) -> Option<Arc<Pod>> {
        let inner = self.inner.as_ref()?;
        inner
            .store
            .find(|pod| pod.metadata.uid.as_deref() == Some(uid))
    }

    /// The connection state, for `/readyz` and logs.
    pub fn health(&self) -> KubeHealth {
        self.health.get()
    }

    pub fn stats(&self) -> DirectoryStats {
        let Some(inner) = &self.inner else {
            return DirectoryStats::default();
        };
        let recently_deleted = {
            let mut deleted = lock(&inner.deleted);
            inner.prune(&mut deleted);
            deleted.len()
        };
        DirectoryStats {
            live_pods: inner.store.len(),
            recently_deleted,
            lists: inner.lists.load(Ordering::Relaxed),
            watch_errors: inner.watch_errors.load(Ordering::Relaxed),
            invalid_trace_contexts: inner.invalid_trace_contexts.load(Ordering::Relaxed),
        }
    }

    /// Follows a watcher event that the store has already applied.
    pub(crate) fn observe(&self, event: &watcher::Event<Pod>) {
        let Some(inner) = &self.inner else { return };
        match event {
            watcher::Event::Init => {
                inner.lists.fetch_add(1, Ordering::Relaxed);
            }
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                inner.check_trace_context(pod)
            }
            watcher::Event::Delete(pod) => inner.remember_deleted(pod),
            watcher::Event::InitDone => {
                let mut warned = lock(&inner.warned);
                warned.retain(|uid, _| {
                    inner
                        .store
                        .find(|p| p.uid().as_deref() == Some(uid))
                        .is_some()
                });
            }
        }
    }

    /// Counts a watcher error and, unless it only asks for a re-list, marks the API degraded.
    pub(crate) fn record_error(&self, error: &watcher::Error, gone: bool) {
        let Some(inner) = &self.inner else { return };
        inner.watch_errors.fetch_add(1, Ordering::Relaxed);
        if gone {
            tracing::debug!(%error, "pod watch expired, re-listing the node's pods");
        } else {
            self.health.degraded(error);
        }
    }
}

impl Inner {
    fn check_trace_context(&self, pod: &Pod) {
        let Err(error) = trace_context_of(pod, &self.annotation) else {
            return;
        };
        let (Some(uid), Some(value)) = (pod.uid(), pod.annotations().get(&self.annotation)) else {
            return;
        };
        let mut warned = lock(&self.warned);
        if warned.get(&uid) == Some(value) {
            return;
        }
        self.invalid_trace_contexts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            namespace = pod.namespace().unwrap_or_default(),
            pod = pod.name_any(),
            annotation = self.annotation,
            value,
            error = %error,
            "ignoring an invalid trace-context annotation; the pod's trace id is derived from its UID"
        );
        warned.insert(uid, value.clone());
    }

    fn remember_deleted(&self, pod: &Pod) {
        if let Some(uid) = pod.uid() {
            lock(&self.warned).remove(&uid);
        }
        if self.deleted_retention.is_zero() {
            return;
        }
        let Some(meta) = PodMetadata::from_pod(pod, &self.labels, &self.annotation) else {
            return;
        };
        let mut deleted = lock(&self.deleted);
        self.prune(&mut deleted);
        if deleted.len() == MAX_DELETED {
            deleted.pop_front();
        }
        deleted.push_back((Instant::now(), meta));
    }

    fn prune(&self, deleted: &mut VecDeque<(Instant, PodMetadata)>) {
        while deleted
            .front()
            .is_some_and(|(at, _)| at.elapsed() > self.deleted_retention)
        {
            deleted.pop_front();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
