//! The WebSocket handshake, done here instead of by warp's `ws()` so that each kind of
//! socket gets a tungstenite config of its own. warp 0.4's `Ws` cannot set the buffer
//! sizes, and their defaults cost a viewer dearly: a 128 KiB read buffer per socket,
//! zero-filled before every read, for a peer that only ever sends a close frame, and a
//! 128 KiB write buffer on top of the copy of each frame.

use crate::api::HttpError;
use futures_util::FutureExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// A server-side WebSocket over the upgraded HTTP connection (plain or TLS).
pub type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A valid WebSocket upgrade request, not yet answered.
pub struct Upgrade {
    accept: String,
    on_upgrade: OnUpgrade,
}

/// Matches a GET that asks for a WebSocket (RFC 6455 §4.2.1); any other request to a
/// WebSocket route is refused with a 400 that says what was missing.
pub fn websocket() -> impl Filter<Extract = (Upgrade,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::header::optional::<String>(header::CONNECTION.as_str()))
        .and(warp::header::optional::<String>(header::UPGRADE.as_str()))
        .and(warp::header::optional::<String>(
            header::SEC_WEBSOCKET_VERSION.as_str(),
        ))
        .and(warp::header::optional::<String>(
            header::SEC_WEBSOCKET_KEY.as_str(),
        ))
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            |connection: Option<String>,
             upgrade: Option<String>,
             version: Option<String>,
             key: Option<String>,
             on_upgrade: Option<OnUpgrade>| async move {
                let asks_upgrade = connection.is_some_and(|c| {
                    c.split(',')
                        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
                });
                let to_websocket = upgrade.is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
                if !asks_upgrade || !to_websocket {
                    return Err(HttpError::bad_request(
                        "this is a WebSocket route: send Connection: Upgrade and Upgrade: websocket",
                    ));
                }
                if version.as_deref().map(str::trim) != Some("13") {
                    return Err(HttpError::bad_request(
                        "unsupported WebSocket version: Sec-WebSocket-Version must be 13",
                    ));
                }
                let Some(key) = key else {
                    return Err(HttpError::bad_request("missing Sec-WebSocket-Key"));
                };
                // An HTTP/1.1 connection always carries one; HTTP/2 has no such upgrade.
                let Some(on_upgrade) = on_upgrade else {
                    return Err(HttpError::bad_request(
                        "this connection cannot be upgraded (HTTP/1.1 is required)",
                    ));
                };
                Ok(Upgrade {
                    accept: derive_accept_key(key.trim().as_bytes()),
                    on_upgrade,
                })
            },
        )
}

impl Upgrade {
    /// Answers 101 Switching Protocols and, once hyper hands over the connection, runs
    /// `serve` on the WebSocket in a task of its own.
    pub fn answer<F, S>(self, config: WebSocketConfig, serve: S) -> Response
    where
        S: FnOnce(WebSocket) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Upgrade { accept, on_upgrade } = self;
        tokio::spawn(on_upgrade.then(move |upgraded| async move {
            match upgraded {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    serve(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await)
                        .await
                }
                // The client went away between the request and the switch.
                Err(err) => log::debug!("WebSocket upgrade failed: {err}"),
            }
        }));
        let mut response = Response::default();
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            header::HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        response
    }
}
