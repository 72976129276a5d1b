//! What the end-to-end tests (`e2e`, `e2e_cri`, `e2e_pods`) share: the agent running in the
//! test's process, polling its API, and the checks on the spans of a pod lifecycle.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the shared helpers"
)]

use clap::Parser as _;
use nodetrace::{
    api::{
        PodSelector,
        client::{Client, TraceQuery},
        format::jaeger_model::{Span, Trace},
    },
    cli::{Cli, Command},
};
use nodetrace_testbed::{
    CallWindow, CriCall, LifecycleReport, containerd::ContainerdLayout, cri::PodIdentity,
};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::sync::oneshot;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `test` is skipped because this is not root; says so on stderr (straight to it, so
/// that the harness does not capture the skip). `needs` tells what root is needed for.
pub fn skipped_unless_root(test: &str, needs: &str) -> bool {
    if is_root() {
        return false;
    }
    let _ = writeln!(std::io::stderr(), "{test}: skipped: needs root ({needs})");
    true
}

/// Names the step the test is in; a panic while it is alive says which step failed.
pub struct Step {
    name: String,
}

impl Step {
    pub fn start(started: Instant, name: &str) -> Self {
        eprintln!("[{:>6.2?}] step: {name}", started.elapsed());
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Straight to stderr: the harness shows it next to the panic message.
            let _ = writeln!(std::io::stderr(), "FAILED in step: {}", self.name);
        }
    }
}

/// What `/readyz` answered: its status code and body (`None` when it did not answer JSON).
pub type Readyz = Option<(u16, Value)>;

/// Whether `/readyz` reports `component` (e.g. `cri`, the CRI uprobes) ready.
pub fn component_ready(readyz: &Readyz, component: &str) -> bool {
    readyz
        .as_ref()
        .is_some_and(|(_, body)| body["components"][component]["state"] == "ready")
}

/// `/readyz`'s detail of `component`, e.g. for `cri`: `66 uprobes on /usr/bin/containerd
/// (inode 42; containerd, v1.6.20 built with go1.19.8, 19 handlers)`.
pub fn component_detail<'a>(readyz: &'a Readyz, component: &str) -> Option<&'a str> {
    readyz.as_ref()?.1["components"][component]["detail"].as_str()
}

/// What [`Agent::start`] and [`Agent::wait_ready`] wait for.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// `/readyz` answers success (every component ready or degraded) within the time given.
    Agent { within: Duration },
    /// `/readyz` reports each of these components `ready` within the time given.
    Components {
        names: &'static [&'static str],
        within: Duration,
    },
}

/// The agent, running in this process on its own tasks.
pub struct Agent {
    addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Why the agent ended, when it ended with an error.
    ended_with: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Agent {
    /// Starts the agent from its own command line (`nodetrace agent` with `--listen` on a free
    /// port, `--data-dir`, `--cri-socket`, `--runtime-state-root` when the socket is a testbed
    /// containerd's, and the test's `flags`, parsed like a user's, so options added later keep
    /// their defaults here), and waits until it is `ready`.
    pub async fn start(
        data_dir: &Path,
        cri_socket: &Path,
        flags: impl IntoIterator<Item = String>,
        ready: Ready,
    ) -> Self {
        let agent = Self::spawn(data_dir, cri_socket, flags);
        agent.wait_ready(ready).await;
        agent
    }

    /// Starts the agent like [`Agent::start`], without waiting for it to be ready.
    pub fn spawn(
        data_dir: &Path,
        cri_socket: &Path,
        flags: impl IntoIterator<Item = String>,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let argv = [
            "nodetrace".to_owned(),
            "agent".to_owned(),
            format!("--listen={addr}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--cri-socket={}", cri_socket.display()),
        ]
        .into_iter()
        // The private containerd keeps its bundles and pid files in its own state directory,
        // the only place the agent then reads them from.
        .chain(
            ContainerdLayout::of_socket(cri_socket)
                .map(|layout| format!("--runtime-state-root={}", layout.state.display())),
        )
        .chain(flags);
        let args = match Cli::try_parse_from(argv).expect("agent flags").command {
            Command::Agent(args) => args,
            other => panic!("not the agent command: {other:?}"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let ended_with = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = ended_with.clone();
        let task = tokio::spawn(async move {
            let result = nodetrace::daemon::run_until(args, async move {
                let _ = stopped.await;
            })
            .await;
            if let Err(err) = &result
                && let Ok(mut slot) = record.lock()
            {
                *slot = Some(format!("{err:#}"));
            }
            result
        });
        Self {
            addr,
            data_dir: data_dir.to_owned(),
            stop: Some(stop),
            task,
            ended_with,
        }
    }

    /// How the agent ended, when it ends on its own within `within` (without being stopped).
    pub async fn ended_within(&mut self, within: Duration) -> Option<anyhow::Result<()>> {
        tokio::time::timeout(within, &mut self.task)
            .await
            .ok()
            .map(|joined| joined.expect("agent task"))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `/readyz`: its status code and body.
    pub async fn readyz(&self) -> Readyz {
        let response = reqwest::get(format!("{}/readyz", self.url())).await.ok()?;
        let status = response.status().as_u16();
        let body = response.text().await.ok()?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// Waits until the agent is `ready`.
    pub async fn wait_ready(&self, ready: Ready) {
        match ready {
            Ready::Agent { within } => {
                self.wait_readyz(within, |answer| match answer {
                    Some((status, _)) if (200..300).contains(status) => Ok(()),
                    _ => Err("the agent did not become ready".to_owned()),
                })
                .await;
            }
            Ready::Components { names, within } => {
                self.wait_readyz(within, |answer| {
                    if names.iter().all(|name| component_ready(answer, name)) {
                        Ok(())
                    } else {
                        Err(format!("the agent's components {names:?} were not ready"))
                    }
                })
                .await;
            }
        }
    }

    /// Polls `/readyz` until `check` accepts the answer, and answers what it made of it. Fails
    /// when the agent stops, or after `timeout` with what `check` said was missing.
    pub async fn wait_readyz<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Readyz) -> Result<T, String>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = self.readyz().await;
            let missing = match check(&answer) {
                Ok(done) => return done,
                Err(missing) => missing,
            };
            assert!(
                !self.task.is_finished(),
                "the agent stopped ({:?}); last /readyz: {answer:?}",
                self.ended_with.lock().ok().and_then(|e| e.clone())
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{missing} within {timeout:?}; last /readyz: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics`, in Prometheus' text format.
    pub async fn scrape(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .expect("scrape /metrics");
        assert!(response.status().is_success());
        response.text().await.expect("metrics text")
    }

    /// Stops the agent, which must end without error `within` the time given.
    pub async fn stop(mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(within, &mut self.task)
            .await
            .unwrap_or_else(|_| panic!("the agent stops within {within:?}"))
            .expect("agent task")
            .expect("agent ran without error");
    }
}

/// The value of `series` in a Prometheus text scrape, written as there, labels included (e.g.
/// `nodetrace_probes_attached{kind="uprobe"}`).
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
}

/// The value of a span's tag, as text.
pub fn tag(span: &Span, key: &str) -> Option<String> {
    span.tag(key).map(|t| t.value_string())
}

/// The first 12 characters of an id (a container or sandbox id).
pub fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// The spans, a line each, for failure messages.
pub fn describe(spans: &[&Span]) -> String {
    spans
        .iter()
        .map(|s| {
            let tags: Vec<String> = s
                .tags
                .iter()
                .filter(|t| {
                    !matches!(
                        t.key.as_str(),
                        "process.command_args"
                            | "rpc.system"
                            | "rpc.service"
                            | "k8s.node.name"
                            | "k8s.pod.uid"
                            | "k8s.pod.name"
                            | "k8s.namespace.name"
                            | "container.runtime"
                            | "process.executable.path"
                            | "resource"
                            | "namespace"
                            | "name"
                            | "node"
                    )
                })
                .map(|t| {
                    let value = t.value_string();
                    if t.key.ends_with(".id") {
                        format!("{}={}", t.key, short(&value))
                    } else {
                        format!("{}={value}", t.key)
                    }
                })
                .collect();
            format!(
                "  {} id={} trace={} parent={} start={} dur={} [{}]",
                s.operation_name,
                s.span_id.to_hex(),
                s.trace_id.to_hex(),
                s.parent_span_id()
                    .map_or_else(|| "-".to_owned(), |p| p.to_hex()),
                s.start_unix_ns,
                s.duration_ns,
                tags.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The query for the traces of pod `namespace/name`.
pub fn by_name(namespace: &str, name: &str) -> TraceQuery {
    TraceQuery {
        pod: PodSelector::parse_name(&format!("{namespace}/{name}")).expect("selector"),
        start_us: None,
        end_us: None,
        limit: None,
    }
}

/// Polls the agent until `done` accepts the pod's spans (spans arrive after the processes exit
/// and the writer commits its batch); fails after `timeout`.
pub async fn spans_until(
    client: &Client,
    query: &TraceQuery,
    timeout: Duration,
    done: impl Fn(&[&Span]) -> bool,
) -> Vec<Trace> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let traces = client.traces(query).await.expect("query the agent");
        let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
        if done(&spans) {
            return traces;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expected spans of {:?} did not arrive within {timeout:?}; got:\n{}",
            query.pod,
            describe(&spans)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many `name` spans there are.
pub fn count(spans: &[&Span], name: &str) -> usize {
    spans.iter().filter(|s| s.operation_name == name).count()
}

/// How many `name` spans are about container (or sandbox) `id`.
pub fn count_of(spans: &[&Span], name: &str, id: &str) -> usize {
    spans
        .iter()
        .filter(|s| s.operation_name == name && tag(s, "container.id").as_deref() == Some(id))
        .count()
}

/// The number of OCI runtime spans (runc's or crun's) of `verb` on container `id`.
pub fn count_verb(spans: &[&Span], verb: &str, id: &str) -> usize {
    spans
        .iter()
        .filter(|s| {
            tag(s, "nodetrace.oci.verb").as_deref() == Some(verb)
                && tag(s, "container.id").as_deref() == Some(id)
        })
        .count()
}

/// The one `name` span.
pub fn only<'a>(spans: &[&'a Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| s.operation_name == name)
        .collect();
    match found.as_slice() {
        [span] => span,
        _ => panic!(
            "expected one `{name}` span, got {}; spans:\n{}",
            found.len(),
            describe(spans)
        ),
    }
}

/// Whether a whole [`PodLifecycle`](nodetrace_testbed::PodLifecycle) run has reached the store.
/// (containerd 1.x's shim runs `runc delete` twice for the container, 2.x's once.)
pub fn lifecycle_complete(report: &LifecycleReport) -> impl Fn(&[&Span]) -> bool + '_ {
    move |spans| {
        let (sandbox, container) = (&report.sandbox_id, &report.container_id);
        count(spans, "RemovePodSandbox") == 1
            && count_verb(spans, "delete", sandbox) >= 2
            && count_verb(spans, "delete", container) >= 1
            && count_of(spans, "container process", sandbox) == 1
            && count_of(spans, "container process", container) == 1
            && count_of(spans, "exec process", container) == 1
    }
}

/// The calls of a [`PodLifecycle`](nodetrace_testbed::PodLifecycle) that are traced
/// (ContainerStatus is polled: counted, not traced).
pub const LIFECYCLE_CALLS: [CriCall; 8] = [
    CriCall::RunPodSandbox,
    CriCall::CreateContainer,
    CriCall::StartContainer,
    CriCall::ExecSync,
    CriCall::StopContainer,
    CriCall::RemoveContainer,
    CriCall::StopPodSandbox,
    CriCall::RemovePodSandbox,
];

/// The window the client measured for `call`.
pub fn window(report: &LifecycleReport, call: CriCall) -> CallWindow {
    report
        .window(call)
        .unwrap_or_else(|| panic!("{call:?} was not called"))
}

pub fn end(span: &Span) -> u64 {
    span.start_unix_ns + span.duration_ns as u64
}

pub fn assert_inside(span: &Span, call: CallWindow, what: &str) {
    assert!(
        call.encloses(span.start_unix_ns, end(span)),
        "{what}: span [{}, {}] is not inside the window the client measured [{}, {}]",
        span.start_unix_ns,
        end(span),
        call.start_unix_ns,
        call.end_unix_ns
    );
}

/// The checks every CRI span shares: method, service, a root span inside the call's window.
pub fn assert_cri_span(span: &Span, method: &str, window: CallWindow) {
    assert_eq!(tag(span, "rpc.method").as_deref(), Some(method));
    assert_eq!(tag(span, "rpc.system").as_deref(), Some("grpc"), "{method}");
    let process = span.process.as_ref().expect("process");
    assert_eq!(process.service_name, "containerd", "{method}");
    assert!(span.references.is_empty(), "{method} is a root span");
    assert_inside(span, window, method);
}

/// The span carries the pod's UID, namespace and name.
pub fn assert_pod(span: &Span, pod: &PodIdentity) {
    let what = format!("{} of {:?}", span.operation_name, tag(span, "container.id"));
    assert_eq!(
        tag(span, "k8s.pod.uid").as_deref(),
        Some(pod.uid.as_str()),
        "{what}"
    );
    assert_eq!(
        tag(span, "k8s.namespace.name").as_deref(),
        Some(pod.namespace.as_str()),
        "{what}"
    );
    assert_eq!(
        tag(span, "k8s.pod.name").as_deref(),
        Some(pod.name.as_str()),
        "{what}"
    );
}

/// The CRI span of `call` in a lifecycle: the one span of its method, a successful root span
/// inside the call's window, about the lifecycle's sandbox or its container (name and image).
pub fn assert_lifecycle_call(spans: &[&Span], report: &LifecycleReport, call: CriCall) {
    let method = call.method();
    let span = only(spans, method);
    assert_cri_span(span, method, window(report, call));
    assert_eq!(tag(span, "error"), None, "{method} succeeded");
    match call {
        CriCall::RunPodSandbox | CriCall::StopPodSandbox | CriCall::RemovePodSandbox => {
            assert_eq!(
                tag(span, "k8s.pod.sandbox.id").as_deref(),
                Some(report.sandbox_id.as_str()),
                "{method}"
            );
        }
        _ => {
            assert_eq!(
                tag(span, "container.id").as_deref(),
                Some(report.container_id.as_str()),
                "{method}"
            );
            assert_eq!(
                tag(span, "k8s.container.name").as_deref(),
                Some(report.container_name.as_str()),
                "{method}"
            );
            assert_eq!(
                tag(span, "container.image.name").as_deref(),
                Some(report.image.as_str()),
                "{method}"
            );
        }
    }
}

/// The OCI runtime (runc or crun) and process spans of a lifecycle and the CRI call each must
/// hang under.
pub fn expected_parent(span: &Span) -> Option<&'static str> {
    let sandbox = tag(span, "nodetrace.container.type").as_deref() == Some("sandbox");
    let name = span.operation_name.as_str();
    let name = name
        .strip_prefix("runc ")
        .or_else(|| name.strip_prefix("crun "))
        .unwrap_or(name);
    Some(match (name, sandbox) {
        ("create" | "start", true) => "RunPodSandbox",
        ("create" | "start", false) => "StartContainer",
        ("kill" | "delete", true) => "StopPodSandbox",
        ("kill" | "delete", false) => "StopContainer",
        ("exec" | "exec process", _) => "ExecSync",
        ("container process", true) => "RunPodSandbox",
        ("container process", false) => "StartContainer",
        _ => return None,
    })
}

/// The spans of an OTLP/JSON body by span id, each with its resource's attributes; a span id
/// twice fails.
pub fn otlp_spans(body: &Value) -> BTreeMap<String, (Value, Value)> {
    let mut spans = BTreeMap::new();
    for resource_spans in body["resourceSpans"].as_array().expect("resourceSpans") {
        let resource = &resource_spans["resource"]["attributes"];
        for scope in resource_spans["scopeSpans"].as_array().expect("scopeSpans") {
            for span in scope["spans"].as_array().expect("spans") {
                let id = span["spanId"].as_str().expect("spanId").to_owned();
                let old = spans.insert(id.clone(), (resource.clone(), span.clone()));
                assert_eq!(old, None, "span {id} twice");
            }
        }
    }
    spans
}
