//! Checks the Kubernetes manifests under `deploy/`: every kustomization renders, every rendered
//! object is valid against the Kubernetes schemas (offline), and the agent's DaemonSet passes
//! only flags and environment variables the agent has and mounts every path the agent reads.

use anyhow::{Context as _, bail};
use serde_norway::Value;
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The Kubernetes version the manifests are validated against (the machine's kubectl).
const KUBERNETES_VERSION: &str = "1.32.0";

/// Environment variables the agent reads that `nodetrace agent --help` does not list.
const OTHER_AGENT_ENV: &[(&str, &str)] = &[("RUST_LOG", "the log filter (agent/src/main.rs)")];

/// Host paths the agent reads at the path it learns from the kernel or from the runtime's
/// command line, so they must be mounted (at the same path), with why.
const REQUIRED_HOST_PATHS: &[(&str, &str)] = &[
    (
        "/sys/kernel/tracing",
        "tracefs: attaching the sched tracepoints",
    ),
    (
        "/run/containerd/io.containerd.runtime.v2.task",
        "containerd's bundles: config.json, pid files",
    ),
    (
        "/run/containers/storage/overlay-containers",
        "CRI-O's bundles: config.json, pid files",
    ),
];

/// Flags whose paths the agent opens in its own mount namespace, so they must be on a mount.
const PATH_FLAGS: &[(&str, &str)] = &[
    ("btf", "the kernel's BTF"),
    ("cri-socket", "the runtime's CRI socket"),
    ("kubelet-socket", "a socket only the kubelet serves"),
];

/// Capabilities the agent needs when it is not privileged, with why.
const REQUIRED_CAPABILITIES: &[(&str, &str)] = &[
    ("BPF", "loading the eBPF programs and maps"),
    ("PERFMON", "attaching tracepoints and uprobes"),
    ("SYS_PTRACE", "reading /proc/<pid>/exe of the runtime"),
];

/// Renders, validates and checks every kustomization under `deploy/`.
pub fn run() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    run_in(workspace)
}

/// [`run`] for the workspace at `workspace`.
pub fn run_in(workspace: &Path) -> anyhow::Result<()> {
    let deploy = workspace.join("deploy");
    let mut yaml_files = Vec::new();
    collect_yaml_files(&deploy, &mut yaml_files)?;
    yaml_files.sort();
    for file in &yaml_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        parse_documents(&text).with_context(|| format!("{} is not valid YAML", file.display()))?;
    }
    step(&format!(
        "{} YAML files under deploy/ parse",
        yaml_files.len()
    ));
    let kustomizations: Vec<&Path> = yaml_files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .filter_map(|f| f.parent())
        .collect();
    if kustomizations.is_empty() {
        bail!("no kustomization.yaml under {}", deploy.display());
    }

    let help = AgentHelp::parse(&agent_help(workspace)?)?;
    step(&format!(
        "`nodetrace agent --help` lists {} flags",
        help.options.len()
    ));

    let mut failed = Vec::new();
    for dir in kustomizations {
        let name = dir
            .strip_prefix(workspace)
            .unwrap_or(dir)
            .display()
            .to_string();
        let problems = match check_kustomization(dir, &name, &help) {
            Ok(problems) => problems,
            Err(err) => vec![format!("{err:#}")],
        };
        if !problems.is_empty() {
            eprintln!("[xtask deploy] {name}: FAILED");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "the deploy manifests failed their checks: {} (see above)",
            failed.join(", ")
        );
    }
    step("every kustomization renders, validates and matches the agent");
    Ok(())
}

fn step(text: &str) {
    eprintln!("[xtask deploy] {text}");
}

/// Renders one kustomization, validates it and checks its agent DaemonSet; returns the problems
/// found (an error when it cannot be rendered at all).
fn check_kustomization(dir: &Path, name: &str, help: &AgentHelp) -> anyhow::Result<Vec<String>> {
    let rendered = render(dir)?;
    let objects = parse_documents(&rendered).context("the rendered manifests are not YAML")?;
    step(&format!(
        "{name}: `kubectl kustomize` renders {} objects",
        objects.len()
    ));
    let mut problems = Vec::new();
    match validate_schemas(&rendered) {
        Ok(()) => step(&format!(
            "{name}: all valid against the Kubernetes {KUBERNETES_VERSION} schemas (kubernetes-validate --strict, offline)"
        )),
        Err(err) => problems.push(format!("{err:#}")),
    }
    let agents: Vec<&Value> = objects.iter().filter(|o| is_agent_daemonset(o)).collect();
    if agents.is_empty() {
        problems.push("no DaemonSet runs `nodetrace agent`".to_owned());
    }
    for daemonset in agents {
        let report = check_agent(daemonset, &objects, help);
        step(&format!(
            "{name}: DaemonSet {}, container {}:",
            object_name(daemonset),
            agent_container(daemonset)
                .and_then(|c| c["name"].as_str())
                .unwrap_or("?")
        ));
        for line in &report.checked {
            eprintln!("    {line}");
        }
        problems.extend(
            report
                .problems
                .iter()
                .map(|p| format!("DaemonSet {}: {p}", object_name(daemonset))),
        );
    }
    Ok(problems)
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

fn render(dir: &Path) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("cannot run kubectl (install kubectl 1.32 or newer)")?;
    if !out.status.success() {
        bail!(
            "`kubectl kustomize {}` failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("kubectl kustomize printed something that is not UTF-8")
}

/// Validates with kubernetes-validate, whose schemas ship inside the package (no network). It
/// only warns about kinds it has no schema for; that is a failure here.
fn validate_schemas(rendered: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k"])
        .arg(KUBERNETES_VERSION)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run python3 -m kubernetes_validate")?;
    child
        .stdin
        .take()
        .context("no stdin for kubernetes-validate")?
        .write_all(rendered.as_bytes())
        .context("cannot write to kubernetes-validate")?;
    let out = child
        .wait_with_output()
        .context("waiting for kubernetes-validate")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named kubernetes_validate") {
        bail!(
            "kubernetes-validate is not installed: `python3 -m pip install kubernetes-validate` (cargo xtask setup does it)"
        );
    }
    let complaints: Vec<&str> = stdout
        .lines()
        .filter(|l| ["ERROR", "WARN", "FATAL"].iter().any(|p| l.starts_with(p)))
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        bail!(
            "kubernetes-validate rejected the manifests ({}):\n    {}{}",
            out.status,
            complaints.join("\n    "),
            stderr.trim()
        );
    }
    Ok(())
}

/// The documents of a multi-document YAML stream, empty ones left out.
fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        // A separator at column 0: inside a block scalar, lines are indented.
        if line == "---" || line.starts_with("--- ") {
            let value: Value = serde_norway::from_str(&current)?;
            if !value.is_null() {
                documents.push(value);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(documents)
}

/// Builds the agent and returns the output of `nodetrace agent --help`.
fn agent_help(workspace: &Path) -> anyhow::Result<String> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--package",
            "nodetrace",
            "--bin",
            "nodetrace",
        ])
        .current_dir(workspace)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the agent failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let binary = target.join("debug").join("nodetrace");
    let out = Command::new(&binary)
        .args(["agent", "--help"])
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !out.status.success() {
        bail!("`{} agent --help` failed", binary.display());
    }
    String::from_utf8(out.stdout).context("the agent's help is not UTF-8")
}

/// One flag of `nodetrace agent --help`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentOption {
    /// Without the leading `--`.
    flag: String,
    takes_value: bool,
    env: Option<String>,
    default: Option<String>,
}

/// The flags of `nodetrace agent`, as its help prints them.
#[derive(Debug)]
struct AgentHelp {
    options: Vec<AgentOption>,
}

impl AgentHelp {
    /// Reads clap's help: an option line starts with `-`; an indented line after it continues
    /// its description.
    fn parse(help: &str) -> anyhow::Result<Self> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for line in help.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('-') {
                let mut words = trimmed.split_whitespace();
                let flag = words
                    .by_ref()
                    .map(|w| w.trim_end_matches(','))
                    .find_map(|w| w.strip_prefix("--"));
                if let Some(flag) = flag {
                    entries.push((flag.to_owned(), trimmed.to_owned()));
                }
            } else if line.starts_with(' ')
                && let Some((_, text)) = entries.last_mut()
            {
                text.push(' ');
                text.push_str(trimmed);
            } else if !trimmed.is_empty() && !line.starts_with(' ') {
                // A section heading ("Options:") ends the previous option.
                entries.push((String::new(), String::new()));
            }
        }
        let options: Vec<AgentOption> = entries
            .into_iter()
            .filter(|(flag, _)| !flag.is_empty())
            .map(|(flag, text)| {
                let after_flag = text
                    .split_whitespace()
                    .skip_while(|w| w.trim_end_matches(',') != format!("--{flag}"))
                    .nth(1)
                    .unwrap_or("");
                AgentOption {
                    takes_value: after_flag.starts_with('<'),
                    env: bracketed(&text, "[env: ")
                        .map(|e| e.split('=').next().unwrap_or(e).to_owned()),
                    default: bracketed(&text, "[default: ").map(str::to_owned),
                    flag,
                }
            })
            .collect();
        if !options.iter().any(|o| o.flag == "listen") {
            bail!("`nodetrace agent --help` lists no --listen: cannot read its flags");
        }
        Ok(Self { options })
    }

    fn flag(&self, flag: &str) -> Option<&AgentOption> {
        self.options.iter().find(|o| o.flag == flag)
    }

    fn by_env(&self, env: &str) -> Option<&AgentOption> {
        self.options.iter().find(|o| o.env.as_deref() == Some(env))
    }
}

/// The text between `start` and the next `]`.
fn bracketed<'a>(text: &'a str, start: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(']')?])
}

/// A DaemonSet whose container runs `nodetrace agent`.
fn is_agent_daemonset(object: &Value) -> bool {
    object["kind"].as_str() == Some("DaemonSet") && agent_container(object).is_some()
}

fn agent_container(daemonset: &Value) -> Option<&Value> {
    daemonset["spec"]["template"]["spec"]["containers"]
        .as_sequence()?
        .iter()
        .find(|c| c["args"][0].as_str() == Some("agent"))
}

fn object_name(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or("-"),
        object["metadata"]["name"].as_str().unwrap_or("-")
    )
}

/// What a DaemonSet check looked at, and what is wrong.
#[derive(Debug, Default)]
struct Report {
    checked: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn ok(&mut self, text: String) {
        self.checked.push(text);
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }
}

/// A volume mount of the agent container, with its volume.
struct Mount<'a> {
    name: &'a str,
    path: &'a str,
    read_only: bool,
    sub_path: bool,
    volume: &'a Value,
}

impl Mount<'_> {
    fn host_path(&self) -> Option<&str> {
        self.volume["hostPath"]["path"].as_str()
    }
}

/// How the agent container sets one option: by flag, by environment variable, or not at all.
enum Setting {
    Flag(Option<String>),
    Env(Option<String>),
    Unset,
}

fn check_agent(daemonset: &Value, objects: &[Value], help: &AgentHelp) -> Report {
    let mut report = Report::default();
    let pod = &daemonset["spec"]["template"]["spec"];
    let Some(container) = agent_container(daemonset) else {
        report.problem("no container runs `nodetrace agent`".to_owned());
        return report;
    };
    if let Some(command) = container["command"].as_sequence() {
        let first = command.first().and_then(Value::as_str).unwrap_or("");
        if !first.ends_with("nodetrace") {
            report.problem(format!(
                "`command` replaces the image's entrypoint with {first:?}, not the nodetrace binary"
            ));
        }
    }

    let flags = check_flags(container, help, &mut report);
    let env = check_env(container, help, &mut report);
    let setting = |flag: &str| -> Setting {
        if let Some((_, value)) = flags.iter().find(|(f, _)| f == flag) {
            return Setting::Flag(value.clone());
        }
        let env_name = help.flag(flag).and_then(|o| o.env.clone());
        match env.iter().find(|(name, _)| Some(name) == env_name.as_ref()) {
            Some((_, value)) => Setting::Env(value.clone()),
            None => Setting::Unset,
        }
    };
    // The value the agent will use: flag, else env, else the default from its help.
    let value = |flag: &str| -> Option<String> {
        match setting(flag) {
            Setting::Flag(v) | Setting::Env(v) => v,
            Setting::Unset => help.flag(flag).and_then(|o| o.default.clone()),
        }
    };
    for option in &help.options {
        if let (Some(env_name), Setting::Flag(_)) = (&option.env, setting(&option.flag))
            && env.iter().any(|(name, _)| name == env_name)
        {
            report.problem(format!(
                "--{} is given both as a flag and as ${env_name}",
                option.flag
            ));
        }
    }

    let mounts = mounts(container, pod, &mut report);
    let token_file = value("token-file");
    let insecure = matches!(setting("insecure-no-auth"), Setting::Flag(_));
    check_listen(
        value("listen").as_deref(),
        token_file.is_some(),
        insecure,
        container,
        daemonset,
        objects,
        &mut report,
    );
    check_data_dir(value("data-dir").as_deref(), &mounts, &mut report);
    match &token_file {
        Some(path) => check_token_file(path, &mounts, objects, &mut report),
        None => report.ok("no --token-file: the API is unauthenticated".to_owned()),
    }
    for (flag, what) in PATH_FLAGS {
        if help.flag(flag).is_none() {
            continue;
        }
        // Every value: repeated or comma-separated flags, else the variable, else the defaults.
        let paths: Vec<String> = if flags.iter().any(|(f, _)| f == flag) {
            flags
                .iter()
                .filter(|(f, _)| f == flag)
                .filter_map(|(_, v)| v.as_deref())
                .flat_map(|v| v.split(','))
                .map(str::to_owned)
                .collect()
        } else if let Setting::Env(Some(v)) = setting(flag) {
            v.split(',').map(str::to_owned).collect()
        } else {
            help.flag(flag)
                .and_then(|o| o.default.as_deref())
                .map(|d| d.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for path in paths {
            match covering_mount(&mounts, &path) {
                Some(m) => report.ok(format!("--{flag} {path}: on volume {}", m.name)),
                None => report.problem(format!("--{flag} {path} ({what}) is on no volume mount")),
            }
        }
    }
    check_host_paths(&mounts, &mut report);
    check_node_name(&setting("node-name"), container, help, &mut report);
    check_privileges(pod, container, &mut report);
    check_probes(container, token_file.is_some(), &mut report);
    report
}

/// Every flag must exist in the help; returns (flag, value) pairs.
fn check_flags(
    container: &Value,
    help: &AgentHelp,
    report: &mut Report,
) -> Vec<(String, Option<String>)> {
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .map(|s| s.iter().map(|a| a.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    let mut given = Vec::new();
    let mut rest = args.iter().skip(1).peekable();
    while let Some(arg) = rest.next() {
        let Some(body) = arg.strip_prefix("--") else {
            report.problem(format!(
                "argument {arg:?} is not a flag (`nodetrace agent` takes no positional arguments)"
            ));
            continue;
        };
        let (flag, inline) = match body.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (body, None),
        };
        let Some(option) = help.flag(flag) else {
            report.problem(format!("flag --{flag} is not in `nodetrace agent --help`"));
            // Its value, if it has one, is not a second problem.
            if inline.is_none() {
                let _ = rest.next_if(|next| !next.starts_with("--"));
            }
            continue;
        };
        let value = match (option.takes_value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => match rest.next() {
                Some(v) => Some((*v).to_owned()),
                None => {
                    report.problem(format!("flag --{flag} has no value"));
                    None
                }
            },
            (false, Some(_)) => {
                report.problem(format!("flag --{flag} takes no value"));
                None
            }
            (false, None) => None,
        };
        given.push((flag.to_owned(), value));
    }
    let listed: Vec<String> = given.iter().map(|(f, _)| format!("--{f}")).collect();
    report.ok(format!(
        "flags {} all in `nodetrace agent --help`",
        listed.join(" ")
    ));
    given
}

/// Every environment variable must be one the agent reads; returns (name, literal value).
fn check_env(
    container: &Value,
    help: &AgentHelp,
    report: &mut Report,
) -> Vec<(String, Option<String>)> {
    if !container["envFrom"].is_null() {
        report.problem(
            "envFrom sets variables that cannot be checked: list them under env".to_owned(),
        );
    }
    let mut env = Vec::new();
    for var in container["env"].as_sequence().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or("");
        let value = var["value"].as_str().map(str::to_owned);
        if let Some(option) = help.by_env(name) {
            report.ok(format!(
                "env {name}: read by the agent as --{}",
                option.flag
            ));
        } else if let Some((_, why)) = OTHER_AGENT_ENV.iter().find(|(n, _)| *n == name) {
            report.ok(format!("env {name}: read by the agent ({why})"));
        } else {
            report.problem(format!(
                "env {name} is read by nothing: `nodetrace agent --help` lists no such variable"
            ));
        }
        env.push((name.to_owned(), value));
    }
    env
}

fn mounts<'a>(container: &'a Value, pod: &'a Value, report: &mut Report) -> Vec<Mount<'a>> {
    let mut out = Vec::new();
    for mount in container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let name = mount["name"].as_str().unwrap_or("");
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str() == Some(name));
        let Some(volume) = volume else {
            report.problem(format!("volume mount {name} has no volume"));
            continue;
        };
        out.push(Mount {
            name,
            path: mount["mountPath"].as_str().unwrap_or(""),
            read_only: mount["readOnly"].as_bool().unwrap_or(false),
            sub_path: !mount["subPath"].is_null() || !mount["subPathExpr"].is_null(),
            volume,
        });
    }
    out
}

/// The mount whose path is the longest prefix of `path`.
fn covering_mount<'m, 'a>(mounts: &'m [Mount<'a>], path: &str) -> Option<&'m Mount<'a>> {
    mounts
        .iter()
        .filter(|m| Path::new(path).starts_with(m.path))
        .max_by_key(|m| m.path.len())
}

fn check_listen(
    listen: Option<&str>,
    has_token: bool,
    insecure: bool,
    container: &Value,
    daemonset: &Value,
    objects: &[Value],
    report: &mut Report,
) {
    let Some(listen) = listen else {
        report.problem("--listen has no value".to_owned());
        return;
    };
    let addr: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(_) => {
            report.problem(format!("--listen {listen} is not an address:port"));
            return;
        }
    };
    if addr.ip().to_canonical().is_loopback() {
        report.problem(format!(
            "--listen {listen} is a loopback address: nothing outside the pod can reach the API"
        ));
    } else if !has_token && !insecure {
        report.problem(format!(
            "--listen {listen} without --token-file or --insecure-no-auth: the agent refuses to start"
        ));
    } else {
        let auth = if has_token {
            "with a bearer token"
        } else {
            "without authentication (--insecure-no-auth)"
        };
        report.ok(format!("--listen {listen}, {auth}"));
    }
    let port = addr.port();
    let container_port = container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["containerPort"].as_u64() == Some(u64::from(port)));
    let Some(container_port) = container_port else {
        report.problem(format!("no containerPort {port} (the --listen port)"));
        return;
    };
    let port_name = container_port["name"].as_str();
    let resolves = |target: &Value| -> bool {
        target.as_u64() == Some(u64::from(port))
            || (target.as_str().is_some() && target.as_str() == port_name)
    };
    let labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    for service in objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some("Service"))
    {
        let selector = service["spec"]["selector"].as_mapping();
        let selects = selector
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)));
        if !selects {
            continue;
        }
        for service_port in service["spec"]["ports"].as_sequence().into_iter().flatten() {
            let target = &service_port["targetPort"];
            let target = if target.is_null() {
                &service_port["port"]
            } else {
                target
            };
            if resolves(target) {
                report.ok(format!(
                    "Service {} reaches the API port {port}",
                    object_name(service)
                ));
            } else {
                report.problem(format!(
                    "Service {} targets port {target:?}, not the API port {port}",
                    object_name(service)
                ));
            }
        }
    }
    for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let probe = &container[kind];
        let target = if !probe["httpGet"].is_null() {
            &probe["httpGet"]["port"]
        } else {
            &probe["tcpSocket"]["port"]
        };
        if !target.is_null() && !resolves(target) {
            report.problem(format!(
                "{kind} probes port {target:?}, not the API port {port}"
            ));
        }
    }
}

fn check_data_dir(data_dir: Option<&str>, mounts: &[Mount<'_>], report: &mut Report) {
    let Some(data_dir) = data_dir else {
        report.problem("--data-dir has no value".to_owned());
        return;
    };
    let Some(mount) = covering_mount(mounts, data_dir) else {
        report.problem(format!(
            "--data-dir {data_dir} is on no volume: with a read-only root file system the store cannot be written, and spans would not survive a restart"
        ));
        return;
    };
    if mount.read_only {
        report.problem(format!(
            "--data-dir {data_dir} is on volume {}, mounted read-only",
            mount.name
        ));
    } else if mount.host_path().is_none() {
        report.problem(format!(
            "--data-dir {data_dir} is on volume {}, which is not a hostPath: spans would not survive a restart",
            mount.name
        ));
    } else {
        report.ok(format!(
            "--data-dir {data_dir}: writable hostPath volume {} ({})",
            mount.name,
            mount.host_path().unwrap_or("")
        ));
    }
}

fn check_token_file(path: &str, mounts: &[Mount<'_>], objects: &[Value], report: &mut Report) {
    let Some(mount) = covering_mount(mounts, path) else {
        report.problem(format!("--token-file {path} is on no volume mount"));
        return;
    };
    let relative = Path::new(path)
        .strip_prefix(mount.path)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let secret = &mount.volume["secret"];
    let secret_name = secret["secretName"].as_str();
    let Some(secret_name) = secret_name else {
        report.problem(format!(
            "--token-file {path} is on volume {}, which is not a Secret volume",
            mount.name
        ));
        return;
    };
    // With items, only the listed keys are files, under their `path`.
    let key = match secret["items"].as_sequence() {
        Some(items) => items
            .iter()
            .find(|i| i["path"].as_str() == Some(relative.as_str()))
            .and_then(|i| i["key"].as_str()),
        None => Some(relative.as_str()),
    };
    let Some(key) = key else {
        report.problem(format!(
            "--token-file {path}: Secret volume {} has no item with path {relative:?}",
            mount.name
        ));
        return;
    };
    let object = objects.iter().find(|o| {
        o["kind"].as_str() == Some("Secret") && o["metadata"]["name"].as_str() == Some(secret_name)
    });
    let Some(object) = object else {
        report.problem(format!(
            "--token-file {path}: Secret {secret_name} is not in the manifests"
        ));
        return;
    };
    let filled_by_controller =
        object["type"].as_str() == Some("kubernetes.io/service-account-token") && key == "token";
    let has_key = !object["data"][key].is_null() || !object["stringData"][key].is_null();
    if filled_by_controller || has_key {
        let source = if filled_by_controller {
            "filled in by the token controller"
        } else {
            "in the manifests"
        };
        report.ok(format!(
            "--token-file {path}: key {key} of Secret {secret_name} ({source}), volume {}",
            mount.name
        ));
    } else {
        report.problem(format!(
            "--token-file {path}: Secret {secret_name} has no key {key}"
        ));
    }
}

/// Host paths are mounted where they are on the host: the agent opens the paths it sees in
/// runc's command line (`--bundle`, `--pid-file`, `--log`) and in the kernel as they are.
fn check_host_paths(mounts: &[Mount<'_>], report: &mut Report) {
    for mount in mounts {
        let Some(host) = mount.host_path() else {
            continue;
        };
        if mount.sub_path || host != mount.path {
            report.problem(format!(
                "host path {host} is mounted at {}{}: mount it at the same path",
                mount.path,
                if mount.sub_path {
                    " with a subPath"
                } else {
                    ""
                }
            ));
        }
    }
    for (path, why) in REQUIRED_HOST_PATHS {
        let found = mounts.iter().find(|m| {
            m.host_path()
                .is_some_and(|h| Path::new(path).starts_with(h))
        });
        match found {
            Some(m) => report.ok(format!(
                "{path} ({why}): host path at the same path, volume {}",
                m.name
            )),
            None => report.problem(format!("{path} ({why}) is not mounted from the host")),
        }
    }
}

fn check_node_name(setting: &Setting, container: &Value, help: &AgentHelp, report: &mut Report) {
    let env_name = help
        .flag("node-name")
        .and_then(|o| o.env.clone())
        .unwrap_or_default();
    match setting {
        Setting::Flag(_) => report.ok("--node-name given as a flag".to_owned()),
        Setting::Env(_) => {
            let from = container["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"].as_str() == Some(env_name.as_str()))
                .map(|v| &v["valueFrom"]["fieldRef"]["fieldPath"]);
            if from.and_then(Value::as_str) == Some("spec.nodeName") {
                report.ok(format!("${env_name} from the downward API (spec.nodeName)"));
            } else {
                report.problem(format!(
                    "${env_name} does not come from the downward API field spec.nodeName"
                ));
            }
        }
        Setting::Unset => report.problem(format!(
            "neither --node-name nor ${env_name}: spans would carry the pod's host name"
        )),
    }
}

fn check_privileges(pod: &Value, container: &Value, report: &mut Report) {
    if pod["hostPID"].as_bool() == Some(true) {
        report.ok("hostPID (the runtime and runc are host processes)".to_owned());
    } else {
        report
            .problem("hostPID is not set: the agent cannot see the runtime's processes".to_owned());
    }
    let security = &container["securityContext"];
    if security["readOnlyRootFilesystem"].as_bool() != Some(true) {
        report.problem("readOnlyRootFilesystem is not set".to_owned());
    }
    if security["privileged"].as_bool() == Some(true) {
        report.ok("privileged".to_owned());
    } else {
        let added: BTreeSet<&str> = security["capabilities"]["add"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|c| c.strip_prefix("CAP_").unwrap_or(c))
            .collect();
        let missing: Vec<String> = REQUIRED_CAPABILITIES
            .iter()
            .filter(|(cap, _)| !added.contains(cap))
            .map(|(cap, why)| format!("{cap} ({why})"))
            .collect();
        if missing.is_empty() {
            let list: Vec<&str> = added.into_iter().collect();
            report.ok(format!("not privileged; capabilities {}", list.join(", ")));
        } else {
            report.problem(format!(
                "neither privileged nor the capabilities {}",
                missing.join(", ")
            ));
        }
    }
    let tolerates_all = container_pod_tolerations(pod).any(|t| {
        t["operator"].as_str() == Some("Exists") && t["key"].is_null() && t["effect"].is_null()
    });
    if tolerates_all {
        report.ok("tolerates every taint (runs on every node)".to_owned());
    } else {
        report.problem("no `operator: Exists` toleration: tainted nodes get no agent".to_owned());
    }
}

fn container_pod_tolerations(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["tolerations"].as_sequence().into_iter().flatten()
}

/// Only /healthz answers without the token: an HTTP probe of another path would get 401.
fn check_probes(container: &Value, has_token: bool, report: &mut Report) {
    for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let probe = &container[kind];
        if probe.is_null() {
            if kind != "startupProbe" {
                report.problem(format!("no {kind}"));
            }
            continue;
        }
        match probe["httpGet"]["path"].as_str() {
            Some(path) if has_token && path != "/healthz" => report.problem(format!(
                "{kind} gets {path}, which needs the bearer token (only /healthz is open)"
            )),
            Some(path) => report.ok(format!("{kind}: GET {path}")),
            None if !probe["tcpSocket"].is_null() => {
                report.ok(format!("{kind}: TCP connect to the API port"));
            }
            None => report.ok(format!("{kind}: exec")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "\
Run the node agent: load the eBPF programs, record spans, serve the HTTP API

Usage: nodetrace agent [OPTIONS]

Options:
      --listen <LISTEN>                Address of the HTTP API [env: NODETRACE_LISTEN=] [default: 127.0.0.1:9750]
      --data-dir <DATA_DIR>            Directory of the LMDB span store [env: NODETRACE_DATA_DIR=] [default: /var/lib/nodetrace]
      --token-file <TOKEN_FILE>        File holding the bearer token
                                       every API request must carry [env: NODETRACE_TOKEN_FILE=]
      --insecure-no-auth               Serve a non-loopback address without authentication
      --node-name <NODE_NAME>          Name of this node [env: NODE_NAME=]
      --btf <BTF>                      Kernel BTF [default: /sys/kernel/btf/vmlinux]
      --cri-socket <CRI_SOCKETS>
          CRI socket of the container runtime [env: NODETRACE_CRI_SOCKETS=] [default: /run/containerd/containerd.sock /run/crio/crio.sock]
  -h, --help                           Print help
";

    const MANIFESTS: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: api-token, namespace: nt}
type: kubernetes.io/service-account-token
---
apiVersion: v1
kind: Service
metadata: {name: nodetrace, namespace: nt}
spec:
  clusterIP: None
  selector: {app: nodetrace}
  ports: [{name: http, port: 9750, targetPort: http}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: nodetrace, namespace: nt}
spec:
  template:
    metadata:
      labels: {app: nodetrace}
    spec:
      hostPID: true
      tolerations: [{operator: Exists}]
      containers:
        - name: agent
          args: [agent, --listen, 0.0.0.0:9750, --data-dir=/var/lib/nodetrace, --token-file, /run/token/token]
          env:
            - name: NODE_NAME
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          ports: [{name: http, containerPort: 9750}]
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          readinessProbe: {tcpSocket: {port: http}}
          securityContext:
            readOnlyRootFilesystem: true
            capabilities: {add: [BPF, PERFMON, SYS_PTRACE]}
          volumeMounts:
            - {name: data, mountPath: /var/lib/nodetrace}
            - {name: token, mountPath: /run/token, readOnly: true}
            - {name: btf, mountPath: /sys/kernel/btf, readOnly: true}
            - {name: tracefs, mountPath: /sys/kernel/tracing, readOnly: true}
            - {name: containerd, mountPath: /run/containerd, readOnly: true}
            - {name: crio, mountPath: /run/containers/storage, readOnly: true}
            - {name: crio-socket, mountPath: /run/crio, readOnly: true}
      volumes:
        - {name: data, hostPath: {path: /var/lib/nodetrace}}
        - {name: token, secret: {secretName: api-token, items: [{key: token, path: token}]}}
        - {name: btf, hostPath: {path: /sys/kernel/btf}}
        - {name: tracefs, hostPath: {path: /sys/kernel/tracing}}
        - {name: containerd, hostPath: {path: /run/containerd}}
        - {name: crio, hostPath: {path: /run/containers/storage}}
        - {name: crio-socket, hostPath: {path: /run/crio}}
";

    fn check(manifests: &str) -> Report {
        let help = AgentHelp::parse(HELP).expect("help parses");
        let objects = parse_documents(manifests).expect("manifests parse");
        let daemonset = objects
            .iter()
            .find(|o| is_agent_daemonset(o))
            .expect("an agent DaemonSet");
        check_agent(daemonset, &objects, &help)
    }

    fn assert_one_problem(manifests: &str, expected: &str) {
        let report = check(manifests);
        assert!(
            report.problems.len() == 1 && report.problems[0].contains(expected),
            "expected one problem containing {expected:?}, got {:?}",
            report.problems
        );
    }

    #[test]
    fn help_gives_flags_values_env_and_defaults() {
        let help = AgentHelp::parse(HELP).expect("help parses");
        let listen = help.flag("listen").expect("--listen");
        assert!(listen.takes_value);
        assert_eq!(listen.env.as_deref(), Some("NODETRACE_LISTEN"));
        assert_eq!(listen.default.as_deref(), Some("127.0.0.1:9750"));
        // The env of a wrapped description is found on its continuation line.
        assert_eq!(
            help.flag("token-file").and_then(|o| o.env.as_deref()),
            Some("NODETRACE_TOKEN_FILE")
        );
        assert!(!help.flag("insecure-no-auth").expect("switch").takes_value);
        assert_eq!(
            help.by_env("NODE_NAME").map(|o| o.flag.as_str()),
            Some("node-name")
        );
        assert!(help.flag("help").is_some());
        // clap's layout with the description on the next line.
        let sockets = help.flag("cri-socket").expect("--cri-socket");
        assert!(sockets.takes_value);
        assert_eq!(sockets.env.as_deref(), Some("NODETRACE_CRI_SOCKETS"));
        assert_eq!(
            sockets.default.as_deref(),
            Some("/run/containerd/containerd.sock /run/crio/crio.sock")
        );
    }

    #[test]
    fn a_matching_daemonset_passes() {
        let report = check(MANIFESTS);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(
            report
                .checked
                .iter()
                .any(|c| c.contains("--data-dir /var/lib/nodetrace"))
        );
    }

    #[test]
    fn an_unknown_flag_fails() {
        assert_one_problem(
            &MANIFESTS.replace(
                "--data-dir=/var/lib/nodetrace",
                "--data-dir=/var/lib/nodetrace, --config, /etc/x",
            ),
            "flag --config is not in",
        );
    }

    #[test]
    fn an_unknown_env_var_fails() {
        assert_one_problem(
            &MANIFESTS.replace(
                "- name: NODE_NAME",
                "- {name: NODETRACE_RETENTION, value: 1h}\n            - name: NODE_NAME",
            ),
            "env NODETRACE_RETENTION is read by nothing",
        );
    }

    #[test]
    fn the_data_dir_must_be_mounted() {
        assert_one_problem(
            &MANIFESTS.replace("--data-dir=/var/lib/nodetrace", "--data-dir=/data"),
            "--data-dir /data is on no volume",
        );
    }

    #[test]
    fn the_token_file_must_be_a_mounted_secret_item() {
        assert_one_problem(
            &MANIFESTS.replace("/run/token/token]", "/run/token/other]"),
            "has no item with path \"other\"",
        );
    }

    #[test]
    fn host_paths_keep_their_path() {
        assert_one_problem(
            &MANIFESTS.replace(
                "mountPath: /run/containers/storage,",
                "mountPath: /host/run/containers/storage,",
            ),
            "mount it at the same path",
        );
    }

    #[test]
    fn every_default_cri_socket_must_be_mounted() {
        assert_one_problem(
            &MANIFESTS.replace(
                "            - {name: crio-socket, mountPath: /run/crio, readOnly: true}\n",
                "",
            ),
            "--cri-socket /run/crio/crio.sock (the runtime's CRI socket) is on no volume mount",
        );
        let with_flag = MANIFESTS.replace(
            "--token-file, /run/token/token]",
            "--token-file, /run/token/token, --cri-socket, /run/k3s/containerd/containerd.sock]",
        );
        assert_one_problem(
            &with_flag,
            "--cri-socket /run/k3s/containerd/containerd.sock",
        );
    }

    #[test]
    fn probes_of_guarded_paths_fail_with_a_token() {
        assert_one_problem(
            &MANIFESTS.replace(
                "tcpSocket: {port: http}",
                "httpGet: {path: /readyz, port: http}",
            ),
            "needs the bearer token",
        );
    }

    #[test]
    fn without_privileges_the_bpf_capabilities_are_required() {
        assert_one_problem(
            &MANIFESTS.replace("[BPF, PERFMON, SYS_PTRACE]", "[SYS_PTRACE]"),
            "BPF (",
        );
    }

    #[test]
    fn yaml_streams_split_into_documents() {
        let docs = parse_documents("---\na: 1\n---\n\n---\nb: |\n  ---\n  x\n").expect("yaml");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["b"].as_str(), Some("---\nx\n"));
    }
}
