//! A terminal waterfall of traces: one line per span, indented under its parent, with its offset
//! from the trace's start, its duration, a bar scaled to the terminal width, the service and
//! operation, and the attributes that matter when a pod is slow or stuck.

use super::format::go_types::rfc3339_nano;
use super::format::jaeger_model::{Span, Trace};
use crate::model::{SpanId, keys};
use std::collections::HashMap;
use std::fmt::Write as _;

pub const DEFAULT_WIDTH: usize = 100;
/// Width of the offset and duration columns.
const TIME_COLUMN: usize = 9;
/// Offset, space, duration, space, left bar edge.
const PREFIX: usize = 2 * TIME_COLUMN + 3;
const MIN_BAR: usize = 10;
const MIN_LABEL: usize = 16;

/// The traces as text, `width` columns wide (labels longer than the room left are cut with `…`).
pub fn render(traces: &[Trace], width: usize) -> String {
    let traces: Vec<&Trace> = traces.iter().filter(|t| !t.spans.is_empty()).collect();
    if traces.is_empty() {
        return "no spans\n".to_owned();
    }
    let mut out = String::new();
    for (i, trace) in traces.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_trace(&mut out, trace, width);
    }
    out
}

fn render_trace(out: &mut String, trace: &Trace, width: usize) {
    let start = trace
        .spans
        .iter()
        .map(|s| s.start_unix_ns)
        .min()
        .unwrap_or(0);
    let end = trace.spans.iter().map(end_ns).max().unwrap_or(start);
    let total = end.saturating_sub(start);
    let trace_id = trace
        .spans
        .first()
        .map(|s| s.trace_id.to_hex())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "trace {trace_id}  {} spans  {}  from {}",
        trace.spans.len(),
        duration(total),
        rfc3339_nano(start).unwrap_or_default()
    );
    for warning in &trace.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let bar_width = (width.saturating_sub(PREFIX + 2) / 3).max(MIN_BAR);
    let label_width = width.saturating_sub(PREFIX + bar_width + 2).max(MIN_LABEL);
    let services = services(trace);
    for (index, depth) in tree_order(&trace.spans) {
        let Some(span) = trace.spans.get(index) else {
            continue;
        };
        let offset = span.start_unix_ns.saturating_sub(start);
        let length = end_ns(span).saturating_sub(span.start_unix_ns);
        let service = services.get(index).map(String::as_str).unwrap_or_default();
        let label = format!(
            "{}{} [{service}]{}",
            "  ".repeat(depth),
            span.operation_name,
            key_attributes(span)
        );
        let _ = writeln!(
            out,
            "{:>w$} {:>w$} │{}│ {}",
            format!("+{}", duration(offset)),
            duration(length),
            bar(offset, length, total, bar_width),
            cut(&label, label_width),
            w = TIME_COLUMN
        );
        if let Some(message) = error_message(span) {
            let detail = format!("{}  ! {message}", "  ".repeat(depth));
            let _ = writeln!(
                out,
                "{:w$}│{}│ {}",
                "",
                " ".repeat(bar_width),
                cut(&detail, label_width),
                w = PREFIX - 1
            );
        }
    }
}

/// The status description of a failed span (shown on a line of its own).
fn error_message(span: &Span) -> Option<String> {
    let message = span.tag("otel.status_description")?.value_string();
    (failed(span) && !message.is_empty()).then_some(message)
}

fn failed(span: &Span) -> bool {
    span.tag("error").is_some_and(|t| t.v_bool)
        || span
            .tag("otel.status_code")
            .is_some_and(|t| t.v_str == "ERROR")
}

fn end_ns(span: &Span) -> u64 {
    span.start_unix_ns
        .saturating_add(u64::try_from(span.duration_ns).unwrap_or(0))
}

/// Each span's service: its own process, else the trace's process map.
fn services(trace: &Trace) -> Vec<String> {
    trace
        .spans
        .iter()
        .map(|span| match &span.process {
            Some(process) => process.service_name.clone(),
            None => trace
                .process_map
                .iter()
                .find(|m| m.process_id == span.process_id)
                .map(|m| m.process.service_name.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// Depth-first order of (span index, depth): children under their parent, siblings by start.
/// Spans whose parent is not in the trace are roots; cycles are broken.
fn tree_order(spans: &[Span]) -> Vec<(usize, usize)> {
    let by_id: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id().and_then(|p| by_id.get(&p)) {
            Some(&parent) if parent != i => children[parent].push(i),
            _ => roots.push(i),
        }
    }
    let key = |&i: &usize| (spans[i].start_unix_ns, spans[i].span_id);
    roots.sort_by_key(key);
    for list in &mut children {
        list.sort_by_key(key);
    }
    let mut order = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    // Spans on a parent cycle are reached from no root: start from them afterwards.
    let rest: Vec<usize> = (0..spans.len()).collect();
    for start in roots.into_iter().chain(rest) {
        let mut stack = vec![(start, 0)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            order.push((i, depth));
            stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
        }
    }
    order
}

/// Container name, sandbox, exit code and signal, and whether it failed.
fn key_attributes(span: &Span) -> String {
    let mut out = String::new();
    if let Some(name) = span.tag(keys::CONTAINER_NAME) {
        let _ = write!(out, " container={}", name.value_string());
    }
    if span
        .tag(keys::CONTAINER_TYPE)
        .is_some_and(|t| t.v_str == "sandbox")
    {
        out.push_str(" sandbox");
    }
    if let Some(code) = span.tag(keys::PROCESS_EXIT_CODE) {
        let _ = write!(out, " exit={}", code.value_string());
    }
    if let Some(signal) = span.tag(keys::PROCESS_EXIT_SIGNAL) {
        let _ = write!(out, " signal={}", signal.value_string());
    }
    if failed(span) {
        out.push_str(" error");
    }
    out
}

/// `cols` cells, filled where the span runs; at least one cell for every span.
fn bar(offset: u64, length: u64, total: u64, cols: usize) -> String {
    let total = u128::from(total.max(1));
    let scale = |ns: u64, ceil: bool| {
        let scaled = u128::from(ns) * cols as u128;
        let cells = if ceil {
            scaled.div_ceil(total)
        } else {
            scaled / total
        };
        usize::try_from(cells).unwrap_or(cols)
    };
    let from = scale(offset, false).min(cols - 1);
    let to = scale(offset.saturating_add(length), true).clamp(from + 1, cols);
    format!(
        "{}{}{}",
        " ".repeat(from),
        "█".repeat(to - from),
        " ".repeat(cols - to)
    )
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `850ns`, `37.0µs`, `412.3ms`, `9.726s` (truncated, not rounded).
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}.{}µs", ns / 1_000, ns % 1_000 / 100),
        1_000_000..1_000_000_000 => format!("{}.{}ms", ns / 1_000_000, ns % 1_000_000 / 100_000),
        _ => format!(
            "{}.{:03}s",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1_000_000
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{fixtures, golden, group_into_traces, kelemetry};
    use super::*;

    fn fixture_traces() -> Vec<Trace> {
        kelemetry::response(&group_into_traces(fixtures::pod_trace())).data
    }

    #[test]
    fn pod_trace_matches_golden_file() {
        golden::assert_golden(
            "waterfall_pod_trace.txt",
            &render(&fixture_traces(), DEFAULT_WIDTH),
        );
    }

    #[test]
    fn lines_fit_the_width() {
        for width in [60, 100, 160] {
            let text = render(&fixture_traces(), width);
            for line in text.lines().skip(1) {
                assert!(line.chars().count() <= width, "{width}: {line}");
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(37_000), "37.0µs");
        assert_eq!(duration(999_999), "999.9µs");
        assert_eq!(duration(412_346_000), "412.3ms");
        assert_eq!(duration(9_726_543_211), "9.726s");
    }

    #[test]
    fn bars() {
        assert_eq!(bar(0, 10, 10, 10), "██████████");
        assert_eq!(bar(5, 0, 10, 10), "     █    ");
        assert_eq!(bar(10, 0, 10, 10), "         █");
        assert_eq!(bar(0, 0, 0, 10), "█         ");
    }

    #[test]
    fn orphans_and_cycles_still_render() {
        let mut traces = fixture_traces();
        let spans = &mut traces[0].spans;
        // Span 2 claims span 3 as its parent and 3 claims 2: a cycle. Span 4's parent is gone.
        spans[1].references[0].span_id = spans[2].span_id;
        spans[3].references = vec![super::super::format::jaeger_model::SpanRef::child_of(
            spans[3].trace_id,
            SpanId([7; 8]),
        )];
        let text = render(&traces, DEFAULT_WIDTH);
        // A header, every span, and the two error lines.
        assert_eq!(text.lines().count(), 1 + fixtures::pod_trace().len() + 2);
    }

    #[test]
    fn nothing_to_show() {
        assert_eq!(render(&[], DEFAULT_WIDTH), "no spans\n");
    }
}
