//! serde helpers for the Go types of Jaeger's domain model: `TraceID`/`SpanID` (base64 of their
//! big-endian bytes, from their `MarshalJSON`), `time.Time` (RFC 3339 with trimmed nanoseconds),
//! `[]byte` (base64) and slices that Go may write as `null`.

use crate::model::{SpanId, TraceId};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const NS_PER_SEC: u64 = 1_000_000_000;

/// A Unix time in nanoseconds as Go's `time.Time.MarshalJSON` writes a UTC time
/// (`time.RFC3339Nano`: `2024-05-14T09:30:00.1234Z`, no fraction when it is zero).
/// `None` only for times past year 9999, which a `u64` cannot reach.
pub fn rfc3339_nano(unix_ns: u64) -> Option<String> {
    let secs = i64::try_from(unix_ns / NS_PER_SEC).ok()?;
    let nanos = unix_ns % NS_PER_SEC;
    let t = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// Parses an RFC 3339 time (any offset) into Unix nanoseconds; `None` before 1970 or unparsable.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos()).ok()
}

pub mod time_ns {
    //! `time.Time` <-> Unix nanoseconds.
    use super::*;

    pub fn serialize<S: Serializer>(unix_ns: &u64, s: S) -> Result<S::Ok, S::Error> {
        match rfc3339_nano(*unix_ns) {
            Some(text) => s.serialize_str(&text),
            None => Err(serde::ser::Error::custom("time out of range")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339(&text)
            .ok_or_else(|| D::Error::custom(format!("invalid or pre-1970 time {text:?}")))
    }
}

fn decode_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD
        .decode(text.as_bytes())
        .map_err(|e| D::Error::custom(format!("invalid base64 {text:?}: {e}")))
}

pub mod trace_id {
    //! `model.TraceID`: base64 of 16 big-endian bytes.
    use super::*;

    pub fn serialize<S: Serializer>(id: &TraceId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(id.0))
    }

    /// Like Go's `TraceID.Unmarshal`, takes the first 16 bytes and rejects shorter ones.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TraceId, D::Error> {
        let bytes = decode_b64(d)?;
        let head = bytes
            .get(..16)
            .ok_or_else(|| D::Error::custom("trace id is shorter than 16 bytes"))?;
        let mut id = [0; 16];
        id.copy_from_slice(head);
        Ok(TraceId(id))
    }
}

pub mod span_id {
    //! `model.SpanID`: base64 of 8 big-endian bytes.
    use super::*;

    pub fn serialize<S: Serializer>(id: &SpanId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(id.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SpanId, D::Error> {
        let bytes = decode_b64(d)?;
        let id: [u8; 8] = bytes
            .try_into()
            .map_err(|_| D::Error::custom("span id is not 8 bytes"))?;
        Ok(SpanId(id))
    }
}

pub mod bytes_b64 {
    //! `[]byte`: standard base64.
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode_b64(d)
    }
}

/// A slice Go may have written as `null`.
pub fn nullable_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_trim_trailing_zeros_like_go() {
        assert_eq!(
            rfc3339_nano(1_715_679_000_123_456_789).as_deref(),
            Some("2024-05-14T09:30:00.123456789Z")
        );
        assert_eq!(
            rfc3339_nano(1_715_679_000_120_000_000).as_deref(),
            Some("2024-05-14T09:30:00.12Z")
        );
        assert_eq!(
            rfc3339_nano(1_715_679_000_000_000_000).as_deref(),
            Some("2024-05-14T09:30:00Z")
        );
        assert_eq!(rfc3339_nano(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert!(rfc3339_nano(u64::MAX).is_some());
    }

    #[test]
    fn times_parse_back_with_any_offset() {
        assert_eq!(
            parse_rfc3339("2024-05-14T09:30:00.12Z"),
            Some(1_715_679_000_120_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-05-14T11:30:00.12+02:00"),
            Some(1_715_679_000_120_000_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn ids_are_base64_of_their_bytes_like_jaeger_marshal_json() {
        // The examples in jaeger's model/ids.go: {high:2, low:1} and SpanID(1).
        let mut trace = [0; 16];
        trace[7] = 2;
        trace[15] = 1;
        let mut span = [0; 8];
        span[7] = 1;
        let json = serde_json::to_string(&Ids {
            trace: TraceId(trace),
            span: SpanId(span),
        })
        .expect("serializes");
        assert_eq!(
            json,
            r#"{"trace":"AAAAAAAAAAIAAAAAAAAAAQ==","span":"AAAAAAAAAAE="}"#
        );
        let back: Ids = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.trace, TraceId(trace));
        assert_eq!(back.span, SpanId(span));
    }

    #[test]
    fn bad_ids_are_errors() {
        for json in [
            r#"{"trace":"AAAA","span":"AAAAAAAAAAE="}"#,
            r#"{"trace":"AAAAAAAAAAIAAAAAAAAAAQ==","span":"AAAA"}"#,
            r#"{"trace":"%%%","span":"AAAAAAAAAAE="}"#,
        ] {
            assert!(serde_json::from_str::<Ids>(json).is_err(), "{json}");
        }
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ids {
        #[serde(with = "trace_id")]
        trace: TraceId,
        #[serde(with = "span_id")]
        span: SpanId,
    }
}
