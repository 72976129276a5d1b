//! The critical path of a pod's start, computed from its spans.

use serde::Serialize;

use crate::api::format::jaeger_model::{Span, Trace};

/// Spans that are steps of the start, in the order a pod worker makes them.
const STEP_SPANS: [&str; 5] = [
    "VolumeManager.WaitForAttachAndMount",
    "RunPodSandbox",
    "PullImage",
    "CreateContainer",
    "StartContainer",
];

/// A gap shorter than this is not reported (the kubelet's own bookkeeping between calls).
const GAP_MIN_NS: u64 = 50_000_000;

/// One step on the critical path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// e.g. `PullImage`.
    pub name: String,
    /// The container or image it was for, when the span says.
    pub subject: Option<String>,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// Share of the whole start, 0..1.
    pub share: f64,
    /// The error the step ended with.
    pub error: Option<String>,
}

/// Time on the path no step covers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gap {
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// Where: "between CreateContainer returning and StartContainer being called".
    pub position: String,
    pub share: f64,
}

/// A sentence about the start, most important first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `error`, `slow` or `info`.
    pub kind: &'static str,
    pub text: String,
}

/// The explanation of a pod's start (schema version 1).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    pub schema: u32,
    pub pod: String,
    /// What the path starts with (`Kubelet.SyncPod` or `RunPodSandbox`).
    pub from: String,
    /// What it ends with (`first process of container main`), or why it has no end.
    pub to: String,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// Whether the pod's containers all started.
    pub started: bool,
    pub steps: Vec<Step>,
    pub gaps: Vec<Gap>,
    pub findings: Vec<Finding>,
}

fn tag<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.tag(key)
        .map(|t| t.v_str.as_str())
        .filter(|s| !s.is_empty())
}

fn end(span: &Span) -> u64 {
    span.start_unix_ns
        .saturating_add(u64::try_from(span.duration_ns).unwrap_or(0))
}

fn is_kubelet(span: &Span) -> bool {
    span.tag("nodetrace.kubelet.function").is_some()
}

fn is_error(span: &Span) -> bool {
    span.tag("error").is_some_and(|t| t.v_bool)
}

fn error_text(span: &Span) -> Option<String> {
    if !is_error(span) {
        return None;
    }
    Some(
        tag(span, "cni.error.message")
            .or_else(|| tag(span, "otel.status_description"))
            .unwrap_or("failed")
            .to_owned(),
    )
}

/// Explains the start of the pod whose spans are in `traces` (named `pod` in the answer).
pub fn explain(pod: &str, traces: &[Trace]) -> Option<Explanation> {
    let spans: Vec<&Span> = traces.iter().flat_map(|t| &t.spans).collect();
    let first_sandbox = spans
        .iter()
        .filter(|s| s.operation_name == "RunPodSandbox")
        .min_by_key(|s| s.start_unix_ns)?;
    // The sync that made the sandbox, when kubelet's spans are there.
    let sync = spans
        .iter()
        .filter(|s| {
            s.operation_name == "Kubelet.SyncPod"
                && s.start_unix_ns <= first_sandbox.start_unix_ns
                && end(s) >= first_sandbox.start_unix_ns
        })
        .min_by_key(|s| s.start_unix_ns);
    let (from, start) = match sync {
        Some(sync) => ("Kubelet.SyncPod".to_owned(), sync.start_unix_ns),
        None => ("RunPodSandbox".to_owned(), first_sandbox.start_unix_ns),
    };
    // The first process of each container (the sandbox's pause process excluded).
    let mut first_process: Vec<(&str, u64)> = Vec::new();
    for span in spans
        .iter()
        .filter(|s| s.operation_name == "container process")
    {
        let Some(name) = tag(span, "k8s.container.name") else {
            continue;
        };
        match first_process.iter_mut().find(|(n, _)| *n == name) {
            Some((_, at)) => *at = (*at).min(span.start_unix_ns),
            None => first_process.push((name, span.start_unix_ns)),
        }
    }
    let created: Vec<&str> = spans
        .iter()
        .filter(|s| s.operation_name == "CreateContainer")
        .filter_map(|s| tag(s, "k8s.container.name"))
        .collect();
    let started = !created.is_empty()
        && created
            .iter()
            .all(|name| first_process.iter().any(|(n, _)| n == name));
    let last_start = first_process.iter().max_by_key(|(_, at)| *at);
    let (to, end_ns) = match (started, last_start) {
        (true, Some((name, at))) => (format!("first process of container {name}"), *at),
        _ => {
            // Not started: the path runs to the end of the last step seen.
            let last = spans
                .iter()
                .filter(|s| STEP_SPANS.contains(&s.operation_name.as_str()))
                .map(|s| end(s))
                .max()
                .unwrap_or(start);
            (
                "the last call seen (the pod did not start)".to_owned(),
                last,
            )
        }
    };
    let total = end_ns.saturating_sub(start).max(1);
    let share = |ns: u64| ns as f64 / total as f64;
    let mut steps: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| STEP_SPANS.contains(&s.operation_name.as_str()))
        .filter(|s| s.start_unix_ns >= start && s.start_unix_ns <= end_ns)
        .collect();
    steps.sort_by_key(|s| s.start_unix_ns);
    let mut explanation = Explanation {
        schema: 1,
        pod: pod.to_owned(),
        from,
        to,
        start_unix_ns: start,
        duration_ns: total,
        started,
        steps: Vec::new(),
        gaps: Vec::new(),
        findings: Vec::new(),
    };
    let mut cursor = (start, explanation.from.clone(), true);
    for span in &steps {
        let begin = span.start_unix_ns.max(cursor.0);
        if begin > cursor.0 && begin - cursor.0 >= GAP_MIN_NS {
            let position = if cursor.2 {
                format!(
                    "between {} starting and {} being called",
                    cursor.1, span.operation_name
                )
            } else {
                format!(
                    "between {} returning and {} being called",
                    cursor.1, span.operation_name
                )
            };
            explanation.gaps.push(Gap {
                start_unix_ns: cursor.0,
                duration_ns: begin - cursor.0,
                position,
                share: share(begin - cursor.0),
            });
        }
        let span_end = end(span);
        let duration = u64::try_from(span.duration_ns).unwrap_or(0);
        explanation.steps.push(Step {
            name: span.operation_name.clone(),
            subject: tag(span, "k8s.container.name")
                .or_else(|| tag(span, "container.image.name"))
                .map(str::to_owned),
            start_unix_ns: span.start_unix_ns,
            duration_ns: duration,
            share: share(duration),
            error: error_text(span),
        });
        if span_end > cursor.0 {
            cursor = (span_end, span.operation_name.clone(), false);
        }
    }
    if end_ns > cursor.0 && end_ns - cursor.0 >= GAP_MIN_NS && started {
        explanation.gaps.push(Gap {
            start_unix_ns: cursor.0,
            duration_ns: end_ns - cursor.0,
            position: format!(
                "between {} returning and the container's first process",
                cursor.1
            ),
            share: share(end_ns - cursor.0),
        });
    }
    explanation.findings = findings(&explanation, &spans);
    Some(explanation)
}

fn seconds(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else {
        format!("{} ms", ns / 1_000_000)
    }
}

/// What went wrong first, then what took the time.
fn findings(explanation: &Explanation, spans: &[&Span]) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Failed calls and runs, in time order. Kubelet's own spans only pass an error up from
    // the calls they made: they are named only when nothing below them failed.
    let mut failed: Vec<&&Span> = spans
        .iter()
        .filter(|s| is_error(s) && s.operation_name != "container process")
        .collect();
    if failed.iter().any(|s| !is_kubelet(s)) {
        failed.retain(|s| !is_kubelet(s));
    }
    failed.sort_by_key(|s| s.start_unix_ns);
    for span in failed.iter().take(5) {
        let subject = tag(span, "k8s.container.name")
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        findings.push(Finding {
            kind: "error",
            text: format!(
                "{}{subject} failed: {}",
                span.operation_name,
                error_text(span).unwrap_or_default()
            ),
        });
    }
    // Containers whose process ended badly on its own (not stopped by a StopContainer).
    for span in spans
        .iter()
        .filter(|s| s.operation_name == "container process")
    {
        let Some(name) = tag(span, "k8s.container.name") else {
            continue;
        };
        let stopped = spans.iter().any(|s| {
            s.operation_name == "StopContainer"
                && tag(s, "k8s.container.name") == Some(name)
                && s.start_unix_ns <= end(span)
        });
        if stopped {
            continue;
        }
        let code = span.tag("process.exit.code").map(|t| t.v_int64);
        let signal = span.tag("nodetrace.process.exit.signal").map(|t| t.v_int64);
        if let Some(signal) = signal.filter(|s| *s != 0) {
            findings.push(Finding {
                kind: "error",
                text: format!("container {name}'s process was killed by signal {signal}"),
            });
        } else if let Some(code) = code.filter(|c| *c != 0) {
            findings.push(Finding {
                kind: "error",
                text: format!("container {name}'s process exited with code {code}"),
            });
        }
    }
    let attempts = spans
        .iter()
        .filter(|s| s.operation_name == "StartContainer")
        .count();
    let created = spans
        .iter()
        .filter(|s| s.operation_name == "CreateContainer")
        .filter_map(|s| tag(s, "k8s.container.name"))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if created > 0 && attempts > created {
        findings.push(Finding {
            kind: "error",
            text: format!(
                "{attempts} container starts for {created} container(s): a container is restarting"
            ),
        });
    }
    if !explanation.started {
        findings.push(Finding {
            kind: "error",
            text: "the pod's containers did not all start".to_owned(),
        });
    }
    // The biggest contributors to the time, steps and gaps together.
    let mut parts: Vec<(u64, String)> = explanation
        .steps
        .iter()
        .map(|s| {
            let subject = s
                .subject
                .as_ref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default();
            (
                s.duration_ns,
                format!(
                    "{}{subject} took {} ({:.0}% of the start)",
                    s.name,
                    seconds(s.duration_ns),
                    100.0 * s.share
                ),
            )
        })
        .chain(explanation.gaps.iter().map(|g| {
            (
                g.duration_ns,
                format!(
                    "{} {}: kubelet ({:.0}% of the start)",
                    seconds(g.duration_ns),
                    g.position,
                    100.0 * g.share
                ),
            )
        }))
        .collect();
    parts.sort_by_key(|part| std::cmp::Reverse(part.0));
    for (_, text) in parts.into_iter().take(3) {
        findings.push(Finding { kind: "slow", text });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::format::{group_into_traces, kelemetry};
    use crate::model::{self, Attribute, PodRef, SpanId, SpanKind, SpanStatus, TraceId, keys};

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_800_000_000_000_000_000;

    fn span(name: &str, service: &str, from_ms: u64, to_ms: u64) -> model::Span {
        model::Span {
            trace_id: TraceId::from_pod_uid("uid-1"),
            span_id: SpanId::random(),
            parent_span_id: None,
            name: name.to_owned(),
            service: service.to_owned(),
            kind: SpanKind::Internal,
            start_unix_ns: T0 + from_ms * MS,
            end_unix_ns: T0 + to_ms * MS,
            pod: Some(PodRef {
                uid: "uid-1".to_owned(),
                namespace: "shop".to_owned(),
                name: "web-0".to_owned(),
            }),
            attributes: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    fn with(mut span: model::Span, key: &str, value: &str) -> model::Span {
        span.attributes.push(Attribute::str(key, value));
        span
    }

    fn explained(spans: Vec<model::Span>) -> Explanation {
        let traces = kelemetry::response(&group_into_traces(spans)).data;
        explain("shop/web-0", &traces).expect("an explanation")
    }

    /// A start whose time went to an image pull, with kubelet's 412 ms between creating and
    /// starting the container.
    fn slow_pull() -> Vec<model::Span> {
        vec![
            span("Kubelet.SyncPod", "kubelet", 0, 4100),
            span("VolumeManager.WaitForAttachAndMount", "kubelet", 10, 310),
            span("RunPodSandbox", "containerd", 320, 500),
            span("CNI ADD bridge", "containerd", 350, 360),
            with(
                span("PullImage", "containerd", 510, 3510),
                keys::IMAGE_NAME,
                "registry.local/app:2",
            ),
            with(
                span("CreateContainer", "containerd", 3520, 3550),
                keys::CONTAINER_NAME,
                "main",
            ),
            with(
                span("StartContainer", "containerd", 3962, 4000),
                keys::CONTAINER_NAME,
                "main",
            ),
            with(
                span("container process", "container", 3990, 9000),
                keys::CONTAINER_NAME,
                "main",
            ),
        ]
    }

    #[test]
    fn the_path_runs_from_the_sync_to_the_first_process_with_each_step_s_share() {
        let e = explained(slow_pull());
        assert_eq!(e.from, "Kubelet.SyncPod");
        assert_eq!(e.to, "first process of container main");
        assert!(e.started);
        assert_eq!(e.duration_ns, 3990 * MS);
        let names: Vec<&str> = e.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "VolumeManager.WaitForAttachAndMount",
                "RunPodSandbox",
                "PullImage",
                "CreateContainer",
                "StartContainer"
            ]
        );
        let pull = &e.steps[2];
        assert_eq!(pull.subject.as_deref(), Some("registry.local/app:2"));
        assert!((pull.share - 3000.0 / 3990.0).abs() < 1e-9);
        let gap = e
            .gaps
            .iter()
            .find(|g| g.duration_ns == 412 * MS)
            .expect("the 412 ms gap");
        assert_eq!(
            gap.position,
            "between CreateContainer returning and StartContainer being called"
        );
        assert_eq!(e.findings[0].kind, "slow");
        assert!(
            e.findings[0]
                .text
                .starts_with("PullImage registry.local/app:2 took 3.00 s (75% of the start)"),
            "{:?}",
            e.findings
        );
        assert!(
            e.findings[1].text.starts_with(
                "412 ms between CreateContainer returning and StartContainer being called"
            ),
            "{:?}",
            e.findings
        );
        let text = super::super::render(&e);
        assert!(text.contains("started in 3.990 s"), "{text}");
    }

    #[test]
    fn a_failed_start_names_the_error_first() {
        let mut spans = slow_pull();
        spans.retain(|s| s.name != "container process");
        let start = spans
            .iter_mut()
            .find(|s| s.name == "StartContainer")
            .expect("StartContainer");
        start.status = SpanStatus::Error(
            "runc create failed: exec: \"/app\": no such file or directory".to_owned(),
        );
        let e = explained(spans);
        assert!(!e.started);
        assert_eq!(e.findings[0].kind, "error");
        assert_eq!(
            e.findings[0].text,
            "StartContainer (main) failed: runc create failed: exec: \"/app\": no such file or directory"
        );
        assert!(
            e.steps
                .iter()
                .any(|s| s.name == "StartContainer" && s.error.is_some())
        );
    }

    #[test]
    fn without_kubelet_spans_the_path_starts_at_the_sandbox_and_restarts_are_named() {
        let mut spans = slow_pull();
        spans.retain(|s| s.service != "kubelet");
        spans.push(with(
            span("StartContainer", "containerd", 9100, 9150),
            keys::CONTAINER_NAME,
            "main",
        ));
        let mut exited = with(
            span("container process", "container", 3990, 9000),
            keys::CONTAINER_NAME,
            "main",
        );
        exited
            .attributes
            .push(Attribute::int(keys::PROCESS_EXIT_CODE, 1));
        spans.retain(|s| s.name != "container process");
        spans.push(exited);
        let e = explained(spans);
        assert_eq!(e.from, "RunPodSandbox");
        assert_eq!(e.duration_ns, (3990 - 320) * MS);
        let errors: Vec<&str> = e
            .findings
            .iter()
            .filter(|f| f.kind == "error")
            .map(|f| f.text.as_str())
            .collect();
        assert!(
            errors.contains(&"container main's process exited with code 1"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|t| t.contains("a container is restarting")),
            "{errors:?}"
        );
    }

    #[test]
    fn no_sandbox_no_explanation() {
        let traces = kelemetry::response(&group_into_traces(vec![span(
            "Kubelet.SyncPod",
            "kubelet",
            0,
            10,
        )]))
        .data;
        assert!(explain("shop/web-0", &traces).is_none());
    }
}
