//! `cargo xtask demo`: a private containerd + runc, the nodetrace agent, one pod lifecycle
//! through the CRI API, and the pod's trace printed as a waterfall. Everything it starts is
//! stopped when it is done or on Ctrl-C.

use anyhow::{Context as _, bail};
use nodetrace_testbed::{CriCall, Testbed};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Address of the agent's API during the demo.
    #[arg(long, default_value = "127.0.0.1:9750")]
    listen: String,
    /// Keep the agent (and its spans) running after the demo until Ctrl-C, to query it.
    #[arg(long)]
    keep: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo loads eBPF programs and runs containerd: run it as root");
    }
    let binary = build_agent()?;
    let work = std::env::temp_dir().join(format!("nodetrace-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start a tokio runtime")?;
    let result = runtime.block_on(async {
        tokio::select! {
            result = demo(&binary, &work, &args) => result,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\n[demo] interrupted; stopping everything");
                Ok(())
            }
        }
    });
    // The testbed and the agent guard were dropped with the future: both clean up on drop.
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn step(text: &str) {
    eprintln!("[demo] {text}");
}

fn build_agent() -> anyhow::Result<PathBuf> {
    step("building the nodetrace agent");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--package", "nodetrace", "--bin", "nodetrace"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the agent failed");
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("debug").join("nodetrace"))
}

/// The agent process; killed when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.0.id()).context("pid out of range")?;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        // Detaching its ~150 CRI uprobes takes the kernel a while (each waits for a grace
        // period), so the agent needs some seconds to exit.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.0.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the agent did not stop within 60 s of SIGTERM")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn demo(binary: &Path, work: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    let server = format!("http://{}", args.listen);
    step("starting a private containerd with locally built pause and busybox images");
    let testbed = Testbed::start(&work.join("testbed"))
        .await
        .context("cannot start the private containerd")?;

    step(&format!("starting the agent on {server}"));
    let agent = AgentProcess(
        Command::new(binary)
            .args([
                "agent",
                "--listen",
                &args.listen,
                "--node-name",
                "demo-node",
                "--no-kube",
            ])
            .arg("--data-dir")
            .arg(work.join("agent-data"))
            .arg("--cri-socket")
            .arg(testbed.containerd().socket())
            .arg("--runtime-state-root")
            .arg(testbed.containerd().state_dir())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?,
    );
    wait_ready(&server).await?;

    step("running a pod lifecycle through the CRI API (namespace demo, pod web)");
    let lifecycle =
        testbed
            .pod("demo", "web")
            .with_exec(&["sh", "-c", "echo hello from an exec probe"]);
    let report = lifecycle
        .run(testbed.cri())
        .await
        .context("the pod lifecycle failed")?;
    for call in &report.calls {
        eprintln!(
            "[demo]   {:<17} {:>7.1} ms",
            call_name(call.call),
            call.window.duration().as_secs_f64() * 1000.0
        );
    }
    wait_settled(&server, &report.pod.uid).await?;

    println!();
    let status = Command::new(binary)
        .args(["trace", "--pod", "demo/web", "--server", &server])
        .status()
        .context("cannot run nodetrace trace")?;
    if !status.success() {
        bail!("nodetrace trace failed");
    }
    println!();
    println!("The same trace from the API:");
    println!("  {server}/api/traces?pod=demo/web                (Kelemetry / Jaeger model JSON)");
    println!(
        "  {server}/api/traces?pod_uid={}&format=otlp",
        report.pod.uid
    );
    println!("  {server}/api/traces?pod=demo/web&format=jaeger  (Jaeger UI JSON file)");

    if args.keep {
        println!("\nThe agent keeps running; press Ctrl-C to stop it and clean up.");
        std::future::pending::<()>().await;
    }
    step(
        "stopping the agent (the kernel takes some seconds to detach its uprobes) and the private containerd",
    );
    agent.stop()?;
    let teardown = testbed
        .stop()
        .context("cleaning up the private containerd")?;
    step(&format!("cleaned up in {:?}", teardown.took));
    Ok(())
}

fn call_name(call: CriCall) -> String {
    format!("{call:?}")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn wait_ready(server: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = get(&format!("{server}/readyz")).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent did not become ready at {server}/readyz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the pod's span count stops growing (the last processes exit after the calls).
async fn wait_settled(server: &str, uid: &str) -> anyhow::Result<()> {
    let url = format!("{server}/api/traces?pod_uid={uid}&format=otlp");
    let mut last = 0;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let count = match get(&url).await {
            Some((200, body)) => body.matches("\"spanId\"").count(),
            _ => 0,
        };
        if count != last {
            last = count;
            stable_since = Instant::now();
        } else if count > 0 && stable_since.elapsed() > Duration::from_millis(800) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
