//! Kubernetes metadata on spans: the workload, allowed labels and, when the pod carries a
//! trace-context annotation, that trace (the span joins it, parentless spans under the
//! annotation's span). Metadata comes from the pod directory (the kube watcher), cached briefly
//! per pod because a lookup rebuilds it, else from the pod's sandbox as the runtime described
//! it (labels and trace context, without the workload).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    k8s::{PodDirectory, PodMetadata},
    model::{Attribute, Span, keys},
};

/// How long a pod's metadata is reused before it is looked up again.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most pods cached; the cache is emptied beyond.
const CACHE_MAX: usize = 4096;
/// Most pods whose sandbox metadata is kept; one is forgotten for each new one beyond.
const NODE_PODS_MAX: usize = 4096;

pub(super) struct PodEnricher {
    directory: PodDirectory,
    cache: HashMap<String, (Instant, Option<PodMetadata>)>,
    /// Pod UID → what its sandbox carries, from the runtime.
    node: HashMap<String, PodMetadata>,
}

impl PodEnricher {
    pub(super) fn new(directory: PodDirectory) -> Self {
        Self {
            directory,
            cache: HashMap::new(),
            node: HashMap::new(),
        }
    }

    /// Keeps what a pod's sandbox carries.
    pub(super) fn remember(&mut self, metadata: PodMetadata) {
        if self.node.len() >= NODE_PODS_MAX
            && !self.node.contains_key(&metadata.uid)
            && let Some(some) = self.node.keys().next().cloned()
        {
            self.node.remove(&some);
        }
        self.node.insert(metadata.uid.clone(), metadata);
    }

    /// Whether anything is known about pod `uid` (from the API or from its sandbox).
    pub(super) fn knows(&mut self, uid: &str) -> bool {
        self.node.contains_key(uid) || self.metadata(uid).is_some()
    }

    fn metadata(&mut self, uid: &str) -> Option<PodMetadata> {
        if !self.directory.is_enabled() {
            return None;
        }
        if let Some((at, meta)) = self.cache.get(uid)
            && at.elapsed() < CACHE_TTL
        {
            return meta.clone();
        }
        let meta = self.directory.get(uid);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache
            .insert(uid.to_owned(), (Instant::now(), meta.clone()));
        meta
    }

    /// Adds what the API (else the pod's sandbox) tells about the span's pod.
    pub(super) fn enrich(&mut self, span: &mut Span) {
        let Some(uid) = span.pod.as_ref().map(|p| p.uid.clone()) else {
            return;
        };
        let Some(meta) = self.metadata(&uid).or_else(|| self.node.get(&uid).cloned()) else {
            return;
        };
        if let Some(pod) = &mut span.pod
            && pod.name.is_empty()
        {
            pod.namespace.clone_from(&meta.namespace);
            pod.name.clone_from(&meta.name);
        }
        for attribute in meta.attributes() {
            if !span.attributes.iter().any(|a| a.key == attribute.key) {
                span.attributes.push(attribute);
            }
        }
        if let Some(context) = meta.trace_context {
            span.trace_id = context.trace_id;
            if span.parent_span_id.is_none() {
                span.parent_span_id = Some(context.parent_span_id);
            }
            span.attributes
                .push(Attribute::str(keys::TRACE_CONTEXT_SOURCE, "annotation"));
        }
    }
}
