//! Kubernetes metadata on spans: the workload, allowed labels and, when the pod carries a
//! trace-context annotation, that trace (the span joins it, parentless spans under the
//! annotation's span). Metadata comes from the pod directory (the kube watcher), cached briefly
//! per pod because a lookup rebuilds it.

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

pub(super) struct PodEnricher {
    directory: PodDirectory,
    cache: HashMap<String, (Instant, Option<PodMetadata>)>,
}

impl PodEnricher {
    pub(super) fn new(directory: PodDirectory) -> Self {
        Self {
            directory,
            cache: HashMap::new(),
        }
    }

    fn metadata(&mut self, uid: &str) -> Option<PodMetadata> {
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

    /// Adds what the API knows about the span's pod.
    pub(super) fn enrich(&mut self, span: &mut Span) {
        if !self.directory.is_enabled() {
            return;
        }
        let Some(uid) = span.pod.as_ref().map(|p| p.uid.clone()) else {
            return;
        };
        let Some(meta) = self.metadata(&uid) else {
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
