//! The WebSocket handshake, done here instead of by warp's `ws()` so that each kind of
//! socket gets a tungstenite config of its own. warp 0.4's `Ws` cannot set the buffer
//! sizes, and their defaults cost a viewer dearly: a 128 KiB read buffer per socket,
//! zero-filled before every read, for a peer that only ever sends a close frame, and a
//! 128 KiB write buffer on top of the copy of each frame.

use super::accept::ConnectionSlot;
use crate::http_error::HttpError;
use futures_util::FutureExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
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
    /// The connection's place under `--max-connections`, held for the socket's life.
    slot: Option<Arc<ConnectionSlot>>,
}

/// Matches a GET that asks for a WebSocket (RFC 6455 §4.2.1); any other request to a
/// WebSocket route is refused with a status and a JSON error that says what was wrong.
pub fn websocket() -> impl Filter<Extract = (Upgrade,), Error = Rejection> + Clone {
    let header = warp::header::optional::<String>;
    warp::get()
        .and(header("connection"))
        .and(header("upgrade"))
        .and(header("sec-websocket-version"))
        .and(header("sec-websocket-key"))
        .and(header("sec-websocket-protocol"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<Arc<ConnectionSlot>>())
        .and_then(
            |connection: Option<String>,
             upgrade: Option<String>,
             version: Option<String>,
             key: Option<String>,
             subprotocols: Option<String>,
             on_upgrade: Option<OnUpgrade>,
             slot: Option<Arc<ConnectionSlot>>| async move {
                let request = Request {
                    connection,
                    upgrade,
                    version,
                    key,
                    subprotocols,
                };
                let accept = request.check().map_err(warp::reject::custom)?;
                // An HTTP/1.1 connection always carries one; HTTP/2 has no such upgrade.
                let Some(on_upgrade) = on_upgrade else {
                    return Err(HttpError::bad_request(
                        "this connection cannot be upgraded (HTTP/1.1 is required)",
                    ));
                };
                Ok(Upgrade {
                    accept,
                    on_upgrade,
                    slot,
                })
            },
        )
}

/// The handshake headers of a request to a WebSocket route.
struct Request {
    connection: Option<String>,
    upgrade: Option<String>,
    version: Option<String>,
    key: Option<String>,
    subprotocols: Option<String>,
}

impl Request {
    /// The `Sec-WebSocket-Accept` to answer with, or why the request is refused.
    fn check(&self) -> Result<String, HttpError> {
        let refuse = |message: &str| HttpError {
            status: StatusCode::BAD_REQUEST,
            message: message.to_owned(),
        };
        if !has_token(self.connection.as_deref(), "upgrade")
            || !has_token(self.upgrade.as_deref(), "websocket")
        {
            return Err(refuse(
                "this is a WebSocket route: send Connection: Upgrade and Upgrade: websocket",
            ));
        }
        if self.version.as_deref().map(str::trim) != Some("13") {
            // RFC 6455 §4.4: 426, naming the version we speak (api::recover adds it).
            return Err(HttpError {
                status: StatusCode::UPGRADE_REQUIRED,
                message: "unsupported WebSocket version: Sec-WebSocket-Version must be 13"
                    .to_owned(),
            });
        }
        let key = self.key.as_deref().map(str::trim).unwrap_or_default();
        if !is_nonce(key) {
            return Err(refuse(
                "Sec-WebSocket-Key must be 16 random bytes in base64 (24 characters)",
            ));
        }
        if self.subprotocols.is_some() {
            // A browser would fail the connection without saying why if we ignored it.
            return Err(refuse(
                "no WebSocket subprotocols are offered: send no Sec-WebSocket-Protocol",
            ));
        }
        Ok(derive_accept_key(key.as_bytes()))
    }
}

/// Whether a comma-separated header value holds `token`, ignoring case.
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// 16 bytes in base64: 22 characters of the alphabet and `==`.
fn is_nonce(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// An upgraded connection, before any WebSocket code is put over it.
pub type RawSocket = TokioIo<hyper::upgrade::Upgraded>;

impl Upgrade {
    /// Answers 101 Switching Protocols and, once hyper hands over the connection, runs
    /// `serve` on the WebSocket (tungstenite, with `config`) in a task of its own.
    pub fn answer<F, S>(self, config: WebSocketConfig, serve: S) -> Response
    where
        S: FnOnce(WebSocket) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.answer_raw(move |io| async move {
            serve(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await).await
        })
    }

    /// As `answer`, but `serve` speaks WebSocket on the upgraded connection itself (the
    /// viewers' write path, `egress::socket`).
    pub fn answer_raw<F, S>(self, serve: S) -> Response
    where
        S: FnOnce(RawSocket) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Upgrade {
            accept,
            on_upgrade,
            slot,
        } = self;
        tokio::spawn(on_upgrade.then(move |upgraded| async move {
            let _slot = slot;
            match upgraded {
                Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            connection: Some("keep-alive, Upgrade".into()),
            upgrade: Some("websocket".into()),
            version: Some("13".into()),
            key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            subprotocols: None,
        }
    }

    #[test]
    fn a_browser_handshake_is_answered_with_the_rfc_accept_key() {
        // The example of RFC 6455 §1.3.
        assert_eq!(request().check().unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_broken_header_is_refused_with_its_reason() {
        let refused = |change: fn(&mut Request)| {
            let mut r = request();
            change(&mut r);
            let err = r.check().expect_err("refused");
            (err.status.as_u16(), err.message)
        };
        let (status, why) = refused(|r| r.connection = Some("keep-alive".into()));
        assert_eq!((status, why.contains("Connection: Upgrade")), (400, true));
        assert_eq!(refused(|r| r.upgrade = None).0, 400);
        assert_eq!(refused(|r| r.version = Some("8".into())).0, 426);
        assert_eq!(refused(|r| r.version = None).0, 426);
        for key in [None, Some("short=="), Some("dGhlIHNhbXBsZSBub25jZQ!!")] {
            let (status, why) = {
                let mut r = request();
                r.key = key.map(str::to_owned);
                let err = r.check().expect_err("refused");
                (err.status.as_u16(), err.message)
            };
            assert_eq!(
                (status, why.contains("Sec-WebSocket-Key")),
                (400, true),
                "{key:?}"
            );
        }
        let (status, why) = refused(|r| r.subprotocols = Some("chat".into()));
        assert_eq!((status, why.contains("subprotocol")), (400, true));
        let mut listed = request();
        listed.upgrade = Some("h2c, WebSocket".into());
        assert!(listed.check().is_ok(), "a token list that names websocket");
    }
}
