//! Turns kernel events into finished spans: pairs each exec with its exit, parses runtime
//! command lines, and ties every run to its container and pod.
//!
//! Attribution order for a runtime run: the container cache (filled at `create`), the bundle's
//! config.json (`--bundle`, or the directory of containerd's `--log`), else the span is kept
//! but marked as not attributed. A container process is tied to its container by the pid file
//! its runtime wrote, else by its cgroup path. CNI plugin runs are the `cni` module's.

mod cni;
mod cri;
mod hold;
mod kubelet;
mod node;
mod pods;
mod runtime;
mod spans;

pub use node::{HostNode, NodeView};

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    ebpf::{ExecRecord, ExitRecord, KernelEvent, WallClock},
    hostfs::StateRoots,
    model::{PodRef, Span, keys},
    oci::{self, AttributionSource, ContainerCache, ContainerInfo, OciCommand, OciInvocation},
    redact::Redactor,
    runtime_state::{RuntimeNews, SandboxQuery},
};
use nodetrace_common::{ExecRole, TrackedKind};

/// What the correlator is fed, in order: the kernel's events and the runtime's answers.
#[derive(Debug)]
pub enum Input {
    Kernel(KernelEvent),
    Runtime(RuntimeNews),
}

impl From<KernelEvent> for Input {
    fn from(event: KernelEvent) -> Self {
        Self::Kernel(event)
    }
}

/// Settings of the correlator.
#[derive(Clone, Debug)]
pub struct CorrelatorConfig {
    /// Put on every span as `k8s.node.name`.
    pub node_name: String,
    /// Most runs (execs without their exit yet) remembered; the oldest are forgotten beyond.
    pub max_pending: usize,
    /// Most bytes those runs may hold (a run with a long command line holds ~10 KiB); the
    /// oldest are forgotten beyond.
    pub max_pending_bytes: usize,
    /// Most containers remembered for attribution.
    pub max_containers: usize,
    /// Service name of CRI spans until the runtime is known (`containerd`, `cri-o`).
    pub cri_service: String,
    /// The runtime's state directories (`--runtime-state-root`): bundles are read only beneath
    /// them. None by default: no bundle is read.
    pub state_roots: StateRoots,
    /// What of a process's argv a span keeps (`--argv-capture`, `--redact-pattern`); applied
    /// once, as the span is built. The OCI argv parser sees the real argv.
    pub redactor: Redactor,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            max_pending: 16_384,
            max_pending_bytes: 16 << 20,
            max_containers: 8_192,
            cri_service: "containerd".to_owned(),
            state_roots: StateRoots::default(),
            redactor: Redactor::default(),
        }
    }
}

/// Counters of the correlator, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct CorrelatorStats {
    pub spans: AtomicU64,
    /// Spans that could not be tied to a pod.
    pub unattributed: AtomicU64,
    /// Runtime command lines that did not parse.
    pub unparsed: AtomicU64,
    /// Exits of processes, or returns of CRI calls, whose start was not seen (e.g. it came
    /// before the agent).
    pub unmatched_exits: AtomicU64,
    /// Runs forgotten because too many were pending.
    pub evicted: AtomicU64,
    /// Spans held until the runtime described their pod's new sandbox.
    pub held: AtomicU64,
    /// CNI plugin runs about no pod sandbox (STATUS, GC): counted, not traced.
    pub cni_untraced: AtomicU64,
}

/// The container (and pod) a run belongs to, or why none was found.
pub type Attribution = Result<oci::Attribution, String>;

/// Which process of a container a container-process span describes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProcessRole {
    /// The container's entrypoint (the init process `create` set up, run at `start`).
    Entrypoint,
    /// A process added with `exec`.
    Exec,
}

#[derive(Debug)]
struct RuntimeRun {
    exec: ExecRecord,
    invocation: Result<OciInvocation, oci::ArgvError>,
    attribution: Attribution,
}

#[derive(Debug)]
struct ProcessRun {
    exec: ExecRecord,
    cgroups: Option<String>,
    /// The container and role, when the runtime run that started the process was still alive
    /// at its exec (`runc exec` is; `runc create` has exited by the time `runc start` runs it).
    owner: Option<(String, ProcessRole)>,
    /// The process started before the agent: found in `/proc`, its exec not seen.
    seen_mid_life: bool,
}

#[derive(Debug)]
enum Run {
    Runtime(Box<RuntimeRun>),
    Process(Box<ProcessRun>),
    /// `runc init`: the runtime becoming the container. Its work shows in the create span and
    /// the container-process span, so it makes no span of its own.
    Init {
        ktime_ns: u64,
    },
}

impl Run {
    /// About how many bytes the run holds: its record and strings, and for a runtime run the
    /// parsed command line (about as large again) and what attribution found.
    fn approx_bytes(&self) -> usize {
        match self {
            Self::Runtime(run) => {
                size_of::<RuntimeRun>() + 2 * run.exec.strings_bytes() + ATTRIBUTION_BYTES
            }
            Self::Process(run) => {
                size_of::<ProcessRun>()
                    + run.exec.strings_bytes()
                    + run.cgroups.as_ref().map_or(0, String::len)
                    + run.owner.as_ref().map_or(0, |(id, _)| id.len())
            }
            Self::Init { .. } => 0,
        }
    }

    fn exec_time(&self) -> u64 {
        match self {
            Self::Runtime(r) => r.exec.ktime_ns,
            Self::Process(p) => p.exec.ktime_ns,
            Self::Init { ktime_ns } => *ktime_ns,
        }
    }
}

/// What a runtime run's attribution holds, about (container id, pod, names, image).
const ATTRIBUTION_BYTES: usize = 512;

/// The correlation state machine. Single-threaded: one task owns it.
pub struct Correlator<N: NodeView> {
    node: N,
    clock: WallClock,
    config: CorrelatorConfig,
    runs: HashMap<u32, Run>,
    /// What `runs` hold, by [`Run::approx_bytes`].
    pending_bytes: usize,
    /// Insertion order of `runs`, for eviction (tgid, exec time).
    run_order: VecDeque<(u32, u64)>,
    containers: ContainerCache,
    /// pid → the container and role its runtime's pid file named.
    process_owners: HashMap<u32, (String, ProcessRole)>,
    cri: cri::CriCalls,
    kubelet: kubelet::KubeletCalls,
    /// CNI plugin runs between exec and exit.
    cni: cni::CniRuns,
    /// Container id → the CRI span its `runc start` hung under.
    start_parents: HashMap<String, (crate::model::SpanId, crate::model::TraceId)>,
    pods: pods::PodEnricher,
    /// Spans of pods whose new sandbox the runtime is being asked about.
    hold: hold::PodHold,
    /// Spans let go from `hold`, for [`Correlator::released`].
    released: Vec<Span>,
    /// Where questions about new sandboxes go (the runtime-state task), if anywhere.
    queries: Option<tokio::sync::mpsc::Sender<SandboxQuery>>,
    stats: Arc<CorrelatorStats>,
}

impl<N: NodeView> Correlator<N> {
    pub fn new(node: N, clock: WallClock, config: CorrelatorConfig) -> Self {
        Self {
            node,
            clock,
            containers: ContainerCache::new(config.max_containers),
            cri: cri::CriCalls::new(&config.cri_service),
            kubelet: kubelet::KubeletCalls::default(),
            cni: cni::CniRuns::new(&config.cri_service),
            start_parents: HashMap::new(),
            pods: pods::PodEnricher::new(crate::k8s::PodDirectory::disabled()),
            hold: hold::PodHold::default(),
            released: Vec::new(),
            queries: None,
            config,
            runs: HashMap::new(),
            pending_bytes: 0,
            run_order: VecDeque::new(),
            process_owners: HashMap::new(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<CorrelatorStats> {
        self.stats.clone()
    }

    /// Takes pod metadata (workload, labels, trace context) from the kube watcher's directory.
    pub fn set_pod_directory(&mut self, directory: crate::k8s::PodDirectory) {
        self.pods = pods::PodEnricher::new(directory);
    }

    /// Names the runtime whose CRI calls are traced (the service of CRI spans).
    pub fn set_cri_service(&mut self, service: &str) {
        self.cri.set_service(service);
        self.cni.set_service(service);
    }

    /// Feeds one input; the spans it completes are then in [`Correlator::released`] too.
    pub fn on_input(&mut self, input: Input) -> Option<Span> {
        match input {
            Input::Kernel(event) => self.on_event(event),
            Input::Runtime(news) => {
                self.on_runtime(news);
                None
            }
        }
    }

    /// Feeds one event; returns the span it completes, if any (spans let go from waiting are
    /// in [`Correlator::released`]).
    pub fn on_event(&mut self, event: KernelEvent) -> Option<Span> {
        if !self.hold.is_empty() {
            for uid in self.hold.overdue() {
                self.let_go(&uid);
            }
        }
        let span = match event {
            KernelEvent::Exec(exec) => {
                self.on_exec(exec);
                return None;
            }
            KernelEvent::Exit(exit) if exit.tracked == TrackedKind::CniPlugin => {
                self.on_cni_exit(&exit)
            }
            KernelEvent::Exit(exit) => self.on_exit(&exit),
            KernelEvent::CniOutput(output) => {
                self.on_cni_output(&output);
                return None;
            }
            KernelEvent::CriStart(start) => {
                self.cri.on_start(&start, &self.clock, &mut self.containers);
                if start.method == nodetrace_common::CriMethod::RunPodSandbox {
                    self.wait_for_sandbox(&start.strings[nodetrace_common::cri_slots::POD_UID]);
                }
                return None;
            }
            KernelEvent::CriEnd(end) => {
                let span = self.cri.on_end(
                    &end,
                    &self.clock,
                    &mut self.containers,
                    &self.config.node_name,
                );
                if span.is_none() {
                    self.stats.unmatched_exits.fetch_add(1, Ordering::Relaxed);
                }
                span.map(|mut span| {
                    // The kubelet call it was made in (kubelet's clock and the runtime's are
                    // the same kernel clock).
                    if let Some(pod) = &span.pod
                        && let Some(parent) =
                            self.kubelet.parent_of_cri(&pod.uid, span.start_unix_ns)
                    {
                        span.parent_span_id = Some(parent);
                    }
                    span
                })
            }
            KernelEvent::KubeletStart(start) => {
                // A sync is the first the node sees of a new pod: its spans wait from there.
                if start.function == nodetrace_common::KubeletFn::SyncPod {
                    self.wait_for_sandbox(&start.strings[nodetrace_common::kubelet_slots::POD_UID]);
                }
                self.kubelet.on_start(&start, &self.clock);
                return None;
            }
            KernelEvent::KubeletEnd(end) => {
                self.kubelet
                    .on_end(&end, &self.clock, &self.config.node_name)
            }
        }?;
        self.stats.spans.fetch_add(1, Ordering::Relaxed);
        if span.pod.is_none() {
            self.stats.unattributed.fetch_add(1, Ordering::Relaxed);
        }
        if span.attr_str(keys::RPC_METHOD) == Some("RunPodSandbox") {
            self.ask_about_sandbox(&span);
        }
        match self.hold.hold(span) {
            Ok(()) => {
                self.stats.held.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(mut spans) => {
                let mut span = spans.pop()?;
                for mut earlier in spans {
                    self.pods.enrich(&mut earlier);
                    self.released.push(earlier);
                }
                self.pods.enrich(&mut span);
                Some(span)
            }
        }
    }

    /// Spans let go since the last call (held while their pod's sandbox was asked about),
    /// oldest first.
    pub fn released(&mut self) -> std::vec::Drain<'_, Span> {
        self.released.drain(..)
    }

    fn on_exec(&mut self, exec: ExecRecord) {
        let tgid = exec.tgid;
        let run = match exec.role {
            ExecRole::Runtime => {
                let invocation = OciInvocation::parse(&exec.argv);
                if let Ok(inv) = &invocation
                    && matches!(inv.command, OciCommand::Init)
                {
                    self.insert_run(
                        tgid,
                        Run::Init {
                            ktime_ns: exec.ktime_ns,
                        },
                    );
                    return;
                }
                if invocation.is_err() {
                    self.stats.unparsed.fetch_add(1, Ordering::Relaxed);
                }
                let attribution = match &invocation {
                    Ok(inv) => {
                        let cgroups = self.node.process_cgroups(tgid);
                        oci::attribute(
                            inv,
                            cgroups.as_deref(),
                            &self.config.state_roots,
                            &mut self.containers,
                        )
                        .map_err(|err| error_chain(&err))
                    }
                    Err(err) => Err(format!(
                        "command line not understood: {}",
                        self.config.redactor.argv_error(err)
                    )),
                };
                Run::Runtime(Box::new(RuntimeRun {
                    exec,
                    invocation,
                    attribution,
                }))
            }
            ExecRole::CniPlugin => {
                self.on_cni_exec(exec);
                return;
            }
            ExecRole::ContainerProcess => {
                let cgroups = self.node.process_cgroups(tgid);
                let owner = self.live_parent_owner(exec.ppid);
                Run::Process(Box::new(ProcessRun {
                    exec,
                    cgroups,
                    owner,
                    seen_mid_life: false,
                }))
            }
        };
        self.insert_run(tgid, run);
    }

    fn insert_run(&mut self, tgid: u32, run: Run) {
        self.run_order.push_back((tgid, run.exec_time()));
        self.pending_bytes += run.approx_bytes();
        if let Some(replaced) = self.runs.insert(tgid, run) {
            self.pending_bytes = self.pending_bytes.saturating_sub(replaced.approx_bytes());
        }
        self.evict_pending();
    }

    fn remove_run(&mut self, tgid: u32) -> Option<Run> {
        let run = self.runs.remove(&tgid)?;
        self.pending_bytes = self.pending_bytes.saturating_sub(run.approx_bytes());
        Some(run)
    }

    fn evict_pending(&mut self) {
        while self.runs.len() > self.config.max_pending
            || self.pending_bytes > self.config.max_pending_bytes
        {
            let Some((tgid, exec_time)) = self.run_order.pop_front() else {
                break;
            };
            // Only the run this entry was queued for; the tgid may have been reused since.
            if self
                .runs
                .get(&tgid)
                .is_some_and(|run| run.exec_time() == exec_time)
            {
                self.remove_run(tgid);
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Drop order entries whose run already finished, so the queue stays bounded.
        if self.run_order.len() > 2 * self.config.max_pending.max(1) {
            let runs = &self.runs;
            self.run_order
                .retain(|(tgid, time)| runs.get(tgid).is_some_and(|run| run.exec_time() == *time));
        }
    }

    fn on_exit(&mut self, exit: &ExitRecord) -> Option<Span> {
        let Some(run) = self.remove_run(exit.tgid) else {
            self.stats.unmatched_exits.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut span = match run {
            Run::Runtime(run) => {
                self.remember_pid_file(&run);
                spans::runtime_span(
                    &run,
                    exit,
                    &self.clock,
                    &self.config.node_name,
                    &self.config.redactor,
                )
            }
            Run::Init { .. } => return None,
            Run::Process(run) => {
                let (attribution, role) = self.attribute_process(&run);
                let mut span = spans::process_span(
                    &run.exec,
                    exit,
                    &attribution,
                    role,
                    &self.clock,
                    &self.config.node_name,
                    &self.config.redactor,
                );
                if run.seen_mid_life {
                    span.attributes.push(crate::model::Attribute::bool(
                        keys::PROCESS_SEEN_MID_LIFE,
                        true,
                    ));
                }
                span
            }
        };
        let container_id = span.attr_str(keys::CONTAINER_ID).map(str::to_owned);
        if let Some(attempt) = container_id
            .as_deref()
            .and_then(|id| self.cri.attempt_of(id))
        {
            span.attributes
                .push(crate::model::Attribute::int(keys::ATTEMPT, attempt as i64));
        }
        let parent = self.cri.parent_of(&span).or_else(|| {
            // A container's process can start just after the CRI call that started it returned
            // (`runc start` does not wait for it): it belongs where its `runc start` does.
            (span.service == "container")
                .then(|| {
                    container_id
                        .as_deref()
                        .and_then(|id| self.start_parents.get(id))
                })
                .flatten()
                .copied()
        });
        if let Some((parent, trace_id)) = parent {
            span.parent_span_id = Some(parent);
            span.trace_id = trace_id;
            // A sandbox's first runs end before RunPodSandbox returns its id: the call knows
            // the attempt.
            if span.attr_int(keys::ATTEMPT).is_none()
                && let Some(attempt) = self.cri.attempt_of_call(parent)
            {
                span.attributes
                    .push(crate::model::Attribute::int(keys::ATTEMPT, attempt as i64));
            }
            if span.attr_str(keys::OCI_VERB) == Some("start")
                && let Some(id) = container_id
            {
                if self.start_parents.len() >= self.config.max_containers {
                    self.start_parents.clear();
                }
                self.start_parents.insert(id, (parent, trace_id));
            }
        }
        Some(span)
    }

    /// The container a process belongs to when its parent is a live runtime run.
    fn live_parent_owner(&self, ppid: u32) -> Option<(String, ProcessRole)> {
        let Some(Run::Runtime(parent)) = self.runs.get(&ppid) else {
            return None;
        };
        let inv = parent.invocation.as_ref().ok()?;
        let role = match inv.command {
            OciCommand::Exec(_) => ProcessRole::Exec,
            OciCommand::Create(_) | OciCommand::Run(_) => ProcessRole::Entrypoint,
            _ => return None,
        };
        Some((inv.container_id()?.to_owned(), role))
    }

    /// After `create`, `run` or `exec`: the pid file names the process the runtime started.
    fn remember_pid_file(&mut self, run: &RuntimeRun) {
        let Ok(inv) = &run.invocation else { return };
        let (pid_file, role) = match &inv.command {
            OciCommand::Create(args) | OciCommand::Run(args) => {
                (args.pid_file.as_deref(), ProcessRole::Entrypoint)
            }
            OciCommand::Exec(args) => (args.pid_file.as_deref(), ProcessRole::Exec),
            _ => return,
        };
        let (Some(pid_file), Some(id)) = (pid_file, inv.container_id()) else {
            return;
        };
        if let Some(pid) = self.node.pid_file(Path::new(pid_file)) {
            if self.process_owners.len() >= self.config.max_pending {
                self.process_owners.clear();
            }
            self.process_owners.insert(pid, (id.to_owned(), role));
        }
    }

    /// The container of a container process: from its live runtime parent or the pid file its
    /// runtime wrote, else from its cgroup path.
    fn attribute_process(&mut self, run: &ProcessRun) -> (Attribution, Option<ProcessRole>) {
        let recorded = self.process_owners.remove(&run.exec.tgid);
        let owner = run.owner.clone().or(recorded);
        let from_cgroup = run.cgroups.as_deref().and_then(oci::parse_proc_cgroup);
        let role = owner.as_ref().map(|(_, role)| *role);
        let (container_id, source) = match (owner, &from_cgroup) {
            (Some((id, _)), _) => (Some(id), AttributionSource::Cache),
            (None, Some(found)) => (found.container_id.clone(), AttributionSource::Cgroup),
            (None, None) => {
                return (
                    Err("no pid file named the process and its cgroup names no pod".to_owned()),
                    None,
                );
            }
        };
        if let Some(info) = container_id
            .as_deref()
            .and_then(|id| self.containers.get(id))
        {
            let info = info.clone();
            return (Ok(oci::Attribution { info, source }), role);
        }
        let attribution = match from_cgroup {
            Some(found) => Ok(oci::Attribution {
                info: ContainerInfo {
                    container_id: container_id.unwrap_or_default(),
                    kind: None,
                    sandbox_id: None,
                    pod: PodRef {
                        uid: found.pod_uid,
                        ..PodRef::default()
                    },
                    container_name: None,
                    image: None,
                },
                source: AttributionSource::Cgroup,
            }),
            None => Err(format!(
                "container {} is not known",
                container_id.as_deref().unwrap_or("?")
            )),
        };
        (attribution, role)
    }
}

/// An error and its causes, `: `-separated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
