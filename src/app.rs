//! The state every route handler shares: the streams, the recordings, the HTTP
//! publishers, who may do what, the configuration and the shutdown signal. Cheap to
//! clone.

use crate::auth::{Auth, AuthError};
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::ingest::sessions::HttpPublishers;
use crate::metrics::Metrics;
use crate::recording::Recorder;
use crate::shutdown::Shutdown;
use crate::stream::buffer::BufferLimits;
use crate::stream::registry::RegistryLimits;
use crate::stream::Registry;
use crate::webhook::{WebhookError, Webhooks};
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
    pub auth: Arc<Auth>,
    /// This node as a cluster member (`--nats`); None when it stands alone.
    pub cluster: Option<Arc<Cluster>>,
}

/// What can stop the server from starting once the flags have parsed: a key file, or a
/// NATS server that cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("cluster setup failed: {0}")]
    Cluster(#[from] ClusterError),
}

impl App {
    /// Needs a tokio runtime (the webhooks' delivery tasks start here).
    pub fn new(config: Config, shutdown: Shutdown) -> Result<App, SetupError> {
        let auth = Arc::new(Auth::from_config(&config)?);
        let limits = RegistryLimits {
            max_streams: config.max_streams,
            max_viewers: config.max_viewers,
            buffer: BufferLimits {
                max_generation_bytes: config.max_buffer,
            },
        };
        let metrics = Arc::new(Metrics::default());
        let recorder = Recorder::open_with(
            config.record_dir.clone(),
            config.min_free_disk,
            metrics.clone(),
        );
        let recording = (!config.no_record).then(|| recorder.clone());
        let registry = Registry::with_recorder(limits, metrics.clone(), recording);
        let webhooks = Webhooks::start(
            &config.webhooks,
            config.webhook_secret_file.as_deref(),
            metrics,
        )?;
        if let Some(webhooks) = webhooks {
            webhooks.connect(&registry, recorder.events());
        }
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
            auth,
            cluster,
        })
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.config.send_timeout_secs)
    }

    pub fn publisher_timeout(&self) -> Duration {
        Duration::from_secs(self.config.publisher_timeout_secs)
    }
}
