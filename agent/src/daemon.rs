//! The agent daemon: wires the kernel probes, the correlator, the store and the HTTP API, and
//! shuts them down in order on SIGINT/SIGTERM.

use anyhow::Context as _;
use axum::middleware::from_fn_with_state;
use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};
use tokio::{
    signal::unix::SignalKind,
    sync::{mpsc, watch},
};

#[cfg(feature = "test-faults")]
use crate::supervise::faults;
use crate::{
    api::{self, ApiState, Readiness},
    budget::ByteBudget,
    cli::{AgentArgs, OtlpProtocol},
    correlate::{Correlator, CorrelatorConfig, HostNode, Input},
    cri::{CriWatcher, WatchConfig},
    ebpf::{EbpfLogLevel, KernelProbes, ReaderStats, WallClock, run_reader},
    export::{ExportConfig, Exporter, Protocol},
    hostfs::StateRoots,
    k8s::{KubeHealth, PodDirectory, PodDirectoryConfig, PodWatcher},
    kubelet::KubeletWatcher,
    metrics::{self, HttpMetrics, MetricSources, Metrics, ProbeCounts},
    oci::binaries::BinarySearch,
    redact::Redactor,
    runtime_state::{self, MetadataRules, RuntimeStateTask},
    store::{Store, StoreConfig},
    supervise::{Progress, StageWatch, Supervisor},
};
use nodetrace_common::EventBudget;

/// Capacity of the queue between the ring-buffer reader and the correlator, in events and in
/// bytes (an exec event with a long command line takes ~5 KiB, an exit event ~100 bytes).
const KERNEL_EVENT_QUEUE: usize = 65_536;
const KERNEL_EVENT_QUEUE_BYTES: usize = 16 << 20;
/// Capacity of the queue between the correlator and the store writer.
const SPAN_QUEUE: usize = 65_536;
/// How often the runtime is looked for (restarts, upgrades).
const RUNTIME_POLL: Duration = Duration::from_secs(2);

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    run_until(args, shutdown_signal()).await
}

/// Runs the agent until `shutdown` completes, then stops every stage in order.
pub async fn run_until(
    args: AgentArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = crate::cli::read_token_file(args.token_file.as_deref())?;
    api::check_listen_policy(args.listen, token.as_deref(), args.insecure_no_auth)?;
    let api_tls =
        crate::tls::api_acceptor(args.tls_cert_file.as_deref(), args.tls_key_file.as_deref())?;
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => hostname(),
    };

    let readiness = Readiness::new();
    readiness.register("store");
    readiness.register("ebpf");

    let store = Store::open(
        &args.data_dir,
        StoreConfig {
            retention: args.retention,
            max_size_bytes: args.max_store_mib * 1024 * 1024,
            // One slot per API request the server lets run at once, and as many again for the
            // agent's own readers (metrics, retention, pod listing while a query runs).
            max_readers: u32::try_from(2 * api::serve::DEFAULT_MAX_REQUESTS).unwrap_or(u32::MAX),
            ..StoreConfig::default()
        },
    )
    .with_context(|| format!("cannot open the span store in {}", args.data_dir.display()))?;
    let (sink, writer) = store.start_writer(SPAN_QUEUE);
    readiness.set_ready("store");
    let store_health = tokio::spawn(report_store_health(store.clone(), readiness.clone()));

    let (probes, ring) = KernelProbes::load_with(
        &args.btf,
        EventBudget {
            per_second: args.cgroup_process_rate,
            burst: args.cgroup_process_burst,
        },
        args.ebpf_log_level,
    )
    .context("cannot start the eBPF probes")?;
    readiness.set_ready("ebpf");
    readiness.set_detail("ebpf", probes.attached().join(", "));
    tracing::info!(attached = ?probes.attached(), "eBPF programs attached");
    let probe_counts = Arc::new(ProbeCounts::default());
    let mut probes = probes;
    if args.cni_error_messages {
        probes
            .capture_cni_output()
            .context("cannot capture the CNI plugins' error messages (--cni-error-messages)")?;
    }
    let ebpf_log = if args.ebpf_log_level == EbpfLogLevel::Off {
        None
    } else {
        let reader = probes
            .take_log_reader(probe_counts.ebpf_log.clone())
            .context("cannot read the eBPF programs' diagnostics")?;
        tracing::info!(level = ?args.ebpf_log_level, "eBPF diagnostics on");
        Some(tokio::spawn(reader.run()))
    };
    probe_counts
        .tracepoints
        .store(probes.attached().len() as u64, Ordering::Relaxed);
    let probes = Arc::new(Mutex::new(probes));

    let supervisor = Supervisor::new(args.stall_timeout);
    supervisor.watch(StageWatch {
        name: "store writer",
        task: Some(writer.abort_handle()),
        progress: Some((
            {
                let sink = sink.clone();
                Box::new(move || {
                    let stats = sink.stats();
                    stats.committed + stats.lost
                })
            },
            {
                let sink = sink.clone();
                Box::new(move || sink.queued())
            },
        )),
    });

    let (events_tx, mut events_rx) = mpsc::channel::<Input>(KERNEL_EVENT_QUEUE);
    let queued_events = events_tx.downgrade();
    let reader_stats = Arc::new(ReaderStats::default());
    let event_budget = ByteBudget::new(KERNEL_EVENT_QUEUE_BYTES);
    let runtime_news = events_tx.clone();
    let reader = tokio::spawn(run_reader(
        ring,
        events_tx,
        reader_stats.clone(),
        event_budget.clone(),
    ));
    supervisor.watch(StageWatch {
        name: "ring-buffer reader",
        task: Some(reader.abort_handle()),
        progress: None,
    });

    let redactor = Redactor::new(args.argv_capture, &args.redact_patterns)
        .context("cannot use --redact-pattern")?;
    tracing::info!(argv_capture = ?redactor.capture(), "process command lines");
    let state_roots = StateRoots::new(args.runtime_state_roots.clone())
        .context("cannot use --runtime-state-root")?;
    tracing::info!(roots = ?state_roots.roots(), "runtime files are read only beneath these");
    let mut correlator = Correlator::new(
        HostNode::new(state_roots.clone()),
        WallClock::sample(),
        CorrelatorConfig {
            node_name: node_name.clone(),
            state_roots,
            redactor,
            ..CorrelatorConfig::default()
        },
    );
    let (stop_kube, kube_stopped) = watch::channel(false);
    let directory = pod_directory(&args, &node_name, kube_stopped).await;
    correlator.set_pod_directory(directory.clone());
    let kube_health = tokio::spawn(report_kube_health(directory, readiness.clone()));
    let export = match &args.otlp_endpoint {
        Some(endpoint) => {
            let config = ExportConfig {
                endpoint: endpoint.clone(),
                protocol: match args.otlp_protocol {
                    OtlpProtocol::Grpc => Protocol::Grpc,
                    OtlpProtocol::Http => Protocol::HttpProtobuf,
                },
                headers: args.otlp_headers.clone(),
                timeout: args.otlp_timeout,
                cluster_name: args.cluster_name.clone(),
                node_name: node_name.clone(),
                host_name: hostname(),
                tls: crate::export::ExportTls {
                    ca_file: args.otlp_ca_file.clone(),
                    client_cert_file: args.otlp_client_cert_file.clone(),
                    client_key_file: args.otlp_client_key_file.clone(),
                },
                ..ExportConfig::default()
            };
            let (export_sink, export_handle) =
                Exporter::start(config).context("cannot start the OTLP export")?;
            tracing::info!(%endpoint, protocol = ?args.otlp_protocol, "pushing spans over OTLP");
            Some((export_sink, export_handle))
        }
        None => None,
    };
    let export_sink = export.as_ref().map(|(sink, _)| sink.clone());
    if let Some(task) = export
        .as_ref()
        .and_then(|(_, handle)| handle.abort_handle())
    {
        supervisor.watch(StageWatch {
            name: "OTLP exporter",
            task: Some(task),
            progress: None,
        });
    }
    let metric_sources = MetricSources {
        reader: reader_stats.clone(),
        correlator: correlator.stats(),
        sink: sink.clone(),
        store: store.clone(),
        probes: probes.clone(),
        probe_counts: probe_counts.clone(),
        export: export_sink.clone(),
    };
    let (query_tx, query_rx) = mpsc::channel(runtime_state::QUERY_QUEUE);
    correlator.set_sandbox_queries(query_tx);
    let (endpoint_tx, endpoint_rx) = watch::channel(None);
    let (stop_runtime_state, runtime_state_stopped) = watch::channel(false);
    let runtime_state_task = tokio::spawn(
        RuntimeStateTask {
            endpoint: endpoint_rx,
            queries: query_rx,
            news: runtime_news,
            probes: probes.clone(),
            rules: MetadataRules {
                labels: PodDirectoryConfig::new(node_name.clone()).labels,
                trace_context_annotation: args.trace_context_annotation.clone(),
            },
            proc_root: std::path::PathBuf::from("/proc"),
        }
        .run(runtime_state_stopped),
    );
    let (service_tx, mut service_rx) = watch::channel(String::from("containerd"));
    let mut watcher = CriWatcher::new(
        WatchConfig {
            sockets: args.cri_sockets.clone(),
            runtime_binary: args.runtime_binary.clone(),
            interval: RUNTIME_POLL,
            binaries: BinarySearch {
                extra: args.oci_runtime_binaries.clone(),
                ..BinarySearch::default()
            },
        },
        probes.clone(),
        readiness.clone(),
        probe_counts.clone(),
        service_tx,
    )
    .with_endpoint(endpoint_tx);
    #[cfg(feature = "test-faults")]
    let fault = match args.test_fault.as_deref().map(faults::parse).transpose() {
        Ok(fault) => fault.filter(|(_, stage)| stage == "correlator"),
        Err(reason) => anyhow::bail!("--test-fault: {reason}"),
    };
    let correlated = Progress::default();
    // The correlator reads bundles and /proc files as it goes: it runs on a thread of its own
    // rather than on the async workers.
    let correlator_progress = correlated.clone();
    let correlator_task = tokio::task::spawn_blocking(move || {
        while let Some(input) = events_rx.blocking_recv() {
            #[cfg(feature = "test-faults")]
            match fault {
                Some((faults::Fault::Kill, _)) => return,
                Some((faults::Fault::Stall, _)) => {
                    while !events_rx.is_closed() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return;
                }
                None => {}
            }
            correlator_progress.advance();
            if let Input::Kernel(event) = &input {
                event_budget.release(event.approx_bytes());
            }
            if service_rx.has_changed().unwrap_or(false) {
                correlator.set_cri_service(&service_rx.borrow_and_update());
            }
            let span = correlator.on_input(input);
            for span in correlator.released().chain(span) {
                if let Some(export) = &export_sink {
                    export.send(span.clone());
                }
                if sink.send(span).is_err() {
                    tracing::debug!("span queue full; span dropped");
                }
            }
        }
    });
    supervisor.watch(StageWatch {
        name: "correlator",
        task: Some(correlator_task.abort_handle()),
        progress: Some((
            correlated.gauge(),
            Box::new(move || {
                queued_events
                    .upgrade()
                    .map_or(0, |tx| (tx.max_capacity() - tx.capacity()) as u64)
            }),
        )),
    });
    // The first look is awaited so that a runtime already running is traced from the start.
    watcher.tick().await;
    let (stop_watcher, watcher_stopped) = watch::channel(false);
    let mut kubelet_watcher = KubeletWatcher::new(
        args.kubelet_socket.clone(),
        RUNTIME_POLL,
        probes.clone(),
        readiness.clone(),
    );
    kubelet_watcher.tick().await;
    let kubelet_task = tokio::spawn(kubelet_watcher.run(watcher_stopped.clone()));
    let watcher_task = tokio::spawn(watcher.run(watcher_stopped));
    supervisor.watch(StageWatch {
        name: "CRI watcher",
        task: Some(watcher_task.abort_handle()),
        progress: None,
    });
    let died = Arc::new(Mutex::new(Vec::new()));
    let shutdown = stop_when_a_stage_dies(shutdown, supervisor.clone(), died.clone());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, tls = api_tls.is_some(), data_dir = %args.data_dir.display(), "nodetrace agent ready");
    let http_metrics = HttpMetrics::default();
    let metrics_routes = api::router::behind_token(
        metrics::router(Arc::new(Metrics::new(metric_sources, &http_metrics))),
        token.as_deref().map(Arc::from),
    );
    let limits = api::ServeLimits {
        max_connections: args.http_max_connections,
        request_timeout: args.http_request_timeout,
        shutdown_grace: args.http_shutdown_grace,
        ..api::ServeLimits::default()
    };
    // The request bounds go inside the metrics layer: requests answered 503 for taking too long
    // are counted too.
    let app = api::router(
        ApiState::new(store, readiness, token)
            .with_cluster_name(args.cluster_name.clone())
            .with_supervisor(supervisor),
    )
    .merge(metrics_routes);
    let app = api::bound_requests(app, &limits)
        .layer(from_fn_with_state(http_metrics, metrics::track_http));
    match api_tls {
        Some(tls) => api::serve::serve_tls(listener, tls, app, &limits, shutdown).await,
        None => api::serve(listener, app, &limits, shutdown).await,
    }

    tracing::info!("shutting down");
    // Detaching the programs closes nothing by itself; stop the reader, then let the
    // correlator drain what was read, then flush the store.
    let _ = stop_watcher.send(true);
    let _ = stop_kube.send(true);
    kube_health.abort();
    store_health.abort();
    if let Some(task) = ebpf_log {
        task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), watcher_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), kubelet_task).await;
    // The runtime-state task holds a sender of the correlator's queue: it goes first, so the
    // queue closes once the reader is gone.
    let _ = stop_runtime_state.send(true);
    runtime_state_task.abort();
    let _ = runtime_state_task.await;
    reader.abort();
    drop(probes);
    let _ = tokio::time::timeout(Duration::from_secs(5), correlator_task).await;
    writer.shutdown().await;
    if let Some((_, handle)) = export {
        match handle.shutdown().await {
            Ok(stats) => tracing::info!(?stats, "OTLP export stopped"),
            Err(err) => tracing::warn!(error = %err, "stopping the OTLP export failed"),
        }
    }
    let died = died.lock().map(|d| d.clone()).unwrap_or_default();
    if !died.is_empty() {
        anyhow::bail!("stage(s) stopped while the agent ran: {}", died.join(", "));
    }
    Ok(())
}

/// How often the supervisor looks at the stages.
const SUPERVISION_INTERVAL: Duration = Duration::from_secs(1);

/// `shutdown`, or the death of a stage (whose names are then put in `died`): either one stops
/// the agent, in order; a death makes it end with an error.
async fn stop_when_a_stage_dies(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    supervisor: Arc<Supervisor>,
    died: Arc<Mutex<Vec<&'static str>>>,
) {
    tokio::select! {
        () = shutdown => {}
        dead = supervisor.until_a_stage_dies(SUPERVISION_INTERVAL) => {
            tracing::error!(stages = ?dead, "a stage stopped; the agent stops so that it is restarted");
            if let Ok(mut died) = died.lock() {
                *died = dead;
            }
        }
    }
}

/// The directory of this node's pods from the Kubernetes API, or a disabled one (with the
/// reason logged) when there is no API access or `--no-kube`.
async fn pod_directory(
    args: &AgentArgs,
    node_name: &str,
    stop: watch::Receiver<bool>,
) -> PodDirectory {
    if args.no_kube {
        tracing::info!("--no-kube: pod metadata comes from the node only");
        return PodDirectory::disabled();
    }
    let config = PodDirectoryConfig {
        trace_context_annotation: args.trace_context_annotation.clone(),
        ..PodDirectoryConfig::new(node_name)
    };
    let watcher = match &args.kubeconfig {
        Some(path) => PodWatcher::from_kubeconfig(path, config).await,
        None => PodWatcher::from_environment(config).await,
    };
    match watcher {
        Ok(watcher) => {
            let directory = watcher.directory();
            tokio::spawn(watcher.run(stop));
            tracing::info!(
                node = node_name,
                "watching this node's pods in the Kubernetes API"
            );
            directory
        }
        Err(err) => {
            tracing::warn!(
                error = %crate::correlate::error_chain(&err),
                "no Kubernetes API access: workload, labels and trace context are off; \
                 everything from the node keeps working"
            );
            PodDirectory::disabled()
        }
    }
}

/// Mirrors the store's write health in /readyz: a full disk or failing commits degrade it
/// (the agent still serves what it has).
async fn report_store_health(store: Store, readiness: Readiness) {
    loop {
        match store.write_problem() {
            Some(problem) => {
                readiness.set("store", crate::api::ComponentState::Degraded(problem));
            }
            None => readiness.set_ready("store"),
        }
        tokio::time::sleep(RUNTIME_POLL).await;
    }
}

/// Mirrors the kube watcher's health in /readyz: an API outage degrades, never blocks.
async fn report_kube_health(directory: PodDirectory, readiness: Readiness) {
    if !directory.is_enabled() {
        return;
    }
    loop {
        let state = match directory.health() {
            KubeHealth::Connected => crate::api::ComponentState::Ready,
            KubeHealth::Disabled => return,
            KubeHealth::Starting => crate::api::ComponentState::Degraded(
                "waiting for the first answer of the API server".to_owned(),
            ),
            KubeHealth::Degraded { error, .. } => crate::api::ComponentState::Degraded(format!(
                "the API server is unreachable ({error}); pod metadata is as of then"
            )),
        };
        readiness.set("kube", state);
        tokio::time::sleep(RUNTIME_POLL).await;
    }
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
