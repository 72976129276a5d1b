//! A CRI v1 client over a unix socket, with one method per call a kubelet makes for a
//! host-network pod, each returning the wall-clock window of the call.

mod client;
mod configs;

pub use client::{
    ContainerState, CriClient, DEFAULT_CALL_TIMEOUT, ExecOutput, RuntimeVersion, SandboxSummary,
};
pub use configs::{ContainerSpec, PodIdentity, container_config, host_network_sandbox_config};
/// The generated CRI v1 types, for callers that build requests themselves.
pub use k8s_cri::v1 as api;

/// The CRI calls the testbed makes, named as on the wire (`runtime.v1.RuntimeService/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CriCall {
    /// `RuntimeService/Version`.
    Version,
    /// `RuntimeService/RunPodSandbox`.
    RunPodSandbox,
    /// `RuntimeService/StopPodSandbox`.
    StopPodSandbox,
    /// `RuntimeService/RemovePodSandbox`.
    RemovePodSandbox,
    /// `RuntimeService/ListPodSandbox`.
    ListPodSandbox,
    /// `RuntimeService/CreateContainer`.
    CreateContainer,
    /// `RuntimeService/StartContainer`.
    StartContainer,
    /// `RuntimeService/StopContainer`.
    StopContainer,
    /// `RuntimeService/RemoveContainer`.
    RemoveContainer,
    /// `RuntimeService/ContainerStatus`.
    ContainerStatus,
    /// `RuntimeService/ExecSync`.
    ExecSync,
    /// `ImageService/PullImage`.
    PullImage,
    /// `ImageService/ImageStatus`.
    ImageStatus,
}

impl CriCall {
    /// The gRPC method name, e.g. `"RunPodSandbox"`.
    pub fn method(self) -> &'static str {
        match self {
            Self::Version => "Version",
            Self::RunPodSandbox => "RunPodSandbox",
            Self::StopPodSandbox => "StopPodSandbox",
            Self::RemovePodSandbox => "RemovePodSandbox",
            Self::ListPodSandbox => "ListPodSandbox",
            Self::CreateContainer => "CreateContainer",
            Self::StartContainer => "StartContainer",
            Self::StopContainer => "StopContainer",
            Self::RemoveContainer => "RemoveContainer",
            Self::ContainerStatus => "ContainerStatus",
            Self::ExecSync => "ExecSync",
            Self::PullImage => "PullImage",
            Self::ImageStatus => "ImageStatus",
        }
    }

    /// The gRPC service, `"runtime.v1.RuntimeService"` or `"runtime.v1.ImageService"`.
    pub fn service(self) -> &'static str {
        match self {
            Self::PullImage | Self::ImageStatus => "runtime.v1.ImageService",
            _ => "runtime.v1.RuntimeService",
        }
    }
}

impl std::fmt::Display for CriCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method())
    }
}

/// What can go wrong talking CRI.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket did not accept a gRPC connection.
    #[error("connect to CRI socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: std::path::PathBuf,
        /// The underlying error.
        source: tonic::transport::Error,
    },
    /// The runtime answered with an error status (or the call timed out).
    #[error("CRI {call} failed: {status}")]
    Call {
        /// The call.
        call: CriCall,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The runtime's answer lacked something it must carry.
    #[error("CRI {call} returned no {field}")]
    Incomplete {
        /// The call.
        call: CriCall,
        /// The missing field.
        field: &'static str,
    },
    /// An image did not become visible to the CRI in time.
    #[error("image {image} not visible to the CRI after {waited:?}")]
    ImageNotVisible {
        /// The image reference.
        image: String,
        /// How long we polled.
        waited: std::time::Duration,
    },
}
