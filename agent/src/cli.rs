//! Command-line interface of the `nodetrace` binary.

use clap::{Args, Parser, Subcommand, ValueEnum};
use nodetrace_common::EventBudget;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::redact::ArgvCapture;

#[derive(Debug, Parser)]
#[command(
    name = "nodetrace",
    version,
    about = "Node-local traces of Kubernetes pods: CRI calls and OCI runtime runs as spans",
    long_about = "nodetrace runs on every node (`nodetrace agent`), watches the OCI runtime \
                  (runc, crun) with eBPF, keeps each pod's spans in a local LMDB store and \
                  serves them over HTTP; `nodetrace trace` shows one pod's trace."
)]
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing would only complicate every caller"
)]
pub enum Command {
    /// Run the node agent: load the eBPF programs, record spans, serve the HTTP API.
    Agent(AgentArgs),
    /// Print one pod's trace from one or more agents as a terminal waterfall (or JSON).
    Trace(TraceArgs),
    /// List the pods the agents have seen, newest activity first.
    Pods(PodsArgs),
    /// Serve the agents' API at one URL: every agent asked, the answers merged.
    Gateway(GatewayArgs),
    /// Explain a pod's start: its critical path on the node, each step's share, the time
    /// between steps, and what failed.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The pod, as NAMESPACE/NAME.
    #[arg(long, conflicts_with = "pod_uid", required_unless_present = "pod_uid")]
    pub pod: Option<String>,
    /// The pod, by UID.
    #[arg(long)]
    pub pod_uid: Option<String>,
    #[command(flatten)]
    pub servers: ServerArgs,
    /// How far back to look, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Output format: text (sentences) or json (the explanation's schema).
    #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
    pub output: ExplainFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address of the gateway's HTTP API. Any address other than a loopback one needs
    /// --token-file or --insecure-no-auth.
    #[arg(long, env = "NODETRACE_LISTEN", default_value = "127.0.0.1:9751")]
    pub listen: SocketAddr,
    /// File holding the bearer token every request (except /healthz) must carry.
    #[arg(long, env = "NODETRACE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (only behind a trusted network).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Base URL of an agent; repeat for several.
    #[arg(long = "agent", env = "NODETRACE_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// `host:port` of the agents' headless Service: every address it resolves to, at each
    /// query, is an agent.
    #[arg(long, env = "NODETRACE_AGENTS_SERVICE")]
    pub agents_service: Option<String>,
    /// Scheme of the agents found through --agents-service.
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    pub agent_scheme: String,
    /// File holding the bearer token the agents require.
    #[arg(long, env = "NODETRACE_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` agent's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one agent's answer; an agent that takes longer is named in the answer
    /// as not having replied.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub agent_timeout: Duration,
    /// Most agents asked at once.
    #[arg(long, default_value_t = 16)]
    pub max_agents_in_flight: usize,
}

/// Which agents to ask.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of an agent's API; repeat to ask several agents (their answers are merged).
    #[arg(
        long = "server",
        env = "NODETRACE_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9750"
    )]
    pub servers: Vec<String>,
    /// A file of agent URLs, one per line (blank lines and `#` comments ignored), asked in
    /// addition to --server.
    #[arg(long)]
    pub servers_file: Option<PathBuf>,
    /// File holding the bearer token for the agents.
    #[arg(long, env = "NODETRACE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` agent's certificate must chain to; no system roots
    /// are built in, so an https server needs it.
    #[arg(long, value_name = "FILE", env = "NODETRACE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PodsArgs {
    #[command(flatten)]
    pub servers: ServerArgs,
    /// How far back to look, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Most pods to list (per agent).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// JSON lines, one pod per line.
    Json,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A TOML file of settings, keyed by these flags' long names (see docs/configuration.md);
    /// the command line wins over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API. Any address other than a loopback one needs --token-file or
    /// --insecure-no-auth.
    #[arg(long, env = "NODETRACE_LISTEN", default_value = "127.0.0.1:9750")]
    pub listen: SocketAddr,
    /// Directory of the LMDB span store (created when missing).
    #[arg(long, env = "NODETRACE_DATA_DIR", default_value = "/var/lib/nodetrace")]
    pub data_dir: PathBuf,
    /// File holding the bearer token every API request (except /healthz) must carry.
    #[arg(long, env = "NODETRACE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (only behind a trusted network).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve the API over TLS (HTTP/1.1, TLS 1.2 and 1.3) with this certificate, PEM: the
    /// agent's certificate first, then its intermediates; with --tls-key-file. Read once at
    /// start. TLS does not replace the token: off the loopback address --token-file is still
    /// needed. A client has 10 s to finish the handshake.
    #[arg(
        long,
        value_name = "FILE",
        env = "NODETRACE_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        env = "NODETRACE_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Most HTTP connections served at once; more wait in the listen backlog until one closes.
    /// A connection that sends no complete request head within 10 s of connecting (or of its
    /// previous answer) is closed, so slow clients hold a slot for 10 s at most (20 s with
    /// TLS: 10 s more for the handshake).
    #[arg(
        long,
        default_value_t = crate::api::serve::DEFAULT_MAX_CONNECTIONS,
        value_parser = crate::api::serve::parse_connection_cap
    )]
    pub http_max_connections: usize,
    /// Longest an HTTP request may take, waiting for a request slot (8 requests are served at
    /// once) included, before it is answered 503, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = crate::api::serve::parse_timeout)]
    pub http_request_timeout: Duration,
    /// How long shutdown waits for the HTTP requests in progress before it closes the
    /// connections still open, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = crate::api::serve::parse_timeout)]
    pub http_shutdown_grace: Duration,
    /// Name of this node, put on every span as k8s.node.name (default: the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// How long spans are kept, e.g. 24h, 90m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// Largest size of the span store in MiB; the oldest spans are evicted beyond ~90% of it.
    #[arg(long, default_value_t = 1024)]
    pub max_store_mib: u64,
    /// CRI socket of the container runtime whose calls are traced (repeat to try several, in
    /// order). The runtime process is found from the socket, so this works from a container
    /// with hostPID.
    #[arg(
        long = "cri-socket",
        env = "NODETRACE_CRI_SOCKETS",
        value_delimiter = ',',
        default_values = ["/run/containerd/containerd.sock", "/run/crio/crio.sock"]
    )]
    pub cri_sockets: Vec<PathBuf>,
    /// A unix socket only the kubelet serves (by default its device-plugin registration
    /// socket): the kubelet process is found from it, and its pod syncs are traced by uprobes
    /// on its binary.
    #[arg(
        long = "kubelet-socket",
        env = "NODETRACE_KUBELET_SOCKET",
        default_value = crate::kubelet::DEFAULT_KUBELET_SOCKET
    )]
    pub kubelet_socket: PathBuf,
    /// A directory the container runtime keeps its state in (repeat for several). Bundle
    /// `config.json` and pid files named on runtime command lines are read only beneath one of
    /// these, as the command line spells the path, never through a symlink or across a mount,
    /// and only when they are regular files of bounded size. Defaults: containerd's state
    /// directory (1.6 to 2.x: bundles in `io.containerd.runtime.v2.task/<namespace>/<id>/` with
    /// `config.json`, `init.pid` and `<exec-id>.pid`) and CRI-O's runroot (bundles in
    /// `overlay-containers/<id>/userdata/` with `config.json` and `pidfile`). Never give a
    /// directory a container can write to, such as /tmp.
    #[arg(
        long = "runtime-state-root",
        env = "NODETRACE_RUNTIME_STATE_ROOTS",
        value_delimiter = ',',
        value_parser = crate::hostfs::parse_state_root,
        default_values = ["/run/containerd", "/run/containers/storage"]
    )]
    pub runtime_state_roots: Vec<PathBuf>,
    /// Put the CRI uprobes on this runtime binary instead of the one serving --cri-socket.
    #[arg(long, env = "NODETRACE_RUNTIME_BINARY")]
    pub runtime_binary: Option<PathBuf>,
    /// Container processes one cgroup (one container) may report per second, on average; the
    /// ones beyond are not traced and counted in nodetrace_events_dropped_total{reason=
    /// "cgroup_budget"}. Keeps one container's exec storm from filling the ring buffer for all.
    #[arg(
        long,
        default_value_t = EventBudget::default().per_second,
        value_parser = clap::value_parser!(u64).range(1..=nodetrace_common::EVENT_BUDGET_MAX)
    )]
    pub cgroup_process_rate: u64,
    /// Container processes one cgroup may report in a burst above --cgroup-process-rate.
    #[arg(
        long,
        default_value_t = EventBudget::default().burst,
        value_parser = clap::value_parser!(u64).range(1..=nodetrace_common::EVENT_BUDGET_MAX)
    )]
    pub cgroup_process_burst: u64,
    /// A stage of the agent (reader, correlator, store writer) that has work queued but makes
    /// no progress for this long fails /healthz, naming the stage (kubelet then restarts the
    /// agent). A stage that stops ends the agent with an error at once.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Test only (built with the `test-faults` feature): `kill:<stage>` or `stall:<stage>`
    /// breaks that stage at its next unit of work.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    pub test_fault: Option<String>,
    /// An OCI runtime binary to follow besides the runc, crun and youki found by name in the
    /// host's program directories and the container runtime's PATH (an absolute path on the
    /// host; repeat for more). Runtime runs are followed only when their executable is one of
    /// these files (by device and inode); a program merely named runc is not.
    #[arg(
        long = "oci-runtime-binary",
        env = "NODETRACE_OCI_RUNTIME_BINARIES",
        value_delimiter = ','
    )]
    pub oci_runtime_binaries: Vec<PathBuf>,
    /// Also push every span to this OpenTelemetry collector (gRPC: `http://host:4317`;
    /// with `--otlp-protocol http`: `http://host:4318`; `https://` for TLS, with
    /// --otlp-ca-file). Off when not set.
    #[arg(long, env = "NODETRACE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http` (HTTP/protobuf).
    #[arg(long, value_enum, default_value_t = OtlpProtocol::Grpc, env = "NODETRACE_OTLP_PROTOCOL")]
    pub otlp_protocol: OtlpProtocol,
    /// A header sent with every OTLP request, `key=value` (repeat for more), e.g. an
    /// authorization token.
    #[arg(long = "otlp-header", value_parser = parse_otlp_header)]
    pub otlp_headers: Vec<(String, String)>,
    /// Time limit of one OTLP export request, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub otlp_timeout: Duration,
    /// CA certificates (PEM) the collector's certificate must chain to. Needed for an
    /// `https://` --otlp-endpoint: no system roots are built in (the image's own bundle is
    /// /etc/ssl/certs/ca-certificates.crt). Read once at start.
    #[arg(long, value_name = "FILE", env = "NODETRACE_OTLP_CA_FILE")]
    pub otlp_ca_file: Option<PathBuf>,
    /// A client certificate (PEM, then its intermediates) the agent presents to an `https://`
    /// collector that asks for one (mutual TLS); with --otlp-client-key-file.
    #[arg(
        long,
        value_name = "FILE",
        env = "NODETRACE_OTLP_CLIENT_CERT_FILE",
        requires = "otlp_client_key_file"
    )]
    pub otlp_client_cert_file: Option<PathBuf>,
    /// The private key of --otlp-client-cert-file, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        env = "NODETRACE_OTLP_CLIENT_KEY_FILE",
        requires = "otlp_client_cert_file"
    )]
    pub otlp_client_key_file: Option<PathBuf>,
    /// Name of the cluster, put on exported spans as the resource attribute k8s.cluster.name.
    #[arg(long, env = "NODETRACE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Do not watch the Kubernetes API for this node's pods (owners, labels, trace context);
    /// everything from the node side keeps working.
    #[arg(long, env = "NODETRACE_NO_KUBE")]
    pub no_kube: bool,
    /// Kubeconfig to reach the API server with (default: in-cluster service account, then
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "NODETRACE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Pod annotation holding a W3C traceparent: the pod's node spans then join that trace,
    /// under that span.
    #[arg(long, default_value = "trace.kubernetes.io/context")]
    pub trace_context_annotation: String,
    /// What of each process's command line spans keep (the attribute process.command_args,
    /// stored, served and exported): `full` keeps every argument as is; `redacted` keeps every
    /// argument but replaces secret values with `<redacted>` (see --redact-pattern) and the
    /// password, or the lone user name, of any `scheme://user:pass@host` URL; `none` keeps only
    /// the program (argv[0]) and puts the number of arguments left out in
    /// nodetrace.process.command_args.dropped. In every mode the program, and the runtime, verb,
    /// container id and signal parsed from runc/crun/youki command lines, are kept.
    #[arg(long, value_enum, default_value_t = ArgvCapture::Redacted, env = "NODETRACE_ARGV_CAPTURE")]
    pub argv_capture: ArgvCapture,
    /// A case-insensitive regular expression for secret names, matched anywhere in a flag or
    /// variable name (repeat for more; a name is secret when any pattern matches; given
    /// patterns replace the default list). With `--argv-capture redacted`, a matching name
    /// loses its value in `--name=value` and `-name=value`, in `--name value` (the next
    /// argument), and in `NAME=value` arguments, also as a flag's value
    /// (`--env DB_PASSWORD=x`). Use anchors for short flags: `^p$`.
    #[arg(
        long = "redact-pattern",
        default_values = crate::redact::DEFAULT_PATTERNS,
        value_parser = parse_redact_pattern
    )]
    pub redact_patterns: Vec<String>,
    /// Diagnostics from the eBPF programs' rare paths (a CRI field that could not be read, a
    /// string cut to its slot, a length that betrays a wrong field offset, a handler entry
    /// without exit), logged with the target nodetrace::ebpf and counted in
    /// nodetrace_ebpf_log_records_total. Set when the programs are loaded (at start): off,
    /// the verifier removes the logging code and the probes pay nothing for it.
    #[arg(long, value_enum, default_value_t = crate::ebpf::EbpfLogLevel::Off)]
    pub ebpf_log_level: crate::ebpf::EbpfLogLevel,
    /// Put the error a failed CNI plugin printed (its JSON error's message) on its span. It
    /// takes a tracepoint on write(2) that every process's writes run through (one map
    /// lookup for all but CNI plugins); with it attached, every syscall on the node takes the
    /// kernel's slower traced path: measured on 2 vCPUs, a write of 1 byte to /dev/null takes
    /// ~55 ns more (~100 → ~155 ns; the program itself ~40 ns) and getppid ~15 ns more.
    /// Without it a failed plugin's span still has its exit code.
    #[arg(long)]
    pub cni_error_messages: bool,
    /// Kernel BTF used to find structure offsets.
    #[arg(long, default_value = crate::ebpf::VMLINUX_BTF)]
    pub btf: PathBuf,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The pod, as NAMESPACE/NAME.
    #[arg(long, conflicts_with = "pod_uid", required_unless_present = "pod_uid")]
    pub pod: Option<String>,
    /// The pod, by UID.
    #[arg(long)]
    pub pod_uid: Option<String>,
    #[command(flatten)]
    pub servers: ServerArgs,
    /// How far back to look, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Waterfall)]
    pub output: OutputFormat,
    /// Width of the waterfall in columns.
    #[arg(long, default_value_t = 100)]
    pub width: usize,
}

/// The OTLP transport of `--otlp-protocol`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

fn parse_redact_pattern(text: &str) -> Result<String, String> {
    crate::redact::check_pattern(text)
        .map(|()| text.to_owned())
        .map_err(|err| crate::correlate::error_chain(&err))
}

fn parse_otlp_header(text: &str) -> Result<(String, String), String> {
    crate::export::parse_header(text).map_err(|err| err.to_string())
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An indented span tree with time bars.
    Waterfall,
    /// The agent's JSON answer, as is.
    Json,
}

/// The bearer token in `path` (surrounding whitespace removed), when a file is given.
pub fn read_token_file(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    let Some(path) = path else { return Ok(None) };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(Some(token.trim().to_owned()))
}

/// Parses `90s`, `15m`, `24h`, `7d` (a number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: use s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn otlp_flags_parse_and_bad_headers_are_refused() {
        let cli = Cli::try_parse_from([
            "nodetrace",
            "agent",
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--otlp-protocol",
            "http",
            "--otlp-header",
            "Authorization=Bearer x",
        ])
        .expect("valid flags");
        let Command::Agent(args) = cli.command else {
            panic!("not the agent command");
        };
        assert_eq!(args.otlp_protocol, OtlpProtocol::Http);
        assert_eq!(
            args.otlp_headers,
            [("authorization".to_owned(), "Bearer x".to_owned())]
        );
        let err = Cli::try_parse_from(["nodetrace", "agent", "--otlp-header", "novalue"])
            .expect_err("a header needs key=value");
        assert!(err.to_string().contains("key=value"), "{err}");
    }

    #[test]
    fn trace_needs_exactly_one_pod_selector() {
        assert!(Cli::try_parse_from(["nodetrace", "trace"]).is_err());
        assert!(
            Cli::try_parse_from(["nodetrace", "trace", "--pod", "a/b", "--pod-uid", "u"]).is_err()
        );
        assert!(Cli::try_parse_from(["nodetrace", "trace", "--pod", "a/b"]).is_ok());
    }
}
