//! Router tests against a real store in a temporary directory.

use super::format::jaeger_model::TracesResponse;
use super::format::{fixtures, golden};
use super::handlers::answer;
use super::params::{PodSelector, TraceRequest};
use super::{ApiState, ComponentState, Readiness, router};
use crate::model::{PodRef, Span, TraceId};
use crate::store::{Store, StoreConfig};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const MS: u64 = 1_000_000;

struct Setup {
    _dir: tempfile::TempDir,
    app: Router,
    readiness: Readiness,
}

fn setup_with(token: Option<&str>, spans: &[Span]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open store");
    store.put_batch(spans).expect("put spans");
    let readiness = Readiness::new();
    readiness.set_ready("store");
    let app = router(ApiState::new(
        store,
        readiness.clone(),
        token.map(str::to_owned),
    ));
    Setup {
        _dir: dir,
        app,
        readiness,
    }
}

fn setup(token: Option<&str>) -> Setup {
    setup_with(token, &fixtures::pod_trace())
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

async fn get(app: &Router, uri: &str, token: Option<&str>) -> Answer {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, content_type) = (response.status(), header_text(header::CONTENT_TYPE));
    let www_authenticate = header_text(header::WWW_AUTHENTICATE);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        content_type,
        www_authenticate,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

fn us(ns: u64) -> u64 {
    ns / 1000
}

/// The query Kelemetry's HTTP trace extension sends with its sample config (url.Values.Encode:
/// sorted keys, `/` escaped), around the whole fixture.
fn kelemetry_uri(pod_param: &str) -> String {
    format!(
        "/api/traces?end={}&limit=100&node=node-a&{pod_param}&start={}",
        us(fixtures::T0 + 10_000 * MS),
        us(fixtures::T0 - 60_000 * MS)
    )
}

fn decode(body: &str) -> TracesResponse {
    serde_json::from_str(body).expect("jaeger model JSON")
}

fn operation_names(body: &str) -> Vec<String> {
    decode(body)
        .data
        .iter()
        .flat_map(|t| &t.spans)
        .map(|s| s.operation_name.clone())
        .collect()
}

#[tokio::test]
async fn by_name_answers_the_golden_kelemetry_json() {
    let s = setup(None);
    let answer = get(&s.app, &kelemetry_uri("pod=default%2Fweb-0"), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    // The encoder's golden output plus the tags Kelemetry joins on (resource, namespace, ...).
    assert_eq!(
        answer.body,
        golden::minify_json(&golden::read("kelemetry_pod_trace_api.json"))
    );
}

#[tokio::test]
async fn by_uid_answers_the_same() {
    let s = setup(None);
    let by_uid = get(
        &s.app,
        &kelemetry_uri(&format!("pod_uid={}", fixtures::POD_UID)),
        None,
    )
    .await;
    let by_name = get(&s.app, &kelemetry_uri("pod=default/web-0"), None).await;
    assert_eq!(by_uid.status, StatusCode::OK);
    assert_eq!(by_uid.body, by_name.body);
}

#[tokio::test]
async fn otlp_and_jaeger_formats_answer_their_golden_json() {
    let s = setup(None);
    // Jaeger and OTLP answers carry the synthesized pod root span; Kelemetry's does not (it
    // parents parentless spans under its own pod span).
    for (format, file) in [
        ("otlp", "otlp_pod_trace_api.json"),
        ("jaeger", "jaeger_ui_pod_trace_api.json"),
        ("kelemetry", "kelemetry_pod_trace_api.json"),
    ] {
        let uri = format!("{}&format={format}", kelemetry_uri("pod=default/web-0"));
        let answer = get(&s.app, &uri, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{format}: {}", answer.body);
        let roots = answer.body.matches("nodetrace.synthesized").count();
        if format == "kelemetry" {
            // Kept as the exact bytes: Go's escaping (`\u0026`) must not be re-encoded.
            golden::assert_golden(file, &format!("{}\n", answer.body));
            assert_eq!(roots, 0, "{format}: no synthesized root span");
        } else {
            let value: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
            let pretty = serde_json::to_string_pretty(&value).expect("pretty") + "\n";
            golden::assert_golden(file, &pretty);
            assert_eq!(roots, 1, "{format}: one synthesized root span");
        }
    }
}

#[tokio::test]
async fn spans_are_clipped_to_the_window() {
    let s = setup(None);
    let uri = format!(
        "/api/traces?pod=default/web-0&start={}&end={}",
        us(fixtures::T0 + 1200 * MS),
        us(fixtures::T0 + 1400 * MS)
    );
    let answer = get(&s.app, &uri, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        operation_names(&answer.body),
        ["CreateContainer", "runc create", "StartContainer"]
    );
}

#[test]
fn answer_clips_even_what_the_store_returns_too_much_of() {
    let request = TraceRequest {
        pod: PodSelector::Uid(fixtures::POD_UID.to_owned()),
        start_unix_ns: fixtures::T0 + 1200 * MS,
        end_unix_ns: fixtures::T0 + 1395 * MS,
        limit: 100,
        format: Default::default(),
    };
    let traces = answer(fixtures::pod_trace(), &request);
    let names: Vec<&str> = traces[0].spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["CreateContainer", "runc create", "StartContainer"]);
    assert!(traces[0].warnings.is_empty());
}

#[tokio::test]
async fn limit_cuts_by_start_time_and_warns() {
    let s = setup(None);
    let answer = get(
        &s.app,
        &format!("{}&limit=3", kelemetry_uri("pod=default/web-0")),
        None,
    )
    .await;
    // kelemetry_uri already has limit=100: a repeated parameter is a 400.
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let uri = format!(
        "/api/traces?pod=default/web-0&start={}&end={}&limit=3",
        us(fixtures::T0),
        us(fixtures::T0 + 10_000 * MS)
    );
    let answer = get(&s.app, &uri, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        operation_names(&answer.body),
        ["RunPodSandbox", "runc create", "runc start"]
    );
    let warnings = &decode(&answer.body).data[0].warnings;
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("more than 3 spans"), "{warnings:?}");
}

#[tokio::test]
async fn an_answer_is_cut_at_its_byte_cap_and_warns() {
    // The fixture's spans, each made ~1 MiB by a long attribute: the answer stops at its cap.
    let spans: Vec<Span> = fixtures::pod_trace()
        .into_iter()
        .map(|mut span| {
            span.attributes
                .push(crate::model::Attribute::str("bulk", "x".repeat(1 << 20)));
            span
        })
        .collect();
    assert!(spans.len() > 4, "the fixture has enough spans to be cut");
    let s = setup_with(None, &spans);
    let uri = format!(
        "/api/traces?pod=default/web-0&start={}&end={}&limit=100",
        us(fixtures::T0),
        us(fixtures::T0 + 10_000 * MS)
    );
    let answer = get(&s.app, &uri, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let kept = operation_names(&answer.body).len();
    let cap_mib = super::handlers::ANSWER_MAX_BYTES >> 20;
    assert!(
        (1..cap_mib.max(2)).contains(&kept),
        "{kept} spans of ~1 MiB in a {cap_mib} MiB answer"
    );
    let warnings = &decode(&answer.body).data[0].warnings;
    let expected = format!("more than {cap_mib} MiB");
    assert!(
        warnings.iter().any(|w| w.contains(&expected)),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_reused_pod_name_answers_every_pod() {
    let mut spans = fixtures::pod_trace();
    let mut second = fixtures::pod_trace()[1].clone();
    second.trace_id = TraceId::from_pod_uid("0b9e6a2c-0000-4000-8000-000000000001");
    second.pod = Some(PodRef {
        uid: "0b9e6a2c-0000-4000-8000-000000000001".to_owned(),
        namespace: fixtures::NAMESPACE.to_owned(),
        name: fixtures::POD_NAME.to_owned(),
    });
    second.start_unix_ns += 9_000 * MS;
    second.end_unix_ns += 9_000 * MS;
    spans.push(second);
    let s = setup_with(None, &spans);
    let answer = get(&s.app, &kelemetry_uri("pod=default/web-0"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let traces = decode(&answer.body).data;
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0].spans.len(), fixtures::pod_trace().len());
    assert_eq!(traces[1].spans.len(), 1);
}

#[tokio::test]
async fn unknown_pods_and_empty_windows_answer_no_traces() {
    let s = setup(None);
    for uri in [
        kelemetry_uri("pod=default/nope"),
        kelemetry_uri("pod_uid=nope"),
        // The default window is the last 24 hours: the fixture is older.
        "/api/traces?pod=default/web-0".to_owned(),
    ] {
        let answer = get(&s.app, &uri, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(answer.body, r#"{"data":[]}"#, "{uri}");
    }
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_json_message() {
    let s = setup(None);
    let cases = [
        ("/api/traces", "one of `pod`"),
        ("/api/traces?pod=web-0", "`pod` must be"),
        ("/api/traces?pod=default/", "`pod` must be"),
        ("/api/traces?pod=%2Fweb-0", "`pod` must be"),
        ("/api/traces?pod=%FF/x", "`pod` must be"),
        ("/api/traces?pod=a/b&pod_uid=u", "cannot be given together"),
        ("/api/traces?pod_uid=", "`pod_uid` must be"),
        ("/api/traces?pod_uid=u&start=abc", "`start` must be"),
        ("/api/traces?pod_uid=u&end=-5", "`end` must be"),
        (
            "/api/traces?pod_uid=u&start=99999999999999999999",
            "`start` must be",
        ),
        ("/api/traces?pod_uid=u&start=10&end=5", "is after `end`"),
        ("/api/traces?pod_uid=u&limit=0", "`limit` must be"),
        (
            "/api/traces?pod_uid=u&limit=10001",
            "above the cap of 10000 spans per answer",
        ),
        ("/api/traces?pod_uid=u&format=zipkin", "unknown `format`"),
        ("/api/traces?pod_uid=u&pod_uid=v", "more than once"),
    ];
    for (uri, fragment) in cases {
        let answer = get(&s.app, uri, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/json"),
            "{uri}"
        );
        let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON error");
        let message = body["error"].as_str().expect("error message");
        assert!(
            message.starts_with("invalid parameters: "),
            "{uri}: {message}"
        );
        assert!(message.contains(fragment), "{uri}: {message}");
    }
}

#[tokio::test]
async fn token_guards_everything_but_healthz() {
    let s = setup(Some("s3cret"));
    let uri = kelemetry_uri("pod=default/web-0");
    for token in [None, Some("wrong"), Some("s3cre"), Some("S3CRET")] {
        for path in [uri.as_str(), "/readyz"] {
            let answer = get(&s.app, path, token).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert!(answer.body.contains("bearer token"));
            assert_eq!(
                answer.www_authenticate.as_deref(),
                Some("Bearer realm=\"nodetrace\"")
            );
        }
    }
    assert_eq!(
        get(&s.app, &uri, Some("s3cret")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&s.app, "/readyz", Some("s3cret")).await.status,
        StatusCode::OK
    );
    let health = get(&s.app, "/healthz", None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );
}

#[tokio::test]
async fn without_a_token_nothing_is_guarded() {
    let s = setup(None);
    let answer = get(
        &s.app,
        &kelemetry_uri("pod=default/web-0"),
        Some("anything"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_follows_the_components() {
    let s = setup(None);
    s.readiness.set("ebpf", ComponentState::Starting);
    let answer = get(&s.app, "/readyz", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.body,
        r#"{"ready":false,"components":{"ebpf":{"state":"starting"},"store":{"state":"ready"}}}"#
    );
    s.readiness.set_ready("ebpf");
    let answer = get(&s.app, "/readyz", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.starts_with(r#"{"ready":true,"#));
}

#[tokio::test]
async fn odd_requests_never_panic() {
    let s = setup(Some("t"));
    for uri in [
        "/api/traces?%",
        "/api/traces?&&&=",
        "/api/traces?pod=%00/%00",
        "/api/traces?pod_uid=%E2%80%A8",
        "/api/traces?pod_uid=u&start=&end=",
        "/api/traces?pod_uid=u&limit=18446744073709551616",
        "/api/traces?pod_uid=u&start=0&end=18446744073709551",
        "/nope",
    ] {
        let answer = get(&s.app, uri, Some("t")).await;
        assert!(
            [
                StatusCode::OK,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND
            ]
            .contains(&answer.status),
            "{uri}: {}",
            answer.status
        );
    }
}

#[tokio::test]
async fn pods_are_listed_with_their_activity_and_bad_pages_are_refused() {
    let s = setup(None);
    let spans = fixtures::pod_trace();
    let first = spans.iter().map(|s| s.start_unix_ns).min().expect("spans") / 1000;
    let last = spans.iter().map(|s| s.end_unix_ns).max().expect("spans") / 1000;
    let window = format!("start={}&end={}", first - 1, last + 1);
    let answer = get(&s.app, &format!("/api/v1/pods?{window}"), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let page: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    let pods = page["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["uid"], fixtures::POD_UID);
    assert_eq!(pods[0]["namespace"], "default");
    assert_eq!(pods[0]["name"], "web-0");
    assert_eq!(pods[0]["span_count"], spans.len());
    assert_eq!(pods[0]["first_activity_us"], first);
    assert_eq!(pods[0]["last_activity_us"], last);
    assert_eq!(page["next_offset"], serde_json::Value::Null);

    let before = get(
        &s.app,
        &format!("/api/v1/pods?start=1&end={}", first - 10),
        None,
    )
    .await;
    assert_eq!(before.body, r#"{"pods":[],"next_offset":null}"#);
    for bad in [
        "limit=0",
        "limit=x",
        "offset=-1",
        "start=5&end=4",
        "limit=1&limit=2",
    ] {
        let answer = get(&s.app, &format!("/api/v1/pods?{bad}"), None).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
        assert!(answer.body.contains("\"error\""), "{bad}: {}", answer.body);
    }
}

/// The exact query Kelemetry's HTTP trace extension sends (Go's `url.Values.Encode()`: keys
/// sorted, `/` escaped, its extra `node` parameter), answered with the tags it joins on.
#[tokio::test]
async fn kelemetry_http_extension_query_shape_is_answered_with_its_join_tags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open store");
    store.put_batch(&fixtures::pod_trace()).expect("put spans");
    let readiness = Readiness::new();
    readiness.set_ready("store");
    let app =
        router(ApiState::new(store, readiness, None).with_cluster_name(Some("prod-1".to_owned())));
    let spans = fixtures::pod_trace();
    let start = spans.iter().map(|s| s.start_unix_ns).min().expect("spans") / 1000;
    let end = spans.iter().map(|s| s.end_unix_ns).max().expect("spans") / 1000 + 1;
    let uri =
        format!("/api/traces?end={end}&limit=100&node=node-a&pod=default%2Fweb-0&start={start}");
    let answer = get(&app, &uri, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    let spans = body["data"][0]["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), fixtures::pod_trace().len());
    for span in spans {
        let tag = |key: &str| {
            span["tags"]
                .as_array()
                .and_then(|tags| tags.iter().find(|t| t["key"] == key))
                .and_then(|t| t["v_str"].as_str())
                .map(str::to_owned)
        };
        assert_eq!(tag("cluster").as_deref(), Some("prod-1"));
        assert_eq!(tag("resource").as_deref(), Some("pods"));
        assert_eq!(tag("namespace").as_deref(), Some("default"));
        assert_eq!(tag("name").as_deref(), Some("web-0"));
        assert_eq!(tag("node").as_deref(), Some("node-a"));
    }
}

#[tokio::test]
async fn a_limit_above_the_cap_is_a_400_that_names_the_cap() {
    let s = setup(None);
    let answer = get(&s.app, "/api/traces?pod=default/web-0&limit=10001", None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        answer.body,
        r#"{"error":"invalid parameters: `limit` 10001 is above the cap of 10000 spans per answer: ask for at most 10000, or for a shorter window"}"#
    );
    let at_the_cap = get(&s.app, "/api/traces?pod=default/web-0&limit=10000", None).await;
    assert_eq!(at_the_cap.status, StatusCode::OK, "{}", at_the_cap.body);
}

#[tokio::test]
async fn pods_and_metrics_need_the_token_when_one_is_configured() {
    let s = setup(Some("s3cret"));
    let metrics = Router::new().route("/metrics", axum::routing::get(|| async { "# EOF\n" }));
    let app = s
        .app
        .clone()
        .merge(super::router::behind_token(metrics, Some("s3cret".into())));
    for path in ["/api/v1/pods", "/metrics"] {
        let refused = get(&app, path, None).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        let answered = get(&app, path, Some("s3cret")).await;
        assert_eq!(answered.status, StatusCode::OK, "{path}: {}", answered.body);
    }
    assert_eq!(get(&app, "/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_pod_s_start_is_explained_as_golden_json() {
    let setup = setup(None);
    let uid = fixtures::POD_UID;
    let uri = format!(
        "/api/v1/pods/{uid}/explain?start={}&end={}",
        us(fixtures::T0),
        us(fixtures::T0 + 60_000 * MS)
    );
    let answer = get(&setup.app, &uri, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let value: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    golden::assert_golden(
        "explain_pod_trace.json",
        &(serde_json::to_string_pretty(&value).expect("pretty") + "\n"),
    );
    assert_eq!(value["schema"], 1);
    let missing = get(&setup.app, "/api/v1/pods/no-such-uid/explain", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert!(
        missing.body.contains("nothing to explain"),
        "{}",
        missing.body
    );
    let both = get(
        &setup.app,
        &format!("/api/v1/pods/{uid}/explain?pod_uid=x"),
        None,
    )
    .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.body);
}
