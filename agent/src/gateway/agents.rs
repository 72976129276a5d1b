//! The agents behind the gateway: a static list of URLs and/or the addresses a DNS name (the
//! agents' headless Service) resolves to, asked at once with a bound on how many are in flight
//! and a deadline each.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::api::client::Client;

/// Where the agents are.
#[derive(Clone, Debug)]
pub struct AgentSet {
    /// Agent base URLs given as they are.
    pub fixed: Vec<String>,
    /// `host:port` of the agents' headless Service: every address it resolves to is an agent.
    pub service: Option<String>,
    /// `http` or `https` for the agents found through the Service.
    pub scheme: String,
    pub token: Option<String>,
    /// CA certificates an https agent must chain to.
    pub ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Deadline of one agent's answer.
    pub timeout: Duration,
    /// Most agents asked at once.
    pub max_in_flight: usize,
}

/// The answers of the agents that answered, and why the others did not.
#[derive(Debug)]
pub struct Fanned<T> {
    pub answers: Vec<(String, T)>,
    pub failures: Vec<(String, String)>,
}

impl AgentSet {
    /// The agents' base URLs now: the fixed ones and the Service's current addresses (a
    /// failed lookup is a failure of its own, named after the Service).
    pub async fn urls(&self) -> (Vec<String>, Option<(String, String)>) {
        let mut urls = self.fixed.clone();
        let mut failure = None;
        if let Some(service) = &self.service {
            match tokio::net::lookup_host(service.as_str()).await {
                Ok(addresses) => {
                    let mut found: Vec<String> = addresses
                        .map(|addr| format!("{}://{addr}", self.scheme))
                        .collect();
                    found.sort();
                    found.dedup();
                    urls.extend(found);
                }
                Err(err) => {
                    failure = Some((service.clone(), format!("DNS lookup failed: {err}")));
                }
            }
        }
        urls.dedup();
        (urls, failure)
    }

    /// Runs `ask` against every agent, at most `max_in_flight` at once, each within the
    /// deadline.
    pub async fn ask<T, F, Fut>(&self, ask: F) -> Fanned<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let (urls, lookup_failure) = self.urls().await;
        let mut fanned = Fanned {
            answers: Vec::new(),
            failures: lookup_failure.into_iter().collect(),
        };
        let slots = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for url in urls {
            // The client's own deadline is later than the fan-out's, which names the cause.
            let client_timeout = self.timeout + Duration::from_secs(1);
            let client = match Client::trusting(&url, self.token.clone(), client_timeout, &self.ca)
            {
                Ok(client) => client,
                Err(err) => {
                    fanned.failures.push((url, err.to_string()));
                    continue;
                }
            };
            let answer = ask(client);
            let slots = slots.clone();
            let timeout = self.timeout;
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let result = match tokio::time::timeout(timeout, answer).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (url, result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((url, Ok(answer))) => fanned.answers.push((url, answer)),
                Ok((url, Err(reason))) => fanned.failures.push((url, reason)),
                Err(err) => fanned.failures.push(("(task)".to_owned(), err.to_string())),
            }
        }
        fanned.answers.sort_by(|a, b| a.0.cmp(&b.0));
        fanned.failures.sort();
        fanned
    }
}
