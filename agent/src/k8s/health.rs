//! Whether the API server answers the pod watcher, for `/readyz` and the logs.
//!
//! The client marks the connection healthy on every successful response (an HTTP layer sees
//! it, so a watch that is simply quiet still counts), the watcher marks it degraded on every
//! error. Only the transitions are logged: a warning when the API becomes unreachable, an info
//! when it answers again.

use std::error::Error;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// The state of the pod watcher's connection to the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeHealth {
    /// No API access configured (`--no-kube`, not running in a cluster): nothing to watch.
    Disabled,
    /// Started, no answer from the API server yet.
    Starting,
    /// The API server answers; pod metadata is current.
    Connected,
    /// The API server does not answer (since `since`); pod metadata is as of then, and
    /// tracing goes on.
    Degraded { since: SystemTime, error: String },
}

impl KubeHealth {
    /// A short state name for reports: `disabled`, `starting`, `connected` or `degraded`.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Starting => "starting",
            Self::Connected => "connected",
            Self::Degraded { .. } => "degraded",
        }
    }
}

/// A shared, cheap-to-clone health cell.
#[derive(Clone, Debug)]
pub(crate) struct HealthCell(Arc<Mutex<KubeHealth>>);

impl HealthCell {
    pub(crate) fn new(initial: KubeHealth) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    pub(crate) fn get(&self) -> KubeHealth {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The API server answered.
    pub(crate) fn connected(&self) {
        let mut health = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*health {
            KubeHealth::Connected | KubeHealth::Disabled => return,
            KubeHealth::Starting => tracing::info!("connected to the Kubernetes API server"),
            KubeHealth::Degraded { since, .. } => {
                let outage = since.elapsed().unwrap_or_default();
                tracing::info!(
                    outage_secs = outage.as_secs(),
                    "the Kubernetes API server answers again; pod metadata is current"
                );
            }
        }
        *health = KubeHealth::Connected;
    }

    /// A call to the API server failed with `error`.
    pub(crate) fn degraded(&self, error: &(dyn Error + 'static)) {
        let error = error_chain(error);
        let mut health = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *health {
            KubeHealth::Disabled => {}
            KubeHealth::Degraded { error: last, .. } => {
                tracing::debug!(%error, "the Kubernetes API server still does not answer");
                *last = error;
            }
            KubeHealth::Starting | KubeHealth::Connected => {
                tracing::warn!(
                    %error,
                    "the Kubernetes API server does not answer; tracing goes on, pod metadata \
                     may be stale until it does"
                );
                *health = KubeHealth::Degraded {
                    since: SystemTime::now(),
                    error,
                };
            }
        }
    }
}

/// `error` and its sources, joined with `: `.
pub(crate) fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Many wrappers repeat their source in their own message.
        if !message.contains(&cause_text) {
            let _ = write!(message, ": {cause_text}");
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn transitions_keep_the_first_outage_time_and_the_last_error() {
        let cell = HealthCell::new(KubeHealth::Starting);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        cell.degraded(&refused);
        let KubeHealth::Degraded { since, error } = cell.get() else {
            panic!("not degraded: {:?}", cell.get());
        };
        assert_eq!(error, "refused");
        cell.degraded(&Outer { source: refused });
        assert_eq!(
            cell.get(),
            KubeHealth::Degraded {
                since,
                error: "outer: refused".to_owned()
            }
        );
        cell.connected();
        assert_eq!(cell.get(), KubeHealth::Connected);
        assert_eq!(cell.get().state(), "connected");
    }

    #[test]
    fn disabled_stays_disabled() {
        let cell = HealthCell::new(KubeHealth::Disabled);
        cell.connected();
        cell.degraded(&std::io::Error::other("x"));
        assert_eq!(cell.get(), KubeHealth::Disabled);
    }
}
