//! A viewer's WebSocket after the handshake, written and read without a WebSocket
//! library. Frames go out as vectored writes (`writev`) of their once-encoded headers and
//! the shared payloads: no per-viewer copy, no output buffer, and a batch of ready frames
//! in one system call. What the viewer sends (pongs, a close, anything else; masked) is
//! parsed from a few hundred bytes of state, in the viewer's one task.

use crate::net::ws::Closing;
use crate::protocol::{close, OutFrame};
use crate::ws_head::{Opcode, WsHead};
use bytes::Bytes;
use std::io::IoSlice;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Slices per `writev`: the first frames of a batch and their headers (Linux takes 1024;
/// more than this per call buys nothing, and the array lives in every viewer's task).
const MAX_SLICES: usize = 64;

/// The largest message a viewer may send. It has nothing to say beyond pongs and a close,
/// so what it sends is skipped unread; this bounds how long it may keep doing that.
pub const MAX_VIEWER_MESSAGE: u64 = 64 * 1024;

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a write did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailed {
    /// The connection broke or was closed.
    Gone,
    /// The viewer took no bytes for the whole send timeout.
    TimedOut,
}

/// What one read of the viewer's socket brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Bytes (pongs, or anything else, ignored); a ping is answered by `answer_pings`.
    Something,
    /// The viewer sent its close frame (with this code, if it gave one), or went away.
    Closed(Option<u16>),
    /// The viewer broke the WebSocket protocol or the size limit.
    Broken(Closing),
}

pub struct ViewerSocket<S> {
    io: S,
    /// The rest of a frame whose write timed out: a close frame may only follow it.
    unfinished: Vec<Bytes>,
    incoming: Incoming,
    read_buf: [u8; 256],
    last_heard: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ViewerSocket<S> {
    pub fn new(io: S) -> ViewerSocket<S> {
        ViewerSocket {
            io,
            unfinished: Vec::new(),
            incoming: Incoming::default(),
            read_buf: [0; 256],
            last_heard: Instant::now(),
        }
    }

    /// When the viewer last sent anything (a pong counts).
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Writes `frames`, each as one binary message. `timeout` bounds each write call, not
    /// the batch: a viewer on a slow link that keeps reading is not cut off.
    pub async fn send(
        &mut self,
        frames: &[OutFrame],
        timeout: Duration,
    ) -> Result<(), WriteFailed> {
        let mut pieces = Vec::with_capacity(frames.len() * 2);
        for (i, frame) in frames.iter().enumerate() {
            pieces.push(Piece::copied(frame.ws_head().as_bytes(), i));
            pieces.extend(frame.parts().iter().map(|part| Piece::shared(part, i)));
        }
        self.write_pieces(&pieces, timeout).await
    }

    pub async fn send_text(&mut self, text: &str, timeout: Duration) -> Result<(), WriteFailed> {
        self.write_small(Opcode::Text, &[text.as_bytes()], timeout)
            .await
    }

    pub async fn ping(&mut self, timeout: Duration) -> Result<(), WriteFailed> {
        self.write_small(Opcode::Ping, &[], timeout).await
    }

    /// Answers the pings read so far (RFC 6455 §5.5.2: the newest one is enough).
    pub async fn answer_pings(&mut self, timeout: Duration) -> Result<(), WriteFailed> {
        let Some(payload) = self.incoming.pong_owed.take() else {
            return Ok(());
        };
        self.write_small(Opcode::Pong, &[&payload], timeout).await
    }

    /// Reads what the viewer sent. Cancel-safe: the read is the only await, and what it
    /// brings is parsed at once.
    pub async fn hear(&mut self) -> Heard {
        let n = match self.io.read(&mut self.read_buf).await {
            Ok(0) | Err(_) => return Heard::Closed(None),
            Ok(n) => n,
        };
        self.last_heard = Instant::now();
        self.incoming.feed(&self.read_buf[..n])
    }

    /// Answers the viewer's close frame with its own code and ends the connection.
    pub async fn answer_close(mut self, code: Option<u16>) {
        let payload = code.map(u16::to_be_bytes);
        let payload: &[u8] = payload.as_ref().map_or(&[], |p| &p[..]);
        let _ = self
            .write_small(Opcode::Close, &[payload], CLOSE_TIMEOUT)
            .await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.io.shutdown()).await;
    }

    /// Sends a close frame and waits (briefly) for the viewer's, so that it sees a clean
    /// close with our code and reason rather than a dropped connection.
    pub async fn close_with(mut self, closing: Closing) {
        let code = closing.code.to_be_bytes();
        let reason = closing.reason.as_bytes();
        let sent = self
            .write_small(Opcode::Close, &[&code, reason], CLOSE_TIMEOUT)
            .await;
        if sent.is_ok() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Heard::Something = self.hear().await {}
            })
            .await;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.io.shutdown()).await;
    }

    /// A text or control frame whose payload is `parts`, one after the other.
    async fn write_small(
        &mut self,
        opcode: Opcode,
        parts: &[&[u8]],
        timeout: Duration,
    ) -> Result<(), WriteFailed> {
        let head = WsHead::new(opcode, parts.iter().map(|p| p.len()).sum());
        let mut pieces = vec![Piece::copied(head.as_bytes(), 0)];
        pieces.extend(parts.iter().map(|part| Piece::copied(part, 0)));
        self.write_pieces(&pieces, timeout).await
    }

    async fn write_pieces(
        &mut self,
        pieces: &[Piece<'_>],
        timeout: Duration,
    ) -> Result<(), WriteFailed> {
        if !self.unfinished.is_empty() {
            // A frame cut short by a timeout goes first, or the stream would be garbled.
            let unfinished = std::mem::take(&mut self.unfinished);
            let rest: Vec<Piece> = unfinished.iter().map(|b| Piece::shared(b, 0)).collect();
            Box::pin(self.write_pieces(&rest, timeout)).await?;
        }
        // Where the unwritten bytes start: a piece, and an offset into it.
        let (mut index, mut skip) = (0, 0);
        loop {
            while index < pieces.len() && pieces[index].bytes.len() == skip {
                index += 1;
                skip = 0;
            }
            if index == pieces.len() {
                break;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, piece) in pieces[index..].iter().enumerate() {
                if count == MAX_SLICES {
                    break;
                }
                let bytes = if i == 0 {
                    &piece.bytes[skip..]
                } else {
                    piece.bytes
                };
                if !bytes.is_empty() {
                    slices[count] = IoSlice::new(bytes);
                    count += 1;
                }
            }
            let write = self.io.write_vectored(&slices[..count]);
            let mut written = match tokio::time::timeout(timeout, write).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(WriteFailed::Gone),
                Ok(Ok(n)) => n,
                Err(_) => {
                    self.keep_unfinished(pieces, index, skip);
                    return Err(WriteFailed::TimedOut);
                }
            };
            while written > 0 {
                let rest = pieces[index].bytes.len() - skip;
                if written >= rest {
                    written -= rest;
                    index += 1;
                    skip = 0;
                } else {
                    skip += written;
                    written = 0;
                }
            }
        }
        // A no-op on TCP; TLS sends the records it has sealed.
        match tokio::time::timeout(timeout, self.io.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteFailed::Gone),
            Err(_) => Err(WriteFailed::TimedOut),
        }
    }

    /// Keeps what is left of the frame a timed-out write was in, from `pieces[index]`
    /// at `skip`: shared slices where the piece is shared.
    fn keep_unfinished(&mut self, pieces: &[Piece<'_>], index: usize, skip: usize) {
        if skip == 0
            && pieces[..index]
                .last()
                .is_none_or(|p| p.frame != pieces[index].frame)
        {
            // Not one byte of this frame went out: the stream is whole as it is.
            return;
        }
        let frame = pieces[index].frame;
        for (i, piece) in pieces[index..].iter().enumerate() {
            if piece.frame != frame {
                break;
            }
            let from = if i == 0 { skip } else { 0 };
            self.unfinished.push(match piece.owner {
                Some(owner) => owner.slice(from..),
                None => Bytes::copy_from_slice(&piece.bytes[from..]),
            });
        }
    }
}

/// A slice to write, and which frame of the write it belongs to.
struct Piece<'a> {
    bytes: &'a [u8],
    /// The shared buffer it is, so that a frame cut short can be kept without a copy.
    owner: Option<&'a Bytes>,
    frame: usize,
}

impl<'a> Piece<'a> {
    fn copied(bytes: &'a [u8], frame: usize) -> Piece<'a> {
        Piece {
            bytes,
            owner: None,
            frame,
        }
    }

    fn shared(bytes: &'a Bytes, frame: usize) -> Piece<'a> {
        Piece {
            bytes,
            owner: Some(bytes),
            frame,
        }
    }
}

/// The parser of the frames a viewer sends: a header being collected, or the rest of a
/// payload being skipped (a control frame's ≤ 125 bytes are kept).
#[derive(Default)]
struct Incoming {
    head: [u8; 14],
    head_len: usize,
    /// The frame whose payload is being read.
    frame: Option<IncomingFrame>,
    /// Bytes of the data message so far, when one is open (its first frame had no FIN).
    message: Option<u64>,
    control: Vec<u8>,
    pong_owed: Option<Vec<u8>>,
}

struct IncomingFrame {
    opcode: u8,
    fin: bool,
    left: u64,
    mask: [u8; 4],
    at: usize,
}

impl Incoming {
    fn feed(&mut self, mut bytes: &[u8]) -> Heard {
        while !bytes.is_empty() || self.frame.as_ref().is_some_and(|f| f.left == 0) {
            let Some(frame) = &mut self.frame else {
                let take = (self.head_needed() - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if let Err(closing) = self.check_head() {
                    return Heard::Broken(closing);
                }
                if self.head_len == self.head_needed() {
                    if let Some(heard) = self.start_frame() {
                        return heard;
                    }
                }
                continue;
            };
            let take = (frame.left.min(bytes.len() as u64)) as usize;
            if frame.opcode >= 0x8 {
                for &byte in &bytes[..take] {
                    self.control.push(byte ^ frame.mask[frame.at % 4]);
                    frame.at += 1;
                }
            }
            frame.left -= take as u64;
            bytes = &bytes[take..];
            if frame.left == 0 {
                let frame = self.frame.take().expect("matched above");
                if let Some(heard) = self.end_frame(frame) {
                    return heard;
                }
            }
        }
        Heard::Something
    }

    /// Header bytes this frame needs, as far as the ones collected tell.
    fn head_needed(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let extended = match self.head[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + 4
    }

    fn check_head(&self) -> Result<(), Closing> {
        if self.head_len < 2 {
            return Ok(());
        }
        let malformed = |why: &str| Err(Closing::new(close::MALFORMED, why));
        let (first, second) = (self.head[0], self.head[1]);
        let opcode = first & 0x0F;
        if first & 0x70 != 0 {
            return malformed("reserved bits set in a frame (no extension was agreed)");
        }
        if second & 0x80 == 0 {
            return malformed("a client's frames must be masked (RFC 6455 §5.1)");
        }
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
            return malformed("unknown WebSocket opcode");
        }
        if opcode >= 0x8 && (first & 0x80 == 0 || second & 0x7F > 125) {
            return malformed("a control frame must be final and at most 125 bytes");
        }
        match (opcode, self.message) {
            (0x0, None) => malformed("a continuation frame with no message to continue"),
            (0x1 | 0x2, Some(_)) => malformed("a new message inside an unfinished one"),
            _ => Ok(()),
        }
    }

    /// Starts reading the payload; refuses a data message that has grown too big.
    fn start_frame(&mut self) -> Option<Heard> {
        let len = match self.head[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            short => u64::from(short),
        };
        let mask_at = self.head_len - 4;
        let mask = self.head[mask_at..self.head_len]
            .try_into()
            .expect("4 bytes");
        self.head_len = 0;
        self.control.clear();
        self.frame = Some(IncomingFrame {
            opcode: self.head[0] & 0x0F,
            fin: self.head[0] & 0x80 != 0,
            left: len,
            mask,
            at: 0,
        });
        if self.head[0] & 0x0F < 0x8 {
            let so_far = self.message.unwrap_or(0).saturating_add(len);
            self.message = Some(so_far);
            if so_far > MAX_VIEWER_MESSAGE {
                return Some(Heard::Broken(Closing::new(
                    close::TOO_BIG,
                    format!("a viewer's message may be at most {MAX_VIEWER_MESSAGE} bytes"),
                )));
            }
        }
        None
    }

    fn end_frame(&mut self, frame: IncomingFrame) -> Option<Heard> {
        match frame.opcode {
            0x8 => {
                let code = (self.control.len() >= 2)
                    .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
                Some(Heard::Closed(code))
            }
            0x9 => {
                self.pong_owed = Some(std::mem::take(&mut self.control));
                None
            }
            0xA => None,
            _ => {
                if frame.fin {
                    self.message = None;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// A viewer socket served over an in-memory pipe, and tungstenite as the client.
    async fn pair() -> (
        ViewerSocket<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (ViewerSocket::new(server), client)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn frames_written_in_one_batch_arrive_as_the_messages_they_are() {
        let (mut server, mut client) = pair().await;
        let big = Bytes::from(vec![9u8; 200_000]);
        let frames = [
            OutFrame::whole(Bytes::from_static(b"0123456789abcdefhead")),
            OutFrame::whole(big.clone()),
            OutFrame::whole(Bytes::new()),
        ];
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                match client.next().await {
                    Some(Ok(Message::Binary(b))) => got.push(b),
                    other => panic!("{other:?}"),
                }
            }
            got
        });
        server.send(&frames, T).await.unwrap();
        let got = reading.await.unwrap();
        assert_eq!(got[0], &b"0123456789abcdefhead"[..]);
        assert_eq!(got[1], big);
        assert!(got[2].is_empty());
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_close_is_heard_with_its_code() {
        let (mut server, mut client) = pair().await;
        client
            .send(Message::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        assert_eq!(server.hear().await, Heard::Something);
        server.answer_pings(T).await.unwrap();
        match client.next().await {
            Some(Ok(Message::Pong(p))) => assert_eq!(p, &b"hi"[..]),
            other => panic!("{other:?}"),
        }
        client.send(Message::Close(None)).await.unwrap();
        assert_eq!(server.hear().await, Heard::Closed(None));
    }

    #[tokio::test]
    async fn a_viewer_that_talks_too_much_is_told_so() {
        let (mut server, mut client) = pair().await;
        let flood = tokio::spawn(async move {
            let _ = client.send(Message::Binary(vec![0u8; 70_000].into())).await;
            client
        });
        let heard = loop {
            match server.hear().await {
                Heard::Something => continue,
                other => break other,
            }
        };
        match heard {
            Heard::Broken(closing) => assert_eq!(closing.code, close::TOO_BIG),
            other => panic!("{other:?}"),
        }
        drop(flood);
    }

    #[test]
    fn unmasked_or_reserved_frames_are_malformed_whatever_the_chunking() {
        // An unmasked binary frame of 3 bytes.
        let mut incoming = Incoming::default();
        assert!(matches!(incoming.feed(&[0x82]), Heard::Something));
        assert!(matches!(incoming.feed(&[0x03]), Heard::Broken(c) if c.code == close::MALFORMED));
        let mut incoming = Incoming::default();
        assert!(
            matches!(incoming.feed(&[0xC2, 0x80]), Heard::Broken(c) if c.code == close::MALFORMED)
        );
        // A masked close frame with code 1000, fed one byte at a time.
        let mask = [1, 2, 3, 4];
        let payload = [0x03 ^ 1, 0xE8 ^ 2];
        let bytes = [&[0x88, 0x82][..], &mask, &payload].concat();
        let mut incoming = Incoming::default();
        let last = bytes
            .iter()
            .map(|b| incoming.feed(std::slice::from_ref(b)))
            .last();
        assert_eq!(last, Some(Heard::Closed(Some(1000))));
    }
}
