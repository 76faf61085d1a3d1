//! Runs the server on a bound listener until a shutdown signal, then closes every
//! socket: viewers get `{"type":"end"}` and a 1001 close. Plain HTTP goes through warp's
//! own server; with TLS configured, through our accept loop in `tls`.

use super::tls::{self, Identity, TlsError};
use crate::app::App;
use crate::config::Config;
use crate::routes::routes;
use crate::shutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long sockets get to close after the shutdown signal before we stop waiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("cluster setup failed: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
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
    let (trigger, shutdown, all_closed) = shutdown::channel();
    let app = App::new(config, shutdown)?;
    let registry = app.registry.clone();
    let recorder = app.recorder.clone();
    let graceful = async move {
        signal.await;
        log::info!("shutting down: closing every socket");
        trigger.trigger();
    };
    match tls {
        Some(tls) => tls::serve(listener, tls, routes(app), graceful).await,
        None => {
            warp::serve(routes(app))
                .incoming(listener)
                .graceful(graceful)
                .run()
                .await
        }
    }
    registry.end_all();
    if tokio::time::timeout(DRAIN_TIMEOUT, all_closed.wait())
        .await
        .is_err()
    {
        log::warn!("some sockets did not close within {DRAIN_TIMEOUT:?}");
    }
    // Every stream has ended: let the recordings finalize (Cues, Duration).
    if !recorder.drain(DRAIN_TIMEOUT).await {
        log::warn!("some recordings were not finalized within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}
