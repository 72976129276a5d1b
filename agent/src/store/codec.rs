//! Value encodings of the store: spans and pod summaries as bincode, and the fingerprint that
//! tells a reopened store whether its values were written with the current layout.
//!
//! Why bincode (1.x, varint integers): spans are written far more often than read, and a node
//! keeps a day of them, so bytes per span is what matters. bincode writes no field names and
//! encodes integers and lengths as varints: a typical `runc create` span takes 634 bytes, against
//! 1132 as serde_json (`bytes_per_span_is_measured` in the tests prints both). Its 1.x wire format is frozen,
//! and the crate is already built for heed. The price is that the format does not describe itself:
//! a change to `Span` would misread old values, which the layout fingerprint below catches.

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId};

/// Version of the key layout; bump it when a key encoding in `keys.rs` changes.
const KEY_LAYOUT_VERSION: u32 = 1;

/// Largest value the decoder accepts, so a damaged length cannot make it allocate without bound.
const MAX_VALUE_BYTES: u64 = 16 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_VALUE_BYTES)
}

pub fn encode_span(span: &Span) -> Result<Vec<u8>, bincode::Error> {
    options().serialize(span)
}

pub fn decode_span(bytes: &[u8]) -> Result<Span, bincode::Error> {
    options().deserialize(bytes)
}

/// What the store keeps per owner (pod or unattributed) to list pods and bound range scans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub namespace: String,
    pub name: String,
    /// Earliest start of the owner's stored spans.
    pub first_start_unix_ns: u64,
    /// Latest end of the owner's stored spans (not lowered by retention).
    pub last_end_unix_ns: u64,
    pub span_count: u64,
    /// Longest span duration ever stored for the owner: a query for spans overlapping a window
    /// starts its scan this far before the window.
    pub max_duration_ns: u64,
}

impl SummaryRecord {
    pub fn empty() -> Self {
        Self {
            first_start_unix_ns: u64::MAX,
            ..Self::default()
        }
    }

    /// Counts one more span of the owner, and takes the span's pod name when it has one.
    pub fn absorb(&mut self, span: &Span) {
        self.first_start_unix_ns = self.first_start_unix_ns.min(span.start_unix_ns);
        self.last_end_unix_ns = self.last_end_unix_ns.max(span.end_unix_ns);
        self.span_count += 1;
        self.max_duration_ns = self.max_duration_ns.max(span.duration_ns());
        if let Some(pod) = &span.pod
            && (!pod.namespace.is_empty() || !pod.name.is_empty())
        {
            pod.namespace.clone_into(&mut self.namespace);
            pod.name.clone_into(&mut self.name);
        }
    }
}

pub fn encode_summary(record: &SummaryRecord) -> Result<Vec<u8>, bincode::Error> {
    options().serialize(record)
}

pub fn decode_summary(bytes: &[u8]) -> Result<SummaryRecord, bincode::Error> {
    options().deserialize(bytes)
}

/// `KEY_LAYOUT_VERSION ‖ the encoding of a fixed span that uses every field`. Stored at creation;
/// a store whose fingerprint differs was written by an incompatible version.
pub fn layout_fingerprint() -> Result<Vec<u8>, bincode::Error> {
    let probe = Span {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        parent_span_id: Some(SpanId([3; 8])),
        name: "runc create".to_owned(),
        service: "runc".to_owned(),
        kind: SpanKind::Client,
        start_unix_ns: 1 << 60,
        end_unix_ns: (1 << 60) + 1,
        pod: Some(PodRef {
            uid: "uid".to_owned(),
            namespace: "ns".to_owned(),
            name: "pod".to_owned(),
        }),
        attributes: vec![
            Attribute::str("s", "v"),
            Attribute::int("i", -1),
            Attribute::bool("b", true),
            Attribute::str_list("l", vec!["a".to_owned()]),
        ],
        status: SpanStatus::Error("e".to_owned()),
    };
    let mut out = KEY_LAYOUT_VERSION.to_be_bytes().to_vec();
    out.extend(encode_span(&probe)?);
    out.extend(encode_summary(&SummaryRecord::empty())?);
    Ok(out)
}
