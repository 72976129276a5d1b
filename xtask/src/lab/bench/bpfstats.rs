//! The kernel's BPF run-time statistics: `kernel.bpf_stats_enabled` switched on for a while
//! (and restored), and each program's `run_time_ns` / `run_cnt` read from the fdinfo of the
//! program file descriptors a process holds; names from `bpftool` when it is installed, else
//! from the tracepoint its link names.

use anyhow::Context as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns BPF statistics on; puts back the previous setting when dropped.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn on() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("cannot read {STATS_SYSCTL}"))?;
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write {STATS_SYSCTL}"))?;
        Ok(Self {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "[bench] could not restore {STATS_SYSCTL} to {}: {error}",
                self.previous
            );
        }
    }
}

/// One program's counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgCounters {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The counters of every BPF program `pid` holds, by program id.
pub fn snapshot(pid: u32) -> anyhow::Result<BTreeMap<u32, ProgCounters>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut programs = BTreeMap::new();
    let mut tracepoints: BTreeMap<u32, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let info = parse_fdinfo(&text);
        let Some(id) = info.get("prog_id").and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        if let (Some(time), Some(count)) = (info.get("run_time_ns"), info.get("run_cnt")) {
            programs.insert(
                id,
                ProgCounters {
                    name: String::new(),
                    run_time_ns: time.parse().unwrap_or(0),
                    run_cnt: count.parse().unwrap_or(0),
                },
            );
        } else if let Some(tracepoint) = info.get("tp_name") {
            tracepoints.insert(id, tracepoint.clone());
        }
    }
    let names = bpftool_names();
    for (id, counters) in &mut programs {
        counters.name = names
            .get(id)
            .or_else(|| tracepoints.get(id))
            .cloned()
            .unwrap_or_else(|| format!("prog {id}"));
    }
    Ok(programs)
}

fn parse_fdinfo(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Program names by id from `bpftool prog show --json` (empty when bpftool is missing).
fn bpftool_names() -> BTreeMap<u32, String> {
    let Ok(output) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return BTreeMap::new();
    };
    let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout) else {
        return BTreeMap::new();
    };
    list.iter()
        .filter_map(|p| {
            let id = u32::try_from(p["id"].as_u64()?).ok()?;
            Some((id, p["name"].as_str()?.to_owned()))
        })
        .collect()
}

/// What a program cost over a stretch of time.
#[derive(Clone, Debug, Serialize)]
pub struct ProgCost {
    pub program: String,
    pub invocations: u64,
    pub run_time_ns: u64,
    /// run_time_ns / invocations.
    pub ns_per_invocation: f64,
}

/// The cost of each program between two snapshots (programs that did not run are left out).
pub fn costs(
    before: &BTreeMap<u32, ProgCounters>,
    after: &BTreeMap<u32, ProgCounters>,
) -> Vec<ProgCost> {
    after
        .iter()
        .filter_map(|(id, now)| {
            let then = before.get(id);
            let invocations = now.run_cnt - then.map_or(0, |t| t.run_cnt);
            let run_time_ns = now.run_time_ns - then.map_or(0, |t| t.run_time_ns);
            (invocations > 0).then(|| ProgCost {
                program: now.name.clone(),
                invocations,
                run_time_ns,
                ns_per_invocation: run_time_ns as f64 / invocations as f64,
            })
        })
        .collect()
}

/// `name 123 ns × 4567, ...` for the console.
pub fn describe(costs: &[ProgCost]) -> String {
    costs
        .iter()
        .map(|c| {
            format!(
                "{} {:.0} ns × {}",
                c.program, c.ns_per_invocation, c.invocations
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_from_fdinfo_text() {
        let prog = "pos:\t0\nprog_type:\t5\nprog_id:\t3739\nrun_time_ns:\t1200\nrun_cnt:\t4\n";
        let info = parse_fdinfo(prog);
        assert_eq!(info["prog_id"], "3739");
        assert_eq!(info["run_time_ns"], "1200");
        let counters = |time, count| ProgCounters {
            name: "sched_process_exec".into(),
            run_time_ns: time,
            run_cnt: count,
        };
        let before = BTreeMap::from([(1, counters(1200, 4)), (2, counters(5, 1))]);
        let after = BTreeMap::from([(1, counters(2200, 8)), (2, counters(5, 1))]);
        let costs = costs(&before, &after);
        assert_eq!(costs.len(), 1, "a program that did not run is left out");
        assert_eq!(costs[0].invocations, 4);
        assert!((costs[0].ns_per_invocation - 250.0).abs() < 1e-9);
    }
}
