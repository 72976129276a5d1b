//! The usual ad-hoc alternative: `bpftrace` with an execsnoop-style program that prints every
//! exec (pid, command, argv) to /dev/null. Stopped with SIGINT; SIGKILL when dropped.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

use super::procfs;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Bpftrace {
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// Every execve/execveat with its arguments, as execsnoop prints them. The BEGIN block (run
/// once every probe is attached) touches `ready` (`system` needs `--unsafe`; bpftrace takes
/// strings of at most 64 bytes, so `ready` is a short path in /tmp).
fn program(ready: &Path) -> String {
    format!(
        r#"BEGIN {{ system("touch {}"); }}
tracepoint:syscalls:sys_enter_execve,
tracepoint:syscalls:sys_enter_execveat
{{
    printf("%-8d %-16s ", pid, comm);
    join(args->argv);
}}"#,
        ready.display()
    )
}

impl Bpftrace {
    /// Starts bpftrace (its log in `dir`) and waits until its probes are attached.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ready = PathBuf::from(format!("/tmp/ntb-{}.ready", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let log = dir.join("bpftrace.log");
        let child = Command::new("bpftrace")
            .args(["--unsafe", "-e", &program(&ready)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .process_group(0)
            .spawn()
            .context("cannot start bpftrace (Debian package bpftrace)")?;
        let pid = child.id().context("bpftrace has no pid")?;
        let mut tracer = Self { child, pid, log };
        let started = Instant::now();
        while !ready.exists() {
            if let Some(status) = tracer.child.try_wait()? {
                bail!(
                    "bpftrace exited ({status}) while starting: {}",
                    std::fs::read_to_string(&tracer.log).unwrap_or_default()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("bpftrace did not attach within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_file(&ready);
        Ok(tracer)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGINT (bpftrace's normal stop), then waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        procfs::signal(self.pid, libc::SIGINT);
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
            bail!("bpftrace did not stop within 20 s of SIGINT; killed");
        }
        Ok(())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.start_kill();
            let _ = self.child.try_wait();
        }
    }
}
