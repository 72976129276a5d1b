//! A read-only CRI client over the runtime's unix socket: the three calls the agent makes
//! (`ListPodSandbox`, `ListContainers`, `ContainerStatus`), each with a deadline and a bound
//! on the answer's size. Kubelet is the runtime's only writer; the agent never changes state.

use std::{path::Path, time::Duration};

use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::{
    client::Grpc,
    transport::{Channel, Endpoint, Uri},
};

use super::messages::{
    Container, ContainerFilter, ContainerStatusRequest, ContainerStatusResponse,
    ListContainersRequest, ListContainersResponse, ListPodSandboxRequest, ListPodSandboxResponse,
    PodSandbox, PodSandboxFilter,
};

/// Bound on a list answer. Kubernetes caps a pod's annotations at 256 KiB, so a full node's
/// sandboxes can exceed it; beyond, the sandboxes are asked for one at a time.
pub const LIST_BYTES_MAX: usize = 16 << 20;
/// Bound on the answer about one sandbox or container (its labels, annotations and, for a
/// verbose container status, the runtime's JSON of it).
pub const ONE_BYTES_MAX: usize = 2 << 20;

/// What can go wrong talking to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the CRI socket {socket}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{method} did not answer within {timeout:?}")]
    Timeout {
        method: &'static str,
        timeout: Duration,
    },
    #[error("{method} failed")]
    Status {
        method: &'static str,
        #[source]
        source: Box<tonic::Status>,
    },
}

/// A connection to the runtime's CRI socket.
#[derive(Clone, Debug)]
pub struct RuntimeClient {
    channel: Channel,
    timeout: Duration,
}

impl RuntimeClient {
    /// Connects to the CRI socket at `socket` (a path the agent verified belongs to the
    /// runtime process: see `cri::discover`).
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| ClientError::Connect {
                socket: socket.display().to_string(),
                source,
            })?;
        Ok(Self { channel, timeout })
    }

    /// Every sandbox, or the one with `id`.
    pub async fn sandboxes(&self, id: Option<&str>) -> Result<Vec<PodSandbox>, ClientError> {
        let request = ListPodSandboxRequest {
            filter: id.map(|id| PodSandboxFilter { id: id.to_owned() }),
        };
        let limit = if id.is_some() {
            ONE_BYTES_MAX
        } else {
            LIST_BYTES_MAX
        };
        let response: ListPodSandboxResponse = self.unary("ListPodSandbox", request, limit).await?;
        Ok(response.items)
    }

    /// Every container, or the one with `id`.
    pub async fn containers(&self, id: Option<&str>) -> Result<Vec<Container>, ClientError> {
        let request = ListContainersRequest {
            filter: id.map(|id| ContainerFilter { id: id.to_owned() }),
        };
        let response: ListContainersResponse = self
            .unary("ListContainers", request, LIST_BYTES_MAX)
            .await?;
        Ok(response.containers)
    }

    /// The verbose status of container `id`: the runtime's `info` map.
    pub async fn container_info(&self, id: &str) -> Result<ContainerStatusResponse, ClientError> {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: true,
        };
        self.unary("ContainerStatus", request, ONE_BYTES_MAX).await
    }

    async fn unary<Req, Resp>(
        &self,
        method: &'static str,
        request: Req,
        limit: usize,
    ) -> Result<Resp, ClientError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let call = async {
            let mut grpc = Grpc::new(self.channel.clone()).max_decoding_message_size(limit);
            grpc.ready().await.map_err(|err| ClientError::Status {
                method,
                source: Box::new(tonic::Status::unavailable(err.to_string())),
            })?;
            let path = PathAndQuery::from_static(match method {
                "ListPodSandbox" => "/runtime.v1.RuntimeService/ListPodSandbox",
                "ListContainers" => "/runtime.v1.RuntimeService/ListContainers",
                _ => "/runtime.v1.RuntimeService/ContainerStatus",
            });
            grpc.unary(
                tonic::Request::new(request),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ClientError::Status {
                method,
                source: Box::new(status),
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout {
                method,
                timeout: self.timeout,
            })?
    }
}
