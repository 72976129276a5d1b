//! Part 6, freshness: a fake `runc create` (a copy of /bin/true named runc, with a bundle
//! whose config.json names a fresh pod) exits; the time until the agent's API returns its span.

use anyhow::{Context as _, bail};
use serde::Serialize;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::agent::Agent;
use super::wire::Latency;

/// How often the API is asked while waiting for a span.
const POLL: Duration = Duration::from_millis(2);
/// A span not returned by then counts as missing.
const GIVE_UP: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize)]
pub struct Freshness {
    /// From the exit of the runtime process until the API first returned its span.
    pub latency: Latency,
    pub missing: usize,
    pub poll_ms: f64,
}

/// `samples` runs of `runc` (the fake runtime binary), one pod each.
pub async fn measure(
    agent: &Agent,
    runc: &Path,
    dir: &Path,
    samples: usize,
) -> anyhow::Result<Freshness> {
    std::fs::create_dir_all(dir)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let run = std::process::id();
    let mut times = Vec::with_capacity(samples);
    let mut missing = 0;
    for i in 0..samples {
        let uid = format!("f7e50000-{:04x}-4000-8000-{:012x}", run & 0xffff, i);
        let id = format!("{:032x}{:032x}", u128::from(run), i);
        let bundle = dir.join(&id);
        std::fs::create_dir_all(&bundle)?;
        std::fs::write(bundle.join("config.json"), config(&uid, &id, i))?;
        let exited = run_fake_create(runc, &bundle, &id).await?;
        let url = format!("{}/api/traces?pod_uid={uid}&format=otlp", agent.url);
        let mut found = false;
        while exited.elapsed() < GIVE_UP {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
                && response.text().await.is_ok_and(|body| body.contains(&id))
            {
                found = true;
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if found {
            times.push(exited.elapsed().as_nanos() as u64);
        } else {
            missing += 1;
        }
        // Let each sample start its own batch in the writer.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    if times.is_empty() {
        bail!("the agent returned none of {samples} fake runc spans within {GIVE_UP:?}");
    }
    let latency = Latency::of_ns(&times);
    eprintln!(
        "[bench] freshness: p50 {:.1} ms, p99 {:.1} ms, {missing} missing",
        latency.p50_ms, latency.p99_ms
    );
    Ok(Freshness {
        latency,
        missing,
        poll_ms: POLL.as_secs_f64() * 1e3,
    })
}

/// Runs `runc create --bundle <bundle> <id>` (really /bin/true) and returns when it exited.
async fn run_fake_create(runc: &Path, bundle: &Path, id: &str) -> anyhow::Result<Instant> {
    let runc = runc.to_owned();
    let bundle = bundle.to_owned();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let status = std::process::Command::new(&runc)
            .arg0("runc")
            .args(["--root", "/run/nodetrace-bench", "create", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .status()
            .with_context(|| format!("cannot run {}", runc.display()))?;
        let exited = Instant::now();
        if !status.success() {
            bail!("{} failed: {status}", runc.display());
        }
        Ok(exited)
    })
    .await
    .context("fake runc task")?
}

/// A sandbox bundle's config.json with containerd's CRI annotations.
fn config(uid: &str, id: &str, i: usize) -> String {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "process": { "args": ["/pause"] },
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": id,
            "io.kubernetes.cri.sandbox-name": format!("fresh-{i}"),
            "io.kubernetes.cri.sandbox-namespace": "bench",
            "io.kubernetes.cri.sandbox-uid": uid,
        }
    })
    .to_string()
}
