//! The CLI's HTTP client: fetches a pod's traces from an agent's `/api/traces` in the Kelemetry
//! (Jaeger domain model) format and decodes them. An `https://` agent is trusted when its
//! certificate chains to the given CA (no system roots are built in).

use super::format::jaeger_model::{Trace, TracesResponse};
use super::params::PodSelector;
use super::pods::PodPage;
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use std::time::Duration;

/// How long one query may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server url {url:?}")]
    BadUrl {
        url: String,
        #[source]
        source: url_error::ParseError,
    },
    #[error("server url {url:?} is not http or https")]
    BadScheme { url: String },
    #[error(
        "server url {url:?} is https: give the CA that signs the agent's certificate (--ca-file)"
    )]
    HttpsWithoutCa { url: String },
    #[error("cannot set up the http client")]
    Build {
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("cannot decode the answer of {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

mod url_error {
    //! The url crate's parse error, as reqwest re-exports it.
    pub type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}

/// What to ask for; `None` leaves the server's default (the last 24 hours, 1000 spans).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceQuery {
    pub pod: PodSelector,
    pub start_us: Option<u64>,
    pub end_us: Option<u64>,
    /// Most spans to ask for; more than the agent's cap ([`super::params::MAX_LIMIT`]) asks
    /// for the cap.
    pub limit: Option<usize>,
}

impl TraceQuery {
    /// The query string pairs, `format=kelemetry` included.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = match &self.pod {
            PodSelector::Name { namespace, name } => vec![("pod", format!("{namespace}/{name}"))],
            PodSelector::Uid(uid) => vec![("pod_uid", uid.clone())],
        };
        if let Some(start) = self.start_us {
            pairs.push(("start", start.to_string()));
        }
        if let Some(end) = self.end_us {
            pairs.push(("end", end.to_string()));
        }
        if let Some(limit) = self.limit {
            // An agent refuses a limit above its cap rather than clipping it.
            let limit = limit.min(super::params::MAX_LIMIT);
            pairs.push(("limit", limit.to_string()));
        }
        pairs.push(("format", "kelemetry".to_owned()));
        pairs
    }
}

/// A client of one agent.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    traces_url: Url,
    pods_url: Url,
    token: Option<String>,
}

impl Client {
    /// `server` is the agent's base URL (`http://node-a:9464`, a path prefix allowed).
    pub fn new(
        server: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::trusting(server, token, timeout, &[])
    }

    /// [`Client::new`] trusting `ca` (CA certificates) for an `https://` server, which needs
    /// at least one.
    pub fn trusting(
        server: &str,
        token: Option<String>,
        timeout: Duration,
        ca: &[CertificateDer<'static>],
    ) -> Result<Self, ClientError> {
        let mut base = Url::parse(server).map_err(|source| ClientError::BadUrl {
            url: server.to_owned(),
            source,
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::BadScheme {
                url: server.to_owned(),
            });
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let traces_url = base
            .join("api/traces")
            .map_err(|source| ClientError::BadUrl {
                url: server.to_owned(),
                source,
            })?;
        let pods_url = base
            .join("api/v1/pods")
            .map_err(|source| ClientError::BadUrl {
                url: server.to_owned(),
                source,
            })?;
        if base.scheme() == "https" && ca.is_empty() {
            return Err(ClientError::HttpsWithoutCa {
                url: server.to_owned(),
            });
        }
        let mut builder = reqwest::Client::builder().timeout(timeout);
        for certificate in ca {
            let certificate = reqwest::Certificate::from_der(certificate)
                .map_err(|source| ClientError::Build { source })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder
            .build()
            .map_err(|source| ClientError::Build { source })?;
        Ok(Self {
            http,
            server: server.to_owned(),
            traces_url,
            pods_url,
            token,
        })
    }

    /// The pod's traces, as the server grouped them.
    pub async fn traces(&self, query: &TraceQuery) -> Result<Vec<Trace>, ClientError> {
        let decoded: TracesResponse = self.get(&self.traces_url, &query.pairs()).await?;
        Ok(decoded.data)
    }

    /// One page of the pods the server has seen in the window (µs).
    pub async fn pods(
        &self,
        start_us: u64,
        end_us: u64,
        limit: usize,
        offset: usize,
    ) -> Result<PodPage, ClientError> {
        let pairs = [
            ("start", start_us.to_string()),
            ("end", end_us.to_string()),
            ("limit", limit.to_string()),
            ("offset", offset.to_string()),
        ];
        self.get(&self.pods_url, &pairs).await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        target: &Url,
        pairs: &[(&'static str, String)],
    ) -> Result<T, ClientError> {
        let url = target.to_string();
        let mut request = self.http.get(target.clone()).query(pairs);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let failed = |source| ClientError::Request {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { url, source })
    }

    /// The server this client asks.
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// The server's `{"error": ...}` message, or the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{fixtures, golden};
    use super::*;
    use axum::Router;
    use axum::extract::RawQuery;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;

    /// Serves the golden Kelemetry JSON at `/prefix/api/traces` for the query of [`query`] and
    /// `Bearer t`.
    async fn serve() -> String {
        async fn traces(headers: HeaderMap, RawQuery(query): RawQuery) -> axum::response::Response {
            use axum::response::IntoResponse as _;
            let authorized = headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v == "Bearer t");
            if !authorized {
                let body = r#"{"error":"missing or invalid bearer token"}"#;
                return (StatusCode::UNAUTHORIZED, body).into_response();
            }
            let query = query.unwrap_or_default();
            if query != "pod=default%2Fweb-0&start=1&end=2&limit=10&format=kelemetry" {
                let body = serde_json::json!({ "error": query }).to_string();
                return (StatusCode::BAD_REQUEST, body).into_response();
            }
            golden::read("kelemetry_pod_trace.json").into_response()
        }
        let app = Router::new().route("/prefix/api/traces", get(traces));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/prefix")
    }

    fn query() -> TraceQuery {
        TraceQuery {
            pod: PodSelector::Name {
                namespace: "default".to_owned(),
                name: "web-0".to_owned(),
            },
            start_us: Some(1),
            end_us: Some(2),
            limit: Some(10),
        }
    }

    #[tokio::test]
    async fn fetches_and_decodes_traces() {
        let server = serve().await;
        let client = Client::new(&server, Some("t".to_owned()), DEFAULT_TIMEOUT).expect("client");
        let traces = client.traces(&query()).await.expect("traces");
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].spans.len(), fixtures::pod_trace().len());
    }

    #[tokio::test]
    async fn server_errors_carry_the_message() {
        let server = serve().await;
        let client = Client::new(&server, None, DEFAULT_TIMEOUT).expect("client");
        match client.traces(&query()).await {
            Err(ClientError::Status {
                status, message, ..
            }) => {
                assert_eq!(status, 401);
                assert_eq!(message, "missing or invalid bearer token");
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn query_pairs() {
        let pairs = query().pairs();
        assert_eq!(
            pairs,
            [
                ("pod", "default/web-0".to_owned()),
                ("start", "1".to_owned()),
                ("end", "2".to_owned()),
                ("limit", "10".to_owned()),
                ("format", "kelemetry".to_owned()),
            ]
        );
        let by_uid = TraceQuery {
            pod: PodSelector::Uid("u".to_owned()),
            start_us: None,
            end_us: None,
            limit: None,
        };
        assert_eq!(
            by_uid.pairs(),
            [
                ("pod_uid", "u".to_owned()),
                ("format", "kelemetry".to_owned())
            ]
        );
    }

    #[test]
    fn bad_servers() {
        assert!(matches!(
            Client::new("not a url", None, DEFAULT_TIMEOUT),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            Client::new("ftp://node-a", None, DEFAULT_TIMEOUT),
            Err(ClientError::BadScheme { .. })
        ));
        assert!(matches!(
            Client::new("https://node-a:9750", None, DEFAULT_TIMEOUT),
            Err(ClientError::HttpsWithoutCa { .. })
        ));
        let client = Client::new("http://node-a:9464/x", None, DEFAULT_TIMEOUT).expect("client");
        assert_eq!(
            client.traces_url.as_str(),
            "http://node-a:9464/x/api/traces"
        );
    }
}
