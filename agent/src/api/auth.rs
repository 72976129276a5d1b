//! Bearer-token authentication and the listen policy: off the loopback address the API needs a
//! token, unless the operator explicitly opts out.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListenPolicyError {
    #[error(
        "refusing to listen on {addr} without a bearer token: set a token, listen on loopback, \
         or explicitly allow unauthenticated access"
    )]
    NoToken { addr: SocketAddr },
    #[error("the bearer token for {addr} is empty")]
    EmptyToken { addr: SocketAddr },
}

/// Loopback addresses (including IPv4-mapped ones) are always allowed; any other address needs
/// a non-empty token, or `insecure_no_auth`.
pub fn check_listen_policy(
    addr: SocketAddr,
    token: Option<&str>,
    insecure_no_auth: bool,
) -> Result<(), ListenPolicyError> {
    if addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    match token {
        Some(token) if token.trim().is_empty() => Err(ListenPolicyError::EmptyToken { addr }),
        Some(_) => Ok(()),
        None if insecure_no_auth => Ok(()),
        None => Err(ListenPolicyError::NoToken { addr }),
    }
}

/// Compares without an early exit: both sides are hashed to fixed-size digests first, so the time
/// taken depends on neither the position of the first difference nor the expected length.
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: 401 unless the request carries the expected bearer token.
pub async fn require_bearer(
    State(expected): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(bearer_token);
    match presented {
        Some(token) if !expected.is_empty() && tokens_match(&expected, token) => {
            next.run(request).await
        }
        _ => unauthorized(),
    }
}

fn unauthorized() -> Response {
    let body = axum::Json(serde_json::json!({"error": "missing or invalid bearer token"}));
    let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"nodetrace\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn loopback_is_always_allowed() {
        for a in [
            "127.0.0.1:9000",
            "127.1.2.3:9000",
            "[::1]:9000",
            "[::ffff:127.0.0.1]:9000",
        ] {
            assert_eq!(check_listen_policy(addr(a), None, false), Ok(()), "{a}");
        }
    }

    #[test]
    fn other_addresses_need_a_token_or_an_explicit_opt_out() {
        for a in ["0.0.0.0:9000", "10.0.0.5:9000", "[::]:9000"] {
            let a = addr(a);
            assert_eq!(
                check_listen_policy(a, None, false),
                Err(ListenPolicyError::NoToken { addr: a })
            );
            assert_eq!(check_listen_policy(a, Some("s3cret"), false), Ok(()));
            assert_eq!(check_listen_policy(a, None, true), Ok(()));
            assert_eq!(
                check_listen_policy(a, Some(" "), true),
                Err(ListenPolicyError::EmptyToken { addr: a })
            );
        }
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match("s3cret", "s3cret"));
        assert!(!tokens_match("s3cret", "s3cret "));
        assert!(!tokens_match("s3cret", ""));
    }

    #[test]
    fn bearer_header_parsing() {
        let parse = |v: &'static str| bearer_token(&HeaderValue::from_static(v)).map(str::to_owned);
        assert_eq!(parse("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(parse("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(parse("Basic abc"), None);
        assert_eq!(parse("Bearer "), None);
        assert_eq!(parse("Bearerabc"), None);
    }
}
