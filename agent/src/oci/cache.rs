//! What the agent learnt about containers, kept for the runs that come after the bundle is gone.
//!
//! A `create` reads the bundle; the `start`, `exec`, `kill` and `delete` of the same container
//! come later, and after `delete` the bundle no longer exists. The cache remembers each
//! container, each sandbox's pod, and each pod's latest sandbox. It is bounded: past its
//! capacity the least recently used entries go (counted in `evictions`). Do not remove a
//! container on `delete`: containerd's shim runs a `delete --force` after it.

use std::collections::{BTreeMap, HashMap};

use super::info::{ContainerInfo, ContainerKind};
use crate::model::PodRef;

/// Default number of containers (and of sandboxes, and of pods) kept.
pub const DEFAULT_CAPACITY: usize = 4096;

/// A pod the node has seen, and its latest sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPod {
    pub pod: PodRef,
    pub sandbox_id: Option<String>,
}

/// Containers by id, pods by sandbox id and by UID; bounded, least recently used out first.
#[derive(Debug)]
pub struct ContainerCache {
    containers: Lru<ContainerInfo>,
    sandboxes: Lru<PodRef>,
    pods: Lru<KnownPod>,
}

impl Default for ContainerCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl ContainerCache {
    /// A cache of at most `capacity` containers, as many sandboxes and as many pods (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            containers: Lru::new(capacity),
            sandboxes: Lru::new(capacity),
            pods: Lru::new(capacity),
        }
    }

    /// Remembers a container. When it names its pod fully (name as well as UID), also
    /// remembers its sandbox's pod and the pod's sandbox.
    pub fn insert(&mut self, info: ContainerInfo) {
        let pod_is_named = !info.pod.uid.is_empty() && !info.pod.name.is_empty();
        if pod_is_named {
            let sandbox_id = info.sandbox_id.clone().or_else(|| {
                (info.kind == Some(ContainerKind::Sandbox)).then(|| info.container_id.clone())
            });
            if let Some(sandbox_id) = &sandbox_id {
                self.sandboxes.insert(sandbox_id.clone(), info.pod.clone());
            }
            let keep_sandbox = self
                .pods
                .peek(&info.pod.uid)
                .and_then(|p| p.sandbox_id.clone());
            self.pods.insert(
                info.pod.uid.clone(),
                KnownPod {
                    pod: info.pod.clone(),
                    sandbox_id: sandbox_id.or(keep_sandbox),
                },
            );
        }
        self.containers.insert(info.container_id.clone(), info);
    }

    /// Remembers a sandbox's pod (e.g. from a CRI RunPodSandbox call).
    pub fn insert_sandbox(&mut self, sandbox_id: &str, pod: PodRef) {
        self.pods.insert(
            pod.uid.clone(),
            KnownPod {
                pod: pod.clone(),
                sandbox_id: Some(sandbox_id.to_owned()),
            },
        );
        self.sandboxes.insert(sandbox_id.to_owned(), pod);
    }

    /// The container with this id, marked as recently used.
    pub fn get(&mut self, container_id: &str) -> Option<&ContainerInfo> {
        self.containers.get(container_id)
    }

    /// The container with this id, without touching its recency.
    pub fn peek(&self, container_id: &str) -> Option<&ContainerInfo> {
        self.containers.peek(container_id)
    }

    /// Forgets a container (its sandbox and pod entries stay until evicted).
    pub fn remove(&mut self, container_id: &str) -> Option<ContainerInfo> {
        self.containers.remove(container_id)
    }

    /// The pod of a sandbox.
    pub fn sandbox_pod(&mut self, sandbox_id: &str) -> Option<&PodRef> {
        self.sandboxes.get(sandbox_id)
    }

    /// A pod by UID, with its latest sandbox.
    pub fn pod(&mut self, uid: &str) -> Option<&KnownPod> {
        self.pods.get(uid)
    }

    /// Number of containers held.
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.containers.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.containers.capacity
    }

    /// Entries dropped for room so far (containers, sandboxes and pods together).
    pub fn evictions(&self) -> u64 {
        self.containers.evicted + self.sandboxes.evicted + self.pods.evicted
    }
}

/// A bounded map from string keys, least recently used out first.
#[derive(Debug)]
struct Lru<V> {
    entries: HashMap<String, (V, u64)>,
    /// Last use tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, String>,
    tick: u64,
    capacity: usize,
    evicted: u64,
}

impl<V> Lru<V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn insert(&mut self, key: String, value: V) {
        let tick = self.next_tick();
        if let Some((_, old_tick)) = self.entries.get(&key) {
            self.order.remove(old_tick);
        }
        self.order.insert(tick, key.clone());
        self.entries.insert(key, (value, tick));
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.evicted += 1;
        }
    }

    fn get(&mut self, key: &str) -> Option<&V> {
        let tick = self.next_tick();
        let (value, last_used) = self.entries.get_mut(key)?;
        if let Some(key) = self.order.remove(last_used) {
            self.order.insert(tick, key);
        }
        *last_used = tick;
        Some(value)
    }

    fn peek(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|(value, _)| value)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        let (value, tick) = self.entries.remove(key)?;
        self.order.remove(&tick);
        Some(value)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: u32) -> PodRef {
        PodRef {
            uid: format!("0000000{n}-0000-4000-8000-000000000000"),
            namespace: "ns".to_owned(),
            name: format!("pod-{n}"),
        }
    }

    fn info(id: &str, kind: ContainerKind, sandbox: &str, pod: PodRef) -> ContainerInfo {
        ContainerInfo {
            container_id: id.to_owned(),
            kind: Some(kind),
            sandbox_id: Some(sandbox.to_owned()),
            pod,
            container_name: (kind == ContainerKind::Container).then(|| "app".to_owned()),
            image: None,
        }
    }

    #[test]
    fn remembers_containers_sandboxes_and_pods() {
        let mut cache = ContainerCache::new(8);
        cache.insert(info("s1", ContainerKind::Sandbox, "s1", pod(1)));
        cache.insert(info("c1", ContainerKind::Container, "s1", pod(1)));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("c1").map(|i| i.pod.clone()), Some(pod(1)));
        assert_eq!(
            cache.peek("s1").map(|i| i.kind),
            Some(Some(ContainerKind::Sandbox))
        );
        assert_eq!(cache.sandbox_pod("s1"), Some(&pod(1)));
        assert_eq!(
            cache.pod(&pod(1).uid),
            Some(&KnownPod {
                pod: pod(1),
                sandbox_id: Some("s1".to_owned())
            })
        );
        assert_eq!(cache.get("c2"), None);
        assert_eq!(cache.sandbox_pod("c1"), None);
    }

    #[test]
    fn a_partial_pod_does_not_replace_a_named_one() {
        let mut cache = ContainerCache::new(8);
        cache.insert(info("c1", ContainerKind::Container, "s1", pod(1)));
        let partial = ContainerInfo {
            container_id: "c2".to_owned(),
            kind: None,
            sandbox_id: None,
            pod: PodRef {
                uid: pod(1).uid,
                ..PodRef::default()
            },
            container_name: None,
            image: None,
        };
        cache.insert(partial);
        assert_eq!(cache.pod(&pod(1).uid).map(|p| p.pod.clone()), Some(pod(1)));
        assert!(cache.get("c2").is_some());
    }

    #[test]
    fn a_new_sandbox_of_the_same_pod_replaces_the_old_one() {
        let mut cache = ContainerCache::new(8);
        cache.insert(info("s1", ContainerKind::Sandbox, "s1", pod(1)));
        cache.insert_sandbox("s2", pod(1));
        assert_eq!(
            cache.pod(&pod(1).uid).and_then(|p| p.sandbox_id.clone()),
            Some("s2".to_owned())
        );
        assert_eq!(cache.sandbox_pod("s1"), Some(&pod(1)));
        assert_eq!(cache.sandbox_pod("s2"), Some(&pod(1)));
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = ContainerCache::new(3);
        for n in 1..=3 {
            cache.insert(info(
                &format!("c{n}"),
                ContainerKind::Container,
                "s",
                pod(n),
            ));
        }
        assert!(cache.get("c1").is_some()); // c2 is now the least recently used.
        cache.insert(info("c4", ContainerKind::Container, "s", pod(4)));
        assert_eq!(cache.len(), 3);
        assert!(cache.peek("c2").is_none());
        assert!(cache.peek("c1").is_some());
        assert!(cache.peek("c3").is_some());
        assert!(cache.peek("c4").is_some());
        assert_eq!(cache.capacity(), 3);
        // One container and one pod went; the sandbox "s" was only updated.
        assert_eq!(cache.evictions(), 2);
    }

    #[test]
    fn reinserting_refreshes_without_growing() {
        let mut cache = ContainerCache::new(2);
        cache.insert(info("c1", ContainerKind::Container, "s", pod(1)));
        cache.insert(info("c2", ContainerKind::Container, "s", pod(1)));
        cache.insert(info("c1", ContainerKind::Container, "s", pod(1)));
        cache.insert(info("c3", ContainerKind::Container, "s", pod(1)));
        assert!(cache.peek("c1").is_some());
        assert!(cache.peek("c2").is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn remove_and_empty() {
        let mut cache = ContainerCache::new(0);
        assert!(cache.is_empty());
        assert_eq!(cache.capacity(), 1);
        cache.insert(info("c1", ContainerKind::Container, "s", pod(1)));
        assert_eq!(
            cache.remove("c1").map(|i| i.container_id),
            Some("c1".to_owned())
        );
        assert_eq!(cache.remove("c1"), None);
        assert!(cache.is_empty());
        // Its pod stays known.
        assert!(cache.pod(&pod(1).uid).is_some());
    }

    #[test]
    fn default_capacity() {
        assert_eq!(ContainerCache::default().capacity(), DEFAULT_CAPACITY);
    }
}
