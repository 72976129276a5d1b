//! The API's shared state and its axum router.

use super::auth::require_bearer;
use super::handlers;
use super::readiness::Readiness;
use crate::store::Store;
use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use std::sync::Arc;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub readiness: Readiness,
    /// When set, every route but `/healthz` requires `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// The cluster's name, tagged on Kelemetry answers (`cluster`).
    pub cluster_name: Option<Arc<str>>,
    /// The stages' health, for `/healthz` (none: the process serving is all it says).
    pub supervisor: Option<Arc<crate::supervise::Supervisor>>,
}

impl ApiState {
    pub fn new(store: Store, readiness: Readiness, token: Option<String>) -> Self {
        Self {
            store,
            readiness,
            token: token.map(Arc::from),
            cluster_name: None,
            supervisor: None,
        }
    }

    /// Lets `/healthz` report the stages the supervisor watches.
    pub fn with_supervisor(mut self, supervisor: Arc<crate::supervise::Supervisor>) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// Names the cluster in Kelemetry answers.
    pub fn with_cluster_name(mut self, cluster_name: Option<String>) -> Self {
        self.cluster_name = cluster_name.map(Arc::from);
        self
    }
}

/// Liveness: the one route open without the token (kubelet's probe cannot carry one), and never
/// queued behind queries (`serve.rs`).
pub const LIVENESS_PATH: &str = "/healthz";

/// `GET /api/traces`, `GET /api/v1/pods` and `GET /readyz`, behind the token when there is one,
/// and `GET /healthz`, open. `/readyz` stays behind the token: its body names the failing
/// components and their errors, and the DaemonSet's readiness probe does not use it.
pub fn router(state: ApiState) -> Router {
    let token = state.token.clone();
    let guarded = Router::new()
        .route("/api/traces", get(handlers::traces))
        .route("/api/v1/pods", get(super::pods::pods))
        .route("/api/v1/pods/{uid}/explain", get(handlers::explain))
        .route("/readyz", get(handlers::readyz))
        .with_state(state.clone());
    Router::new()
        .route(LIVENESS_PATH, get(handlers::healthz))
        .with_state(state)
        .merge(behind_token(guarded, token))
}

/// `routes` behind the bearer token when one is configured: the API's own routes, and the
/// daemon's `/metrics`.
pub fn behind_token(routes: Router, token: Option<Arc<str>>) -> Router {
    match token {
        Some(token) => routes.route_layer(from_fn_with_state(token, require_bearer)),
        None => routes,
    }
}
