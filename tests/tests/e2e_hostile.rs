//! End to end, a hostile tenant: inside a real pod of the testbed, a container plants the
//! files a careless agent would open (a FIFO, a symlink to /etc/shadow, a 1 GiB sparse file,
//! device nodes), runs look-alike runtimes (busybox copied to `/tmp/runc`) pointing at them, and
//! floods the node with look-alike execs, while a normal pod goes through its lifecycle next
//! to it. The agent must not be fooled, frozen, exhausted or blinded. Needs root.

mod common;

use common::{
    Agent, LIFECYCLE_CALLS, Ready, assert_lifecycle_call, by_name, lifecycle_complete, metric,
    skipped_unless_root, spans_until, tag,
};
use nodetrace::api::{
    client::{Client, DEFAULT_TIMEOUT},
    format::jaeger_model::Span,
};
use nodetrace_testbed::Testbed;
use std::time::Duration;

/// How long spans may take to reach the store after the calls returned.
const SPANS_TIMEOUT: Duration = Duration::from_secs(20);
/// Look-alike execs the tenant floods the node with.
const FLOOD_EXECS: u32 = 20_000;
/// Most the agent's resident memory may grow while the tenant does its worst.
const MEMORY_GROWTH_BUDGET_KIB: u64 = 64 * 1024;

/// What the tenant runs inside its container (busybox sh). Every `/tmp/runc` is busybox under
/// a runtime's name, with a runtime's command line; the last line prints the flood's count.
fn tenant_script() -> String {
    format!(
        r#"
set -u
cp /bin/busybox /tmp/runc
mkfifo /tmp/fifo
ln -s /etc/shadow /tmp/shadow
truncate -s 1G /tmp/sparse
mkdir -p /tmp/bundle && mkfifo /tmp/bundle/config.json
mkdir -p /tmp/linked && ln -s /etc/shadow /tmp/linked/config.json
for target in /dev/zero /dev/ptmx /tmp/fifo /tmp/shadow /tmp/sparse; do
  /tmp/runc --root /run/containerd/runc/k8s.io create --bundle /tmp/bundle --pid-file "$target" victim
done
/tmp/runc --log /tmp/bundle/log.json --log-format json create --bundle /tmp/bundle victim
/tmp/runc --log /tmp/linked/log.json --log-format json create --bundle /tmp/linked victim
i=0
while [ $i -lt {FLOOD_EXECS} ]; do /tmp/runc start victim; i=$((i+1)); done
echo "flood=$i"
"#
    )
}

/// Peak resident memory of this process (the agent runs in it), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_cannot_fool_freeze_exhaust_or_blind_the_agent() {
    if skipped_unless_root(
        "a_hostile_tenant_cannot_fool_freeze_exhaust_or_blind_the_agent",
        "eBPF, containerd, mounts",
    ) {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let testbed = Testbed::start(&work.path().join("testbed"))
        .await
        .expect("start the testbed");
    let agent = Agent::start(
        &work.path().join("agent-data"),
        testbed.containerd().socket(),
        [
            "--node-name=hostile-node".to_owned(),
            "--max-store-mib=64".to_owned(),
            "--no-kube".to_owned(),
        ],
        Ready::Agent {
            within: Duration::from_secs(20),
        },
    )
    .await;
    let before = agent.scrape().await;
    let memory_before = peak_rss_kib();

    let script = tenant_script();
    let mut tenant = testbed
        .pod("tenant", "evil")
        .with_exec(&["sh", "-c", &script]);
    tenant.exec_timeout = Duration::from_secs(120);
    let normal = testbed.pod("shop", "web");
    let (tenant_report, normal_report) =
        tokio::join!(tenant.run(testbed.cri()), normal.run(testbed.cri()));
    let tenant_report = tenant_report.expect("tenant pod lifecycle");
    let normal_report = normal_report.expect("normal pod lifecycle");
    let output = tenant_report.exec.stdout_text();
    assert_eq!(
        tenant_report.exec.exit_code,
        0,
        "tenant script: {output}\n{}",
        tenant_report.exec.stderr_text()
    );
    assert!(
        output.contains(&format!("flood={FLOOD_EXECS}")),
        "the flood ran: {output}"
    );

    // Not blinded: the normal pod's trace is complete, every call with its runtime runs.
    let client = Client::new(&agent.url(), None, DEFAULT_TIMEOUT).expect("client");
    let traces = spans_until(
        &client,
        &by_name("shop", "web"),
        SPANS_TIMEOUT,
        lifecycle_complete(&normal_report),
    )
    .await;
    let spans: Vec<&Span> = traces[0].spans.iter().collect();
    for call in LIFECYCLE_CALLS {
        assert_lifecycle_call(&spans, &normal_report, call);
    }

    // Not fooled: the look-alikes were not followed at all. Followed, the flood alone would
    // have sent two kernel events (exec, exit) per run; the two lifecycles send a few hundred.
    let tenant_traces = spans_until(
        &client,
        &by_name("tenant", "evil"),
        SPANS_TIMEOUT,
        lifecycle_complete(&tenant_report),
    )
    .await;
    for span in tenant_traces.iter().flat_map(|t| t.spans.iter()) {
        assert_ne!(
            tag(span, "container.id").as_deref(),
            Some("victim"),
            "a look-alike was taken for a runtime: {}",
            span.operation_name
        );
    }
    let events =
        |scrape: &str| metric(scrape, "nodetrace_kernel_events_received_total").unwrap_or(0.0);
    let received = events(&agent.scrape().await) - events(&before);
    assert!(
        received < 2_000.0,
        "{received} kernel events during the flood: look-alikes were followed"
    );

    // Not frozen, not exhausted: still healthy, memory within budget, the look-alikes counted.
    let health = reqwest::get(format!("{}/healthz", agent.url()))
        .await
        .expect("healthz");
    assert!(health.status().is_success(), "healthz: {}", health.status());
    let grown = peak_rss_kib().saturating_sub(memory_before);
    assert!(
        grown < MEMORY_GROWTH_BUDGET_KIB,
        "peak memory grew by {grown} KiB (budget {MEMORY_GROWTH_BUDGET_KIB} KiB)"
    );
    let after = agent.scrape().await;
    let counted =
        |scrape: &str| metric(scrape, "nodetrace_runtime_lookalike_execs_total").unwrap_or(0.0);
    let lookalikes = counted(&after) - counted(&before);
    assert!(
        lookalikes >= f64::from(FLOOD_EXECS),
        "{lookalikes} look-alike execs counted, at least {FLOOD_EXECS} expected"
    );
    eprintln!(
        "hostile tenant: {lookalikes} look-alike execs counted, {received} kernel events, \
         peak memory +{grown} KiB"
    );
    agent.stop(Duration::from_secs(30)).await;
    testbed.stop().expect("teardown");
}
