//! The CRI v1 gRPC client itself: connecting over a unix socket and one timed method per
//! RuntimeService / ImageService call the testbed uses.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{CriCall, CriError};
use crate::clock::{CallWindow, Timed};
use crate::pod_cgroups::PodCgroups;

/// How long a call may take before the client gives up on it (ExecSync gets its own
/// timeout on top).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one runtime's CRI socket. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    pod_cgroups: Option<PodCgroups>,
    call_timeout: Duration,
}

/// What `Version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// e.g. `containerd`.
    pub runtime_name: String,
    /// e.g. `1.6.20~ds1`.
    pub runtime_version: String,
    /// e.g. `v1`.
    pub runtime_api_version: String,
}

/// What `ExecSync` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// The command's exit code.
    pub exit_code: i32,
}

impl ExecOutput {
    /// stdout as (lossy) text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as (lossy) text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The parts of `ContainerStatus` tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Created, running, exited or unknown.
    pub state: api::ContainerState,
    /// Exit code (meaningful once exited).
    pub exit_code: i32,
    /// Start time, ns since the epoch (0 if not started).
    pub started_at: i64,
    /// Finish time, ns since the epoch (0 if not finished).
    pub finished_at: i64,
    /// Why it is in this state, e.g. `Completed` or `Error`.
    pub reason: String,
}

/// One entry of `ListPodSandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSummary {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Ready or not ready.
    pub state: api::PodSandboxState,
}

impl CriClient {
    /// Connects to the CRI socket at `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| CriError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Self {
            socket: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            pod_cgroups: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Records the cgroup parent of every sandbox this client creates in `record`, so the
    /// testbed's teardown can remove those cgroups.
    pub fn with_pod_cgroups(mut self, record: PodCgroups) -> Self {
        self.pod_cgroups = Some(record);
        self
    }

    /// Bounds every call (except ExecSync's own timeout) by `timeout`.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `RuntimeService/Version`.
    pub async fn version(&self) -> Result<Timed<RuntimeVersion>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::VersionRequest {
            version: "v1".to_string(),
        };
        let (response, window) = self
            .timed(CriCall::Version, self.call_timeout, client.version(request))
            .await?;
        Ok(Timed {
            value: RuntimeVersion {
                runtime_name: response.runtime_name,
                runtime_version: response.runtime_version,
                runtime_api_version: response.runtime_api_version,
            },
            window,
        })
    }

    /// `RuntimeService/RunPodSandbox` with the default runtime handler; returns the
    /// sandbox id.
    pub async fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
    ) -> Result<Timed<String>, CriError> {
        if let (Some(record), Some(linux)) = (&self.pod_cgroups, &config.linux) {
            record.register(&linux.cgroup_parent);
        }
        let mut client = self.runtime.clone();
        let request = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let (response, window) = self
            .timed(
                CriCall::RunPodSandbox,
                self.call_timeout,
                client.run_pod_sandbox(request),
            )
            .await?;
        non_empty(
            CriCall::RunPodSandbox,
            "pod_sandbox_id",
            response.pod_sandbox_id,
            window,
        )
    }

    /// `RuntimeService/StopPodSandbox`.
    pub async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<Timed<()>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let (_, window) = self
            .timed(
                CriCall::StopPodSandbox,
                self.call_timeout,
                client.stop_pod_sandbox(request),
            )
            .await?;
        Ok(Timed { value: (), window })
    }

    /// `RuntimeService/RemovePodSandbox` (removes the sandbox's containers too).
    pub async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<Timed<()>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let (_, window) = self
            .timed(
                CriCall::RemovePodSandbox,
                self.call_timeout,
                client.remove_pod_sandbox(request),
            )
            .await?;
        Ok(Timed { value: (), window })
    }

    /// `RuntimeService/ListPodSandbox` without a filter.
    pub async fn list_pod_sandboxes(&self) -> Result<Timed<Vec<SandboxSummary>>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::ListPodSandboxRequest { filter: None };
        let (response, window) = self
            .timed(
                CriCall::ListPodSandbox,
                self.call_timeout,
                client.list_pod_sandbox(request),
            )
            .await?;
        let value = response
            .items
            .into_iter()
            .map(|item| {
                let metadata = item.metadata.unwrap_or_default();
                SandboxSummary {
                    id: item.id,
                    name: metadata.name,
                    namespace: metadata.namespace,
                    uid: metadata.uid,
                    state: api::PodSandboxState::try_from(item.state)
                        .unwrap_or(api::PodSandboxState::SandboxNotready),
                }
            })
            .collect();
        Ok(Timed { value, window })
    }

    /// `RuntimeService/CreateContainer`; returns the container id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<Timed<String>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let (response, window) = self
            .timed(
                CriCall::CreateContainer,
                self.call_timeout,
                client.create_container(request),
            )
            .await?;
        non_empty(
            CriCall::CreateContainer,
            "container_id",
            response.container_id,
            window,
        )
    }

    /// `RuntimeService/StartContainer`.
    pub async fn start_container(&self, container_id: &str) -> Result<Timed<()>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::StartContainerRequest {
            container_id: container_id.to_string(),
        };
        let (_, window) = self
            .timed(
                CriCall::StartContainer,
                self.call_timeout,
                client.start_container(request),
            )
            .await?;
        Ok(Timed { value: (), window })
    }

    /// `RuntimeService/ExecSync`: runs `cmd` in the container, at most `timeout` (whole
    /// seconds, at least 1).
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<Timed<ExecOutput>, CriError> {
        let mut client = self.runtime.clone();
        let seconds = timeout.as_secs().max(1);
        let request = api::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.to_vec(),
            timeout: i64::try_from(seconds).unwrap_or(i64::MAX),
        };
        let bound = Duration::from_secs(seconds) + self.call_timeout;
        let (response, window) = self
            .timed(CriCall::ExecSync, bound, client.exec_sync(request))
            .await?;
        Ok(Timed {
            value: ExecOutput {
                stdout: response.stdout,
                stderr: response.stderr,
                exit_code: response.exit_code,
            },
            window,
        })
    }

    /// `RuntimeService/StopContainer`: SIGTERM, then SIGKILL after `grace` (whole seconds).
    pub async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<Timed<()>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
        };
        let bound = grace + self.call_timeout;
        let (_, window) = self
            .timed(
                CriCall::StopContainer,
                bound,
                client.stop_container(request),
            )
            .await?;
        Ok(Timed { value: (), window })
    }

    /// `RuntimeService/RemoveContainer`.
    pub async fn remove_container(&self, container_id: &str) -> Result<Timed<()>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        let (_, window) = self
            .timed(
                CriCall::RemoveContainer,
                self.call_timeout,
                client.remove_container(request),
            )
            .await?;
        Ok(Timed { value: (), window })
    }

    /// `RuntimeService/ContainerStatus`.
    pub async fn container_status(
        &self,
        container_id: &str,
    ) -> Result<Timed<ContainerState>, CriError> {
        let mut client = self.runtime.clone();
        let request = api::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: false,
        };
        let (response, window) = self
            .timed(
                CriCall::ContainerStatus,
                self.call_timeout,
                client.container_status(request),
            )
            .await?;
        let status = response.status.ok_or(CriError::Incomplete {
            call: CriCall::ContainerStatus,
            field: "status",
        })?;
        Ok(Timed {
            value: ContainerState {
                state: api::ContainerState::try_from(status.state)
                    .unwrap_or(api::ContainerState::ContainerUnknown),
                exit_code: status.exit_code,
                started_at: status.started_at,
                finished_at: status.finished_at,
                reason: status.reason,
            },
            window,
        })
    }

    /// Polls `ContainerStatus` until the container has exited (as a kubelet notices a crashed
    /// container before restarting it); returns its last status.
    pub async fn wait_for_container_exit(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<ContainerState, CriError> {
        let started = Instant::now();
        loop {
            let status = self.container_status(container_id).await?.value;
            if status.state == api::ContainerState::ContainerExited {
                return Ok(status);
            }
            if started.elapsed() >= timeout {
                return Err(CriError::Call {
                    call: CriCall::ContainerStatus,
                    status: Box::new(tonic::Status::deadline_exceeded(format!(
                        "container {container_id} still {:?} after {:?}",
                        status.state,
                        started.elapsed()
                    ))),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ImageService/PullImage`; returns the image reference the runtime resolved.
    /// containerd 1.6 always contacts the registry here, even for local images.
    pub async fn pull_image(&self, image: &str) -> Result<Timed<String>, CriError> {
        let mut client = self.images.clone();
        let request = api::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config: None,
        };
        let (response, window) = self
            .timed(
                CriCall::PullImage,
                self.call_timeout,
                client.pull_image(request),
            )
            .await?;
        non_empty(CriCall::PullImage, "image_ref", response.image_ref, window)
    }

    /// `ImageService/ImageStatus`; returns the image id if the runtime has the image.
    pub async fn image_status(&self, image: &str) -> Result<Timed<Option<String>>, CriError> {
        let mut client = self.images.clone();
        let request = api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let (response, window) = self
            .timed(
                CriCall::ImageStatus,
                self.call_timeout,
                client.image_status(request),
            )
            .await?;
        Ok(Timed {
            value: response.image.map(|i| i.id),
            window,
        })
    }

    /// Polls `ImageStatus` until the CRI sees `image` (images imported with `ctr` reach
    /// the CRI's cache asynchronously); returns the image id.
    pub async fn wait_for_image(&self, image: &str, timeout: Duration) -> Result<String, CriError> {
        let started = Instant::now();
        loop {
            if let Some(id) = self.image_status(image).await?.value {
                return Ok(id);
            }
            if started.elapsed() >= timeout {
                return Err(CriError::ImageNotVisible {
                    image: image.to_string(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs one gRPC call bounded by `bound`, measuring its window.
    async fn timed<T>(
        &self,
        call: CriCall,
        bound: Duration,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<(T, CallWindow), CriError> {
        let (result, window) = CallWindow::measure(tokio::time::timeout(bound, request)).await;
        let response = match result {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                return Err(CriError::Call {
                    call,
                    status: Box::new(status),
                });
            }
            Err(_) => {
                return Err(CriError::Call {
                    call,
                    status: Box::new(tonic::Status::deadline_exceeded(format!(
                        "no answer within {bound:?}"
                    ))),
                });
            }
        };
        Ok((response, window))
    }
}

fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn non_empty(
    call: CriCall,
    field: &'static str,
    value: String,
    window: CallWindow,
) -> Result<Timed<String>, CriError> {
    if value.is_empty() {
        return Err(CriError::Incomplete { call, field });
    }
    Ok(Timed { value, window })
}
