//! The whole testbed in one value: a private containerd with the local pause and busybox
//! images imported and visible to its CRI, and a CRI client on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::containerd::{ContainerdError, ContainerdOptions, PrivateContainerd};
use crate::cri::{CriClient, CriError};
use crate::images::{ImageError, LocalImages};
use crate::lifecycle::PodLifecycle;
use crate::teardown::{TeardownError, TeardownReport};

/// How long an imported image may take to reach the CRI's image cache.
const IMAGE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(15);

/// What can go wrong starting a testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// containerd did not start.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// The images could not be built or imported.
    #[error(transparent)]
    Images(#[from] ImageError),
    /// The CRI did not answer as expected.
    #[error(transparent)]
    Cri(#[from] CriError),
    /// The image-building task died.
    #[error("image build task: {0}")]
    Task(String),
}

/// A running testbed; dropping it tears everything down.
#[derive(Debug)]
pub struct Testbed {
    containerd: PrivateContainerd,
    images: LocalImages,
    cri: CriClient,
}

impl Testbed {
    /// Starts a private containerd in `work_dir` (deleted on teardown), builds and imports
    /// the images, and waits until the CRI sees them.
    pub async fn start(work_dir: &Path) -> Result<Self, TestbedError> {
        Self::start_with(work_dir, ContainerdOptions::default()).await
    }

    /// [`Testbed::start`] with containerd set up by `options` (e.g. with insecure
    /// registries to pull from).
    pub async fn start_with(
        work_dir: &Path,
        options: ContainerdOptions,
    ) -> Result<Self, TestbedError> {
        let containerd = PrivateContainerd::start_with(work_dir, options).await?;
        let images_dir = containerd.layout().images.clone();
        let socket = containerd.socket().to_path_buf();
        let images = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let images = LocalImages::build(&images_dir)?;
            let built = started.elapsed();
            images.import(&socket)?;
            tracing::info!(?built, imported = ?(started.elapsed() - built), "local images ready");
            Ok::<_, ImageError>(images)
        })
        .await
        .map_err(|e| TestbedError::Task(e.to_string()))??;
        let cri = containerd.cri_client().await?;
        let started = Instant::now();
        for image in [&images.pause.name, &images.busybox.name] {
            cri.wait_for_image(image, IMAGE_VISIBLE_TIMEOUT).await?;
        }
        tracing::info!(waited = ?started.elapsed(), "images visible to the CRI");
        Ok(Self {
            containerd,
            images,
            cri,
        })
    }

    /// The containerd.
    pub fn containerd(&self) -> &PrivateContainerd {
        &self.containerd
    }

    /// The images.
    pub fn images(&self) -> &LocalImages {
        &self.images
    }

    /// A CRI client that records pod cgroups for teardown.
    pub fn cri(&self) -> &CriClient {
        &self.cri
    }

    /// A lifecycle for a fresh pod `namespace/name` (busybox container, logs in the work
    /// directory).
    pub fn pod(&self, namespace: &str, name: &str) -> PodLifecycle {
        PodLifecycle::new(namespace, name, self.containerd.pod_log_root())
    }

    /// Restarts containerd and reconnects the CRI client.
    pub async fn restart_containerd(&mut self) -> Result<(), TestbedError> {
        self.containerd.restart().await?;
        self.cri = self.containerd.cri_client().await?;
        Ok(())
    }

    /// Copies the containerd executable into the work directory (see
    /// [`PrivateContainerd::copy_binary`]).
    pub fn copy_containerd_binary(&self, name: &str) -> Result<PathBuf, TestbedError> {
        Ok(self.containerd.copy_binary(name)?)
    }

    /// Restarts containerd onto another executable (an upgrade, see
    /// [`PrivateContainerd::restart_with_binary`]) and reconnects the CRI client.
    pub async fn restart_containerd_with(&mut self, binary: &Path) -> Result<(), TestbedError> {
        self.containerd.restart_with_binary(binary).await?;
        self.cri = self.containerd.cri_client().await?;
        Ok(())
    }

    /// Upgrades containerd to another release, shim included (see
    /// [`PrivateContainerd::upgrade`]), and reconnects the CRI client.
    pub async fn upgrade_containerd(
        &mut self,
        binary: &Path,
        shim: Option<&Path>,
    ) -> Result<(), TestbedError> {
        self.containerd.upgrade(binary, shim).await?;
        self.cri = self.containerd.cri_client().await?;
        Ok(())
    }

    /// Tears everything down (see [`PrivateContainerd::stop`]).
    pub fn stop(self) -> Result<TeardownReport, TeardownError> {
        self.containerd.stop()
    }
}
