//! Request handlers: `/api/traces`, `/healthz`, `/readyz`.

use super::format::{Format, TraceSpans, group_into_traces};
use super::params::{ParamError, PodSelector, TraceRequest, parse_trace_query};
use super::router::ApiState;
use super::serve::RequestSlot;
use crate::model::Span;
use crate::store::{Store, StoreError};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a request failed; answered as `{"error": "<message and causes>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid query string")]
    Query {
        #[source]
        source: QueryRejection,
    },
    #[error("invalid parameters")]
    Params {
        #[source]
        source: ParamError,
    },
    #[error("store query failed")]
    Store {
        #[source]
        source: StoreError,
    },
    #[error("store query task failed")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot encode the answer")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    /// The request waited for a free request slot and ran for longer than the request timeout
    /// (see `serve.rs`).
    #[error(
        "no answer within the request timeout of {timeout:?}: the agent is busy or the query too large"
    )]
    Timeout { timeout: Duration },
    /// Nothing to explain: the pod has no RunPodSandbox on this node in the window.
    #[error("pod {uid} has no RunPodSandbox on this node in the window: nothing to explain")]
    NothingToExplain { uid: String },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Query { .. } | Self::Params { .. } => StatusCode::BAD_REQUEST,
            Self::Store { .. } | Self::Task { .. } | Self::Encode { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::NothingToExplain { .. } => StatusCode::NOT_FOUND,
        }
    }
}

/// The error and its causes, `: `-separated.
fn message_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = message_chain(&self);
        match &self {
            Self::Timeout { .. } => tracing::warn!(error = %message, "request timed out"),
            _ if status.is_server_error() => tracing::error!(error = %message, "request failed"),
            _ => {}
        }
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

pub(crate) fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `GET /api/traces`: a pod's spans in the window, grouped into traces, in the chosen format.
pub async fn traces(
    State(state): State<ApiState>,
    slot: Option<Extension<RequestSlot>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|source| ApiError::Query { source })?;
    let request =
        parse_trace_query(&pairs, now_unix_ns()).map_err(|source| ApiError::Params { source })?;
    let store = state.store.clone();
    let lookup = request.clone();
    let spans = tokio::task::spawn_blocking(move || {
        // Held until the store read ends, even when the request has timed out meanwhile.
        let _slot = slot;
        fetch_spans(&store, &lookup)
    })
    .await
    .map_err(|source| ApiError::Task { source })?
    .map_err(|source| ApiError::Store { source })?;
    let mut traces = answer(spans, &request);
    if request.format == Format::Kelemetry {
        add_kelemetry_tags(&mut traces, state.cluster_name.as_deref());
    } else {
        super::root_span::add_pod_roots(&mut traces);
    }
    let body = request
        .format
        .encode(&traces)
        .map_err(|source| ApiError::Encode { source })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/pods/{uid}/explain`: the pod's start explained (schema of
/// [`crate::explain::Explanation`]), from its spans on this node in the window.
pub async fn explain(
    State(state): State<ApiState>,
    slot: Option<Extension<RequestSlot>>,
    Path(uid): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(mut pairs) = query.map_err(|source| ApiError::Query { source })?;
    // The pod is the path's; a `pod` or `pod_uid` in the query as well is refused as such.
    pairs.push(("pod_uid".to_owned(), uid.clone()));
    let request =
        parse_trace_query(&pairs, now_unix_ns()).map_err(|source| ApiError::Params { source })?;
    let store = state.store.clone();
    let lookup = request.clone();
    let spans = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        fetch_spans(&store, &lookup)
    })
    .await
    .map_err(|source| ApiError::Task { source })?
    .map_err(|source| ApiError::Store { source })?;
    let traces = answer(spans, &request);
    let pod = traces
        .iter()
        .flat_map(|t| &t.spans)
        .find_map(|s| s.pod.as_ref())
        .map_or_else(|| uid.clone(), |p| format!("{}/{}", p.namespace, p.name));
    let domain = super::format::kelemetry::response(&traces).data;
    let explanation =
        crate::explain::explain(&pod, &domain).ok_or(ApiError::NothingToExplain { uid })?;
    let body = serde_json::to_vec(&explanation).map_err(|source| ApiError::Encode { source })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Most bytes of spans (by [`Span::approx_bytes`]) in one answer: with the API's cap on
/// requests at once, this bounds what answers hold in memory (the JSON about as much again).
pub const ANSWER_MAX_BYTES: usize = 2 << 20;

/// Asks the store for one more span than the limit, so that [`answer`] can tell when it cut.
fn fetch_spans(store: &Store, request: &TraceRequest) -> Result<Vec<Span>, StoreError> {
    let uids = match &request.pod {
        PodSelector::Name { namespace, name } => store.pod_uids_by_name(namespace, name)?,
        PodSelector::Uid(uid) => vec![uid.clone()],
    };
    let mut spans = Vec::new();
    for uid in uids {
        spans.extend(store.spans_for_pod_within(
            &uid,
            request.start_unix_ns,
            request.end_unix_ns,
            request.limit.saturating_add(1),
            ANSWER_MAX_BYTES.saturating_add(1),
        )?);
    }
    Ok(spans)
}

/// Keeps the spans that overlap the window (bounds included), the first `limit` of them by start,
/// and groups them into traces; every trace gets a warning when spans were left out.
pub fn answer(spans: Vec<Span>, request: &TraceRequest) -> Vec<TraceSpans> {
    let mut spans: Vec<Span> = spans
        .into_iter()
        .filter(|s| {
            s.start_unix_ns <= request.end_unix_ns && s.end_unix_ns >= request.start_unix_ns
        })
        .collect();
    spans.sort_by_key(|s| (s.start_unix_ns, s.end_unix_ns, s.span_id));
    spans.dedup_by(|a, b| a.trace_id == b.trace_id && a.span_id == b.span_id);
    let over_limit = spans.len() > request.limit;
    spans.truncate(request.limit);
    let mut bytes = 0usize;
    let within_bytes = spans
        .iter()
        .take_while(|span| {
            bytes = bytes.saturating_add(span.approx_bytes());
            bytes <= ANSWER_MAX_BYTES
        })
        .count();
    let over_bytes = within_bytes < spans.len();
    spans.truncate(within_bytes);
    let kept = spans.len();
    let mut traces = group_into_traces(spans);
    if over_limit || over_bytes {
        let warning = if over_bytes {
            format!(
                "nodetrace: the spans in the window take more than {} MiB, only the first {kept} \
                 by start time are here (ask for a shorter window)",
                ANSWER_MAX_BYTES >> 20
            )
        } else {
            format!(
                "nodetrace: more than {} spans in the window, only the first {} by start time are here",
                request.limit, request.limit
            )
        };
        for trace in &mut traces {
            trace.warnings.push(warning.clone());
        }
    }
    traces
}

/// The tags Kelemetry's frontend joins an object's spans on: `cluster` (when configured),
/// `resource=pods`, `namespace`, `name`, and the `node` the span comes from.
fn add_kelemetry_tags(traces: &mut [TraceSpans], cluster_name: Option<&str>) {
    use crate::model::{Attribute, keys};
    for span in traces.iter_mut().flat_map(|t| t.spans.iter_mut()) {
        let Some(pod) = span.pod.clone() else {
            continue;
        };
        let node = span.attr_str(keys::NODE_NAME).map(str::to_owned);
        let mut tags = vec![
            Attribute::str("resource", "pods"),
            Attribute::str("namespace", pod.namespace),
            Attribute::str("name", pod.name),
        ];
        tags.extend(cluster_name.map(|c| Attribute::str("cluster", c)));
        tags.extend(node.map(|n| Attribute::str("node", n)));
        span.attributes.extend(tags);
    }
}

/// `GET /healthz`: `ok` while every stage lives and makes progress; else 503 with a JSON body
/// that names each stage and what is wrong with it.
pub async fn healthz(State(state): State<ApiState>) -> Response {
    let problems = state
        .supervisor
        .as_ref()
        .map(|supervisor| supervisor.problems())
        .unwrap_or_default();
    if problems.is_healthy() {
        return "ok".into_response();
    }
    let body = serde_json::json!({ "status": "unhealthy", "problems": problems.describe() });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /readyz`: 200 when every component is ready, else 503; the body lists them.
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let report = state.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
