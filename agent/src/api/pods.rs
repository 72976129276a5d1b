//! `GET /api/v1/pods?start=<µs>&end=<µs>&limit=<n>&offset=<n>`: the pods seen on this node in
//! the window, newest activity first, one page at a time.

use axum::{
    Extension, Json,
    extract::{Query, State, rejection::QueryRejection},
};
use serde::{Deserialize, Serialize};

use super::{
    handlers::ApiError,
    params::{ParamError, parse_count, parse_window},
    router::ApiState,
    serve::RequestSlot,
};
use crate::store::PodSummary;

/// Pods per page when `limit` is not given, and the most allowed.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 10_000;

/// One pod of the listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEntry {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Start of the pod's first span on this node, µs since the epoch.
    pub first_activity_us: u64,
    /// End of its last span, µs since the epoch.
    pub last_activity_us: u64,
    pub span_count: u64,
}

/// A page of the listing; `next_offset` is set when there is more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPage {
    pub pods: Vec<PodEntry>,
    pub next_offset: Option<usize>,
}

/// Orders newest activity first and cuts one page.
pub fn page(mut pods: Vec<PodSummary>, offset: usize, limit: usize) -> PodPage {
    pods.sort_by(|a, b| {
        b.last_unix_ns
            .cmp(&a.last_unix_ns)
            .then_with(|| a.pod.uid.cmp(&b.pod.uid))
    });
    let total = pods.len();
    let entries = pods
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|p| PodEntry {
            uid: p.pod.uid,
            namespace: p.pod.namespace,
            name: p.pod.name,
            first_activity_us: p.first_unix_ns / 1000,
            last_activity_us: p.last_unix_ns / 1000,
            span_count: p.span_count,
        })
        .collect();
    let next = offset.saturating_add(limit);
    PodPage {
        pods: entries,
        next_offset: (next < total).then_some(next),
    }
}

/// The handler.
pub async fn pods(
    State(state): State<ApiState>,
    slot: Option<Extension<RequestSlot>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<PodPage>, ApiError> {
    let Query(pairs) = query.map_err(|source| ApiError::Query { source })?;
    let params = || -> Result<(u64, u64, usize, usize), ParamError> {
        let (start, end) = parse_window(&pairs, super::handlers::now_unix_ns())?;
        let limit = parse_count(&pairs, "limit", DEFAULT_PAGE, 1, MAX_PAGE)?;
        let offset = parse_count(&pairs, "offset", 0, 0, usize::MAX)?;
        Ok((start, end, limit, offset))
    };
    let (start, end, limit, offset) = params().map_err(|source| ApiError::Params { source })?;
    let store = state.store.clone();
    let pods = tokio::task::spawn_blocking(move || {
        // Held until the store read ends, even when the request has timed out meanwhile.
        let _slot = slot;
        store.pods(start, end)
    })
    .await
    .map_err(|source| ApiError::Task { source })?
    .map_err(|source| ApiError::Store { source })?;
    Ok(Json(page(pods, offset, limit)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PodRef;

    fn summary(uid: &str, last: u64) -> PodSummary {
        PodSummary {
            pod: PodRef {
                uid: uid.to_owned(),
                namespace: "ns".to_owned(),
                name: format!("pod-{uid}"),
            },
            first_unix_ns: 1_000,
            last_unix_ns: last,
            span_count: 3,
        }
    }

    #[test]
    fn newest_first_in_pages() {
        let pods = vec![
            summary("a", 5_000),
            summary("b", 9_000),
            summary("c", 7_000),
        ];
        let first = page(pods.clone(), 0, 2);
        let uids: Vec<_> = first.pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(uids, ["b", "c"]);
        assert_eq!(first.next_offset, Some(2));
        assert_eq!(first.pods[0].last_activity_us, 9);
        let second = page(pods, 2, 2);
        assert_eq!(second.pods.len(), 1);
        assert_eq!(second.next_offset, None);
    }
}
