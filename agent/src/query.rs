//! `nodetrace trace`: asks an agent for one pod's trace and prints it.

use anyhow::Context as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    api::{
        PodSelector,
        client::{Client, DEFAULT_TIMEOUT, TraceQuery},
        format::jaeger_model::TracesResponse,
        waterfall,
    },
    cli::{OutputFormat, TraceArgs},
};

/// Most spans one trace query asks for.
const QUERY_LIMIT: usize = 100_000;

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let pod = match (&args.pod, &args.pod_uid) {
        (Some(name), _) => PodSelector::parse_name(name)?,
        (None, Some(uid)) => PodSelector::parse_uid(uid)?,
        (None, None) => anyhow::bail!("name the pod with --pod NAMESPACE/NAME or --pod-uid UID"),
    };
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_micros() as u64;
    let query = TraceQuery {
        pod,
        start_us: Some(now_us.saturating_sub(args.since.as_micros() as u64)),
        end_us: Some(now_us),
        limit: Some(QUERY_LIMIT),
    };
    let client = Client::new(&args.server, token, DEFAULT_TIMEOUT)?;
    let traces = client.traces(&query).await?;
    match args.output {
        OutputFormat::Json => {
            let body = TracesResponse { data: traces };
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        OutputFormat::Waterfall => {
            if traces.is_empty() {
                anyhow::bail!(
                    "{} has no spans on {} in the last {}",
                    args.pod
                        .as_deref()
                        .or(args.pod_uid.as_deref())
                        .unwrap_or("the pod"),
                    args.server,
                    humantime(args.since.as_secs())
                );
            }
            print!("{}", waterfall::render(&traces, args.width));
        }
    }
    Ok(())
}

fn humantime(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
