//! Tests of the pod directory fed watcher events by hand (no API server).

use super::config::PodDirectoryConfig;
use super::directory::PodDirectory;
use super::health::{HealthCell, KubeHealth};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use nodetrace_testbed::fake_apiserver::pod;
use std::collections::BTreeMap;
use std::time::Duration;

const UID: &str = "00000000-0000-4000-8000-000000000001";

fn new_directory(retention: Duration) -> (PodDirectory, Writer<Pod>) {
    let mut config = PodDirectoryConfig::new("node-a");
    config.deleted_retention = retention;
    let (store, writer) = reflector::store();
    let directory = PodDirectory::watching(store, &config, HealthCell::new(KubeHealth::Starting));
    (directory, writer)
}

fn feed(directory: &PodDirectory, writer: &mut Writer<Pod>, event: Event<Pod>) {
    writer.apply_watcher_event(&event);
    directory.observe(&event);
}

fn annotated(value: &str) -> Pod {
    let mut pod = pod("node-a", "web", UID);
    pod.metadata.annotations = Some(BTreeMap::from([(
        "trace.kubernetes.io/context".to_owned(),
        value.to_owned(),
    )]));
    pod
}

#[test]
fn disabled_directory_knows_no_pod() {
    let directory = PodDirectory::disabled();
    assert!(!directory.is_enabled());
    assert_eq!(directory.get(UID), None);
    assert_eq!(directory.health(), KubeHealth::Disabled);
    assert_eq!(directory.stats(), Default::default());
}

#[test]
fn deleted_pod_is_remembered_for_the_retention() {
    let (directory, mut writer) = new_directory(Duration::from_secs(600));
    feed(
        &directory,
        &mut writer,
        Event::Apply(pod("node-a", "web", UID)),
    );
    assert_eq!(directory.get(UID).map(|m| m.name), Some("web".to_owned()));
    feed(
        &directory,
        &mut writer,
        Event::Delete(pod("node-a", "web", UID)),
    );
    assert_eq!(directory.get(UID).map(|m| m.name), Some("web".to_owned()));
    let stats = directory.stats();
    assert_eq!((stats.live_pods, stats.recently_deleted), (0, 1));

    let (forgetful, mut writer) = new_directory(Duration::ZERO);
    feed(
        &forgetful,
        &mut writer,
        Event::Apply(pod("node-a", "web", UID)),
    );
    feed(
        &forgetful,
        &mut writer,
        Event::Delete(pod("node-a", "web", UID)),
    );
    assert_eq!(forgetful.get(UID), None);
}

#[test]
fn invalid_trace_context_is_counted_once_per_value() {
    let (directory, mut writer) = new_directory(Duration::ZERO);
    feed(&directory, &mut writer, Event::Apply(annotated("garbage")));
    feed(&directory, &mut writer, Event::Apply(annotated("garbage")));
    assert_eq!(directory.stats().invalid_trace_contexts, 1);
    assert_eq!(directory.get(UID).and_then(|m| m.trace_context), None);
    // A re-list does not warn again about the same value.
    feed(&directory, &mut writer, Event::Init);
    feed(
        &directory,
        &mut writer,
        Event::InitApply(annotated("garbage")),
    );
    feed(&directory, &mut writer, Event::InitDone);
    assert_eq!(directory.stats().invalid_trace_contexts, 1);
    // A new invalid value is; a valid one is used.
    let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    feed(&directory, &mut writer, Event::Apply(annotated(upper)));
    assert_eq!(directory.stats().invalid_trace_contexts, 2);
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    feed(&directory, &mut writer, Event::Apply(annotated(valid)));
    let context = directory.get(UID).and_then(|m| m.trace_context);
    assert_eq!(context.map(|c| c.to_traceparent()), Some(valid.to_owned()));
    assert_eq!(directory.stats().invalid_trace_contexts, 2);
    assert_eq!(directory.stats().lists, 1);
}
