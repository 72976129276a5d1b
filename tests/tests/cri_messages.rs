//! The agent's hand-written CRI messages (`nodetrace::runtime_state::messages`) against the
//! types generated from the CRI's own api.proto (`k8s-cri`): what the generated side encodes,
//! the agent's side decodes field for field, and the agent's requests decode as the runtime
//! reads them.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use nodetrace::runtime_state::messages as ours;

fn reencode<A: prost::Message, B: prost::Message + Default>(message: &A) -> B {
    B::decode(message.encode_to_vec().as_slice()).expect("decodes")
}

#[test]
fn list_pod_sandbox_answers_decode_field_for_field() {
    let theirs = cri::ListPodSandboxResponse {
        items: vec![cri::PodSandbox {
            id: "sandbox-1".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".into(),
                uid: "uid-1".into(),
                namespace: "shop".into(),
                attempt: 3,
            }),
            state: cri::PodSandboxState::SandboxNotready as i32,
            created_at: 1_700_000_000_000_000_000,
            labels: HashMap::from([("app".into(), "web".into())]),
            annotations: HashMap::from([("trace.kubernetes.io/context".into(), "00-x".into())]),
            runtime_handler: "runc".into(),
        }],
    };
    let decoded: ours::ListPodSandboxResponse = reencode(&theirs);
    let item = &decoded.items[0];
    let meta = item.metadata.as_ref().expect("metadata");
    assert_eq!(item.id, "sandbox-1");
    assert_eq!(
        (
            meta.name.as_str(),
            meta.uid.as_str(),
            meta.namespace.as_str(),
            meta.attempt
        ),
        ("web-0", "uid-1", "shop", 3)
    );
    assert_eq!(item.state, 1);
    assert_eq!(item.created_at, 1_700_000_000_000_000_000);
    assert_eq!(item.labels["app"], "web");
    assert_eq!(item.annotations["trace.kubernetes.io/context"], "00-x");
    assert_eq!(item.runtime_handler, "runc");
}

#[test]
fn list_containers_and_container_status_answers_decode_field_for_field() {
    let theirs = cri::ListContainersResponse {
        containers: vec![cri::Container {
            id: "c1".into(),
            pod_sandbox_id: "sandbox-1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox:1".into(),
                ..Default::default()
            }),
            image_ref: "sha256:abc".into(),
            state: cri::ContainerState::ContainerRunning as i32,
            created_at: 5,
            labels: HashMap::from([("io.kubernetes.pod.uid".into(), "uid-1".into())]),
            annotations: HashMap::new(),
            ..Default::default()
        }],
    };
    let decoded: ours::ListContainersResponse = reencode(&theirs);
    let c = &decoded.containers[0];
    assert_eq!(
        (c.id.as_str(), c.pod_sandbox_id.as_str()),
        ("c1", "sandbox-1")
    );
    let meta = c.metadata.as_ref().expect("metadata");
    assert_eq!((meta.name.as_str(), meta.attempt), ("app", 2));
    assert_eq!(
        c.image.as_ref().map(|i| i.image.as_str()),
        Some("busybox:1")
    );
    assert_eq!(c.image_ref, "sha256:abc");
    assert_eq!(c.state, ours::CONTAINER_RUNNING);
    assert_eq!(c.created_at, 5);

    let status = cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            id: "c1".into(),
            ..Default::default()
        }),
        info: HashMap::from([("info".into(), r#"{"pid":42}"#.into())]),
    };
    let decoded: ours::ContainerStatusResponse = reencode(&status);
    assert_eq!(decoded.info["info"], r#"{"pid":42}"#);
}

#[test]
fn the_agent_s_requests_read_as_the_runtime_reads_them() {
    let list: cri::ListPodSandboxRequest = reencode(&ours::ListPodSandboxRequest {
        filter: Some(ours::PodSandboxFilter {
            id: "sandbox-1".into(),
        }),
    });
    assert_eq!(list.filter.expect("filter").id, "sandbox-1");
    let all: cri::ListPodSandboxRequest = reencode(&ours::ListPodSandboxRequest { filter: None });
    assert!(all.filter.is_none());
    let containers: cri::ListContainersRequest = reencode(&ours::ListContainersRequest {
        filter: Some(ours::ContainerFilter { id: "c1".into() }),
    });
    assert_eq!(containers.filter.expect("filter").id, "c1");
    let status: cri::ContainerStatusRequest = reencode(&ours::ContainerStatusRequest {
        container_id: "c1".into(),
        verbose: true,
    });
    assert_eq!((status.container_id.as_str(), status.verbose), ("c1", true));
    assert_eq!(
        ours::SANDBOX_READY,
        cri::PodSandboxState::SandboxReady as i32
    );
}
