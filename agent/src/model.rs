//! The trace model every stage shares: spans, their ids, attributes and the pod they belong to.
//!
//! Times are Unix epoch nanoseconds. A span is immutable once built: the correlator emits it
//! when the work it describes has finished (an OCI runtime run has exited, a CRI call returned).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A 16-byte trace id.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// The trace id of a pod without a trace-context annotation: the pod UID's 16 bytes when it
    /// is a UUID (as Kubernetes makes them), else the first 16 bytes of its SHA-256. Every agent
    /// and the aggregator derive the same id for the same pod.
    pub fn from_pod_uid(uid: &str) -> Self {
        match uuid::Uuid::parse_str(uid) {
            Ok(parsed) => Self(*parsed.as_bytes()),
            Err(_) => Self::hashed(&["pod", uid]),
        }
    }

    /// A deterministic id from labelled parts (used for spans no pod could be found for).
    pub fn hashed(parts: &[&str]) -> Self {
        let digest = digest(parts);
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    /// Lower-case hex, as W3C trace context and OTLP/JSON write it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    /// A random non-zero span id.
    pub fn random() -> Self {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }

    /// Lower-case hex, as W3C trace context and OTLP/JSON write it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The pod a span belongs to, as far as the node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A typed attribute value (the subset of OTLP's AnyValue that nodetrace emits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    StrList(Vec<String>),
}

/// Most bytes kept of a text value that a pod's owner controls (an annotation or label read
/// from a bundle or the API): longer ones are cut at a character boundary and end in `…`.
pub const MAX_TENANT_TEXT_BYTES: usize = 512;

/// `value`, cut to [`MAX_TENANT_TEXT_BYTES`].
pub fn capped(value: &str) -> String {
    if value.len() <= MAX_TENANT_TEXT_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_TENANT_TEXT_BYTES - '…'.len_utf8();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// One key/value attribute of a span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub value: AttrValue,
}

impl Attribute {
    pub fn str(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            value: AttrValue::Str(value.into()),
        }
    }

    pub fn int(key: &str, value: i64) -> Self {
        Self {
            key: key.to_owned(),
            value: AttrValue::Int(value),
        }
    }

    pub fn bool(key: &str, value: bool) -> Self {
        Self {
            key: key.to_owned(),
            value: AttrValue::Bool(value),
        }
    }

    pub fn str_list(key: &str, value: Vec<String>) -> Self {
        Self {
            key: key.to_owned(),
            value: AttrValue::StrList(value),
        }
    }
}

/// Outcome of the work a span describes (OpenTelemetry span status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error(String),
}

/// The kind of span, in OpenTelemetry's sense.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanKind {
    #[default]
    Internal,
    Server,
    Client,
}

/// One finished span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// Operation name, e.g. `runc create` or `RunPodSandbox`.
    pub name: String,
    /// The component that did the work (Jaeger's process service name): `runc`, `crun`,
    /// `container`, `containerd`, `cri-o`.
    pub service: String,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// The pod the span belongs to; `None` when it could not be attributed.
    pub pod: Option<PodRef>,
    pub attributes: Vec<Attribute>,
    pub status: SpanStatus,
}

impl Span {
    /// About how many bytes the span takes in memory (its struct, names and attributes), for
    /// byte bounds on queues.
    pub fn approx_bytes(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|a| {
                size_of::<Attribute>()
                    + a.key.len()
                    + match &a.value {
                        AttrValue::Str(s) => s.len(),
                        AttrValue::StrList(list) => {
                            list.iter().map(|s| s.len() + size_of::<String>()).sum()
                        }
                        AttrValue::Int(_) | AttrValue::Bool(_) => 0,
                    }
            })
            .sum();
        let pod = self
            .pod
            .as_ref()
            .map_or(0, |p| p.uid.len() + p.namespace.len() + p.name.len());
        let status = match &self.status {
            SpanStatus::Error(message) => message.len(),
            _ => 0,
        };
        size_of::<Self>() + self.name.len() + self.service.len() + attributes + pod + status
    }

    /// The value of a string attribute, if present.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find_map(|a| match &a.value {
            AttrValue::Str(s) if a.key == key => Some(s.as_str()),
            _ => None,
        })
    }

    /// The value of an integer attribute, if present.
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        self.attributes.iter().find_map(|a| match a.value {
            AttrValue::Int(i) if a.key == key => Some(i),
            _ => None,
        })
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }
}

/// Attribute keys (OpenTelemetry semantic conventions, plus `nodetrace.*` for our own).
pub mod keys {
    pub const POD_UID: &str = "k8s.pod.uid";
    pub const POD_NAME: &str = "k8s.pod.name";
    pub const NAMESPACE: &str = "k8s.namespace.name";
    pub const NODE_NAME: &str = "k8s.node.name";
    pub const CONTAINER_NAME: &str = "k8s.container.name";
    pub const CONTAINER_ID: &str = "container.id";
    pub const IMAGE_NAME: &str = "container.image.name";
    pub const IMAGE_ID: &str = "container.image.id";
    pub const CONTAINER_RUNTIME: &str = "container.runtime";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_PARENT_PID: &str = "process.parent_pid";
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
    pub const PROCESS_COMMAND_ARGS: &str = "process.command_args";
    pub const PROCESS_EXIT_CODE: &str = "process.exit.code";
    pub const RPC_SYSTEM: &str = "rpc.system";
    pub const RPC_SERVICE: &str = "rpc.service";
    pub const RPC_METHOD: &str = "rpc.method";
    /// The pod sandbox a CRI call is about.
    pub const SANDBOX_ID: &str = "k8s.pod.sandbox.id";
    /// The runtime handler (RuntimeClass) asked for in RunPodSandbox.
    pub const RUNTIME_HANDLER: &str = "nodetrace.cri.runtime_handler";
    /// The attempt number of a sandbox or container (restarts count up).
    pub const ATTEMPT: &str = "nodetrace.cri.attempt";
    /// The timeout a StopContainer or ExecSync request gave, in seconds.
    pub const TIMEOUT_SECONDS: &str = "nodetrace.cri.timeout_seconds";
    /// Where the span's trace id came from when not from the pod UID (`annotation`).
    pub const TRACE_CONTEXT_SOURCE: &str = "nodetrace.trace_context.source";
    /// The OCI runtime verb (`create`, `start`, `kill`, ...).
    pub const OCI_VERB: &str = "nodetrace.oci.verb";
    /// The signal a `kill` sent.
    pub const OCI_SIGNAL: &str = "nodetrace.oci.signal";
    /// `sandbox` or `container`.
    pub const CONTAINER_TYPE: &str = "nodetrace.container.type";
    /// The signal that ended a process, when one did.
    pub const PROCESS_EXIT_SIGNAL: &str = "nodetrace.process.exit.signal";
    /// Whether the span could be tied to a pod (false: see `nodetrace.attribution.error`).
    pub const ATTRIBUTED: &str = "nodetrace.attributed";
    pub const ATTRIBUTION_ERROR: &str = "nodetrace.attribution.error";
    /// How the pod was found: `bundle`, `cgroup`, `cache`, `cri`, `cni` (a CNI plugin's
    /// `CNI_ARGS`).
    pub const ATTRIBUTION_SOURCE: &str = "nodetrace.attribution.source";
    /// The argument list was cut at the kernel side's bound.
    pub const ARGS_TRUNCATED: &str = "nodetrace.process.command_args.truncated";
    /// The kubelet function a kubelet span describes.
    pub const KUBELET_FUNCTION: &str = "nodetrace.kubelet.function";
    /// The process started before the agent did: its start time comes from `/proc`, and its
    /// command line was read there when the agent found it.
    pub const PROCESS_SEEN_MID_LIFE: &str = "nodetrace.process.seen_mid_life";
    /// A CNI plugin run (from the `CNI_*` variables the runtime set for it): the plugin
    /// (`bridge`, `host-local`), what it was asked (`CNI_COMMAND`: `ADD`, `DEL`, `CHECK`,
    /// `STATUS`, `GC`), the interface (`CNI_IFNAME`), the network namespace (`CNI_NETNS`) and
    /// the container (`CNI_CONTAINERID`, the pod sandbox's id).
    pub const CNI_PLUGIN: &str = "cni.plugin";
    pub const CNI_COMMAND: &str = "cni.command";
    pub const CNI_IFNAME: &str = "cni.ifname";
    pub const CNI_NETNS: &str = "cni.netns";
    pub const CNI_CONTAINER_ID: &str = "cni.container_id";
    /// The error a failed plugin printed: its `msg` (and `details`), and its `code`.
    pub const CNI_ERROR_MESSAGE: &str = "cni.error.message";
    pub const CNI_ERROR_CODE: &str = "cni.error.code";
    /// The plugin wrote more than the agent keeps of its output.
    pub const CNI_ERROR_MESSAGE_TRUNCATED: &str = "nodetrace.cni.error.message.truncated";
    /// The `CNI_*` variables were cut at the kernel side's bound.
    pub const CNI_ENV_TRUNCATED: &str = "nodetrace.cni.env.truncated";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_text_is_capped_at_a_character_boundary() {
        assert_eq!(capped("web-0"), "web-0");
        let exact = "a".repeat(MAX_TENANT_TEXT_BYTES);
        assert_eq!(capped(&exact), exact);
        let long = "é".repeat(MAX_TENANT_TEXT_BYTES);
        let cut = capped(&long);
        assert!(cut.len() <= MAX_TENANT_TEXT_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn trace_id_of_a_uuid_pod_uid_is_its_bytes() {
        let id = TraceId::from_pod_uid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        assert_eq!(id.to_hex(), "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    }

    #[test]
    fn trace_id_of_other_uids_is_stable_and_distinct() {
        let a = TraceId::from_pod_uid("not-a-uuid");
        assert_eq!(a, TraceId::from_pod_uid("not-a-uuid"));
        assert_ne!(a, TraceId::from_pod_uid("not-a-uuid2"));
    }

    #[test]
    fn random_span_ids_differ() {
        assert_ne!(SpanId::random(), SpanId::random());
    }
}
