//! `nodetrace gateway`: one stable URL in front of every agent. It serves the agents' own
//! `/api/traces` (Kelemetry and Jaeger UI formats) and `/api/v1/pods` contract by asking every
//! agent (a fixed list, and/or every address of their headless Service) at once, with a bound
//! on how many are in flight and a deadline each, merging the answers, and naming in the answer
//! the agents that did not reply (as warnings on the trace and its root spans, where Kelemetry
//! reads them). Stateless: run as many as wanted behind a Service.

pub mod agents;
pub mod routes;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Context as _;
use axum::{Router, routing::get};

use crate::{
    api::{self, router::behind_token},
    cli::GatewayArgs,
};

pub use agents::AgentSet;
pub use routes::GatewayState;

/// The gateway's routes: the API behind the token, `/healthz` open.
pub fn router(state: GatewayState, token: Option<Arc<str>>) -> Router {
    let guarded = Router::new()
        .route("/api/traces", get(routes::traces))
        .route("/api/v1/pods", get(routes::pods))
        .route("/api/v1/pods/{uid}/explain", get(routes::explain))
        .with_state(state);
    behind_token(guarded, token).route(api::router::LIVENESS_PATH, get(|| async { "ok\n" }))
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let token = crate::cli::read_token_file(args.token_file.as_deref())?;
    api::check_listen_policy(args.listen, token.as_deref(), args.insecure_no_auth)?;
    let agent_token = crate::cli::read_token_file(args.agent_token_file.as_deref())?;
    let ca = match &args.ca_file {
        Some(path) => crate::tls::PemFile::read(path, "the CA file (--ca-file)")?.certificates()?,
        None => Vec::new(),
    };
    if args.agents.is_empty() && args.agents_service.is_none() {
        anyhow::bail!("name the agents with --agent URL or --agents-service HOST:PORT");
    }
    let agents = AgentSet {
        fixed: args.agents.clone(),
        service: args.agents_service.clone(),
        scheme: args.agent_scheme.clone(),
        token: agent_token,
        ca,
        timeout: args.agent_timeout,
        max_in_flight: args.max_agents_in_flight,
    };
    let app = router(
        GatewayState {
            agents: Arc::new(agents),
        },
        token.map(Arc::from),
    );
    let limits = api::ServeLimits::default();
    let app = api::bound_requests(app, &limits);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, agents = ?args.agents, service = ?args.agents_service, "nodetrace gateway ready");
    api::serve(listener, app, &limits, crate::daemon::shutdown_signal()).await;
    Ok(())
}
