//! What every socket handler shares: closing with a code and a reason, and naming the
//! peer in log lines.

use super::upgrade::WebSocket;
use crate::protocol::{close, OutFrame};
use crate::stream::Refusal;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::SinkExt;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::error::ProtocolError;
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

/// `frame` as one binary WebSocket message in frames of at most [`MAX_FRAGMENT`]
/// payload bytes (RFC 6455 §5.4): the receiving browser or client sees the same single
/// message. Each WebSocket frame is a slice of the shared parts, never a copy.
pub fn binary_fragments(frame: &OutFrame) -> impl Iterator<Item = Message> + '_ {
    let mut pieces = frame
        .parts()
        .iter()
        .flat_map(|part| {
            (0..part.len())
                .step_by(MAX_FRAGMENT)
                .map(move |start| part.slice(start..(start + MAX_FRAGMENT).min(part.len())))
        })
        .peekable();
    let mut first = true;
    std::iter::from_fn(move || {
        let payload = match pieces.next() {
            Some(piece) => piece,
            // An empty message is still one (final, empty) frame.
            None if first => Bytes::new(),
            None => return None,
        };
        let opcode = if std::mem::take(&mut first) {
            Data::Binary
        } else {
            Data::Continue
        };
        let last = pieces.peek().is_none();
        Some(Message::Frame(Frame::message(
            payload,
            OpCode::Data(opcode),
            last,
        )))
    })
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

    /// The WebSocket frames of `frame`, checked for opcodes, finality and size.
    fn fragments_of(frame: &OutFrame) -> Vec<Bytes> {
        let frames: Vec<Frame> = binary_fragments(frame)
            .map(|m| match m {
                Message::Frame(frame) => frame,
                other => panic!("not a frame: {other:?}"),
            })
            .collect();
        assert!(!frames.is_empty());
        for (i, f) in frames.iter().enumerate() {
            let first = if i == 0 { Data::Binary } else { Data::Continue };
            assert_eq!(f.header().opcode, OpCode::Data(first), "frame {i}");
            assert_eq!(f.header().is_final, i + 1 == frames.len(), "frame {i}");
            assert!(f.payload().len() <= MAX_FRAGMENT);
        }
        frames
            .into_iter()
            .map(|f| Bytes::copy_from_slice(f.payload()))
            .collect()
    }

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
            let pieces = fragments_of(&OutFrame::Whole(message.clone()));
            assert_eq!(pieces.len(), len.div_ceil(MAX_FRAGMENT).max(1), "len {len}");
            assert_eq!(pieces.concat(), message, "len {len}");
        }
    }

    #[test]
    fn a_cut_frame_goes_out_as_one_message_of_its_parts() {
        let media = Bytes::from((0..3 * MAX_FRAGMENT).map(|i| i as u8).collect::<Vec<u8>>());
        let header = crate::protocol::FrameHeader {
            generation: 2,
            offset: 9,
        };
        let cut = OutFrame::cut(
            header,
            [media.slice(9..MAX_FRAGMENT + 12), media.slice(100..105)],
        );
        let pieces = fragments_of(&cut);
        // Header, then the first slice in two frames, then the small one.
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), cut.to_bytes());
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let closing = Closing::new(4400, "é".repeat(100));
        assert!(closing.reason.len() <= MAX_REASON_BYTES);
        assert!(closing.reason.chars().all(|c| c == 'é'));
    }
}
