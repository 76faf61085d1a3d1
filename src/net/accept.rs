//! The accept loop, for plain and TLS connections alike: each TCP connection is counted
//! against `--max-connections` and `--max-connections-per-ip` (refused at once, before
//! any work, past either), gets TCP_NODELAY and keepalive, an optional TLS handshake
//! (bounded by [`HANDSHAKE_TIMEOUT`]), and then hyper with a header-read timeout, so a
//! client that trickles its request head cannot hold a connection for long.
//!
//! Shutdown: stop accepting, let HTTP connections finish until the deadline, then drop
//! whatever is left (a stalled download, a slowloris). Upgraded WebSockets are not ours
//! to wait for here: the app's own shutdown closes them.

use super::client_addr::{is_trusted, PeerAddr, TrustedProxy};
use crate::metrics::Metrics;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use warp::reply::Response;
use warp::Filter;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time before the kernel probes a silent peer, and the gap between probes: a
/// peer that vanished without a FIN is found within about a minute even where no
/// WebSocket ping is running.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// What the accept loop needs beyond the listener and the routes.
#[derive(Clone)]
pub struct AcceptConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Their connections carry many clients: not counted per IP.
    pub trusted_proxies: Arc<[TrustedProxy]>,
    /// How long a client may take to send a request's head.
    pub header_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// Open connections, in all and per client IP.
#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts connections, and refuses one past either bound.
pub struct ConnectionLimits {
    counts: Mutex<Counts>,
    max: usize,
    per_ip: usize,
    trusted: Arc<[TrustedProxy]>,
}

/// One counted connection; it stops counting when the last holder drops it. An
/// upgraded WebSocket holds it too (it travels in the request's extensions), so viewers
/// count for as long as their sockets are open.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    Total,
    PerIp,
}

impl ConnectionLimits {
    pub fn new(max: usize, per_ip: usize, trusted: Arc<[TrustedProxy]>) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            counts: Mutex::default(),
            max,
            per_ip,
            trusted,
        })
    }

    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, OverLimit> {
        let mut counts = self.counts.lock();
        if counts.total >= self.max {
            return Err(OverLimit::Total);
        }
        let ip = (!is_trusted(peer, &self.trusted)).then_some(peer);
        if let Some(ip) = ip {
            let n = counts.per_ip.entry(ip).or_default();
            if *n >= self.per_ip {
                return Err(OverLimit::PerIp);
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.counts.lock().total
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock();
        counts.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Serves `filter` on `listener` until `signal`, then gives open HTTP connections until
/// `deadline()` to finish.
pub async fn serve<F>(
    listener: TcpListener,
    config: AcceptConfig,
    filter: F,
    signal: impl Future<Output = ()> + Send + 'static,
    deadline: impl FnOnce() -> Instant,
) where
    F: Filter<Extract = (Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let limits = ConnectionLimits::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.trusted_proxies.clone(),
    );
    let acceptor = config.tls.clone().map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            },
            // Reaps finished connections, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut signal => break,
        };
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => Arc::new(slot),
            Err(over) => {
                config.metrics.connection_over_limit();
                log::debug!("connection from {peer} refused: {over:?} limit reached");
                drop(tcp);
                continue;
            }
        };
        tune(&tcp);
        let service = PeerService {
            inner: warp::service(filter.clone()),
            peer: PeerAddr(peer),
            slot,
        };
        let watcher = graceful.watcher();
        let mut stopping = stopping.clone();
        let acceptor = acceptor.clone();
        let header_timeout = config.header_timeout;
        connections.spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let service = TowerToHyperService::new(service);
            let Some(acceptor) = acceptor else {
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                if let Err(err) = watcher.watch(connection.into_owned()).await {
                    log::debug!("connection from {peer} failed: {err}");
                }
                return;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        log::debug!("TLS handshake with {peer} failed: {err}");
                        return;
                    }
                    Err(_) => {
                        log::debug!("TLS handshake with {peer} timed out");
                        return;
                    }
                },
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                log::debug!("connection from {peer} failed: {err}");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    if tokio::time::timeout_at(deadline(), graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!(
            "{} HTTP connections still open at the shutdown deadline: dropping them",
            connections.len()
        );
    }
    connections.shutdown().await;
}

/// No Nagle delay on small frames, and keepalive probes so that a peer gone without a
/// FIN is noticed by the kernel.
fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

/// As warp's loop: connection errors at accept are the client's; anything else (such as
/// running out of file descriptors) gets a pause before the next try.
async fn accept_error(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    log::error!("accept error: {err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Puts the TCP peer address and the connection's slot in each request's extensions,
/// where [`super::client_addr::remote`] and the WebSocket upgrade find them (warp's own
/// `RemoteAddr` is private to warp).
#[derive(Clone)]
struct PeerService<S> {
    inner: S,
    peer: PeerAddr,
    slot: Arc<ConnectionSlot>,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for PeerService<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: warp::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        request.extensions_mut().insert(self.slot.clone());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_in_all_and_per_ip_and_release_on_drop() {
        let trusted: Arc<[TrustedProxy]> = vec!["10.0.0.1".parse().unwrap()].into();
        let limits = ConnectionLimits::new(4, 2, trusted);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let a = limits.admit(client).unwrap();
        let _b = limits.admit(client).unwrap();
        assert_eq!(limits.admit(client).err(), Some(OverLimit::PerIp));
        // A trusted proxy and loopback carry many clients: only the total bounds them.
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let _c = limits.admit(proxy).unwrap();
        let _d = limits.admit("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(limits.admit(proxy).err(), Some(OverLimit::Total));
        drop(a);
        assert_eq!(limits.open(), 3);
        assert!(limits.admit(client).is_ok());
    }
}
