//! Fuzzes the HTTP query parameters of `GET /api/traces`: the input is a query string, split
//! on `&` and `=` (no percent-decoding: the router has done it before the parser runs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrace::api::params::{MAX_LIMIT, parse_count, parse_trace_query, parse_window};

const NOW_NS: u64 = 1_715_700_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (pair.to_owned(), String::new()),
        })
        .collect();
    match parse_trace_query(&pairs, NOW_NS) {
        Ok(request) => {
            assert!((1..=MAX_LIMIT).contains(&request.limit));
            assert!(request.start_unix_ns <= request.end_unix_ns);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
    if let Ok((start, end)) = parse_window(&pairs, NOW_NS) {
        assert!(start <= end);
    }
    if let Ok(n) = parse_count(&pairs, "limit", 7, 1, 100) {
        assert!(n == 7 || (1..=100).contains(&n));
    }
});
