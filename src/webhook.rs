//! Webhooks (`--webhook URL`, repeatable): every [`Event`] is POSTed as JSON to each
//! URL, signed with `X-Blobcast-Signature: sha256=<hex HMAC-SHA256 of the body>` when
//! `--webhook-secret-file` is set. Each URL has its own bounded queue and its own
//! delivery task, which retries a failed delivery with a growing pause for up to five
//! minutes, in order. Emitting an event only pushes onto the queues (dropping the oldest
//! event of a full one, counted in `blobcast_webhooks_dropped_total`): a receiver that
//! is down, slow or silent never holds up media, a publisher or another receiver.

use crate::auth::redact;
use crate::events::{Event, EventSink, Events};
use crate::metrics::Metrics;
use crate::stream::Registry;
use bytes::Bytes;
use parking_lot::Mutex;
use ring::hmac;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Events waiting per URL; past it the oldest go.
const QUEUE_EVENTS: usize = 1000;
/// How long one delivery is retried before it is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5 * 60);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);
/// One attempt's limit: a receiver that never answers costs its queue this much per try.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Viewer counts are sent at most this often per stream, and only when they change.
pub const VIEWER_COUNT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read the webhook secret {path}: {source}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook secret file {0} is empty")]
    EmptySecret(String),
}

struct Pending {
    body: Bytes,
    event: &'static str,
    since: Instant,
}

/// One URL's queue.
struct Target {
    url: String,
    queue: Mutex<VecDeque<Pending>>,
    wake: Notify,
    /// The server is gone: deliver what is queued once, retry nothing.
    closed: AtomicBool,
}

impl Target {
    fn push(&self, pending: Pending, metrics: &Metrics) {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= QUEUE_EVENTS {
                queue.pop_front();
                metrics.webhook_dropped();
            }
            queue.push_back(pending);
        }
        self.wake.notify_one();
    }

    /// The next event, or None once closed and empty.
    async fn next(&self) -> Option<Pending> {
        loop {
            let notified = self.wake.notified();
            if let Some(pending) = self.queue.lock().pop_front() {
                return Some(pending);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

pub struct Webhooks {
    targets: Vec<Arc<Target>>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Starts a delivery task per URL; None without URLs. Needs a tokio runtime.
    pub fn start(
        urls: &[String],
        secret_file: Option<&Path>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Webhooks>>, WebhookError> {
        if urls.is_empty() {
            return Ok(None);
        }
        let key = secret_file.map(read_secret).transpose()?;
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .expect("an HTTP client without TLS always builds");
        let targets: Vec<_> = urls
            .iter()
            .map(|url| {
                Arc::new(Target {
                    url: url.clone(),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    closed: AtomicBool::new(false),
                })
            })
            .collect();
        for target in &targets {
            tokio::spawn(deliver(
                target.clone(),
                client.clone(),
                key.clone(),
                metrics.clone(),
            ));
        }
        Ok(Some(Arc::new(Webhooks { targets, metrics })))
    }

    /// Sends the registry's publish events and the recorder's recording events here,
    /// and viewer counts every [`VIEWER_COUNT_EVERY`] while they change.
    pub fn connect(self: &Arc<Self>, registry: &Arc<Registry>, recorder_events: &Events) {
        let sink: Arc<dyn EventSink> = self.clone();
        registry.events().connect(sink.clone());
        recorder_events.connect(sink);
        tokio::spawn(viewer_counts(
            Arc::downgrade(registry),
            Arc::downgrade(self),
        ));
    }
}

impl EventSink for Webhooks {
    fn emit(&self, event: Event) {
        let mut body = serde_json::to_value(&event).expect("events serialize");
        body["time"] = crate::recording::names::rfc3339(SystemTime::now()).into();
        let body = Bytes::from(serde_json::to_vec(&body).expect("JSON serializes"));
        let since = Instant::now();
        for target in &self.targets {
            let pending = Pending {
                body: body.clone(),
                event: event.name(),
                since,
            };
            target.push(pending, &self.metrics);
        }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        for target in &self.targets {
            target.closed.store(true, Ordering::Release);
            target.wake.notify_one();
        }
    }
}

/// One URL's delivery loop: in order, each event retried until it is taken or too old.
async fn deliver(
    target: Arc<Target>,
    client: reqwest::Client,
    key: Option<hmac::Key>,
    metrics: Arc<Metrics>,
) {
    let shown = redact::url(&target.url);
    while let Some(pending) = target.next().await {
        let signature = key.as_ref().map(|key| {
            let tag = hmac::sign(key, &pending.body);
            format!("sha256={}", hex(tag.as_ref()))
        });
        let mut pause = FIRST_RETRY;
        loop {
            let mut request = client
                .post(&target.url)
                .header("content-type", "application/json")
                .header("x-blobcast-event", pending.event)
                .body(pending.body.clone());
            if let Some(signature) = &signature {
                request = request.header("x-blobcast-signature", signature);
            }
            let why = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    metrics.webhook_delivered();
                    break;
                }
                Ok(response) => format!("answered {}", response.status()),
                // Without its URL: it may carry a credential of the operator's.
                Err(err) => err.without_url().to_string(),
            };
            let closed = target.closed.load(Ordering::Acquire);
            if closed || pending.since.elapsed() + pause > GIVE_UP_AFTER {
                metrics.webhook_failed();
                log::warn!("webhook {} to {shown} given up: {why}", pending.event);
                break;
            }
            log::debug!(
                "webhook {} to {shown} failed ({why}); retrying in {pause:?}",
                pending.event
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
}

/// Every few seconds, each stream whose viewer count changed since it was last sent.
async fn viewer_counts(registry: Weak<Registry>, webhooks: Weak<Webhooks>) {
    let mut sent: HashMap<String, usize> = HashMap::new();
    let mut tick = tokio::time::interval(VIEWER_COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(registry), Some(webhooks)) = (registry.upgrade(), webhooks.upgrade()) else {
            return;
        };
        let mut now: HashMap<String, usize> = registry
            .list()
            .into_iter()
            .map(|info| (info.name.as_str().to_owned(), info.viewers))
            .collect();
        // `sent` holds the streams last seen with viewers: one that is gone has none.
        for stream in sent.keys() {
            now.entry(stream.clone()).or_insert(0);
        }
        for (stream, viewers) in &now {
            if sent.get(stream).copied().unwrap_or(0) != *viewers {
                webhooks.emit(Event::ViewerCount {
                    stream: stream.clone(),
                    viewers: *viewers,
                });
            }
        }
        now.retain(|_, viewers| *viewers > 0);
        sent = now;
    }
}

fn read_secret(path: &Path) -> Result<hmac::Key, WebhookError> {
    let mut secret = std::fs::read(path).map_err(|source| WebhookError::Secret {
        path: path.display().to_string(),
        source,
    })?;
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret(path.display().to_string()));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &secret))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_event_and_counts_it() {
        let metrics = Metrics::default();
        let target = Target {
            url: "http://127.0.0.1:9/".into(),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        };
        for n in 0..QUEUE_EVENTS + 3 {
            let pending = Pending {
                body: Bytes::from(n.to_string()),
                event: "viewer_count",
                since: Instant::now(),
            };
            target.push(pending, &metrics);
        }
        let queue = target.queue.lock();
        assert_eq!(queue.len(), QUEUE_EVENTS);
        assert_eq!(queue.front().unwrap().body, Bytes::from("3"));
        assert!(metrics
            .render(0, 0, |_| {})
            .contains("blobcast_webhooks_dropped_total 3"));
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
