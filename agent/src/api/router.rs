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
}

impl ApiState {
    pub fn new(store: Store, readiness: Readiness, token: Option<String>) -> Self {
        Self {
            store,
            readiness,
            token: token.map(Arc::from),
            cluster_name: None,
        }
    }

    /// Names the cluster in Kelemetry answers.
    pub fn with_cluster_name(mut self, cluster_name: Option<String>) -> Self {
        self.cluster_name = cluster_name.map(Arc::from);
        self
    }
}

/// `GET /api/traces`, `GET /readyz` (behind the token when there is one) and `GET /healthz`.
pub fn router(state: ApiState) -> Router {
    let token = state.token.clone();
    let mut guarded = Router::new()
        .route("/api/traces", get(handlers::traces))
        .route("/api/v1/pods", get(super::pods::pods))
        .route("/readyz", get(handlers::readyz))
        .with_state(state);
    if let Some(token) = token {
        guarded = guarded.route_layer(from_fn_with_state(token, require_bearer));
    }
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .merge(guarded)
}
