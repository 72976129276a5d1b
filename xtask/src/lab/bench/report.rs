//! The results of one run: written as JSON and as a Markdown table (with the targets of the
//! benchmark issue beside each figure) under bench/results/, the table also as latest.md.

use anyhow::Context as _;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::bpfstats::ProgCost;
use super::cri_path::CriPath;
use super::exec_path::ExecPath;
use super::freshness::Freshness;
use super::kernel::KernelCost;
use super::plan::Plan;
use super::procfs::{Machine, Usage};
use super::wire::{Ingest, Query};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Footprint {
    pub idle: Option<Usage>,
    pub exec_storm: Option<Usage>,
    pub cri_lifecycles: Option<Usage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub started_utc: String,
    pub took_s: f64,
    pub machine: Machine,
    pub plan: Plan,
    pub exec_path: Option<ExecPath>,
    pub cri_path: Option<CriPath>,
    pub kernel_cost: Option<KernelCost>,
    pub ingest: Option<Ingest>,
    pub query: Option<Query>,
    pub freshness: Option<Freshness>,
    pub hostile: Option<super::hostile::Hostile>,
    pub diagnostics: Option<super::diagnostics::Diagnostics>,
    pub real_node: Option<super::real_node::RealNode>,
    pub footprint: Footprint,
    /// Parts that failed, with why.
    pub failures: Vec<String>,
}

/// UTC calendar time of `unix_s`: (year, month, day, hour, minute, second).
fn utc(unix_s: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Days since 1970-01-01 to a proleptic Gregorian date (eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
        (secs % 60) as u32,
    )
}

/// Now as `2026-11-22T21:00:05Z` and as the file stem `2026-11-22T2100Z`.
pub fn now_utc() -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = utc(now);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}Z"),
    )
}

/// Writes `<stem>.json`, `<stem>.md` and `latest.md` in `dir`; returns the Markdown.
pub fn write(dir: &Path, stem: &str, results: &Results) -> anyhow::Result<(PathBuf, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(results)? + "\n")?;
    let markdown = markdown(results);
    std::fs::write(dir.join(format!("{stem}.md")), &markdown)?;
    std::fs::write(dir.join("latest.md"), &markdown)?;
    Ok((json, markdown))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cost_of<'c>(costs: &'c [ProgCost], program: &str) -> Option<&'c ProgCost> {
    costs.iter().find(|c| c.program == program)
}

/// One Markdown row: figure, result, target, verdict.
struct Rows(String);

impl Rows {
    fn row(&mut self, part: &str, figure: &str, result: String, target: &str, verdict: &str) {
        let _ = writeln!(
            self.0,
            "| {part} | {figure} | {result} | {target} | {verdict} |"
        );
    }
}

pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut out = format!(
        "# nodetrace benchmark ({} mode), {}\n\n\
         Machine: {} CPUs ({}), {:.1} GiB memory, kernel {}; load average {:.2} when the run \
         started. The run took {:.0} s (`cargo xtask bench{}`). Ratios and percentiles come from \
         one run with the baseline measured in the same run; absolute times on a shared 2-core \
         VM are noisy.\n\n\
         | part | figure | result | target (issue 6) | |\n|---|---|---|---|---|\n",
        r.plan.mode,
        r.started_utc,
        m.nproc,
        m.cpu,
        m.memory_mib as f64 / 1024.0,
        m.kernel,
        m.load_at_start,
        r.took_s,
        if r.plan.mode == "quick" {
            " --quick"
        } else {
            ""
        },
    );
    let mut rows = Rows(String::new());
    exec_rows(&mut rows, r);
    cri_rows(&mut rows, r);
    kernel_rows(&mut rows, r);
    pipeline_rows(&mut rows, r);
    footprint_rows(&mut rows, r);
    hostile_rows(&mut rows, r);
    diagnostics_rows(&mut rows, r);
    real_node_rows(&mut rows, r);
    out.push_str(&rows.0);
    details(&mut out, r);
    if !r.failures.is_empty() {
        out.push_str("\n## Parts that failed\n\n");
        for failure in &r.failures {
            let _ = writeln!(out, "- {}", failure.replace('\n', " "));
        }
    }
    out
}

fn exec_rows(rows: &mut Rows, r: &Results) {
    let Some(e) = &r.exec_path else { return };
    let n = thousands(e.baseline.execs as f64);
    rows.row(
        "1 exec path",
        &format!(
            "median fork+exec+wait of /bin/true, no tracer ({n} execs, {} rounds)",
            e.rounds
        ),
        format!("{:.1} µs", e.baseline.median_us),
        "",
        "",
    );
    // The verdict uses the paired figures (each round against its own baseline), which
    // cancel the drift of a shared machine better than the pooled medians.
    let below_bpftrace = e
        .bpftrace
        .as_ref()
        .is_some_and(|b| e.nodetrace.paired_slowdown_percent < b.paired_slowdown_percent);
    rows.row(
        "1 exec path",
        "with the nodetrace agent: median, slowdown pooled (paired per round)",
        format!(
            "{:.1} µs, {:+.2}% ({:+.2}%)",
            e.nodetrace.median_us,
            e.nodetrace.slowdown_percent,
            e.nodetrace.paired_slowdown_percent
        ),
        "≤ 2%, below bpftrace's",
        // A tracer cannot make exec faster: a large negative figure is the machine's noise.
        if e.nodetrace.paired_slowdown_percent < -2.0 {
            "inconclusive (noise)"
        } else {
            verdict(e.nodetrace.paired_slowdown_percent <= 2.0 && below_bpftrace)
        },
    );
    if let Some(k) = &r.kernel_cost {
        let per_run: f64 = [
            "sched_process_exec",
            "sched_process_fork",
            "sched_process_exit",
        ]
        .iter()
        .filter_map(|p| cost_of(&k.nodetrace_exec_storm, p))
        .map(|c| c.ns_per_invocation)
        .sum();
        let bpftrace: f64 = k
            .bpftrace_exec_storm
            .iter()
            .map(|c| c.ns_per_invocation)
            .sum();
        let base_ns = e.baseline.median_us * 1e3;
        rows.row(
            "1 exec path",
            "slowdown implied by the BPF run time per /bin/true run (part 3) ÷ baseline median: \
             nodetrace; bpftrace (its in-kernel part only)",
            format!(
                "+{:.2}% ({per_run:.0} ns); +{:.2}% ({bpftrace:.0} ns)",
                100.0 * per_run / base_ns,
                100.0 * bpftrace / base_ns
            ),
            "≤ 2%",
            verdict(100.0 * per_run / base_ns <= 2.0),
        );
    }
    let bpftrace = match (&e.bpftrace, &e.bpftrace_error) {
        (Some(b), _) => format!(
            "{:.1} µs, {:+.2}% ({:+.2}%)",
            b.median_us, b.slowdown_percent, b.paired_slowdown_percent
        ),
        (None, error) => format!("not measured: {}", error.as_deref().unwrap_or("?")),
    };
    rows.row(
        "1 exec path",
        "with bpftrace execsnoop (prints every exec to /dev/null): same",
        bpftrace,
        "(comparison)",
        "",
    );
}

fn cri_rows(rows: &mut Rows, r: &Results) {
    let Some(c) = &r.cri_path else { return };
    rows.row(
        "2 CRI path",
        &format!(
            "pod lifecycle (9 CRI calls) median, agent / no agent ({} + {} lifecycles)",
            c.baseline.count, c.nodetrace.count
        ),
        format!(
            "{:.3} ({:.1} → {:.1} ms)",
            c.median_ratio, c.baseline.p50_ms, c.nodetrace.p50_ms
        ),
        "≤ 1.02",
        verdict(c.median_ratio <= 1.02),
    );
    rows.row(
        "2 CRI path",
        "pod lifecycle p99, agent / no agent",
        format!(
            "{:.3} ({:.1} → {:.1} ms)",
            c.p99_ratio, c.baseline.p99_ms, c.nodetrace.p99_ms
        ),
        "≤ 1.02",
        verdict(c.p99_ratio <= 1.02),
    );
}

fn kernel_rows(rows: &mut Rows, r: &Results) {
    if let Some(k) = &r.kernel_cost {
        for program in [
            "sched_process_exec",
            "sched_process_fork",
            "sched_process_exit",
        ] {
            let storm = cost_of(&k.nodetrace_exec_storm, program);
            let runs = cost_of(&k.nodetrace_runtime_runs, program);
            let text = |c: Option<&ProgCost>| {
                c.map_or("–".to_owned(), |c| {
                    format!("{:.0} ns", c.ns_per_invocation)
                })
            };
            let (target, met) = if program == "sched_process_exec" {
                (
                    "≤ 500 ns",
                    storm.is_some_and(|c| c.ns_per_invocation <= 500.0),
                )
            } else {
                ("", true)
            };
            rows.row(
                "3 kernel cost",
                &format!("`{program}` per invocation: /bin/true storm; fake runc runs (followed)"),
                format!("{}; {}", text(storm), text(runs)),
                target,
                if target.is_empty() { "" } else { verdict(met) },
            );
        }
        let bpftrace: Vec<String> = k
            .bpftrace_exec_storm
            .iter()
            .map(|c| format!("`{}` {:.0} ns", c.program, c.ns_per_invocation))
            .collect();
        let bpftrace = match &k.bpftrace_error {
            Some(error) => format!("not measured: {error}"),
            None => bpftrace.join(", "),
        };
        rows.row(
            "3 kernel cost",
            "bpftrace execsnoop per invocation, /bin/true storm",
            bpftrace,
            "(comparison)",
            "",
        );
    }
    if let Some(c) = &r.cri_path {
        let probes: Vec<String> = c
            .probe_costs
            .iter()
            .map(|p| {
                format!(
                    "`{}` {:.0} ns × {}",
                    p.program,
                    p.ns_per_invocation,
                    thousands(p.invocations as f64)
                )
            })
            .collect();
        rows.row(
            "3 kernel cost",
            "per invocation during the traced CRI lifecycles (uprobe trap cost not included)",
            probes.join(", "),
            "",
            "",
        );
    }
}

fn pipeline_rows(rows: &mut Rows, r: &Results) {
    if let Some(i) = &r.ingest {
        let sustained = i.max_sustained_per_s.unwrap_or(0.0);
        rows.row(
            "4 ingest",
            "highest offered rate sustained with no drops (correlator → store writer)",
            format!(
                "{} spans/s; drops from {}",
                thousands(sustained),
                i.first_drop_per_s
                    .map_or("– (none seen)".to_owned(), |d| format!(
                        "{} spans/s",
                        thousands(d)
                    ))
            ),
            "≥ 200,000 spans/s",
            verdict(sustained >= 200_000.0),
        );
        rows.row(
            "4 ingest",
            "saturated pipeline; correlator alone; store alone (512-span commits)",
            format!(
                "{}; {}; {} spans/s (commit p50 {:.1} ms)",
                thousands(i.saturated_per_s),
                thousands(i.correlator_only_per_s),
                thousands(i.store_only_per_s),
                i.store_commit.p50_ms
            ),
            "",
            "",
        );
    }
    if let Some(q) = &r.query {
        let spans = thousands(q.spans_stored as f64);
        let full = q.spans_stored >= 1_000_000;
        let query_verdict = |p99: f64| match (p99 <= 5.0, full) {
            (met, true) => verdict(met),
            (true, false) => "met at this size (target is at 1M)",
            (false, false) => "**missed** already at this size",
        };
        rows.row(
            "5 query",
            &format!("pod trace by UID over HTTP, {spans} spans stored: p50 / p99"),
            format!("{:.2} / {:.2} ms", q.by_uid.p50_ms, q.by_uid.p99_ms),
            "p99 ≤ 5 ms at 1M spans",
            query_verdict(q.by_uid.p99_ms),
        );
        rows.row(
            "5 query",
            "pod trace by namespace/name: p50 / p99",
            format!("{:.2} / {:.2} ms", q.by_name.p50_ms, q.by_name.p99_ms),
            "p99 ≤ 5 ms at 1M spans",
            query_verdict(q.by_name.p99_ms),
        );
        rows.row(
            "5 query",
            "bytes per span: pages used; data file",
            format!(
                "{:.0}; {:.0} B",
                q.used_bytes_per_span, q.disk_bytes_per_span
            ),
            "",
            "",
        );
    }
    if let Some(f) = &r.freshness {
        rows.row(
            "6 freshness",
            &format!(
                "runc exit → span returned by the API: p50 / p99 ({} samples, {} missing)",
                f.latency.count, f.missing
            ),
            format!("{:.0} / {:.0} ms", f.latency.p50_ms, f.latency.p99_ms),
            "p99 ≤ 250 ms",
            verdict(f.latency.p99_ms <= 250.0 && f.missing == 0),
        );
    }
}

fn footprint_rows(rows: &mut Rows, r: &Results) {
    let f = &r.footprint;
    let parts = [
        ("idle", &f.idle),
        ("exec storm", &f.exec_storm),
        ("CRI lifecycles", &f.cri_lifecycles),
    ];
    let seen: Vec<(&str, &Usage)> = parts
        .iter()
        .filter_map(|(name, usage)| usage.as_ref().map(|u| (*name, u)))
        .collect();
    if seen.is_empty() {
        return;
    }
    let rss: Vec<String> = seen
        .iter()
        .map(|(name, u)| format!("{name} {:.1}", u.rss_mib))
        .collect();
    let peak = seen.iter().map(|(_, u)| u.rss_peak_mib).fold(0.0, f64::max);
    rows.row(
        "7 footprint",
        "agent RSS (MiB); peak",
        format!("{}; peak {peak:.1}", rss.join(", ")),
        "≤ 64 MiB",
        verdict(peak <= 64.0),
    );
    let cpu: Vec<String> = seen
        .iter()
        .map(|(name, u)| format!("{name} {:.2}%", u.cpu_percent))
        .collect();
    rows.row(
        "7 footprint",
        "agent CPU (user + system, % of one core)",
        cpu.join(", "),
        "",
        "",
    );
}

fn hostile_rows(rows: &mut Rows, r: &Results) {
    let Some(h) = &r.hostile else { return };
    rows.row(
        "8 hostile tenant",
        &format!(
            "spans of {} normal pod lifecycles lost during {} look-alike execs ({}/s)",
            h.lifecycles,
            thousands(h.flood_execs as f64),
            thousands(h.flood_execs_per_s)
        ),
        format!(
            "{} of {} (a quiet lifecycle has {})",
            h.spans_lost,
            h.spans_per_lifecycle * h.lifecycles,
            h.spans_per_lifecycle
        ),
        "0 (issue 10)",
        verdict(h.spans_lost == 0),
    );
    let drops: Vec<String> = h
        .drops
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    rows.row(
        "8 hostile tenant",
        "look-alikes counted; kernel events received; drops by reason",
        format!(
            "{}; {}; {}",
            thousands(h.lookalikes_counted as f64),
            thousands(h.kernel_events_received as f64),
            drops.join(", ")
        ),
        "every look-alike counted, none followed",
        verdict(h.lookalikes_counted as usize >= h.flood_execs),
    );
    rows.row(
        "8 hostile tenant",
        "agent peak RSS before / after the flood (MiB)",
        format!("{:.1} / {:.1}", h.rss_peak_before_mib, h.rss_peak_after_mib),
        "≤ 256 MiB (the DaemonSet's limit)",
        verdict(h.rss_peak_after_mib <= 256.0),
    );
}

fn diagnostics_rows(rows: &mut Rows, r: &Results) {
    let Some(d) = &r.diagnostics else { return };
    let sizes = |c: &super::diagnostics::LevelCost| {
        c.bytes_xlated
            .iter()
            .map(|(p, b)| format!("{p} {}", thousands(*b as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.row(
        "9 eBPF diagnostics",
        "CRI probe BPF time per invocation, --ebpf-log-level off / debug (ratio)",
        format!(
            "{:.0} / {:.0} ns ({:.3}; {} and {} invocations)",
            d.off.ns_per_invocation,
            d.debug.ns_per_invocation,
            d.ratio,
            thousands(d.off.invocations as f64),
            thousands(d.debug.invocations as f64)
        ),
        "off pays nothing measurable (issue 11)",
        "",
    );
    rows.row(
        "9 eBPF diagnostics",
        "loaded program size (bytes_xlated), off / debug",
        format!("{} / {}", sizes(&d.off), sizes(&d.debug)),
        "off: the logging code removed",
        verdict(
            d.off
                .bytes_xlated
                .iter()
                .all(|(p, b)| d.debug.bytes_xlated.get(p).is_some_and(|dbg| b < dbg)),
        ),
    );
}

fn real_node_rows(rows: &mut Rows, r: &Results) {
    let Some(n) = &r.real_node else { return };
    rows.row(
        "10 real node",
        "the kubelet's own CRI client spans matched by the agent's spans",
        format!(
            "{} of {} ({:.1}%) over {} pods created and deleted: {:?}",
            n.matched, n.kubelet_calls, n.agreement_percent, n.pods, n.methods
        ),
        "100% (fail below 99%)",
        verdict(n.agreement_percent >= 99.0),
    );
    rows.row(
        "10 real node",
        "the agent's CRI spans under a kubelet span (SyncPod uprobes)",
        format!(
            "{} of {} ({} kubelet spans; the others: {:?})",
            n.cri_under_kubelet, n.cri_spans, n.kubelet_spans, n.not_under_kubelet
        ),
        "every call kubelet's pod worker made",
        "",
    );
}

fn details(out: &mut String, r: &Results) {
    if let Some(c) = &r.cri_path {
        out.push_str("\n### CRI calls, median with and without the agent\n\n");
        out.push_str("| call | no agent | agent | ratio |\n|---|---|---|---|\n");
        for call in &c.per_call {
            let _ = writeln!(
                out,
                "| {} | {:.1} ms | {:.1} ms | {:.3} |",
                call.call, call.baseline_p50_ms, call.nodetrace_p50_ms, call.ratio
            );
        }
        let stops: Vec<String> = c.agent_stop_s.iter().map(|s| format!("{s:.1} s")).collect();
        let _ = writeln!(
            out,
            "\nThe testbed started in {:.1} s; the agent took {} to stop (uprobe detach).",
            c.testbed_start_s,
            stops.join(", ")
        );
    }
    if let Some(i) = &r.ingest {
        out.push_str("\n### Ingest steps\n\n");
        out.push_str(
            "| offered spans/s | committed/s while offered | dropped events | dropped spans | \
             backlog at end | drained in | sustained |\n|---|---|---|---|---|---|---|\n",
        );
        for s in &i.steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.0} ms | {} |",
                thousands(s.offered_per_s),
                thousands(s.committed_per_s),
                s.dropped_events,
                s.dropped_spans,
                s.backlog_at_end,
                s.drain_ms,
                if s.sustained { "yes" } else { "no" }
            );
        }
        let _ = writeln!(
            out,
            "\nQueues as in the daemon: {} kernel events, {} spans; the writer commits {} spans \
             per transaction (with fsync).",
            i.event_queue, i.span_queue, i.batch_max_spans
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(utc(1_795_381_205), (2026, 11, 22, 21, 0, 5));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(200_000.0), "200,000");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
    }
}
