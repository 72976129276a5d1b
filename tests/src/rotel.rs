//! A real OpenTelemetry collector for tests: `rotel-agent` (PyPI package `rotel`, installed by
//! `cargo xtask setup`) on loopback ports, logging every span it receives in detail, and a
//! parser of that log.
//!
//! [`rotel_or_skip`] skips with a printed reason when rotel-agent cannot be found (set
//! `ROTEL_AGENT` to its path, or install it with `pip install rotel`); with
//! `NODETRACE_REQUIRE_ROTEL=1` (as `cargo xtask test` sets it) it fails instead.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The rotel-agent binary: `$ROTEL_AGENT`, then `rotel-agent` on the PATH, then the one inside
/// the `rotel` Python package (pip does not put it on the PATH).
pub fn find_rotel() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ROTEL_AGENT").map(PathBuf::from) {
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!("ROTEL_AGENT={} is not a file", path.display())),
        };
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("rotel-agent"))
        .find(|p| p.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let script =
        "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))";
    let output = Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("rotel-agent is not on the PATH and python3 failed: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && path.is_file() {
        Ok(path)
    } else {
        Err("rotel-agent not found (pip install rotel, or set ROTEL_AGENT)".to_owned())
    }
}

/// The binary, or `None` after printing why the test is skipped.
pub fn rotel_or_skip() -> Option<PathBuf> {
    match find_rotel() {
        Ok(path) => Some(path),
        Err(reason) if std::env::var_os("NODETRACE_REQUIRE_ROTEL").is_some() => panic!("{reason}"),
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A running rotel-agent; killed by pid when dropped.
pub struct Rotel {
    child: Child,
    dir: tempfile::TempDir,
}

impl Rotel {
    pub fn start(bin: &Path, grpc_port: u16, http_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::fs::File::create(dir.path().join("rotel.out")).expect("stdout file");
        let err = out.try_clone().expect("stderr file");
        let child = Command::new(bin)
            .args(rotel_args(dir.path(), grpc_port, http_port))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut rotel = Self { child, dir };
        rotel.wait_listening(&[grpc_port, http_port]);
        rotel
    }

    fn wait_listening(&mut self, ports: &[u16]) {
        let until = Instant::now() + Duration::from_secs(10);
        while !ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rotel-agent exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "rotel-agent not listening:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it logged: in the foreground rotel-agent writes to stdout, `--log-file` is for
    /// `--daemon`; both are read.
    pub fn log(&self) -> String {
        ["rotel.out", "rotel.log"]
            .iter()
            .filter_map(|name| std::fs::read_to_string(self.dir.path().join(name)).ok())
            .collect()
    }

    /// The spans logged so far, once every one of `ids` is among them.
    pub async fn wait_for_spans(&self, span_ids_hex: &[String]) -> BTreeMap<String, LoggedSpan> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let logged = parse_log(&self.log());
            if span_ids_hex.iter().all(|id| logged.contains_key(id)) {
                return logged;
            }
            assert!(
                Instant::now() < until,
                "spans missing; rotel logged:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rotel_args(dir: &Path, grpc_port: u16, http_port: u16) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    [
        "start",
        "--otlp-grpc-endpoint",
        &format!("127.0.0.1:{grpc_port}"),
        "--otlp-http-endpoint",
        &format!("127.0.0.1:{http_port}"),
        "--debug-log",
        "traces",
        "--debug-log-verbosity",
        "detailed",
        "--exporter",
        "blackhole",
        "--log-file",
        &path("rotel.log"),
        "--pid-file",
        &path("rotel.pid"),
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Drop for Rotel {
    fn drop(&mut self) {
        // SIGKILL to the child's pid, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span as rotel's debug exporter printed it (values as printed: `Str(x)`, `Int(1)`, ...).
#[derive(Debug, Default, Clone)]
pub struct LoggedSpan {
    pub resource: BTreeMap<String, String>,
    pub fields: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(PartialEq)]
enum Section {
    Other,
    Resource,
    Span,
    SpanAttributes,
}

/// Spans by span id (hex).
pub fn parse_log(text: &str) -> BTreeMap<String, LoggedSpan> {
    let mut spans = BTreeMap::new();
    let mut resource = BTreeMap::new();
    let mut current: Option<LoggedSpan> = None;
    let mut section = Section::Other;
    let mut finish = |span: Option<LoggedSpan>| {
        if let Some(span) = span {
            let id = span.fields.get("ID").cloned().unwrap_or_default();
            spans.insert(id, span);
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if line.starts_with("ResourceSpans #") {
            finish(current.take());
            resource = BTreeMap::new();
            section = Section::Other;
        } else if line == "Resource attributes:" {
            section = Section::Resource;
        } else if line.starts_with("ScopeSpans #") {
            finish(current.take());
            section = Section::Other;
        } else if line.starts_with("Span #") {
            finish(current.take());
            current = Some(LoggedSpan {
                resource: resource.clone(),
                ..LoggedSpan::default()
            });
            section = Section::Span;
        } else if line == "Attributes:" && section == Section::Span {
            section = Section::SpanAttributes;
        } else if let Some((key, value)) = trimmed
            .strip_prefix("-> ")
            .and_then(|kv| kv.split_once(": "))
        {
            match (&section, current.as_mut()) {
                (Section::Resource, _) => {
                    resource.insert(key.to_owned(), value.to_owned());
                }
                (Section::SpanAttributes, Some(span)) => {
                    span.attributes.insert(key.to_owned(), value.to_owned());
                }
                _ => {}
            }
        } else if let (Section::Span, Some(span), Some((key, value))) =
            (&section, current.as_mut(), trimmed.split_once(':'))
        {
            span.fields
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    finish(current.take());
    spans
}
