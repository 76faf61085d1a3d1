//! The wire protocol v1 (docs/protocol.md): the 16-byte frame header, stream names,
//! the JSON control messages and the close codes.

use crate::ws_head::WsHead;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes before the media payload in every binary frame: generation and offset, u64 BE.
pub const HEADER_LEN: usize = 16;

/// The longest mime type a publisher may declare (`start`, `?mime=`, Content-Type): it
/// is kept with the stream and copied into every viewer's hello. Real ones, codecs
/// included, are under 60 bytes.
pub const MAX_MIME_LEN: usize = 255;

/// Close codes sent with a reason; see the table in docs/protocol.md.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const MALFORMED: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    /// A valid token without the right to this stream.
    pub const FORBIDDEN: u16 = 4403;
    pub const TOO_SLOW: u16 = 4408;
    pub const PUBLISHER_BUSY: u16 = 4409;
    /// An admin ended this publish session.
    pub const KICKED: u16 = 4410;
    pub const BUFFER_FULL: u16 = 4413;
    pub const GAP: u16 = 4422;
    pub const LIMIT: u16 = 4429;
    /// The auth service (`--auth-url`) did not answer: refused, to be safe.
    pub const AUTH_UNAVAILABLE: u16 = 4503;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("frame of {0} bytes is shorter than the 16-byte header")]
    ShortFrame(usize),
    #[error("blob frame has offset {0}; a blob always starts a generation at offset 0")]
    BlobOffset(u64),
    #[error("control message is not valid: {0}")]
    BadControl(String),
    #[error(
        "stream name must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-' (got {0} characters)"
    )]
    BadName(usize),
    #[error("mime type of {0} bytes is over the {MAX_MIME_LEN}-byte limit")]
    MimeTooLong(usize),
}

/// A declared mime type no longer than [`MAX_MIME_LEN`].
pub fn check_mime(mime: &str) -> Result<(), ProtocolError> {
    if mime.len() > MAX_MIME_LEN {
        return Err(ProtocolError::MimeTooLong(mime.len()));
    }
    Ok(())
}

/// Where a frame's payload belongs: `offset` bytes into generation `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub generation: u64,
    pub offset: u64,
}

impl FrameHeader {
    pub fn parse(frame: &[u8]) -> Result<FrameHeader, ProtocolError> {
        if frame.len() < HEADER_LEN {
            return Err(ProtocolError::ShortFrame(frame.len()));
        }
        let (generation, offset) = frame[..HEADER_LEN].split_at(8);
        Ok(FrameHeader {
            generation: u64::from_be_bytes(generation.try_into().expect("8 bytes")),
            offset: u64::from_be_bytes(offset.try_into().expect("8 bytes")),
        })
    }

    /// A new contiguous frame carrying a copy of `payload`: what a publisher sends. The
    /// server itself never builds one; it cuts with [`OutFrame::cut`].
    pub fn frame(self, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
        self.put(&mut out);
        out.put_slice(payload);
        out.freeze()
    }

    fn put(self, out: &mut BytesMut) {
        out.put_u64(self.generation);
        out.put_u64(self.offset);
    }
}

/// A binary frame as a viewer is sent it: one WebSocket message whose bytes are the
/// concatenation of its parts, with its WebSocket header encoded once. Nearly always the
/// publisher's own frame, shared, with the header the buffer encoded when it stored it.
/// A frame cut out of buffered ones (a resume from the middle of a frame, a live join's
/// init segment and keyframe cluster) is a fresh 16-byte header followed by slices of the
/// buffered payloads, so cutting copies no media, and no joiner costs a copy under the
/// stream's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A publisher frame, header included, exactly as it was accepted.
    Whole(WsHead, Bytes),
    /// A header of our own, then payload slices: `parts[0]` is the 16-byte header.
    Cut(WsHead, Vec<Bytes>),
}

impl OutFrame {
    /// A publisher frame whose WebSocket header is encoded now.
    pub fn whole(bytes: Bytes) -> OutFrame {
        OutFrame::Whole(WsHead::binary(bytes.len()), bytes)
    }

    pub fn cut(header: FrameHeader, payload: impl IntoIterator<Item = Bytes>) -> OutFrame {
        let mut head = BytesMut::with_capacity(HEADER_LEN);
        header.put(&mut head);
        let mut parts = vec![head.freeze()];
        parts.extend(payload.into_iter().filter(|p| !p.is_empty()));
        let len = parts.iter().map(Bytes::len).sum();
        OutFrame::Cut(WsHead::binary(len), parts)
    }

    pub fn parts(&self) -> &[Bytes] {
        match self {
            OutFrame::Whole(_, bytes) => std::slice::from_ref(bytes),
            OutFrame::Cut(_, parts) => parts,
        }
    }

    /// The WebSocket header that goes before the parts on the wire.
    pub fn ws_head(&self) -> &WsHead {
        match self {
            OutFrame::Whole(head, _) | OutFrame::Cut(head, _) => head,
        }
    }

    /// Bytes of the message, header included (not the WebSocket header).
    pub fn len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as one contiguous copy: what the viewer receives, for tests.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            OutFrame::Whole(_, bytes) => bytes.clone(),
            OutFrame::Cut(_, parts) => parts.concat().into(),
        }
    }
}

/// A validated stream name: safe in URLs, file names and log lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

impl StreamName {
    pub fn parse(name: &str) -> Result<StreamName, ProtocolError> {
        if is_token(name) {
            Ok(StreamName(name.to_owned()))
        } else {
            Err(ProtocolError::BadName(name.chars().count()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1-64 of `[A-Za-z0-9_-]`: the shape of stream names and publisher session ids.
pub fn is_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Text frames a publisher sends on its blob socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PublisherControl {
    Start {
        mime: String,
    },
    /// `generation` and `length`: the newest generation the publisher sent, and how
    /// many media bytes of it. The session ends once the server holds them, so a stop
    /// that overtakes its generation's blob (another socket) waits for it. Without
    /// them the stop takes effect at once.
    Stop {
        generation: Option<u64>,
        length: Option<u64>,
    },
}

impl PublisherControl {
    pub fn parse(text: &str) -> Result<PublisherControl, ProtocolError> {
        let control =
            serde_json::from_str(text).map_err(|e| ProtocolError::BadControl(e.to_string()))?;
        if let PublisherControl::Start { mime } = &control {
            check_mime(mime)?;
        }
        Ok(control)
    }
}

/// Which part of the buffer a viewer's blob socket starts with (`?join=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// The whole current generation from offset 0.
    #[default]
    Start,
    /// The init segment, then the newest cluster that opens with a video keyframe.
    Live,
}

/// Text frames the server sends on a viewer's blob socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ViewerControl {
    Stream {
        stream: StreamName,
        /// The publish session: a resume names it (`&epoch=`), and a viewer that sees it
        /// change starts afresh even when the generation number is the same.
        epoch: u64,
        mime: Option<String>,
        generation: Option<u64>,
        live: bool,
        join: Join,
        resumed: bool,
    },
    End,
    /// On the chunk socket, before the first frame of a new publish session: the frames
    /// that follow belong to this epoch, which the blob socket's hello names.
    Epoch {
        epoch: u64,
    },
    /// On the chunk socket of a viewer that joined at the live edge and then fell too
    /// far behind: the frames that follow start at `offset` of `generation`, at its
    /// newest keyframe-led cluster, skipping what lay between.
    Jump {
        generation: u64,
        offset: u64,
    },
}

impl ViewerControl {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("control messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_frames_are_refused() {
        let header = FrameHeader {
            generation: 0x0102_0304_0506_0708,
            offset: 42,
        };
        let frame = header.frame(b"webm");
        assert_eq!(&frame[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(FrameHeader::parse(&frame), Ok(header));
        assert_eq!(&frame[HEADER_LEN..], b"webm");
        assert_eq!(
            FrameHeader::parse(&frame[..15]),
            Err(ProtocolError::ShortFrame(15))
        );
    }

    #[test]
    fn a_cut_frame_is_its_header_then_the_slices_it_shares() {
        let media = Bytes::from_static(b"0123456789");
        let header = FrameHeader {
            generation: 7,
            offset: 3,
        };
        let cut = OutFrame::cut(header, [media.slice(3..5), Bytes::new(), media.slice(8..)]);
        assert_eq!(cut.to_bytes(), header.frame(b"3489"));
        assert_eq!(cut.len(), HEADER_LEN + 4);
        assert_eq!(cut.parts().len(), 3, "empty slices are left out");
        // The payload parts point into the buffered bytes: nothing was copied.
        assert_eq!(cut.parts()[1].as_ptr(), media[3..].as_ptr());
        let whole = OutFrame::whole(header.frame(b"x"));
        assert_eq!(whole.parts().len(), 1);
        assert_eq!(whole.to_bytes(), header.frame(b"x"));
    }

    #[test]
    fn stream_names_follow_the_protocol() {
        for ok in ["a", "cam-1", "Room_42", &"x".repeat(64)] {
            assert!(StreamName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "../etc", "é", "a.b", &"x".repeat(65)] {
            assert!(StreamName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_messages_parse_and_serialize() {
        assert_eq!(
            PublisherControl::parse(r#"{"type":"start","mime":"video/webm"}"#),
            Ok(PublisherControl::Start {
                mime: "video/webm".into()
            })
        );
        assert_eq!(
            PublisherControl::parse(r#"{"type":"stop"}"#),
            Ok(PublisherControl::Stop {
                generation: None,
                length: None
            })
        );
        assert_eq!(
            PublisherControl::parse(r#"{"type":"stop","generation":7,"length":300}"#),
            Ok(PublisherControl::Stop {
                generation: Some(7),
                length: Some(300)
            })
        );
        assert!(PublisherControl::parse(r#"{"type":"dance"}"#).is_err());
        let start =
            |mime: &str| PublisherControl::parse(&format!(r#"{{"type":"start","mime":"{mime}"}}"#));
        let longest = format!("video/webm;codecs={}", "a".repeat(MAX_MIME_LEN - 18));
        assert_eq!(longest.len(), MAX_MIME_LEN);
        assert!(start(&longest).is_ok());
        assert_eq!(
            start(&format!("{longest}a")),
            Err(ProtocolError::MimeTooLong(MAX_MIME_LEN + 1))
        );
        assert_eq!(ViewerControl::End.to_json(), r#"{"type":"end"}"#);
    }
}
