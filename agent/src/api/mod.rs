//! The HTTP API: pod traces for Kelemetry's frontend, Jaeger UI and the CLI, plus health and
//! readiness; and the CLI's side of it (client and terminal waterfall).

pub mod auth;
pub mod client;
pub mod format;
pub mod handlers;
pub mod params;
pub mod pods;
pub mod readiness;
pub mod root_span;
pub mod router;
pub mod serve;
pub mod waterfall;

pub use auth::{ListenPolicyError, check_listen_policy};
pub use params::PodSelector;
pub use readiness::{ComponentState, Readiness, ReadinessReport};
pub use router::{ApiState, router};
pub use serve::{ServeLimits, bound_requests, serve};

#[cfg(test)]
mod tests;
