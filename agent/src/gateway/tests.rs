//! The gateway against in-process agents serving canned answers over real HTTP: merging, the
//! agents that did not reply named in the answer, deadlines, the bound on agents in flight, the
//! tokens both ways, and the pod listing.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
};

use super::{AgentSet, GatewayState, router, routes::merge_pods};
use crate::api::{
    format::{fixtures, group_into_traces, jaeger_model::TracesResponse, kelemetry},
    pods::{PodEntry, PodPage},
};

/// What a fake agent answers and how.
#[derive(Clone)]
struct FakeAgent {
    /// Which of the pod's spans this agent has (by index in the fixture).
    spans: Vec<usize>,
    delay: Duration,
    token: Option<&'static str>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    pods: Vec<PodEntry>,
}

async fn agent_traces(
    State(agent): State<FakeAgent>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    if let Some(token) = agent.token
        && headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {token}"))
    {
        return (StatusCode::UNAUTHORIZED, Vec::new());
    }
    let now = agent.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    agent.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(agent.delay).await;
    agent.in_flight.fetch_sub(1, Ordering::SeqCst);
    let all = fixtures::pod_trace();
    // Another pod than the fixture's has no spans here.
    let other_pod = query
        .iter()
        .any(|(key, value)| key == "pod_uid" && value != fixtures::POD_UID);
    let spans = if other_pod {
        Vec::new()
    } else {
        agent.spans.iter().map(|i| all[*i].clone()).collect()
    };
    let body = kelemetry::encode(&group_into_traces(spans)).expect("encodes");
    (StatusCode::OK, body)
}

async fn agent_pods(State(agent): State<FakeAgent>) -> Json<PodPage> {
    Json(PodPage {
        pods: agent.pods.clone(),
        next_offset: None,
    })
}

async fn serve(agent: FakeAgent) -> String {
    let app = Router::new()
        .route("/api/traces", get(agent_traces))
        .route("/api/v1/pods", get(agent_pods))
        .with_state(agent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn agent(spans: Vec<usize>) -> FakeAgent {
    FakeAgent {
        spans,
        delay: Duration::ZERO,
        token: None,
        in_flight: Arc::default(),
        most_in_flight: Arc::default(),
        pods: Vec::new(),
    }
}

/// An address nothing listens on.
fn dead_agent() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

async fn gateway(agents: Vec<String>, token: Option<&str>, agent_token: Option<&str>) -> String {
    let set = AgentSet {
        fixed: agents,
        service: None,
        scheme: "http".to_owned(),
        token: agent_token.map(str::to_owned),
        ca: Vec::new(),
        timeout: Duration::from_millis(500),
        max_in_flight: 2,
    };
    let app = router(
        GatewayState {
            agents: Arc::new(set),
        },
        token.map(Arc::from),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

const POD: &str = "pod_uid=3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";

async fn get_json(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn answers_of_all_agents_are_merged_and_the_silent_ones_named() {
    let a = serve(agent(vec![0, 1, 2])).await;
    let b = serve(agent(vec![3, 4, 5])).await;
    let dead = dead_agent();
    let url = gateway(vec![a, b, dead.clone()], None, None).await;
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}"), None).await;
    assert_eq!(status, 200, "{body}");
    let answer: TracesResponse = serde_json::from_str(&body).expect("Kelemetry JSON");
    assert_eq!(answer.data.len(), 1, "one trace");
    let trace = &answer.data[0];
    assert_eq!(trace.spans.len(), 6, "both agents' spans");
    assert!(
        trace.warnings.iter().any(|w| w.contains(&dead)),
        "{:?}",
        trace.warnings
    );
    for span in &trace.spans {
        let root = span.references.is_empty();
        assert_eq!(
            span.warnings.iter().any(|w| w.contains(&dead)),
            root,
            "the warning is on the root spans, where Kelemetry reads it: {}",
            span.operation_name
        );
    }
    // Jaeger UI JSON from the same merge; OTLP is the agents' own.
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}&format=jaeger"), None).await;
    assert_eq!(status, 200, "{body}");
    let ui: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ui["data"][0]["spans"].as_array().map(Vec::len), Some(6));
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}&format=otlp"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(&format!("{url}/api/traces"), None).await;
    assert_eq!(status, 400, "a bad query is the agents' 400: {body}");
}

#[tokio::test]
async fn no_reply_at_all_is_a_bad_gateway_and_slow_agents_are_cut() {
    let url = gateway(vec![dead_agent(), dead_agent()], None, None).await;
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}"), None).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("no agent replied"), "{body}");

    let fast = serve(agent(vec![0])).await;
    let slow = serve(FakeAgent {
        delay: Duration::from_secs(3),
        ..agent(vec![1])
    })
    .await;
    let url = gateway(vec![fast, slow.clone()], None, None).await;
    let started = std::time::Instant::now();
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the slow agent is not waited for"
    );
    assert!(
        body.contains(&slow) && body.contains("no answer within"),
        "{body}"
    );
}

#[tokio::test]
async fn at_most_the_bound_of_agents_are_asked_at_once() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(
            serve(FakeAgent {
                delay: Duration::from_millis(100),
                in_flight: in_flight.clone(),
                most_in_flight: most.clone(),
                ..agent(vec![i])
            })
            .await,
        );
    }
    let url = gateway(agents, None, None).await;
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(most.load(Ordering::SeqCst), 2, "max_in_flight is 2");
}

#[tokio::test]
async fn tokens_both_ways() {
    let a = serve(FakeAgent {
        token: Some("agent-secret"),
        ..agent(vec![0])
    })
    .await;
    let url = gateway(vec![a.clone()], Some("client-secret"), Some("agent-secret")).await;
    let (status, _) = get_json(&format!("{url}/api/traces?{POD}"), None).await;
    assert_eq!(status, 401);
    let (status, body) = get_json(&format!("{url}/api/traces?{POD}"), Some("client-secret")).await;
    assert_eq!(status, 200, "the gateway carries the agents' token: {body}");
    let (status, _) = get_json(&format!("{url}/healthz"), None).await;
    assert_eq!(status, 200, "liveness is open");
    let wrong = gateway(vec![a], None, Some("wrong")).await;
    let (status, body) = get_json(&format!("{wrong}/api/traces?{POD}"), None).await;
    assert_eq!(status, 502, "{body}");
}

fn entry(uid: &str, first: u64, last: u64, spans: u64) -> PodEntry {
    PodEntry {
        uid: uid.to_owned(),
        namespace: "ns".to_owned(),
        name: format!("pod-{uid}"),
        first_activity_us: first,
        last_activity_us: last,
        span_count: spans,
    }
}

#[tokio::test]
async fn pods_of_all_agents_are_merged_by_uid() {
    let a = serve(FakeAgent {
        pods: vec![entry("x", 10, 50, 3), entry("y", 5, 20, 2)],
        ..agent(vec![])
    })
    .await;
    let b = serve(FakeAgent {
        pods: vec![entry("x", 8, 40, 4)],
        ..agent(vec![])
    })
    .await;
    let url = gateway(vec![a, b], None, None).await;
    let (status, body) = get_json(&format!("{url}/api/v1/pods?limit=1"), None).await;
    assert_eq!(status, 200, "{body}");
    let page: PodPage = serde_json::from_str(&body).expect("page");
    assert_eq!(page.pods, vec![entry("x", 8, 50, 7)]);
    assert_eq!(page.next_offset, Some(1));
}

#[test]
fn merged_pod_pages_are_newest_first_and_paged() {
    let merged = merge_pods(
        vec![
            PodPage {
                pods: vec![entry("a", 1, 5, 1), entry("b", 1, 9, 1)],
                next_offset: None,
            },
            PodPage {
                pods: vec![entry("c", 1, 7, 1), entry("a", 0, 6, 2)],
                next_offset: None,
            },
        ],
        1,
        5,
    );
    let uids: Vec<&str> = merged.pods.iter().map(|p| p.uid.as_str()).collect();
    assert_eq!(uids, ["c", "a"]);
    assert_eq!(merged.pods[1], entry("a", 0, 6, 3));
    assert_eq!(merged.next_offset, None);
}

#[tokio::test]
async fn a_pod_is_explained_from_every_agent_s_spans() {
    let a = serve(agent(vec![0, 1, 2])).await;
    let b = serve(agent(vec![3, 4, 5, 6, 7])).await;
    let url = gateway(vec![a, b, dead_agent()], None, None).await;
    let uid = fixtures::POD_UID;
    let (status, body) = get_json(&format!("{url}/api/v1/pods/{uid}/explain"), None).await;
    assert_eq!(status, 200, "{body}");
    let explanation: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(explanation["schema"], 1);
    assert_eq!(explanation["pod"], "default/web-0");
    assert!(
        explanation["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["kind"] == "info")),
        "the silent agent is named: {body}"
    );
    let (status, _) = get_json(&format!("{url}/api/v1/pods/unknown/explain"), None).await;
    assert_eq!(status, 404);
}
