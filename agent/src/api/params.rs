//! The query parameters of `GET /api/traces`, parsed and checked before the store is touched.
//!
//! `pod=<namespace>/<name>` or `pod_uid=<uid>` (exactly one), `start`/`end` in Unix microseconds
//! (default: the 24 hours up to now), `limit` spans (default 1000, at most [`MAX_LIMIT`]) and
//! `format=kelemetry|otlp|jaeger`. Other parameters (Kelemetry also sends `node`) are ignored.

use super::format::Format;

/// Spans in one answer when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most spans one answer may hold: a `limit` above it is refused (400), not clipped. A span
/// is about 1 KiB of JSON, so one answer stays near 10 MiB (and the spans behind it in memory
/// about as much again) however many spans the pod has; the request cap of the server
/// (`serve::DEFAULT_MAX_REQUESTS`) bounds how many such answers are built at once.
pub const MAX_LIMIT: usize = 10_000;
/// The window when `start` is not given: 24 hours before `end`.
pub const DEFAULT_WINDOW_NS: u64 = 24 * 3600 * 1_000_000_000;
const MAX_NAME_LEN: usize = 253;
const MAX_UID_LEN: usize = 128;

/// Which pod's spans to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodSelector {
    Name { namespace: String, name: String },
    Uid(String),
}

impl PodSelector {
    /// `<namespace>/<name>`, both non-empty Kubernetes names.
    pub fn parse_name(text: &str) -> Result<Self, ParamError> {
        let bad = || ParamError::BadPod {
            value: text.to_owned(),
        };
        let (namespace, name) = text.split_once('/').ok_or_else(bad)?;
        if !is_k8s_name(namespace) || !is_k8s_name(name) {
            return Err(bad());
        }
        Ok(Self::Name {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn parse_uid(text: &str) -> Result<Self, ParamError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_UID_LEN
            && text.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(ParamError::BadUid {
                value: text.to_owned(),
            });
        }
        Ok(Self::Uid(text.to_owned()))
    }
}

/// Lower-case DNS subdomain characters, as Kubernetes namespaces and pod names are.
fn is_k8s_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A checked trace query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRequest {
    pub pod: PodSelector,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub limit: usize,
    pub format: Format,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter `{name}` is given more than once")]
    Repeated { name: &'static str },
    #[error("one of `pod` (<namespace>/<name>) or `pod_uid` is required")]
    MissingPod,
    #[error("`pod` and `pod_uid` cannot be given together")]
    PodAndUid,
    #[error("`pod` must be <namespace>/<name> with lower-case Kubernetes names, got {value:?}")]
    BadPod { value: String },
    #[error("`pod_uid` must be 1 to {MAX_UID_LEN} printable characters, got {value:?}")]
    BadUid { value: String },
    #[error("`{name}` must be a Unix time in microseconds, got {value:?}")]
    BadTime { name: &'static str, value: String },
    #[error("`start` ({start_us}) is after `end` ({end_us})")]
    StartAfterEnd { start_us: u64, end_us: u64 },
    #[error("`limit` must be a number of spans from 1 to {MAX_LIMIT}, got {value:?}")]
    BadLimit { value: String },
    #[error(
        "`limit` {value} is above the cap of {MAX_LIMIT} spans per answer: ask for at most \
         {MAX_LIMIT}, or for a shorter window"
    )]
    LimitAboveCap { value: String },
    #[error("`{name}` must be a whole number from {min} to {max}, got {value:?}")]
    BadCount {
        name: &'static str,
        value: String,
        min: usize,
        max: usize,
    },
    #[error("unknown `format` {value:?}: expected kelemetry, otlp or jaeger")]
    BadFormat { value: String },
}

const KNOWN: [&str; 6] = ["pod", "pod_uid", "start", "end", "limit", "format"];

/// Checks the query's key/value pairs; `now_unix_ns` is the default end.
pub fn parse_trace_query(
    pairs: &[(String, String)],
    now_unix_ns: u64,
) -> Result<TraceRequest, ParamError> {
    let mut values: [Option<&str>; KNOWN.len()] = [None; KNOWN.len()];
    for (key, value) in pairs {
        if let Some(at) = KNOWN.iter().position(|k| k == key)
            && values[at].replace(value.as_str()).is_some()
        {
            return Err(ParamError::Repeated { name: KNOWN[at] });
        }
    }
    let [pod, pod_uid, start, end, limit, format] = values;
    let pod = match (pod, pod_uid) {
        (Some(_), Some(_)) => return Err(ParamError::PodAndUid),
        (None, None) => return Err(ParamError::MissingPod),
        (Some(name), None) => PodSelector::parse_name(name)?,
        (None, Some(uid)) => PodSelector::parse_uid(uid)?,
    };
    let (start_unix_ns, end_unix_ns) = window(start, end, now_unix_ns)?;
    let limit = match limit {
        Some(text) => parse_limit(text)?,
        None => DEFAULT_LIMIT,
    };
    let format = match format {
        Some(text) => Format::parse(text).ok_or_else(|| ParamError::BadFormat {
            value: text.to_owned(),
        })?,
        None => Format::default(),
    };
    Ok(TraceRequest {
        pod,
        start_unix_ns,
        end_unix_ns,
        limit,
        format,
    })
}

/// `start`/`end` in µs (defaults: the 24 hours before now), checked, as ns.
fn window(
    start: Option<&str>,
    end: Option<&str>,
    now_unix_ns: u64,
) -> Result<(u64, u64), ParamError> {
    let end_unix_ns = match end {
        Some(text) => micros_to_ns("end", text)?,
        None => now_unix_ns,
    };
    let start_unix_ns = match start {
        Some(text) => micros_to_ns("start", text)?,
        None => end_unix_ns.saturating_sub(DEFAULT_WINDOW_NS),
    };
    if start_unix_ns > end_unix_ns {
        return Err(ParamError::StartAfterEnd {
            start_us: start_unix_ns / 1000,
            end_us: end_unix_ns / 1000,
        });
    }
    Ok((start_unix_ns, end_unix_ns))
}

/// The `start`/`end` window of a query (ns), for routes other than `/api/traces`.
pub fn parse_window(
    pairs: &[(String, String)],
    now_unix_ns: u64,
) -> Result<(u64, u64), ParamError> {
    let single = |name: &'static str| -> Result<Option<&str>, ParamError> {
        let mut values = pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(ParamError::Repeated { name });
        }
        Ok(first)
    };
    window(single("start")?, single("end")?, now_unix_ns)
}

/// A non-negative integer parameter from `pairs`, at most `max`.
pub fn parse_count(
    pairs: &[(String, String)],
    name: &'static str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ParamError> {
    let mut values = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let Some(text) = values.next() else {
        return Ok(default);
    };
    if values.next().is_some() {
        return Err(ParamError::Repeated { name });
    }
    let bad = || ParamError::BadCount {
        name,
        value: text.to_owned(),
        min,
        max,
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

fn micros_to_ns(name: &'static str, text: &str) -> Result<u64, ParamError> {
    let bad = || ParamError::BadTime {
        name,
        value: text.to_owned(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u64>()
        .ok()
        .and_then(|us| us.checked_mul(1000))
        .ok_or_else(bad)
}

fn parse_limit(text: &str) -> Result<usize, ParamError> {
    let bad = || ParamError::BadLimit {
        value: text.to_owned(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // All digits: a number too large for usize is above the cap too.
    match text.parse::<usize>() {
        Ok(0) => Err(bad()),
        Ok(n) if n <= MAX_LIMIT => Ok(n),
        _ => Err(ParamError::LimitAboveCap {
            value: text.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_715_700_000_000_000_000;

    fn parse(query: &[(&str, &str)]) -> Result<TraceRequest, ParamError> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_trace_query(&pairs, NOW)
    }

    #[test]
    fn kelemetry_query_with_node_parameter() {
        let req = parse(&[
            ("end", "1715679010000000"),
            ("limit", "100"),
            ("node", "node-a"),
            ("pod", "default/web-0"),
            ("start", "1715679000000000"),
        ])
        .expect("valid");
        assert_eq!(
            req,
            TraceRequest {
                pod: PodSelector::Name {
                    namespace: "default".to_owned(),
                    name: "web-0".to_owned()
                },
                start_unix_ns: 1_715_679_000_000_000_000,
                end_unix_ns: 1_715_679_010_000_000_000,
                limit: 100,
                format: Format::Kelemetry,
            }
        );
    }

    #[test]
    fn defaults() {
        let req = parse(&[("pod_uid", "abc")]).expect("valid");
        assert_eq!(req.pod, PodSelector::Uid("abc".to_owned()));
        assert_eq!(req.end_unix_ns, NOW);
        assert_eq!(req.start_unix_ns, NOW - DEFAULT_WINDOW_NS);
        assert_eq!(req.limit, DEFAULT_LIMIT);
        assert_eq!(req.format, Format::Kelemetry);
        let req = parse(&[("pod_uid", "abc"), ("end", "5")]).expect("valid");
        assert_eq!((req.start_unix_ns, req.end_unix_ns), (0, 5000));
        let req =
            parse(&[("pod_uid", "abc"), ("format", "otlp"), ("limit", "10000")]).expect("valid");
        assert_eq!((req.format, req.limit), (Format::Otlp, MAX_LIMIT));
    }

    #[test]
    fn start_equal_to_end_is_allowed() {
        let req = parse(&[("pod_uid", "u"), ("start", "7"), ("end", "7")]).expect("valid");
        assert_eq!((req.start_unix_ns, req.end_unix_ns), (7000, 7000));
    }

    #[test]
    fn rejects_bad_parameters() {
        let cases: &[(&[(&str, &str)], ParamError)] = &[
            (&[], ParamError::MissingPod),
            (&[("pod", "a/b"), ("pod_uid", "u")], ParamError::PodAndUid),
            (
                &[("pod", "a/b"), ("pod", "a/c")],
                ParamError::Repeated { name: "pod" },
            ),
            (
                &[("pod", "web-0")],
                ParamError::BadPod {
                    value: "web-0".into(),
                },
            ),
            (
                &[("pod", "default/")],
                ParamError::BadPod {
                    value: "default/".into(),
                },
            ),
            (
                &[("pod", "/web-0")],
                ParamError::BadPod {
                    value: "/web-0".into(),
                },
            ),
            (
                &[("pod", "a/b/c")],
                ParamError::BadPod {
                    value: "a/b/c".into(),
                },
            ),
            (
                &[("pod", "A/b")],
                ParamError::BadPod {
                    value: "A/b".into(),
                },
            ),
            (&[("pod_uid", "")], ParamError::BadUid { value: "".into() }),
            (
                &[("pod_uid", "a b")],
                ParamError::BadUid {
                    value: "a b".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("start", "-1")],
                ParamError::BadTime {
                    name: "start",
                    value: "-1".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("end", "1.5")],
                ParamError::BadTime {
                    name: "end",
                    value: "1.5".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("end", "")],
                ParamError::BadTime {
                    name: "end",
                    value: "".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("start", "18446744073709552")],
                ParamError::BadTime {
                    name: "start",
                    value: "18446744073709552".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("start", "99999999999999999999999")],
                ParamError::BadTime {
                    name: "start",
                    value: "99999999999999999999999".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("start", "10"), ("end", "9")],
                ParamError::StartAfterEnd {
                    start_us: 10,
                    end_us: 9,
                },
            ),
            (
                &[("pod_uid", "u"), ("limit", "0")],
                ParamError::BadLimit { value: "0".into() },
            ),
            (
                &[("pod_uid", "u"), ("limit", "10001")],
                ParamError::LimitAboveCap {
                    value: "10001".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("limit", "00")],
                ParamError::BadLimit { value: "00".into() },
            ),
            (
                &[("pod_uid", "u"), ("limit", "18446744073709551616")],
                ParamError::LimitAboveCap {
                    value: "18446744073709551616".into(),
                },
            ),
            (
                &[("pod_uid", "u"), ("limit", "+5")],
                ParamError::BadLimit { value: "+5".into() },
            ),
            (
                &[("pod_uid", "u"), ("format", "zipkin")],
                ParamError::BadFormat {
                    value: "zipkin".into(),
                },
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(parse(query).as_ref(), Err(expected), "{query:?}");
        }
    }

    #[test]
    fn start_in_the_future_without_end_is_after_now() {
        let future_us = (NOW / 1000 + 1).to_string();
        assert!(matches!(
            parse(&[("pod_uid", "u"), ("start", &future_us)]),
            Err(ParamError::StartAfterEnd { .. })
        ));
    }
}
