//! Builds the finished spans of runtime runs and container processes.

use crate::{
    ebpf::{ExecRecord, ExitRecord, WallClock},
    model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, keys},
    redact::{self, Redactor},
};

use super::{Attribution, ProcessRole, RuntimeRun};

/// The span of one OCI runtime run, from its exec to its exit.
pub(super) fn runtime_span(
    run: &RuntimeRun,
    exit: &ExitRecord,
    clock: &WallClock,
    node_name: &str,
    redactor: &Redactor,
) -> Span {
    let program = program_name(&run.exec);
    let (name, service, mut attributes) = match &run.invocation {
        Ok(inv) => (
            inv.span_name(),
            inv.runtime.as_str().to_owned(),
            inv.attributes(),
        ),
        Err(_) => (
            format!("{program} (unparsed command line)"),
            program.clone(),
            Vec::new(),
        ),
    };
    attributes.extend(process_attributes(&run.exec, exit, redactor));
    let status = match (exit.exit_status, exit.signal) {
        (Some(0), _) => SpanStatus::Unset,
        (Some(code), _) => SpanStatus::Error(format!("{name} exited with status {code}")),
        (None, Some(signal)) => SpanStatus::Error(format!("{name} was killed by signal {signal}")),
        (None, None) => SpanStatus::Unset,
    };
    finish(
        name,
        service,
        &run.exec,
        exit,
        &run.attribution,
        attributes,
        status,
        clock,
        node_name,
    )
}

/// The span of a container's own process (or of an exec'd one), from its exec to its exit.
pub(super) fn process_span(
    exec: &ExecRecord,
    exit: &ExitRecord,
    attribution: &Attribution,
    role: Option<ProcessRole>,
    clock: &WallClock,
    node_name: &str,
    redactor: &Redactor,
) -> Span {
    let name = match role {
        Some(ProcessRole::Exec) => "exec process",
        Some(ProcessRole::Entrypoint) | None => "container process",
    };
    let attributes = process_attributes(exec, exit, redactor);
    // A container process ends when it is stopped, usually by a signal: only a non-zero exit
    // status is an error.
    let status = match exit.exit_status {
        Some(code) if code != 0 => SpanStatus::Error(format!("{name} exited with status {code}")),
        _ => SpanStatus::Unset,
    };
    finish(
        name.to_owned(),
        "container".to_owned(),
        exec,
        exit,
        attribution,
        attributes,
        status,
        clock,
        node_name,
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site per span kind, all named"
)]
fn finish(
    name: String,
    service: String,
    exec: &ExecRecord,
    exit: &ExitRecord,
    attribution: &Attribution,
    mut attributes: Vec<Attribute>,
    status: SpanStatus,
    clock: &WallClock,
    node_name: &str,
) -> Span {
    if !node_name.is_empty() {
        attributes.push(Attribute::str(keys::NODE_NAME, node_name));
    }
    let pod = attribution_attributes(attribution, &mut attributes);
    let trace_id = match &pod {
        Some(pod) => TraceId::from_pod_uid(&pod.uid),
        None => TraceId::hashed(&[
            "unattributed",
            &exec.tgid.to_string(),
            &exec.ktime_ns.to_string(),
        ]),
    };
    Span {
        trace_id,
        span_id: SpanId::random(),
        parent_span_id: None,
        name,
        service,
        kind: SpanKind::Internal,
        start_unix_ns: clock.to_unix_ns(exec.ktime_ns),
        end_unix_ns: clock.to_unix_ns(exit.ktime_ns.max(exec.ktime_ns)),
        pod,
        attributes,
        status,
    }
}

fn program_name(exec: &ExecRecord) -> String {
    let argv0 = exec
        .argv
        .first()
        .map_or(exec.filename.as_str(), String::as_str);
    argv0.rsplit('/').next().unwrap_or(argv0).to_owned()
}

/// The process's attributes; its argv as `--argv-capture` allows (the only place argv enters
/// a span).
fn process_attributes(exec: &ExecRecord, exit: &ExitRecord, redactor: &Redactor) -> Vec<Attribute> {
    let args = redactor.command_args(&exec.argv);
    let dropped = exec.argv.len() - args.len();
    let mut attributes = vec![
        Attribute::int(keys::PROCESS_PID, i64::from(exec.tgid)),
        Attribute::int(keys::PROCESS_PARENT_PID, i64::from(exec.ppid)),
        Attribute::str(keys::PROCESS_EXECUTABLE_NAME, program_name(exec)),
        Attribute::str(keys::PROCESS_EXECUTABLE_PATH, exec.filename.clone()),
        Attribute::str_list(keys::PROCESS_COMMAND_ARGS, args.into_owned()),
    ];
    if dropped > 0 {
        attributes.push(Attribute::int(
            redact::ARGS_DROPPED,
            i64::try_from(dropped).unwrap_or(i64::MAX),
        ));
    }
    if exec.argv_truncated {
        attributes.push(Attribute::bool(keys::ARGS_TRUNCATED, true));
    }
    if let Some(code) = exit.exit_status {
        attributes.push(Attribute::int(keys::PROCESS_EXIT_CODE, i64::from(code)));
    }
    if let Some(signal) = exit.signal {
        attributes.push(Attribute::int(keys::PROCESS_EXIT_SIGNAL, i64::from(signal)));
    }
    attributes
}

/// Adds the pod and container attributes; returns the pod when one was found.
fn attribution_attributes(
    attribution: &Attribution,
    attributes: &mut Vec<Attribute>,
) -> Option<PodRef> {
    match attribution {
        Ok(found) => {
            for attribute in found.attributes() {
                if !attributes.iter().any(|a| a.key == attribute.key) {
                    attributes.push(attribute);
                }
            }
            Some(found.info.pod.clone())
        }
        Err(reason) => {
            attributes.push(Attribute::bool(keys::ATTRIBUTED, false));
            attributes.push(Attribute::str(keys::ATTRIBUTION_ERROR, reason.clone()));
            None
        }
    }
}
