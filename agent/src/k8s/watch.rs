//! The watch of this node's pods: kube's watcher with backoff into a reflector store, run
//! until the agent stops, through any API outage.

use super::K8sError;
use super::config::PodDirectoryConfig;
use super::directory::PodDirectory;
use super::health::{HealthCell, KubeHealth};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::client::{ClientBuilder, DynBody};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::{self, DefaultBackoff};
use kube::{Api, Client, ResourceExt as _};
use std::pin::pin;
use std::time::Duration;
use tokio::sync::watch as signal;
use tower::util::MapResponseLayer;

/// Fills a [`PodDirectory`] with this node's pods, until told to stop.
pub struct PodWatcher {
    api: Api<Pod>,
    watch_config: watcher::Config,
    writer: Writer<Pod>,
    directory: PodDirectory,
}

impl PodWatcher {
    /// A watcher with the API configuration of the environment: in a pod, its service account
    /// (`KUBERNETES_SERVICE_HOST` and the mounted token); elsewhere `$KUBECONFIG` or
    /// `~/.kube/config`. The error says there is none; the agent then runs with
    /// [`PodDirectory::disabled`].
    pub async fn from_environment(config: PodDirectoryConfig) -> Result<Self, K8sError> {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|source| K8sError::NoConfig { source })?;
        Self::new(kube_config, config)
    }

    /// A watcher with the API configuration of a kubeconfig file (its current context).
    pub async fn from_kubeconfig(
        path: &std::path::Path,
        config: PodDirectoryConfig,
    ) -> Result<Self, K8sError> {
        let failed = |source| K8sError::Kubeconfig {
            path: path.to_owned(),
            source,
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(failed)?;
        let kube_config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(failed)?;
        Self::new(kube_config, config)
    }

    /// A watcher of the pods of `config.node_name` through the API server of `kube_config`.
    pub fn new(kube_config: kube::Config, config: PodDirectoryConfig) -> Result<Self, K8sError> {
        if config.node_name.is_empty() {
            return Err(K8sError::NoNodeName);
        }
        let health = HealthCell::new(KubeHealth::Starting);
        let client = client_reporting_to(kube_config, health.clone())?;
        let (store, writer) = reflector::store();
        Ok(Self {
            api: Api::all(client),
            watch_config: watcher::Config::default().fields(&config.field_selector()),
            writer,
            directory: PodDirectory::watching(store, &config, health),
        })
    }

    /// The directory this watcher fills.
    pub fn directory(&self) -> PodDirectory {
        self.directory.clone()
    }

    /// Watches until `stop` turns true (or its sender is dropped). Errors never end it: the
    /// watcher retries with kube's default backoff (0.8 s doubling to 30 s, with jitter) and
    /// the directory keeps what it knew meanwhile.
    pub async fn run(mut self, mut stop: signal::Receiver<bool>) {
        // Restarts only follow a 410 Gone answered to the watch request itself (not as a watch
        // event), which kube's watcher would retry with the same expired version forever; on
        // a 410 event it re-lists by itself.
        let mut restart_delays = DefaultBackoff::default();
        loop {
            let events = watcher::watcher(self.api.clone(), self.watch_config.clone())
                .default_backoff()
                .modify(|pod: &mut Pod| pod.managed_fields_mut().clear());
            let mut events = pin!(events);
            loop {
                let event = tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        self.writer.apply_watcher_event(&event);
                        self.directory.observe(&event);
                    }
                    Some(Err(error)) => {
                        let gone = is_gone(&error);
                        self.directory.record_error(&error, gone);
                        if gone && !matches!(error, watcher::Error::WatchError(_)) {
                            break;
                        }
                    }
                    // A watcher stream does not end; start over if it ever does.
                    None => break,
                }
            }
            let delay = restart_delays.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Whether the API server said 410 Gone: the version watched from is too old, re-list.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// kube's client for `kube_config`, marking `health` connected on each successful answer.
fn client_reporting_to(kube_config: kube::Config, health: HealthCell) -> Result<Client, K8sError> {
    let builder =
        ClientBuilder::try_from(kube_config).map_err(|source| K8sError::Client { source })?;
    let observe = MapResponseLayer::new(move |response: http::Response<Box<DynBody>>| {
        if response.status().is_success() {
            health.connected();
        }
        response
    });
    Ok(builder.with_layer(&observe).build())
}
