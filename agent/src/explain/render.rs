//! The explanation in words, for a terminal.

use std::fmt::Write as _;

use super::Explanation;

fn seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// The explanation as text: the path's steps with their share, the gaps, then the findings.
pub fn render(explanation: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pod {}: {} in {} (from {} to {})",
        explanation.pod,
        if explanation.started {
            "started"
        } else {
            "did NOT start"
        },
        seconds(explanation.duration_ns),
        explanation.from,
        explanation.to
    );
    let _ = writeln!(out, "\ncritical path:");
    let mut items: Vec<(u64, String)> = explanation
        .steps
        .iter()
        .map(|s| {
            let subject = s.subject.as_deref().unwrap_or("");
            let error = s
                .error
                .as_ref()
                .map(|e| format!("  FAILED: {e}"))
                .unwrap_or_default();
            (
                s.start_unix_ns,
                format!(
                    "  {:<38} {:<24} {:>9} {:>5.1}%{error}",
                    s.name,
                    subject,
                    seconds(s.duration_ns),
                    100.0 * s.share
                ),
            )
        })
        .chain(explanation.gaps.iter().map(|g| {
            (
                g.start_unix_ns,
                format!(
                    "  {:<63} {:>9} {:>5.1}%",
                    format!("(gap {}: kubelet)", g.position),
                    seconds(g.duration_ns),
                    100.0 * g.share
                ),
            )
        }))
        .collect();
    items.sort_by_key(|(at, _)| *at);
    for (_, line) in items {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\nfindings:");
    for finding in &explanation.findings {
        let _ = writeln!(out, "  [{}] {}", finding.kind, finding.text);
    }
    out
}
