//! The agent's own health as Prometheus metrics at `/metrics`: what each stage received,
//! produced and dropped, the store's size, HTTP query counts and latencies, CRI calls per
//! method and the probes attached. Names follow the Kubernetes instrumentation guidelines
//! (`nodetrace_` prefix, units as suffixes, `_total` for counters).

mod collector;
mod http;

pub use collector::{MetricSources, ProbeCounts};
pub use http::{HttpMetrics, track_http};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use std::sync::Arc;

/// Everything `/metrics` reports.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers the HTTP metrics and the collector that reads every stage's counters.
    pub fn new(sources: MetricSources, http: &HttpMetrics) -> Self {
        let mut registry = Registry::with_prefix("nodetrace");
        http.register(&mut registry);
        registry.register_collector(Box::new(collector::StageCollector::new(sources)));
        Self { registry }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || metrics.render()).await;
    match rendered {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response(),
    }
}
