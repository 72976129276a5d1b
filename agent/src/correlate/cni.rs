//! CNI plugin runs: the exec of a plugin by the container runtime, or by a plugin that
//! delegates to another (`bridge` runs its IPAM plugin, `host-local`), and its exit become one
//! span. A plugin hangs under the CRI call that caused it: ADD (and the DEL that undoes a
//! failed ADD) under the RunPodSandbox of the same pod, DEL under the StopPodSandbox or
//! RemovePodSandbox of its sandbox; a delegated plugin hangs under the plugin that ran it. The
//! parent is chosen at the exec, while the call (or the calling plugin) is still running.
//!
//! What is known of a run comes from the `CNI_*` variables the runtime set for it, which the
//! kernel side copies out of the process's environment. The runtime chose them, but they carry
//! the pod's name and namespace and arrive through a byte buffer: they are parsed as untrusted
//! text (bounded, lossy, never failing). STATUS and GC runs (a kubelet's status polls make the
//! runtime ask every plugin for its STATUS) are about no pod: they are counted, not traced.
//!
//! A plugin prints its result, or its error (`{"code": 11, "msg": "..."}`), as JSON on its
//! standard output; the kernel side copies what it writes there, and the span of a plugin that
//! failed carries the error's message.

use std::{collections::HashMap, path::Path, sync::atomic::Ordering};

use crate::{
    ebpf::{CniOutputRecord, ExecRecord, ExitRecord},
    model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, capped, keys},
    oci::ContainerCache,
};

use super::{Correlator, NodeView};

/// Most plugin runs remembered between exec and exit, and most bytes they may hold (a run
/// holds its span so far, about 1.5 KiB, at most ~8 KiB with every value at its cap, and room
/// for its output); the oldest are forgotten beyond.
const PENDING_MAX: usize = 1024;
const PENDING_MAX_BYTES: usize = 6 << 20;
/// Most `key=value` pairs of `CNI_ARGS` looked at.
const CNI_ARGS_MAX: usize = 32;
/// Most directories of `CNI_PATH` kept.
const CNI_PATH_MAX: usize = 16;
/// Most bytes of a plugin's standard output kept (its error is one JSON document, well under).
const OUTPUT_MAX_BYTES: usize = 2048;

/// What the `CNI_*` variables of a plugin run say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CniEnv {
    /// `CNI_COMMAND`: ADD, DEL, CHECK, STATUS, GC (or whatever the runtime wrote).
    pub command: Option<String>,
    /// `CNI_CONTAINERID`: for a pod, its sandbox's id.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: the network namespace's path.
    pub netns: Option<String>,
    /// `CNI_IFNAME`: the interface made in it.
    pub ifname: Option<String>,
    /// `CNI_PATH`: the directories plugins are looked up in.
    pub path: Vec<String>,
    /// The pod, from `CNI_ARGS` (`K8S_POD_UID`, `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, which
    /// containerd and CRI-O pass); none without a UID.
    pub pod: Option<PodRef>,
}

impl CniEnv {
    /// Reads `CNI_*` entries (`NAME=value`). The first entry of a name counts (as for a Go
    /// plugin's `os.Getenv`); other names and entries without `=` are ignored; every value is
    /// cut to [`crate::model::MAX_TENANT_TEXT_BYTES`].
    pub(crate) fn parse(entries: &[String]) -> Self {
        let mut env = Self::default();
        let mut args_seen = false;
        let mut path_seen = false;
        for entry in entries {
            let Some((name, raw)) = entry.split_once('=') else {
                continue;
            };
            let value = Some(capped(raw)).filter(|v| !v.is_empty());
            let slot = match name {
                "CNI_COMMAND" => &mut env.command,
                "CNI_CONTAINERID" => &mut env.container_id,
                "CNI_NETNS" => &mut env.netns,
                "CNI_IFNAME" => &mut env.ifname,
                // Parsed whole (each field is capped), not cut to the cap first.
                "CNI_ARGS" => {
                    if !std::mem::replace(&mut args_seen, true) {
                        env.pod = pod_of_args(raw);
                    }
                    continue;
                }
                "CNI_PATH" => {
                    if !std::mem::replace(&mut path_seen, true) {
                        env.path = raw
                            .split(':')
                            .filter(|dir| !dir.is_empty())
                            .take(CNI_PATH_MAX)
                            .map(capped)
                            .collect();
                    }
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = value;
            }
        }
        env
    }

    /// Whether a run with these variables is about a pod sandbox (STATUS and GC are about the
    /// whole network, and name no container).
    fn is_about_a_sandbox(&self) -> bool {
        let network_wide = self
            .command
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("STATUS") || c.eq_ignore_ascii_case("GC"));
        !network_wide && self.container_id.is_some()
    }

    /// Whether `executable` is in one of the `CNI_PATH` directories (where libcni finds the
    /// plugins it runs); true when `CNI_PATH` was not given.
    fn finds_plugin(&self, executable: &str) -> bool {
        if self.path.is_empty() {
            return true;
        }
        let dir = Path::new(executable).parent();
        self.path.iter().any(|p| dir == Some(Path::new(p)))
    }
}

/// The pod of `CNI_ARGS` (`K=V;K=V...`, as libcni joins them).
fn pod_of_args(args: &str) -> Option<PodRef> {
    let mut pod = PodRef::default();
    for pair in args.split(';').take(CNI_ARGS_MAX) {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let slot = match key {
            "K8S_POD_UID" => &mut pod.uid,
            "K8S_POD_NAMESPACE" => &mut pod.namespace,
            "K8S_POD_NAME" => &mut pod.name,
            _ => continue,
        };
        if slot.is_empty() {
            *slot = capped(value);
        }
    }
    (!pod.uid.is_empty()).then_some(pod)
}

/// One plugin run between its exec and its exit.
#[derive(Debug)]
struct CniRun {
    exec_ktime_ns: u64,
    /// The span as far as the exec tells it (its parent chosen); `None` for a run that makes
    /// no span (STATUS, GC).
    span: Option<Span>,
    /// What the plugin wrote to its standard output, at most [`OUTPUT_MAX_BYTES`].
    output: Vec<u8>,
    /// More was written than `output` holds.
    output_cut: bool,
}

impl CniRun {
    /// About how many bytes the run holds, the room its output may take included (so that the
    /// figure does not change while the run is remembered).
    fn approx_bytes(&self) -> usize {
        size_of::<Self>()
            + self
                .span
                .as_ref()
                .map_or(0, |span| span.approx_bytes() + OUTPUT_MAX_BYTES)
    }
}

/// What a failed plugin said: the `msg` (and `details`) of the CNI error it printed, with its
/// `code`, else its output as one line of text; cut to
/// [`crate::model::MAX_TENANT_TEXT_BYTES`].
pub(crate) fn error_message(output: &[u8]) -> Option<(String, Option<i64>)> {
    #[derive(serde::Deserialize)]
    struct CniError {
        code: Option<i64>,
        msg: Option<String>,
        details: Option<String>,
    }
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(CniError { code, msg, details }) = serde_json::from_str::<CniError>(text)
        && let Some(msg) = msg.filter(|m| !m.trim().is_empty())
    {
        let message = match details.filter(|d| !d.trim().is_empty()) {
            Some(details) => format!("{}: {}", msg.trim(), details.trim()),
            None => msg.trim().to_owned(),
        };
        return Some((capped(&one_line(&message)), code));
    }
    Some((capped(&one_line(text)), None))
}

/// `text` with its runs of whitespace (newlines included) made one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The plugin runs in progress.
#[derive(Debug)]
pub(super) struct CniRuns {
    runs: HashMap<u32, CniRun>,
    /// What `runs` hold, by [`CniRun::approx_bytes`].
    bytes: usize,
    /// Service name of the spans: the runtime that runs the plugins (`containerd`, `cri-o`).
    service: String,
}

impl CniRuns {
    pub(super) fn new(service: &str) -> Self {
        Self {
            runs: HashMap::new(),
            bytes: 0,
            service: service.to_owned(),
        }
    }

    pub(super) fn set_service(&mut self, service: &str) {
        service.clone_into(&mut self.service);
    }

    /// About how many bytes the runs in progress hold.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds what run `tgid` wrote to its standard output (nothing for a run without a span).
    fn add_output(&mut self, tgid: u32, data: &[u8], cut: bool) {
        let Some(run) = self.runs.get_mut(&tgid) else {
            return;
        };
        if run.span.is_none() {
            return;
        }
        let room = OUTPUT_MAX_BYTES.saturating_sub(run.output.len());
        let kept = &data[..data.len().min(room)];
        run.output.extend_from_slice(kept);
        run.output_cut |= cut || kept.len() < data.len();
    }

    fn remove(&mut self, tgid: u32) -> Option<CniRun> {
        let run = self.runs.remove(&tgid)?;
        self.bytes = self.bytes.saturating_sub(run.approx_bytes());
        Some(run)
    }

    /// Remembers a run (replacing one of a reused pid whose exit was lost); forgets the oldest
    /// beyond [`PENDING_MAX`] runs or [`PENDING_MAX_BYTES`], and answers how many.
    fn insert(&mut self, tgid: u32, run: CniRun) -> u64 {
        self.remove(tgid);
        let bytes = run.approx_bytes();
        let mut evicted = 0;
        while self.runs.len() >= PENDING_MAX || self.bytes + bytes > PENDING_MAX_BYTES {
            // A scan, but only when full: plugin runs last milliseconds, so this is rare.
            let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, run)| run.exec_ktime_ns)
                .map(|(tgid, _)| *tgid)
            else {
                break;
            };
            self.remove(oldest);
            evicted += 1;
        }
        self.bytes += bytes;
        self.runs.insert(tgid, run);
        evicted
    }
}

/// The pod of sandbox `id`, when the cache knows it.
fn sandbox_pod(containers: &mut ContainerCache, id: &str) -> Option<PodRef> {
    if let Some(pod) = containers.sandbox_pod(id) {
        return Some(pod.clone());
    }
    containers
        .get(id)
        .map(|info| info.pod.clone())
        .filter(|pod| !pod.uid.is_empty())
}

/// The program's name: the last component of the path it was run from.
fn program_name(filename: &str) -> &str {
    filename.rsplit('/').next().unwrap_or(filename)
}

impl<N: NodeView> Correlator<N> {
    /// A CNI plugin (or a program a plugin ran) exec'd: its span is started and parented.
    pub(super) fn on_cni_exec(&mut self, exec: ExecRecord) {
        let env = CniEnv::parse(&exec.argv);
        let caller = self
            .cni
            .runs
            .get(&exec.ppid)
            .and_then(|run| run.span.as_ref())
            .map(|span| (span.span_id, span.trace_id, span.attr_int(keys::ATTEMPT)));
        // A run that makes no span: what it is about is not a pod sandbox, or its caller's was
        // not (a plugin delegating STATUS to its IPAM plugin).
        let caller_untraced = self.cni.runs.contains_key(&exec.ppid) && caller.is_none();
        let span = (env.is_about_a_sandbox() && !caller_untraced)
            .then(|| self.cni_span(&exec, &env, caller));
        let evicted = self.cni.insert(
            exec.tgid,
            CniRun {
                exec_ktime_ns: exec.ktime_ns,
                span,
                output: Vec::new(),
                output_cut: false,
            },
        );
        self.stats.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// A CNI plugin wrote to its standard output.
    pub(super) fn on_cni_output(&mut self, output: &CniOutputRecord) {
        self.cni.add_output(output.tgid, &output.data, output.cut);
    }

    /// A CNI plugin run ended: its span, unless it makes none.
    pub(super) fn on_cni_exit(&mut self, exit: &ExitRecord) -> Option<Span> {
        let Some(run) = self.cni.remove(exit.tgid) else {
            self.stats.unmatched_exits.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(mut span) = run.span else {
            self.stats.cni_untraced.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        span.end_unix_ns = self
            .clock
            .to_unix_ns(exit.ktime_ns.max(run.exec_ktime_ns))
            .max(span.start_unix_ns);
        if let Some(code) = exit.exit_status {
            span.attributes
                .push(Attribute::int(keys::PROCESS_EXIT_CODE, i64::from(code)));
        }
        if let Some(signal) = exit.signal {
            span.attributes
                .push(Attribute::int(keys::PROCESS_EXIT_SIGNAL, i64::from(signal)));
        }
        let failure = match (exit.exit_status, exit.signal) {
            (Some(0), _) | (None, None) => None,
            (Some(code), _) => Some(format!("{} exited with status {code}", span.name)),
            (None, Some(signal)) => Some(format!("{} was killed by signal {signal}", span.name)),
        };
        // The output of a plugin that succeeded is its result (addresses, routes): not kept.
        span.status = match (failure, error_message(&run.output)) {
            (None, _) => SpanStatus::Unset,
            (Some(failure), None) => SpanStatus::Error(failure),
            (Some(failure), Some((message, code))) => {
                span.attributes
                    .push(Attribute::str(keys::CNI_ERROR_MESSAGE, message.clone()));
                if let Some(code) = code {
                    span.attributes
                        .push(Attribute::int(keys::CNI_ERROR_CODE, code));
                }
                if run.output_cut {
                    span.attributes
                        .push(Attribute::bool(keys::CNI_ERROR_MESSAGE_TRUNCATED, true));
                }
                SpanStatus::Error(format!("{failure}: {message}"))
            }
        };
        Some(span)
    }

    /// The span of a run as its exec tells it, with its parent: the calling plugin's span
    /// (`caller`: its span id, trace id and attempt), else the CRI call that caused it.
    fn cni_span(
        &mut self,
        exec: &ExecRecord,
        env: &CniEnv,
        caller: Option<(SpanId, TraceId, Option<i64>)>,
    ) -> Span {
        let program = program_name(&exec.filename).to_owned();
        let command = env.command.as_deref().unwrap_or_default();
        // A program a plugin runs that is not a plugin (`iptables`, run by `bridge` for
        // `ipMasq`) keeps the CNI variables it inherited: it is named by itself.
        let helper = caller.is_some() && !env.finds_plugin(&exec.filename);
        let name = match (helper, command) {
            (true, _) => program.clone(),
            (false, "") => format!("CNI {program}"),
            (false, command) => format!("CNI {command} {program}"),
        };
        let mut attributes = Vec::with_capacity(20);
        if !helper {
            attributes.push(Attribute::str(keys::CNI_PLUGIN, program.clone()));
        }
        let texts = [
            (keys::CNI_COMMAND, &env.command),
            (keys::CNI_IFNAME, &env.ifname),
            (keys::CNI_NETNS, &env.netns),
            (keys::CNI_CONTAINER_ID, &env.container_id),
        ];
        for (key, value) in texts {
            if let Some(value) = value {
                attributes.push(Attribute::str(key, value.clone()));
            }
        }
        attributes.push(Attribute::str(
            keys::CONTAINER_RUNTIME,
            self.cni.service.clone(),
        ));
        if !self.config.node_name.is_empty() {
            attributes.push(Attribute::str(
                keys::NODE_NAME,
                self.config.node_name.clone(),
            ));
        }
        // The plugin works for the pod's sandbox: like the sandbox's runc runs, it carries the
        // sandbox's id as its container, which is also what ties it to its CRI call.
        if let Some(id) = &env.container_id {
            attributes.push(Attribute::str(keys::CONTAINER_ID, id.clone()));
            attributes.push(Attribute::str(keys::CONTAINER_TYPE, "sandbox"));
        }
        // Without the pod in CNI_ARGS, the sandbox's pod as RunPodSandbox made it known.
        let (pod, source) = match (env.pod.clone(), env.container_id.as_deref()) {
            (Some(pod), _) => (Some(pod), "cni"),
            (None, Some(id)) => (sandbox_pod(&mut self.containers, id), "cache"),
            (None, None) => (None, "cache"),
        };
        match &pod {
            Some(pod) => {
                attributes.push(Attribute::str(keys::POD_UID, pod.uid.clone()));
                attributes.push(Attribute::str(keys::NAMESPACE, pod.namespace.clone()));
                attributes.push(Attribute::str(keys::POD_NAME, pod.name.clone()));
                attributes.push(Attribute::bool(keys::ATTRIBUTED, true));
                attributes.push(Attribute::str(keys::ATTRIBUTION_SOURCE, source));
            }
            None => {
                attributes.push(Attribute::bool(keys::ATTRIBUTED, false));
                attributes.push(Attribute::str(
                    keys::ATTRIBUTION_ERROR,
                    "CNI_ARGS names no pod and its sandbox is not known",
                ));
            }
        }
        attributes.extend([
            Attribute::int(keys::PROCESS_PID, i64::from(exec.tgid)),
            Attribute::int(keys::PROCESS_PARENT_PID, i64::from(exec.ppid)),
            Attribute::str(keys::PROCESS_EXECUTABLE_NAME, program),
            Attribute::str(keys::PROCESS_EXECUTABLE_PATH, exec.filename.clone()),
        ]);
        if exec.argv_truncated {
            attributes.push(Attribute::bool(keys::CNI_ENV_TRUNCATED, true));
        }
        let trace_id = match &pod {
            Some(pod) => TraceId::from_pod_uid(&pod.uid),
            None => TraceId::hashed(&[
                "unattributed",
                &exec.tgid.to_string(),
                &exec.ktime_ns.to_string(),
            ]),
        };
        let start_unix_ns = self.clock.to_unix_ns(exec.ktime_ns);
        let mut span = Span {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: None,
            name,
            service: self.cni.service.clone(),
            kind: SpanKind::Internal,
            start_unix_ns,
            end_unix_ns: start_unix_ns,
            pod,
            attributes,
            status: SpanStatus::Unset,
        };
        let attempt = match caller {
            Some((parent, trace_id, attempt)) => {
                span.parent_span_id = Some(parent);
                span.trace_id = trace_id;
                attempt
            }
            None => match self.cri.parent_of(&span) {
                Some((parent, trace_id)) => {
                    span.parent_span_id = Some(parent);
                    span.trace_id = trace_id;
                    self.cri.attempt_of_call(parent).map(|a| a as i64)
                }
                None => env
                    .container_id
                    .as_deref()
                    .and_then(|id| self.cri.attempt_of(id))
                    .map(|a| a as i64),
            },
        };
        if let Some(attempt) = attempt {
            span.attributes.push(Attribute::int(keys::ATTEMPT, attempt));
        }
        span
    }
}

#[cfg(test)]
mod tests;
