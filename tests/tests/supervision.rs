//! Stage death and stall: a test-only fault (`--test-fault`, the `test-faults` feature) breaks
//! the correlator at its first event; `/healthz` must name it, and a dead stage must end the
//! agent with an error. Needs root (the agent loads its eBPF programs).

mod common;

use common::{Agent, skipped_unless_root};
use std::time::Duration;

/// The agent with `fault`, a 2 s stall timeout and no CRI runtime.
fn start(data_dir: &std::path::Path, fault: &str) -> Agent {
    Agent::spawn(
        data_dir,
        &data_dir.join("no-runtime.sock"),
        [
            "--no-kube".to_owned(),
            "--stall-timeout=2s".to_owned(),
            format!("--test-fault={fault}"),
        ],
    )
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
    let mut agent = start(data.path(), "stall:correlator");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if let Some(ended) = agent.ended_within(Duration::ZERO).await {
            panic!("the agent stopped ({ended:?}): a stall is not a death");
        }
        run_runc();
        last = healthz(&agent.url()).await.or(last);
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
    // A stalled (not dead) stage: the agent still stops normally, without error.
    agent.stop(Duration::from_secs(30)).await;
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
    let mut agent = start(data.path(), "kill:correlator");
    // Ready first: the fault strikes at the first event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while healthz(&agent.url()).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = loop {
        run_runc();
        if let Some(result) = agent.ended_within(Duration::from_millis(500)).await {
            break result;
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
