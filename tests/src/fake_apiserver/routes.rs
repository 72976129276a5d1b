//! The fake API server's answers: pod lists, watch streams, 410 Gone, and query parsing.

use super::{Body, State, Watch, node_of};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub(super) fn answer(
    state: &Mutex<State>,
    request: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let uri = request.uri();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(String::new, |p| p.to_string());
    let mut state = state.lock().expect("state lock");
    state.requests.push(path_and_query.clone());
    if uri.path() != "/api/v1/pods" {
        return status(StatusCode::NOT_FOUND, "NotFound");
    }
    let node = query_value(&path_and_query, "fieldSelector").map(|selector| {
        match selector.strip_prefix("spec.nodeName=") {
            Some(node) => node.to_owned(),
            None => panic!("unexpected field selector {selector:?}"),
        }
    });
    if query_value(&path_and_query, "watch").as_deref() != Some("true") {
        let items: Vec<&Pod> = state
            .pods
            .values()
            .filter(|pod| node.as_deref().is_none_or(|n| node_of(pod) == n))
            .collect();
        let list = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        });
        return json_response(StatusCode::OK, list.to_string());
    }
    if state.gone_answers > 0 {
        state.gone_answers -= 1;
        return status(StatusCode::GONE, "Expired");
    }
    let from: u64 = query_value(&path_and_query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if from < state.compacted {
        return json_response(StatusCode::OK, format!("{}\n", gone_event()));
    }
    let (events, rx) = mpsc::unbounded_channel();
    let watch = Watch {
        node,
        events,
        pending: Arc::default(),
    };
    for (version, pod_node, line) in &state.log {
        if *version > from && watch.node.as_deref().is_none_or(|n| n == pod_node) {
            watch.send(Bytes::from(format!("{line}\n")));
        }
    }
    let pending = watch.pending.clone();
    state.watches.push(watch);
    let frames = futures::stream::unfold((rx, pending), |(mut rx, pending)| async move {
        let bytes = rx.recv().await?;
        pending.fetch_sub(1, Ordering::SeqCst);
        Some((Ok::<_, Infallible>(Frame::data(bytes)), (rx, pending)))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header value"),
    );
    response
}

pub(super) fn gone_event() -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410,
    }})
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, body.to_string())
}

fn json_response(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header value"),
    );
    response
}

/// The percent-decoded value of `name` in the query of `path_and_query`.
pub fn query_value(path_and_query: &str, name: &str) -> Option<String> {
    let (_, query) = path_and_query.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}
