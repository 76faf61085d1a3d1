//! The rules every publisher frame goes through, whichever way it came (the WebSocket
//! publisher or an HTTP upload): a header, a payload within `--max-frame`, a blob at
//! offset 0, chunks that continue the generation without a gap.

use crate::protocol::{close, FrameHeader, HEADER_LEN};
use crate::stream::buffer::{Accepted, FrameError};
use crate::stream::Stream;
use bytes::Bytes;

/// Which of a publisher's two routes a frame came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherSocket {
    Blob = 0,
    Chunk = 1,
}

impl PublisherSocket {
    pub fn name(self) -> &'static str {
        match self {
            PublisherSocket::Blob => "blob",
            PublisherSocket::Chunk => "chunk",
        }
    }
}

/// Why a publisher frame was refused, whichever way it came (WebSocket or HTTP POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: RefusedKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// Shorter than its header, or a blob not at offset 0.
    Malformed,
    /// Payload over `--max-frame`.
    TooBig,
    /// A chunk past the buffer's end, or overlapping it.
    Gap,
    /// The generation would exceed `--max-buffer`.
    BufferFull,
    /// The session has stopped.
    Stopped,
}

impl Refused {
    fn new(kind: RefusedKind, reason: impl Into<String>) -> Refused {
        Refused {
            kind,
            reason: reason.into(),
        }
    }

    pub fn close_code(&self) -> u16 {
        match self.kind {
            RefusedKind::Malformed => close::MALFORMED,
            RefusedKind::TooBig => close::TOO_BIG,
            RefusedKind::Gap => close::GAP,
            RefusedKind::BufferFull => close::BUFFER_FULL,
            RefusedKind::Stopped => close::MALFORMED,
        }
    }
}

/// The rules every publisher frame goes through (docs/protocol.md), for both transports.
pub fn accept_frame(
    stream: &Stream,
    max_frame: u64,
    socket: PublisherSocket,
    frame: Bytes,
) -> Result<Accepted, Refused> {
    let header = FrameHeader::parse(&frame)
        .map_err(|e| Refused::new(RefusedKind::Malformed, e.to_string()))?;
    let payload = (frame.len() - HEADER_LEN) as u64;
    if payload > max_frame {
        return Err(Refused::new(
            RefusedKind::TooBig,
            format!("frame payload of {payload} bytes exceeds the {max_frame}-byte limit"),
        ));
    }
    let accepted = match socket {
        PublisherSocket::Blob if header.offset != 0 => {
            return Err(Refused::new(
                RefusedKind::Malformed,
                format!(
                    "blob frame has offset {}; blobs start a generation at 0",
                    header.offset
                ),
            ))
        }
        PublisherSocket::Blob => stream.accept_blob(frame),
        PublisherSocket::Chunk => stream.accept_chunk(frame),
    };
    accepted.map_err(|err| {
        let kind = match err {
            FrameError::Gap { .. } | FrameError::Overlap { .. } => RefusedKind::Gap,
            FrameError::BufferFull { .. } => RefusedKind::BufferFull,
            FrameError::Stopped => RefusedKind::Stopped,
        };
        Refused::new(kind, err.to_string())
    })
}
