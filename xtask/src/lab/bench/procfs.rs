//! What /proc tells about a process (CPU time, resident memory) and about the machine, and
//! signals to processes this benchmark started.

use serde::Serialize;
use std::time::Instant;

/// Sends `signal` to process `pid` (one this benchmark started).
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain kill(2); the pid is a child of this process that was not yet reaped.
        unsafe { libc::kill(pid, signal) };
    }
}

/// user + system CPU seconds of `pid` so far (fields 14 and 15 of /proc/<pid>/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / ticks)
}

/// A `VmRSS:`-style line of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory now and at its peak, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let mib = |key| status_kib(pid, key).map_or(0.0, |kib| kib as f64 / 1024.0);
    (mib("VmRSS:"), mib("VmHWM:"))
}

/// CPU use and memory of a process over a stretch of time.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub seconds: f64,
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub rss_peak_mib: f64,
}

/// Starts measuring a process's CPU time.
pub struct UsageMeter {
    pid: u32,
    cpu: f64,
    started: Instant,
}

impl UsageMeter {
    pub fn start(pid: u32) -> Self {
        Self {
            pid,
            cpu: cpu_seconds(pid).unwrap_or(0.0),
            started: Instant::now(),
        }
    }

    pub fn finish(&self) -> Usage {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(self.pid).unwrap_or(self.cpu) - self.cpu;
        let (rss_mib, rss_peak_mib) = rss_mib(self.pid);
        Usage {
            seconds,
            cpu_percent: 100.0 * cpu / seconds.max(1e-9),
            rss_mib,
            rss_peak_mib,
        }
    }
}

/// The machine the benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub cpu: String,
    /// 1-minute load average when the run started (other work on the machine shows here).
    pub load_at_start: f64,
}

impl Machine {
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let memory_kib: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            memory_mib: memory_kib / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
            load_at_start: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        let (rss, peak) = rss_mib(pid);
        assert!(rss > 0.0 && peak >= rss);
        let machine = Machine::read();
        assert!(machine.nproc > 0 && machine.memory_mib > 0 && !machine.kernel.is_empty());
    }
}
