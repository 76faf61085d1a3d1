//! The node's link to NATS: connecting (in the background, so a node starts and serves
//! locally while NATS is away), the JetStream log stream and the directory bucket it
//! creates or finds, and the connection's state as it changes: logged once per change,
//! counted, and published on watch channels that the publications and replicas follow.

use super::metrics::ClusterMetrics;
use crate::config::Config;
use async_nats::jetstream::{self, kv, stream};
use async_nats::{Client, ConnectOptions, Event};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The JetStream stream that holds every published stream's frames.
pub const LOG_STREAM: &str = "BLOBCAST";
/// Its subjects: `blobcast.frames.{stream}`.
pub const LOG_SUBJECTS: &str = "blobcast.frames.>";
/// The KV bucket of the stream directory.
pub const DIRECTORY_BUCKET: &str = "BLOBCAST_STREAMS";
/// What a crashed publisher node leaves in the log lasts at most this long. It must
/// outlast the longest generation (a recorder that is never restarted): a purge on each
/// new generation is what keeps the log small.
pub const LOG_MAX_AGE: Duration = Duration::from_secs(3600);
/// A directory entry whose owner stops refreshing it expires after this.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(5);
/// How often an owner refreshes its entries.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Each JetStream request (a publish's acknowledgement, a KV read) waits this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the node uses once connected and set up.
#[derive(Clone)]
pub struct Nats {
    pub client: Client,
    pub js: jetstream::Context,
    pub log: stream::Stream,
    pub directory: kv::Store,
}

impl Nats {
    /// The largest message the server takes (1 MB by default).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot read the NATS credentials file {0}: {1}")]
    Credentials(String, std::io::Error),
}

/// The link's state, shared by the cluster's tasks.
pub struct Link {
    /// Set once the log stream and the directory bucket exist.
    ready: watch::Sender<Option<Nats>>,
    connected: watch::Sender<bool>,
    /// Bumped on each reconnection: consumers are made again after one (the server may
    /// have restarted and lost them).
    reconnects: watch::Sender<u64>,
    metrics: Arc<ClusterMetrics>,
}

impl Link {
    /// Starts connecting in the background; returns at once.
    pub fn start(
        config: &Config,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Arc<Link>, ConnectionError> {
        let link = Arc::new(Link {
            ready: watch::Sender::new(None),
            connected: watch::Sender::new(false),
            reconnects: watch::Sender::new(0),
            metrics,
        });
        let mut options = ConnectOptions::new()
            .name(format!("blobcast {}", env!("CARGO_PKG_VERSION")))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Quick retries: an outage of a few seconds should cost about that much.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            });
        if let Some(path) = &config.nats_creds {
            let failed = |e| ConnectionError::Credentials(path.display().to_string(), e);
            let creds = std::fs::read_to_string(path).map_err(failed)?;
            options = options.credentials(&creds).map_err(failed)?;
        }
        let events = link.clone();
        options = options.event_callback(move |event| {
            let link = events.clone();
            async move { link.event(event) }
        });
        let servers: Vec<String> = config
            .nats
            .iter()
            .flat_map(|list| list.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let replicas = config.nats_replicas;
        let setup = link.clone();
        tokio::spawn(async move {
            // With retry_on_initial_connect this returns at once and connects behind.
            let client = match options.connect(servers.clone()).await {
                Ok(client) => client,
                Err(err) => {
                    log::error!("cluster: cannot use NATS at {servers:?}: {err}");
                    return;
                }
            };
            setup.set_up(client, replicas).await;
        });
        Ok(link)
    }

    fn event(&self, event: Event) {
        match event {
            Event::Connected => {
                let was = self.connected.send_replace(true);
                self.metrics.state_change();
                log::info!("cluster: NATS connected");
                if !was {
                    self.reconnects.send_modify(|n| *n += 1);
                }
            }
            Event::Disconnected => {
                self.connected.send_replace(false);
                self.metrics.state_change();
                log::warn!("cluster: NATS disconnected; reconnecting (local publishers and their viewers go on)");
            }
            Event::Closed => {
                self.connected.send_replace(false);
                self.metrics.state_change();
                log::warn!("cluster: NATS connection closed");
            }
            other => log::info!("cluster: NATS {other}"),
        }
    }

    /// Creates (or finds) the log stream and the directory bucket, retrying until NATS
    /// answers.
    async fn set_up(&self, client: Client, replicas: usize) {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let mut attempt = 0u32;
        loop {
            match Link::stream_and_bucket(&js, replicas).await {
                Ok((log, directory)) => {
                    // The event may have come before the callback was listening.
                    if client.connection_state() == async_nats::connection::State::Connected {
                        self.connected.send_replace(true);
                    }
                    self.ready.send_replace(Some(Nats {
                        client,
                        js,
                        log,
                        directory,
                    }));
                    log::info!("cluster: JetStream stream {LOG_STREAM} and bucket {DIRECTORY_BUCKET} ready");
                    return;
                }
                Err(err) => {
                    if attempt.is_multiple_of(10) {
                        log::warn!("cluster: cannot set up JetStream yet: {err}");
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn stream_and_bucket(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<(stream::Stream, kv::Store), async_nats::Error> {
        let log = js
            .get_or_create_stream(stream::Config {
                name: LOG_STREAM.to_owned(),
                description: Some(
                    "Blobcast frames: current and previous generation of each stream".into(),
                ),
                subjects: vec![LOG_SUBJECTS.to_owned()],
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::Old,
                max_age: LOG_MAX_AGE,
                duplicate_window: Duration::from_secs(120),
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        let directory = match js.get_key_value(DIRECTORY_BUCKET).await {
            Ok(store) => store,
            Err(_) => {
                js.create_key_value(kv::Config {
                    bucket: DIRECTORY_BUCKET.to_owned(),
                    description: "Blobcast stream directory: one entry per published stream".into(),
                    history: 1,
                    max_age: DIRECTORY_TTL,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await?
            }
        };
        Ok((log, directory))
    }

    /// The connection if it is set up and connected now.
    pub fn now(&self) -> Option<Nats> {
        if *self.connected.borrow() {
            self.ready.borrow().clone()
        } else {
            None
        }
    }

    /// The connection once it is set up and connected, waiting at most `patience`.
    pub async fn within(&self, patience: Duration) -> Option<Nats> {
        tokio::time::timeout(patience, self.connected_and_ready())
            .await
            .ok()
    }

    /// Waits for the connection, however long.
    pub async fn connected_and_ready(&self) -> Nats {
        let mut ready = self.ready.subscribe();
        let mut connected = self.connected.subscribe();
        loop {
            if *connected.borrow_and_update() {
                if let Some(nats) = ready.borrow_and_update().clone() {
                    return nats;
                }
            }
            tokio::select! {
                _ = ready.changed() => {}
                _ = connected.changed() => {}
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.borrow().is_some()
    }

    pub fn watch_reconnects(&self) -> watch::Receiver<u64> {
        self.reconnects.subscribe()
    }

    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }
}
