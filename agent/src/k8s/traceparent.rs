//! The pod trace-context annotation: a W3C `traceparent` value, parsed strictly.
//!
//! Only version `00` is accepted, in its exact form `00-<32 hex>-<16 hex>-<2 hex>` with
//! lower-case hex and non-zero ids (W3C Trace Context, section 3.2). Anything else is rejected
//! rather than guessed at: a wrong trace id would join the pod to someone else's trace.

use crate::model::{SpanId, TraceId};
use thiserror::Error;

/// Where a pod's node spans hang when the pod carries a trace-context annotation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace the pod's node spans join.
    pub trace_id: TraceId,
    /// The span they hang under (the `parent-id` field).
    pub parent_span_id: SpanId,
    /// The `trace-flags` field; bit 0 is "sampled".
    pub flags: u8,
}

/// Why an annotation value is not a valid `traceparent`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TraceparentError {
    #[error("traceparent must be 55 characters long, not {len}")]
    Length { len: usize },
    #[error("traceparent fields must be separated by '-'")]
    Separators,
    #[error("traceparent version must be 00, not {version:?}")]
    Version { version: String },
    #[error("traceparent field {field} is not lower-case hex")]
    NotLowerHex { field: &'static str },
    #[error("traceparent trace id is all zeros")]
    ZeroTraceId,
    #[error("traceparent parent span id is all zeros")]
    ZeroSpanId,
}

impl TraceContext {
    /// Parses a `traceparent` value (see the module documentation for what is accepted).
    pub fn parse_traceparent(value: &str) -> Result<Self, TraceparentError> {
        let bytes = value.as_bytes();
        if bytes.len() != 55 {
            return Err(TraceparentError::Length { len: value.len() });
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(TraceparentError::Separators);
        }
        let version = &bytes[0..2];
        if version != b"00" {
            return Err(TraceparentError::Version {
                version: String::from_utf8_lossy(version).into_owned(),
            });
        }
        let trace_id: [u8; 16] = decode_hex(&bytes[3..35], "trace-id")?;
        let parent_span_id: [u8; 8] = decode_hex(&bytes[36..52], "parent-id")?;
        let [flags] = decode_hex::<1>(&bytes[53..55], "trace-flags")?;
        if trace_id == [0; 16] {
            return Err(TraceparentError::ZeroTraceId);
        }
        if parent_span_id == [0; 8] {
            return Err(TraceparentError::ZeroSpanId);
        }
        Ok(Self {
            trace_id: TraceId(trace_id),
            parent_span_id: SpanId(parent_span_id),
            flags,
        })
    }

    /// Whether the upstream trace was sampled (trace-flags bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// The `traceparent` value this context was parsed from.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id.to_hex(),
            self.parent_span_id.to_hex(),
            self.flags
        )
    }
}

/// Decodes `2 * N` lower-case hex digits.
fn decode_hex<const N: usize>(
    digits: &[u8],
    field: &'static str,
) -> Result<[u8; N], TraceparentError> {
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = nibble(pair[0]).ok_or(TraceparentError::NotLowerHex { field })?;
        let low = nibble(pair[1]).ok_or(TraceparentError::NotLowerHex { field })?;
        *byte = (high << 4) | low;
    }
    Ok(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_value_gives_ids_and_flags() {
        let context = TraceContext::parse_traceparent(VALID).expect("valid");
        assert_eq!(
            context.trace_id.to_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.parent_span_id.to_hex(), "00f067aa0ba902b7");
        assert!(context.sampled());
        assert_eq!(context.to_traceparent(), VALID);
    }

    #[test]
    fn unsampled_flags_are_kept() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let context = TraceContext::parse_traceparent(value).expect("valid");
        assert!(!context.sampled());
        assert_eq!(context.flags, 0);
    }

    #[test]
    fn other_versions_are_rejected() {
        for version in ["01", "ff", "cc"] {
            let value = format!("{version}{}", &VALID[2..]);
            assert_eq!(
                TraceContext::parse_traceparent(&value),
                Err(TraceparentError::Version {
                    version: version.to_owned()
                })
            );
        }
    }

    #[test]
    fn zero_ids_are_rejected() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert_eq!(
            TraceContext::parse_traceparent(zero_trace),
            Err(TraceparentError::ZeroTraceId)
        );
        assert_eq!(
            TraceContext::parse_traceparent(zero_span),
            Err(TraceparentError::ZeroSpanId)
        );
    }

    #[test]
    fn upper_case_hex_is_rejected() {
        let value = VALID.replace("4bf92f", "4BF92F");
        assert_eq!(
            TraceContext::parse_traceparent(&value),
            Err(TraceparentError::NotLowerHex { field: "trace-id" })
        );
        let flags = format!("{}0A", &VALID[..53]);
        assert_eq!(
            TraceContext::parse_traceparent(&flags),
            Err(TraceparentError::NotLowerHex {
                field: "trace-flags"
            })
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let cases = [
            ("", TraceparentError::Length { len: 0 }),
            ("not a traceparent", TraceparentError::Length { len: 17 }),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                TraceparentError::Separators,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                TraceparentError::NotLowerHex { field: "trace-id" },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b+-01",
                TraceparentError::NotLowerHex { field: "parent-id" },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                TraceContext::parse_traceparent(value),
                Err(expected),
                "{value:?}"
            );
        }
        // Surrounding whitespace and a trailing field of a later version are not accepted.
        assert!(TraceContext::parse_traceparent(&format!(" {VALID}")).is_err());
        assert!(TraceContext::parse_traceparent(&format!("{VALID}-extra")).is_err());
        // A multi-byte character must not be sliced in the middle.
        let accented = format!("{}é{}", &VALID[..10], &VALID[12..]);
        assert_eq!(accented.len(), 55);
        assert_eq!(
            TraceContext::parse_traceparent(&accented),
            Err(TraceparentError::NotLowerHex { field: "trace-id" })
        );
    }
}
