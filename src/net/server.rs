//! Runs the server on a bound listener until a shutdown signal, then closes every
//! socket within `--shutdown-grace-secs`: viewers get `{"type":"end"}` and a 1001 close,
//! HTTP requests get half the grace to finish, recordings are finalized, and whatever
//! is still open at the end is dropped.

use super::accept::{self, AcceptConfig};
use super::tls::{self, Identity, TlsError};
use crate::app::{App, SetupError};
use crate::config::Config;
use crate::routes::routes;
use crate::shutdown;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Serves https/wss when the config asks for TLS (`--tls-cert`/`--tls-key` or
/// `--tls-self-signed`), plain http/ws otherwise. To print a self-signed certificate's
/// fingerprint before serving, call [`tls::prepare`] and [`serve`] instead.
pub async fn run(
    listener: TcpListener,
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let identity = tls::prepare(&config)?;
    serve(listener, config, identity, signal).await
}

/// Serves with `identity` (https/wss) or without (http/ws) until `signal`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    identity: Option<Arc<Identity>>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let tls = identity.map(|id| id.server_config()).transpose()?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let (trigger, shutdown, all_closed) = shutdown::channel();
    let app = App::new(config, shutdown)?;
    let accept_config = AcceptConfig {
        tls,
        max_connections: app.config.max_connections,
        max_connections_per_ip: app.config.max_connections_per_ip,
        trusted_proxies: app.config.trusted_proxies.clone().into(),
        header_timeout: Duration::from_secs(app.config.header_timeout_secs),
        metrics: app.registry.metrics().clone(),
    };
    let registry = app.registry.clone();
    let recorder = app.recorder.clone();
    let signalled_at = Arc::new(OnceLock::new());
    let graceful = {
        let signalled_at = signalled_at.clone();
        async move {
            signal.await;
            signalled_at.get_or_init(Instant::now);
            log::info!("shutting down: closing every socket within {grace:?}");
            trigger.trigger();
        }
    };
    let deadline = || *signalled_at.get_or_init(Instant::now) + grace;
    // Sockets and requests get half the grace; finalizing recordings the rest.
    let sockets_deadline = || *signalled_at.get_or_init(Instant::now) + grace / 2;
    accept::serve(
        listener,
        accept_config,
        routes(app),
        graceful,
        sockets_deadline,
    )
    .await;
    registry.end_all();
    if tokio::time::timeout_at(sockets_deadline(), all_closed.wait())
        .await
        .is_err()
    {
        log::warn!("some sockets did not close within the shutdown grace");
    }
    // Every stream has ended: let the recordings finalize (Cues, Duration).
    let left = deadline().saturating_duration_since(Instant::now());
    if !recorder.drain(left).await {
        log::warn!("some recordings were not finalized within the shutdown grace");
    }
    Ok(())
}
