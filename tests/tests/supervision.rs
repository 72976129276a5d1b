//! Stage death and stall: a test-only fault (`--test-fault`, the `test-faults` feature) breaks
//! the correlator at its first event; `/healthz` must name it, and a dead stage must end the
//! agent with an error. Needs root (the agent loads its eBPF programs).

mod common;

use clap::Parser as _;
use common::skipped_unless_root;
use nodetrace::cli::{Cli, Command};
use std::time::Duration;
use tokio::sync::oneshot;

/// The agent with `fault`, on a free port, with no CRI runtime; its task and its URL.
fn start(
    data_dir: &std::path::Path,
    fault: &str,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    String,
    oneshot::Sender<()>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let argv = [
        "nodetrace".to_owned(),
        "agent".to_owned(),
        format!("--listen={addr}"),
        format!("--data-dir={}", data_dir.display()),
        format!(
            "--cri-socket={}",
            data_dir.join("no-runtime.sock").display()
        ),
        "--no-kube".to_owned(),
        "--stall-timeout=2s".to_owned(),
        format!("--test-fault={fault}"),
    ];
    let Command::Agent(args) = Cli::try_parse_from(argv).expect("agent flags").command else {
        panic!("not the agent command");
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(nodetrace::daemon::run_until(args, async move {
        let _ = stopped.await;
    }));
    (task, format!("http://{addr}"), stop)
}

/// Runs the machine's real runc (an allowlisted runtime binary) until the agent's correlator
/// gets events, e.g. `runc --version`.
fn run_runc() {
    let status = std::process::Command::new("runc")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run runc");
    assert!(status.success());
}

/// `/healthz` status and body.
async fn healthz(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("{url}/healthz")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stage_fails_healthz_and_is_named() {
    if skipped_unless_root("a_stalled_stage_fails_healthz_and_is_named", "eBPF") {
        return;
    }
    let data = tempfile::tempdir().expect("temp dir");
    let (task, url, stop) = start(data.path(), "stall:correlator");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        assert!(
            !task.is_finished(),
            "the agent stopped: a stall is not a death"
        );
        run_runc();
        last = healthz(&url).await.or(last);
        if let Some((503, body)) = &last {
            assert!(
                body.contains("correlator: no progress for"),
                "healthz names the stalled stage: {body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz did not fail within 30 s; last answer {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the agent stops")
        .expect("agent task")
        .expect("a stalled (not dead) stage ends the agent normally at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_stage_ends_the_agent_with_an_error_naming_it() {
    if skipped_unless_root(
        "a_dead_stage_ends_the_agent_with_an_error_naming_it",
        "eBPF",
    ) {
        return;
    }
    let data = tempfile::tempdir().expect("temp dir");
    let (mut task, url, _stop) = start(data.path(), "kill:correlator");
    // Ready first: the fault strikes at the first event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while healthz(&url).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = loop {
        run_runc();
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(500), &mut task).await {
            break result.expect("agent task");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not stop within 30 s of its correlator's death"
        );
    };
    let error = ended.expect_err("a dead stage ends the agent with an error");
    assert!(
        format!("{error:#}").contains("correlator"),
        "the error names the stage: {error:#}"
    );
}
