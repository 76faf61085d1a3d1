//! Runs the server on a bound listener until a shutdown signal, then closes every
//! socket: viewers get `{"type":"end"}` and a 1001 close. Plain HTTP goes through warp's
//! own server; with TLS configured, through our accept loop in `tls`.

use crate::app::App;
use crate::config::Config;
use crate::routes::routes;
use crate::shutdown;
use crate::tls;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long sockets get to close after the shutdown signal before we stop waiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves https/wss when the config asks for TLS (`--tls-cert`/`--tls-key` or
/// `--tls-self-signed`), plain http/ws otherwise.
///
/// # Panics
///
/// When the TLS certificate cannot be read or generated; call [`tls::prepare`] first to
/// handle that error yourself (the binary does).
pub async fn run(
    listener: TcpListener,
    mut config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let tls = tls::prepare(&mut config)
        .and_then(|identity| identity.map(|id| id.server_config()).transpose())
        .unwrap_or_else(|err| panic!("TLS setup failed: {err}"));
    let (trigger, shutdown, all_closed) = shutdown::channel();
    let app = App::new(config, shutdown);
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
}
