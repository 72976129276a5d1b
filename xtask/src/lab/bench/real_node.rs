//! Part 10, the real node (issue 12): a single-node cluster (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and a kubelet built from the Go module proxy, on
//! containerd 2.4 and runc 1.5) whose kubelet sends its own spans to a real collector. Pods are
//! created and deleted through the API; the figure is the agreement of the agent's CRI spans
//! with the kubelet's own CRI client spans (the ground truth), and how many of the agent's CRI
//! spans hang under a kubelet span (its SyncPod uprobes).

use anyhow::{Context as _, bail};
use nodetrace_testbed::{
    BUSYBOX_IMAGE, BuiltRuntimes,
    agreement::{AgentCall, Agreement, agreement},
    cluster::{Cluster, ClusterBinaries},
    rotel::{Rotel, find_rotel, free_port, parse_log},
};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Context;
use super::agent::Agent;
use super::plan::Plan;

/// Where `cargo xtask setup` builds the runtimes and Kubernetes.
const RUNTIMES_DIR: &str = "/var/cache/nodetrace/runtimes";

#[derive(Clone, Debug, Serialize)]
pub struct RealNode {
    pub pods: usize,
    /// The kubelet's CRI client spans of the pods, and how many the agent has.
    pub kubelet_calls: usize,
    pub matched: usize,
    pub agreement_percent: f64,
    pub methods: BTreeMap<String, usize>,
    /// The agent's CRI spans of the pods, and how many hang under one of its kubelet spans.
    pub cri_spans: usize,
    pub cri_under_kubelet: usize,
    /// The CRI spans not under a kubelet span, per method (calls kubelet makes outside a pod
    /// worker's sync: its garbage collection removes containers and sandboxes).
    pub not_under_kubelet: BTreeMap<String, usize>,
    /// The agent's kubelet spans of the pods (SyncPod and its phases).
    pub kubelet_spans: usize,
}

pub async fn run(ctx: &Context, plan: &Plan) -> anyhow::Result<RealNode> {
    let built = BuiltRuntimes::at(Path::new(
        &std::env::var("NODETRACE_RUNTIMES_DIR").unwrap_or_else(|_| RUNTIMES_DIR.to_owned()),
    ));
    let binaries = ClusterBinaries::from_built(&built, "v1.37", "v3.7")
        .context("Kubernetes 1.37 and etcd 3.7 (cargo xtask setup builds them)")?;
    let containerd = built
        .containerd("v2.4")
        .context("containerd 2.4 (cargo xtask setup)")?;
    let (_, runc) = built.runc("v1.5").context("runc 1.5 (cargo xtask setup)")?;
    let rotel_bin = find_rotel().map_err(|e| anyhow::anyhow!("rotel-agent: {e}"))?;
    let rotel_grpc = free_port();
    let rotel = Rotel::start(&rotel_bin, rotel_grpc, free_port());
    let cluster = Cluster::start(
        &ctx.work.join("real-node"),
        binaries,
        containerd,
        &runc,
        Some(&format!("127.0.0.1:{rotel_grpc}")),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the cluster: {e}"))?;
    let result = measure(ctx, plan, &cluster, &rotel, &runc).await;
    cluster.stop();
    result
}

async fn measure(
    ctx: &Context,
    plan: &Plan,
    cluster: &Cluster,
    rotel: &Rotel,
    runc: &Path,
) -> anyhow::Result<RealNode> {
    let kubeconfig = cluster.admin_kubeconfig().display().to_string();
    let kubelet_socket = cluster.kubelet_socket().display().to_string();
    let agent = Agent::start_with(
        &ctx.bins.agent,
        &ctx.work.join("real-node-agent"),
        cluster.testbed().containerd().socket(),
        true,
        &[PathBuf::from(runc)],
        &[
            "--kubeconfig",
            &kubeconfig,
            "--kubelet-socket",
            &kubelet_socket,
        ],
    )
    .await?;
    let pods = plan.real_node_pods;
    let manifest: String = (0..pods)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{i}\n  namespace: default\n\
                 spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
                 image: {BUSYBOX_IMAGE}\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n"
            )
        })
        .collect();
    cluster
        .apply(&manifest)
        .map_err(|e| anyhow::anyhow!("create the pods: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60 + 10 * pods as u64);
    let uids = loop {
        let phases = cluster
            .kubectl(&[
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase}{\"\\n\"}{end}",
            ])
            .unwrap_or_default();
        let running: Vec<(String, String)> = phases
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (name, uid, phase) = (parts.next()?, parts.next()?, parts.next()?);
                (name.starts_with("bench-") && phase == "Running")
                    .then(|| (name.to_owned(), uid.to_owned()))
            })
            .collect();
        if running.len() == pods {
            break running;
        }
        if Instant::now() > deadline {
            bail!("{} of {pods} pods ran: {phases}", running.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("[bench] {pods} pods running; deleting them");
    cluster
        .kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=120s"])
        .map_err(|e| anyhow::anyhow!("delete the pods: {e}"))?;
    // The kubelet exports its spans in batches; both sides settle within seconds.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let settle = Instant::now() + Duration::from_secs(30);
    loop {
        let logged = parse_log(&rotel.log());
        let mut total = Agreement::default();
        let (mut cri_spans, mut cri_under_kubelet, mut kubelet_spans) = (0, 0, 0);
        let mut not_under_kubelet: BTreeMap<String, usize> = BTreeMap::new();
        for (_, uid) in &uids {
            let spans = agent_spans(&client, &agent.url, uid).await?;
            let kubelet_ids: HashSet<&str> = spans
                .iter()
                .filter(|s| s.service == "kubelet")
                .map(|s| s.span_id.as_str())
                .collect();
            kubelet_spans += kubelet_ids.len();
            for span in spans.iter().filter(|s| s.rpc) {
                cri_spans += 1;
                if kubelet_ids.contains(span.parent.as_str()) {
                    cri_under_kubelet += 1;
                } else {
                    *not_under_kubelet
                        .entry(span.call.method.clone())
                        .or_default() += 1;
                }
            }
            let calls: Vec<AgentCall> = spans.into_iter().map(|s| s.call).collect();
            total.add(agreement(&logged, &calls, uid));
        }
        let settled = total.total >= 5 * pods && total.matched == total.total;
        if settled || Instant::now() > settle {
            for missing in &total.unmatched {
                eprintln!("[bench]   not matched: {missing}");
            }
            eprintln!(
                "[bench] the kubelet's CRI client spans matched by the agent: {} of {} ({:.1}%); \
                 {cri_under_kubelet} of {cri_spans} CRI spans under a kubelet span (not: \
                 {not_under_kubelet:?})",
                total.matched,
                total.total,
                total.percent()
            );
            agent.stop().await?;
            return Ok(RealNode {
                pods,
                kubelet_calls: total.total,
                matched: total.matched,
                agreement_percent: total.percent(),
                methods: total.methods,
                cri_spans,
                cri_under_kubelet,
                not_under_kubelet,
                kubelet_spans,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct AgentSpan {
    call: AgentCall,
    span_id: String,
    parent: String,
    service: String,
    /// A CRI call (it has `rpc.method`).
    rpc: bool,
}

/// The agent's spans of pod `uid`, from its OTLP/JSON answer.
async fn agent_spans(
    client: &reqwest::Client,
    url: &str,
    uid: &str,
) -> anyhow::Result<Vec<AgentSpan>> {
    let body: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("{url}/api/traces?pod_uid={uid}&format=otlp"))
            .send()
            .await?
            .text()
            .await?,
    )?;
    let attribute = |list: &serde_json::Value, key: &str| {
        list.as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .and_then(|a| a["value"]["stringValue"].as_str().map(str::to_owned))
    };
    let number = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or_else(|| v.as_u64())
            .unwrap_or(0)
    };
    let mut found = Vec::new();
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        let resource_attributes = &resource["resource"]["attributes"];
        let service = attribute(resource_attributes, "service.name").unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes = &span["attributes"];
                let method = attribute(attributes, "rpc.method");
                found.push(AgentSpan {
                    call: AgentCall {
                        method: method
                            .clone()
                            .unwrap_or_else(|| span["name"].as_str().unwrap_or("").to_owned()),
                        pod_uid: attribute(attributes, "k8s.pod.uid")
                            .or_else(|| attribute(resource_attributes, "k8s.pod.uid"))
                            .unwrap_or_default(),
                        start_unix_ns: number(&span["startTimeUnixNano"]),
                        end_unix_ns: number(&span["endTimeUnixNano"]),
                    },
                    span_id: span["spanId"].as_str().unwrap_or("").to_owned(),
                    parent: span["parentSpanId"].as_str().unwrap_or("").to_owned(),
                    service: service.clone(),
                    rpc: method.is_some(),
                });
            }
        }
    }
    Ok(found)
}
