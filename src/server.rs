//! Runs the server on a bound listener until a shutdown signal, then closes every
//! socket: viewers get `{"type":"end"}` and a 1001 close.

use crate::app::App;
use crate::config::Config;
use crate::routes::routes;
use crate::shutdown;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long sockets get to close after the shutdown signal before we stop waiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(
    listener: TcpListener,
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let (trigger, shutdown, all_closed) = shutdown::channel();
    let app = App::new(config, shutdown);
    let registry = app.registry.clone();
    let graceful = async move {
        signal.await;
        log::info!("shutting down: closing every socket");
        trigger.trigger();
    };
    warp::serve(routes(app))
        .incoming(listener)
        .graceful(graceful)
        .run()
        .await;
    registry.end_all();
    if tokio::time::timeout(DRAIN_TIMEOUT, all_closed.wait())
        .await
        .is_err()
    {
        log::warn!("some sockets did not close within {DRAIN_TIMEOUT:?}");
    }
}
