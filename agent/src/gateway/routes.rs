//! The gateway's routes: the agents' own `/api/traces` and `/api/v1/pods` contract, answered
//! by asking every agent and merging, with the agents that did not reply named in the answer.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::{
    client::TraceQuery,
    format::{
        Format,
        jaeger_model::{Trace, TracesResponse},
        jaeger_ui,
        kelemetry::DETACHED_PARENT_TAG,
    },
    params::parse_trace_query,
    pods::{PodEntry, PodPage},
};

use super::agents::{AgentSet, Fanned};

/// What the handlers share.
#[derive(Clone)]
pub struct GatewayState {
    pub agents: Arc<AgentSet>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The warning a trace gets for each agent that did not reply.
fn unreachable_warnings<T>(fanned: &Fanned<T>) -> Vec<String> {
    fanned
        .failures
        .iter()
        .map(|(agent, reason)| format!("agent {agent} did not reply: {reason}"))
        .collect()
}

/// `GET /api/traces`: the pod's spans from every agent, merged into one answer per trace.
pub async fn traces(
    State(state): State<GatewayState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(pairs)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string".to_owned());
    };
    let request = match parse_trace_query(&pairs, crate::api::handlers::now_unix_ns()) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    if request.format == Format::Otlp {
        return error(
            StatusCode::BAD_REQUEST,
            "the gateway answers format=kelemetry and format=jaeger; ask an agent for otlp"
                .to_owned(),
        );
    }
    let (mut traces, warnings) = match merged_traces(&state, &request).await {
        Ok(merged) => merged,
        Err(response) => return response,
    };
    for trace in &mut traces {
        add_warnings(trace, &warnings);
    }
    let body = match request.format {
        Format::JaegerUi => serde_json::to_vec(&jaeger_ui::Response {
            total: traces.len(),
            data: traces.iter().map(jaeger_ui::from_domain).collect(),
            limit: 0,
            offset: 0,
            errors: None,
        }),
        _ => crate::api::format::go_json::to_vec(&TracesResponse { data: traces }),
    };
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// `GET /api/v1/pods/{uid}/explain`: the pod's start explained from the spans of every agent.
pub async fn explain(
    State(state): State<GatewayState>,
    axum::extract::Path(uid): axum::extract::Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(mut pairs)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string".to_owned());
    };
    pairs.push(("pod_uid".to_owned(), uid.clone()));
    let request = match parse_trace_query(&pairs, crate::api::handlers::now_unix_ns()) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let (traces, warnings) = match merged_traces(&state, &request).await {
        Ok(merged) => merged,
        Err(response) => return response,
    };
    let pod = traces
        .iter()
        .flat_map(|t| &t.spans)
        .find_map(|s| {
            let tag = |key: &str| s.tag(key).map(|t| t.v_str.clone());
            Some(format!(
                "{}/{}",
                tag("k8s.namespace.name")?,
                tag("k8s.pod.name")?
            ))
        })
        .unwrap_or_else(|| uid.clone());
    match crate::explain::explain(&pod, &traces) {
        Some(mut explanation) => {
            explanation.findings.extend(
                warnings
                    .into_iter()
                    .map(|text| crate::explain::Finding { kind: "info", text }),
            );
            Json(explanation).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("pod {uid} has no RunPodSandbox on any node in the window: nothing to explain"),
        ),
    }
}

/// The pod's traces from every agent, merged, and a warning for each agent that did not reply;
/// a 502 when none replied.
async fn merged_traces(
    state: &GatewayState,
    request: &crate::api::params::TraceRequest,
) -> Result<(Vec<Trace>, Vec<String>), Response> {
    let query = TraceQuery {
        pod: request.pod.clone(),
        start_us: Some(request.start_unix_ns / 1000),
        end_us: Some(request.end_unix_ns.div_ceil(1000)),
        limit: Some(request.limit),
    };
    let fanned = state
        .agents
        .ask(move |client| {
            let query = query.clone();
            async move { client.traces(&query).await.map_err(|e| e.to_string()) }
        })
        .await;
    let warnings = unreachable_warnings(&fanned);
    if fanned.answers.is_empty() && !fanned.failures.is_empty() {
        return Err(error(
            StatusCode::BAD_GATEWAY,
            format!("no agent replied: {}", warnings.join("; ")),
        ));
    }
    let traces = crate::query::merge_traces(fanned.answers.into_iter().map(|(_, t)| t).collect());
    Ok((traces, warnings))
}

/// The trace's warnings, and the same on its root spans, where Kelemetry reads them.
fn add_warnings(trace: &mut Trace, warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    trace.warnings.extend(warnings.iter().cloned());
    for span in &mut trace.spans {
        let is_root =
            span.references.is_empty() || span.tags.iter().any(|t| t.key == DETACHED_PARENT_TAG);
        if is_root {
            span.warnings.extend(warnings.iter().cloned());
        }
    }
}

/// Most pods asked of each agent for one page.
const PODS_PER_AGENT: usize = 1000;

/// `GET /api/v1/pods`: the pods every agent saw, merged by UID (first and last activity over
/// all nodes, spans summed), newest activity first.
pub async fn pods(
    State(state): State<GatewayState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(pairs)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string".to_owned());
    };
    let params = || -> Result<(u64, u64, usize, usize), crate::api::params::ParamError> {
        let (start, end) =
            crate::api::params::parse_window(&pairs, crate::api::handlers::now_unix_ns())?;
        let limit = crate::api::params::parse_count(&pairs, "limit", 100, 1, 1000)?;
        let offset = crate::api::params::parse_count(&pairs, "offset", 0, 0, usize::MAX)?;
        Ok((start, end, limit, offset))
    };
    let (start, end, limit, offset) = match params() {
        Ok(values) => values,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let fanned = state
        .agents
        .ask(move |client| async move {
            client
                .pods(start / 1000, end.div_ceil(1000), PODS_PER_AGENT, 0)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    if fanned.answers.is_empty() && !fanned.failures.is_empty() {
        return error(
            StatusCode::BAD_GATEWAY,
            format!(
                "no agent replied: {}",
                unreachable_warnings(&fanned).join("; ")
            ),
        );
    }
    let pages = fanned.answers.into_iter().map(|(_, page)| page).collect();
    Json(merge_pods(pages, offset, limit)).into_response()
}

/// One page of the pods of several agents, merged by UID.
pub fn merge_pods(pages: Vec<PodPage>, offset: usize, limit: usize) -> PodPage {
    let mut by_uid: HashMap<String, PodEntry> = HashMap::new();
    for entry in pages.into_iter().flat_map(|p| p.pods) {
        by_uid
            .entry(entry.uid.clone())
            .and_modify(|known| {
                known.first_activity_us = known.first_activity_us.min(entry.first_activity_us);
                known.last_activity_us = known.last_activity_us.max(entry.last_activity_us);
                known.span_count += entry.span_count;
            })
            .or_insert(entry);
    }
    let mut pods: Vec<PodEntry> = by_uid.into_values().collect();
    pods.sort_by(|a, b| {
        b.last_activity_us
            .cmp(&a.last_activity_us)
            .then_with(|| a.uid.cmp(&b.uid))
    });
    let total = pods.len();
    let pods: Vec<PodEntry> = pods.into_iter().skip(offset).take(limit).collect();
    let next = offset.saturating_add(limit);
    PodPage {
        pods,
        next_offset: (next < total).then_some(next),
    }
}
