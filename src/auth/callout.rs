//! The auth callout (`--auth-url`): before a publish or a watch, the server POSTs
//! `{action, stream, token, key, ip, session, user_agent}` to the operator's service; a
//! 2xx allows, any other answer denies, and no answer within `--auth-timeout-ms` denies
//! too (fail closed). Answers are kept for `--auth-cache-secs` per (action, stream,
//! credential), in a bounded cache; failures to get an answer are never kept.

use super::redact;
use parking_lot::Mutex;
use ring::digest;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Answers kept at most; past it, expired ones go, then everything.
const CACHE_ENTRIES: usize = 10_000;

/// What the callout is told about one request.
#[derive(Debug, Serialize)]
pub struct CalloutRequest<'a> {
    pub action: &'a str,
    pub stream: &'a str,
    pub token: Option<&'a str>,
    pub key: Option<&'a str>,
    pub ip: Option<String>,
    pub session: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The service answered with this non-2xx status.
    Deny(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalloutError {
    #[error("the auth service did not answer within {0} ms")]
    Timeout(u64),
    #[error("the auth service is unreachable")]
    Unreachable,
}

type CacheKey = (String, String, [u8; 32]);

pub struct Callout {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, Verdict)>>,
}

impl Callout {
    pub fn new(url: String, timeout: Duration, ttl: Duration) -> Callout {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("an HTTP client without TLS always builds");
        Callout {
            url,
            client,
            timeout,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn ask(&self, request: &CalloutRequest<'_>) -> Result<Verdict, CalloutError> {
        let key = cache_key(request);
        if let Some(verdict) = self.cached(&key) {
            return Ok(verdict);
        }
        let sent = self.client.post(&self.url).json(request).send();
        // The client's own timeout covers the body too; this one also bounds a
        // connect that hangs.
        let verdict = match tokio::time::timeout(self.timeout, sent).await {
            Err(_) => return Err(CalloutError::Timeout(self.timeout.as_millis() as u64)),
            Ok(Err(err)) if err.is_timeout() => {
                return Err(CalloutError::Timeout(self.timeout.as_millis() as u64))
            }
            Ok(Err(err)) => {
                // Without its URL: it may carry a credential of the operator's.
                log::warn!(
                    "auth callout to {} failed: {}",
                    redact::url(&self.url),
                    err.without_url()
                );
                return Err(CalloutError::Unreachable);
            }
            Ok(Ok(response)) if response.status().is_success() => Verdict::Allow,
            Ok(Ok(response)) => Verdict::Deny(response.status().as_u16()),
        };
        self.remember(key, verdict);
        Ok(verdict)
    }

    fn cached(&self, key: &CacheKey) -> Option<Verdict> {
        let cache = self.cache.lock();
        let (at, verdict) = cache.get(key)?;
        (at.elapsed() < self.ttl).then_some(*verdict)
    }

    fn remember(&self, key: CacheKey, verdict: Verdict) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), verdict));
    }

    #[cfg(test)]
    fn cached_entries(&self) -> usize {
        self.cache.lock().len()
    }
}

/// The credential is kept as its SHA-256, not as itself.
fn cache_key(request: &CalloutRequest<'_>) -> CacheKey {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [request.token, request.key] {
        let part = part.unwrap_or_default();
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    let mut credential = [0u8; 32];
    credential.copy_from_slice(context.finish().as_ref());
    (
        request.action.to_owned(),
        request.stream.to_owned(),
        credential,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(stream: &'a str, token: &'a str) -> CalloutRequest<'a> {
        CalloutRequest {
            action: "watch",
            stream,
            token: Some(token),
            key: None,
            ip: None,
            session: None,
            user_agent: None,
        }
    }

    #[test]
    fn the_cache_is_bounded_and_keyed_by_credential() {
        let callout = Callout::new(
            "http://127.0.0.1:9/".into(),
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        callout.remember(cache_key(&request("a", "t1")), Verdict::Allow);
        assert_eq!(
            callout.cached(&cache_key(&request("a", "t1"))),
            Some(Verdict::Allow)
        );
        assert_eq!(callout.cached(&cache_key(&request("a", "t2"))), None);
        assert_eq!(callout.cached(&cache_key(&request("b", "t1"))), None);
        for n in 0..CACHE_ENTRIES + 5 {
            callout.remember(cache_key(&request("a", &n.to_string())), Verdict::Deny(403));
        }
        assert!(callout.cached_entries() <= CACHE_ENTRIES);
    }
}
