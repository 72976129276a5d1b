//! Ground truth from the kubelet itself: its own OTLP client span of every CRI call (logged by
//! the collector), each matched against the agent's span of the same call (same method and
//! pod, inside the client's window). Used by the real-node test and the benchmark.

use std::collections::{BTreeMap, BTreeSet};

use crate::rotel::LoggedSpan;

/// The CRI methods the agent traces (the others are polled: counted, not traced).
pub const TRACED: [&str; 9] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PullImage",
    "ExecSync",
];

/// A CRI span of the agent, reduced to what a match needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCall {
    pub method: String,
    pub pod_uid: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
}

/// How many of the kubelet's CRI client spans the agent has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agreement {
    pub total: usize,
    pub matched: usize,
    /// The kubelet's spans without a match: method and window.
    pub unmatched: Vec<String>,
    /// The kubelet's spans per method.
    pub methods: BTreeMap<String, usize>,
}

impl Agreement {
    pub fn percent(&self) -> f64 {
        100.0 * self.matched as f64 / self.total.max(1) as f64
    }

    /// Adds another pod's counts.
    pub fn add(&mut self, other: Agreement) {
        self.total += other.total;
        self.matched += other.matched;
        self.unmatched.extend(other.unmatched);
        for (method, count) in other.methods {
            *self.methods.entry(method).or_default() += count;
        }
    }
}

/// The kubelet's CRI client spans of traced methods in the traces of pod `uid` (the traces of
/// its `syncPod` spans, which carry the UID), each matched against `ours`.
pub fn agreement(
    logged: &BTreeMap<String, LoggedSpan>,
    ours: &[AgentCall],
    uid: &str,
) -> Agreement {
    let field = |span: &LoggedSpan, key: &str| span.fields.get(key).cloned().unwrap_or_default();
    let pod_traces: BTreeSet<String> = logged
        .values()
        .filter(|s| s.attributes.values().any(|v| v == &format!("Str({uid})")))
        .map(|s| field(s, "Trace ID"))
        .collect();
    let mut result = Agreement::default();
    for span in logged.values() {
        let name = field(span, "Name");
        let Some(method) = name
            .strip_prefix("runtime.v1.RuntimeService/")
            .or_else(|| name.strip_prefix("runtime.v1.ImageService/"))
        else {
            continue;
        };
        if !TRACED.contains(&method) || !pod_traces.contains(&field(span, "Trace ID")) {
            continue;
        }
        let (start, end): (u64, u64) = (
            field(span, "Start time").parse().unwrap_or(0),
            field(span, "End time").parse().unwrap_or(u64::MAX),
        );
        result.total += 1;
        *result.methods.entry(method.to_owned()).or_default() += 1;
        let found = ours.iter().any(|call| {
            call.method == method
                && call.pod_uid == uid
                && call.start_unix_ns >= start
                && call.end_unix_ns <= end
        });
        if found {
            result.matched += 1;
        } else {
            result.unmatched.push(format!("{method} [{start}, {end}]"));
        }
    }
    result
}
