//! What every socket handler shares: closing with a code and a reason, and naming the
//! peer in log lines. (Viewers' sockets write their own frames: `egress::socket`.)

use super::upgrade::WebSocket;
use crate::protocol::close;
use crate::stream::Refusal;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::SinkExt;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The largest close reason the WebSocket protocol carries.
const MAX_REASON_BYTES: usize = 123;

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub type Sender = SplitSink<WebSocket, Message>;
pub type Receiver = SplitStream<WebSocket>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: String,
}

impl Closing {
    pub fn new(code: u16, reason: impl Into<String>) -> Closing {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Closing { code, reason }
    }

    pub fn refusal(refusal: &Refusal) -> Closing {
        let code = match refusal {
            Refusal::PublisherBusy => close::PUBLISHER_BUSY,
            Refusal::TooManyStreams(_) | Refusal::TooManyViewers(_) => close::LIMIT,
        };
        Closing::new(code, refusal.to_string())
    }

    /// What a failed read means: `None` when the peer simply went away (a reset, or the
    /// connection ended without a close frame), else the peer broke the WebSocket
    /// protocol or a size limit and is told so.
    pub fn read_error(err: &WsError) -> Option<Closing> {
        let code = match err {
            WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Io(_)
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
            WsError::Capacity(_) => close::TOO_BIG,
            _ => close::MALFORMED,
        };
        Some(Closing::new(code, err.to_string()))
    }
}

/// Once the peer has sent its close frame: sends the reply tungstenite queued for it, so
/// the peer sees a clean close with its own code rather than a dropped connection.
pub async fn answer_close(tx: &mut Sender) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, tx.close()).await;
}

/// Sends the close frame; a peer that does not take it in time is dropped anyway.
pub async fn close_with(tx: &mut Sender, closing: Closing) {
    let frame = Message::Close(Some(CloseFrame {
        code: CloseCode::from(closing.code),
        reason: closing.reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = tx.send(frame).await;
        let _ = tx.close().await;
    })
    .await;
}

/// A peer address for log lines ("-" when unknown).
pub struct Socket(pub Option<SocketAddr>);

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let closing = Closing::new(4400, "é".repeat(100));
        assert!(closing.reason.len() <= MAX_REASON_BYTES);
        assert!(closing.reason.chars().all(|c| c == 'é'));
    }
}
