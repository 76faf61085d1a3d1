//! The state every route handler shares: the streams, the recordings, the HTTP
//! publishers, the configuration and the shutdown signal. Cheap to clone.

use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::ingest::sessions::HttpPublishers;
use crate::metrics::Metrics;
use crate::recording::Recorder;
use crate::shutdown::Shutdown;
use crate::stream::buffer::BufferLimits;
use crate::stream::registry::RegistryLimits;
use crate::stream::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct App {
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub shutdown: Shutdown,
    /// The record directory's catalog (recording itself is off with `--no-record`).
    pub recorder: Arc<Recorder>,
    pub http_publishers: Arc<HttpPublishers>,
    /// This node as a cluster member (`--nats`); None when it stands alone.
    pub cluster: Option<Arc<Cluster>>,
}

impl App {
    pub fn new(config: Config, shutdown: Shutdown) -> Result<App, ClusterError> {
        let limits = RegistryLimits {
            max_streams: config.max_streams,
            max_viewers: config.max_viewers,
            buffer: BufferLimits {
                max_generation_bytes: config.max_buffer,
            },
        };
        let recorder = Recorder::open(config.record_dir.clone());
        let recording = (!config.no_record).then(|| recorder.clone());
        let registry = Registry::with_recorder(limits, Arc::new(Metrics::default()), recording);
        let http_publishers = HttpPublishers::new(
            registry.clone(),
            Duration::from_secs(config.ingest_timeout_secs),
            shutdown.clone(),
        );
        let cluster = Cluster::start(&config, registry.clone(), shutdown.clone())?;
        Ok(App {
            registry,
            config: Arc::new(config),
            shutdown,
            recorder,
            http_publishers,
            cluster,
        })
    }

    /// Compares in constant time, so the key cannot be guessed byte by byte.
    pub fn publish_key_matches(&self, given: Option<&str>) -> bool {
        let Some(expected) = &self.config.publish_key else {
            return true;
        };
        let given = given.unwrap_or_default().as_bytes();
        let expected = expected.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.config.send_timeout_secs)
    }
}
