//! The client commands: `nodetrace trace` asks one or more agents for a pod's trace and prints
//! it merged into one waterfall; `nodetrace pods` lists the pods they have seen.

use anyhow::Context as _;
use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    api::{
        PodSelector,
        client::{Client, DEFAULT_TIMEOUT, TraceQuery},
        format::jaeger_model::{Trace, TracesResponse},
        pods::PodEntry,
        waterfall,
    },
    cli::{ListFormat, OutputFormat, PodsArgs, ServerArgs, TraceArgs},
};

/// Most spans one trace query asks each agent for.
const QUERY_LIMIT: usize = 100_000;

fn now_us() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_micros() as u64)
}

/// One client per agent named on the command line or in the servers file.
fn clients(args: &ServerArgs) -> anyhow::Result<Vec<Client>> {
    let token = crate::cli::read_token_file(args.token_file.as_deref())?;
    let mut servers = args.servers.clone();
    if let Some(path) = &args.servers_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the servers file {}", path.display()))?;
        servers.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    servers.dedup();
    let ca = match &args.ca_file {
        Some(path) => crate::tls::PemFile::read(path, "the CA file (--ca-file)")?.certificates()?,
        None => Vec::new(),
    };
    servers
        .iter()
        .map(|server| {
            Ok(Client::trusting(
                server,
                token.clone(),
                DEFAULT_TIMEOUT,
                &ca,
            )?)
        })
        .collect()
}

/// Runs `ask` against every agent at once; agents that fail are reported and skipped, and it is
/// an error only when all fail.
async fn ask_all<T, F, Fut>(clients: Vec<Client>, ask: F) -> anyhow::Result<Vec<(String, T)>>
where
    T: Send + 'static,
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let server = client.server().to_owned();
        let answer = ask(client);
        tasks.spawn(async move { (server, answer.await) });
    }
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a query task failed")? {
            (server, Ok(answer)) => answers.push((server, answer)),
            (server, Err(err)) => failures.push(format!("{server}: {err:#}")),
        }
    }
    if answers.is_empty() && !failures.is_empty() {
        anyhow::bail!("no agent answered:\n  {}", failures.join("\n  "));
    }
    for failure in failures {
        eprintln!("warning: {failure}");
    }
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(answers)
}

/// Merges the traces of several agents: the same trace id is one trace (a pod's node traces
/// share the id derived from its UID); a span reported twice is kept once.
pub fn merge_traces(answers: Vec<Vec<Trace>>) -> Vec<Trace> {
    let mut merged: Vec<Trace> = Vec::new();
    let mut index: HashMap<[u8; 16], usize> = HashMap::new();
    for trace in answers.into_iter().flatten() {
        let Some(first) = trace.spans.first() else {
            continue;
        };
        let key = first.trace_id.0;
        match index.get(&key) {
            Some(&at) => {
                let into = &mut merged[at];
                for span in trace.spans {
                    if !into.spans.iter().any(|s| s.span_id == span.span_id) {
                        into.spans.push(span);
                    }
                }
                into.warnings.extend(trace.warnings);
                into.process_map.extend(trace.process_map);
            }
            None => {
                index.insert(key, merged.len());
                merged.push(trace);
            }
        }
    }
    for trace in &mut merged {
        trace.spans.sort_by_key(|s| s.start_unix_ns);
    }
    merged
}

/// The pod named by `--pod` or `--pod-uid` (and its name as given), asked of every agent over
/// the last `since`, the answers merged.
async fn pod_traces(
    pod: Option<&str>,
    pod_uid: Option<&str>,
    servers: &ServerArgs,
    since: std::time::Duration,
) -> anyhow::Result<(Vec<Trace>, String)> {
    let (pod, label) = match (pod, pod_uid) {
        (Some(name), _) => (PodSelector::parse_name(name)?, name.to_owned()),
        (None, Some(uid)) => (PodSelector::parse_uid(uid)?, uid.to_owned()),
        (None, None) => anyhow::bail!("name the pod with --pod NAMESPACE/NAME or --pod-uid UID"),
    };
    let now = now_us()?;
    let query = TraceQuery {
        pod,
        start_us: Some(now.saturating_sub(since.as_micros() as u64)),
        end_us: Some(now),
        limit: Some(QUERY_LIMIT),
    };
    let answers = ask_all(clients(servers)?, move |client| {
        let query = query.clone();
        async move { Ok(client.traces(&query).await?) }
    })
    .await?;
    Ok((
        merge_traces(answers.into_iter().map(|(_, t)| t).collect()),
        label,
    ))
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let (traces, _) = pod_traces(
        args.pod.as_deref(),
        args.pod_uid.as_deref(),
        &args.servers,
        args.since,
    )
    .await?;
    match args.output {
        OutputFormat::Json => {
            let body = TracesResponse { data: traces };
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        OutputFormat::Waterfall => {
            if traces.is_empty() {
                anyhow::bail!(
                    "{} has no spans in the last {}",
                    args.pod
                        .as_deref()
                        .or(args.pod_uid.as_deref())
                        .unwrap_or("the pod"),
                    humantime(args.since.as_secs())
                );
            }
            print!("{}", waterfall::render(&traces, args.width));
        }
    }
    Ok(())
}

/// `nodetrace explain`: the pod's trace from every agent given, merged, and its start explained.
pub async fn explain(args: crate::cli::ExplainArgs) -> anyhow::Result<()> {
    let (traces, label) = pod_traces(
        args.pod.as_deref(),
        args.pod_uid.as_deref(),
        &args.servers,
        args.since,
    )
    .await?;
    let Some(explanation) = crate::explain::explain(&label, &traces) else {
        anyhow::bail!(
            "{label} has no RunPodSandbox in the last {}: nothing to explain",
            humantime(args.since.as_secs())
        );
    };
    match args.output {
        crate::cli::ExplainFormat::Text => print!("{}", crate::explain::render(&explanation)),
        crate::cli::ExplainFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&explanation)?);
        }
    }
    Ok(())
}

pub async fn pods(args: PodsArgs) -> anyhow::Result<()> {
    let now = now_us()?;
    let start = now.saturating_sub(args.since.as_micros() as u64);
    let limit = args.limit.max(1);
    let answers = ask_all(clients(&args.servers)?, move |client| async move {
        Ok(client.pods(start, now, limit, 0).await?.pods)
    })
    .await?;
    let mut rows: Vec<(String, PodEntry)> = answers
        .into_iter()
        .flat_map(|(server, pods)| pods.into_iter().map(move |p| (server.clone(), p)))
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.last_activity_us));
    match args.output {
        ListFormat::Json => {
            for (server, pod) in rows {
                let mut line = serde_json::to_value(&pod)?;
                line["server"] = serde_json::Value::String(server);
                println!("{line}");
            }
        }
        ListFormat::Table => print!("{}", pods_table(&rows, now)),
    }
    Ok(())
}

/// The pods as aligned columns; ages relative to `now_us`.
pub fn pods_table(rows: &[(String, PodEntry)], now_us: u64) -> String {
    let mut lines = vec![[
        "NAMESPACE".to_owned(),
        "NAME".to_owned(),
        "UID".to_owned(),
        "SPANS".to_owned(),
        "FIRST SEEN".to_owned(),
        "LAST ACTIVE".to_owned(),
        "AGENT".to_owned(),
    ]];
    for (server, pod) in rows {
        let ago = |us: u64| format!("{} ago", humantime(now_us.saturating_sub(us) / 1_000_000));
        lines.push([
            pod.namespace.clone(),
            pod.name.clone(),
            pod.uid.clone(),
            pod.span_count.to_string(),
            ago(pod.first_activity_us),
            ago(pod.last_activity_us),
            server.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn humantime(secs: u64) -> String {
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s if s > 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s > 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::format::{Format, fixtures, group_into_traces, jaeger_model};

    #[test]
    fn traces_of_several_agents_merge_by_trace_id_without_duplicates() {
        let trace = |spans: Vec<jaeger_model::Span>| Trace {
            spans,
            ..Trace::default()
        };
        let json = Format::Kelemetry
            .encode(&group_into_traces(fixtures::pod_trace()))
            .expect("encode");
        let decoded: TracesResponse = serde_json::from_slice(&json).expect("decode");
        let spans = decoded.data[0].spans.clone();
        let (a, b) = spans.split_at(spans.len() / 2);
        let mut overlap = b.to_vec();
        overlap.push(a[0].clone());
        let merged = merge_traces(vec![vec![trace(a.to_vec())], vec![trace(overlap)]]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].spans.len(), spans.len());
        assert!(
            merged[0]
                .spans
                .windows(2)
                .all(|w| w[0].start_unix_ns <= w[1].start_unix_ns)
        );
    }

    #[test]
    fn the_pods_table_aligns_columns() {
        let pod = PodEntry {
            uid: "u-1".to_owned(),
            namespace: "shop".to_owned(),
            name: "web-0".to_owned(),
            first_activity_us: 1_000_000_000,
            last_activity_us: 1_060_000_000,
            span_count: 16,
        };
        let table = pods_table(&[("http://a:9750".to_owned(), pod)], 1_120_000_000);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE  NAME   UID  SPANS  FIRST SEEN  LAST ACTIVE  AGENT"),
            "{table}"
        );
        assert!(
            lines[1].starts_with(
                "shop       web-0  u-1  16     2m ago      1m ago       http://a:9750"
            ),
            "{table}"
        );
    }
}
