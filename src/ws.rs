//! What every socket handler shares: closing with a code and a reason, and naming the
//! peer in log lines.

use crate::protocol::close;
use crate::stream::Refusal;
use crate::upgrade::WebSocket;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::SinkExt;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The largest close reason the WebSocket protocol carries.
const MAX_REASON_BYTES: usize = 123;

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest WebSocket frame we write to a viewer. tungstenite copies each frame into
/// a per-socket buffer that keeps its largest size for the life of the socket, so sending
/// a 300 KiB chunk as one frame would leave 300 KiB resident per viewer socket.
pub const MAX_FRAGMENT: usize = 32 * 1024;

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

    /// A read that failed: the peer broke the WebSocket protocol or a size limit.
    pub fn read_error(err: &WsError) -> Closing {
        let code = match err {
            WsError::Capacity(_) => close::TOO_BIG,
            _ => close::MALFORMED,
        };
        Closing::new(code, err.to_string())
    }
}

/// `message` as one binary WebSocket message in frames of at most [`MAX_FRAGMENT`]
/// payload bytes (RFC 6455 §5.4): the receiving browser or client sees the same single
/// message. Each frame is a slice of the same shared `Bytes`.
pub fn binary_fragments(message: &Bytes) -> impl Iterator<Item = Message> + '_ {
    let count = message.len().div_ceil(MAX_FRAGMENT).max(1);
    (0..count).map(move |i| {
        let start = i * MAX_FRAGMENT;
        let end = (start + MAX_FRAGMENT).min(message.len());
        let opcode = if i == 0 { Data::Binary } else { Data::Continue };
        let payload = message.slice(start..end);
        Message::Frame(Frame::message(
            payload,
            OpCode::Data(opcode),
            i + 1 == count,
        ))
    })
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
    fn fragments_carry_the_message_in_order_and_only_the_last_is_final() {
        for len in [
            0,
            1,
            MAX_FRAGMENT - 1,
            MAX_FRAGMENT,
            MAX_FRAGMENT + 1,
            3 * MAX_FRAGMENT + 7,
        ] {
            let message = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let frames: Vec<Frame> = binary_fragments(&message)
                .map(|m| match m {
                    Message::Frame(frame) => frame,
                    other => panic!("not a frame: {other:?}"),
                })
                .collect();
            assert_eq!(frames.len(), len.div_ceil(MAX_FRAGMENT).max(1), "len {len}");
            let mut joined = Vec::new();
            for (i, frame) in frames.iter().enumerate() {
                let header = frame.header();
                let first = if i == 0 { Data::Binary } else { Data::Continue };
                assert_eq!(header.opcode, OpCode::Data(first), "len {len} frame {i}");
                assert_eq!(
                    header.is_final,
                    i + 1 == frames.len(),
                    "len {len} frame {i}"
                );
                assert!(frame.payload().len() <= MAX_FRAGMENT);
                joined.extend_from_slice(frame.payload());
            }
            assert_eq!(joined, message, "len {len}");
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let closing = Closing::new(4400, "é".repeat(100));
        assert!(closing.reason.len() <= MAX_REASON_BYTES);
        assert!(closing.reason.chars().all(|c| c == 'é'));
    }
}
