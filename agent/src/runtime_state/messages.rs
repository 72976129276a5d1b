//! The few CRI v1 messages the agent's read-only client sends and reads, written by hand with
//! prost: field numbers and types as in `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`. Fields
//! the agent does not use are left out; prost skips them on decoding. A test in the testbed
//! crate (`tests/tests/cri_messages.rs`) checks them against the generated `k8s-cri` types.

use std::collections::HashMap;

/// `runtime.v1.PodSandboxMetadata`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `runtime.v1.PodSandboxFilter` (only the id).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandboxFilter {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `runtime.v1.ListPodSandboxRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

/// `runtime.v1.PodSandbox`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// `runtime.v1.PodSandboxState`: 0 ready, 1 not ready.
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
    #[prost(string, tag = "7")]
    pub runtime_handler: String,
}

/// `runtime.v1.ListPodSandboxResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// `runtime.v1.ContainerFilter` (only the id).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContainerFilter {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `runtime.v1.ListContainersRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListContainersRequest {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ContainerFilter>,
}

/// `runtime.v1.ContainerMetadata`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `runtime.v1.ImageSpec` (only the image).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `runtime.v1.Container`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<ImageSpec>,
    #[prost(string, tag = "5")]
    pub image_ref: String,
    /// `runtime.v1.ContainerState`: 0 created, 1 running, 2 exited, 3 unknown.
    #[prost(int32, tag = "6")]
    pub state: i32,
    #[prost(int64, tag = "7")]
    pub created_at: i64,
}

/// `runtime.v1.ListContainersResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

/// `runtime.v1.ContainerStatusRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `runtime.v1.ContainerStatusResponse` (only the verbose `info`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContainerStatusResponse {
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = 1;
/// `SANDBOX_READY`.
pub const SANDBOX_READY: i32 = 0;
