//! The log's message format: what a publisher node appends to JetStream for each thing
//! its stream accepted, and how a replica reads it back. Pure: no I/O.
//!
//! A frame message's payload is the wire frame itself (16-byte header, then media), so
//! a replica hands it to the same accept path as a publisher's socket. Headers repeat
//! what a tool or a filter needs without parsing the payload: kind, generation, offset,
//! session. `Nats-Msg-Id` is `stream/session/generation/offset`, so a retried publish
//! (after a timeout, or by the node a session moved to) is stored once. A frame larger
//! than the server's `max_payload` is cut into several frames; the offset in each
//! header makes any cut legal.

use crate::ingest::frame::PublisherSocket;
use crate::protocol::{FrameHeader, PublisherControl, StreamName, HEADER_LEN};
use async_nats::header::{HeaderMap, HeaderValue, NATS_MESSAGE_ID};
use bytes::Bytes;

pub const KIND: &str = "Blobcast-Kind";
pub const GENERATION: &str = "Blobcast-Generation";
pub const OFFSET: &str = "Blobcast-Offset";
pub const SESSION: &str = "Blobcast-Session";
/// On blob messages: the publisher's MIME type, so a replica that starts at a blob
/// knows it without the `start` that came before.
pub const MIME: &str = "Blobcast-Mime";

/// Room left in each message for its headers.
const HEADERS_ROOM: usize = 1024;

/// The log subject of one stream.
pub fn subject(stream: &StreamName) -> String {
    format!("blobcast.frames.{stream}")
}

/// One message to append.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub headers: HeaderMap,
    pub payload: Bytes,
    /// Where a frame message's payload lies: generation, offset, end.
    pub span: Option<(u64, u64, u64)>,
}

/// The messages of one accepted frame: usually one, whose payload is the frame itself
/// (no copy); a frame over `max_payload` becomes several, each a frame of its own.
pub fn frame_messages(
    stream: &StreamName,
    session: &str,
    frame: &Bytes,
    blob: bool,
    mime: Option<&str>,
    max_payload: usize,
) -> Vec<Outgoing> {
    let header = FrameHeader::parse(frame).expect("the stream accepted it");
    let payload = frame.slice(HEADER_LEN..);
    let room = max_payload.saturating_sub(HEADERS_ROOM + HEADER_LEN).max(1);
    if payload.len() <= room {
        let end = header.offset + payload.len() as u64;
        return vec![piece(
            stream,
            session,
            header,
            end,
            frame.clone(),
            blob,
            mime,
        )];
    }
    payload
        .chunks(room)
        .scan(header.offset, |offset, part| {
            let here = FrameHeader {
                generation: header.generation,
                offset: *offset,
            };
            *offset += part.len() as u64;
            let first = here.offset == header.offset;
            Some(piece(
                stream,
                session,
                here,
                *offset,
                here.frame(part),
                blob && first,
                mime,
            ))
        })
        .collect()
}

fn piece(
    stream: &StreamName,
    session: &str,
    header: FrameHeader,
    end: u64,
    payload: Bytes,
    blob: bool,
    mime: Option<&str>,
) -> Outgoing {
    let mut headers = HeaderMap::new();
    headers.insert(KIND, if blob { "blob" } else { "chunk" });
    headers.insert(GENERATION, HeaderValue::from(header.generation));
    headers.insert(OFFSET, HeaderValue::from(header.offset));
    headers.insert(SESSION, session);
    if let (true, Some(mime)) = (blob, mime) {
        headers.insert(MIME, mime);
    }
    headers.insert(
        NATS_MESSAGE_ID,
        format!("{stream}/{session}/{}/{}", header.generation, header.offset).as_str(),
    );
    Outgoing {
        headers,
        payload,
        span: Some((header.generation, header.offset, end)),
    }
}

/// A `start` or `stop` control message, JSON as on the publisher's socket.
pub fn control_message(session: &str, control: &PublisherControl) -> Outgoing {
    let payload = serde_json::to_string(control).expect("controls serialize");
    let mut headers = HeaderMap::new();
    headers.insert(KIND, "control");
    headers.insert(SESSION, session);
    Outgoing {
        headers,
        payload: payload.into(),
        span: None,
    }
}

/// A message read back from the log.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Frame {
        socket: PublisherSocket,
        frame: Bytes,
        mime: Option<String>,
    },
    Control(PublisherControl),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("log message without a {0} header")]
    MissingHeader(&'static str),
    #[error("log message of unknown kind {0:?}")]
    UnknownKind(String),
    #[error("log control message is not valid: {0}")]
    BadControl(String),
}

/// The session a message belongs to.
pub fn session_of(headers: Option<&HeaderMap>) -> Result<&str, LogError> {
    headers
        .and_then(|h| h.get(SESSION))
        .map(HeaderValue::as_str)
        .ok_or(LogError::MissingHeader(SESSION))
}

pub fn parse(headers: Option<&HeaderMap>, payload: Bytes) -> Result<Incoming, LogError> {
    let header = |name: &'static str| {
        headers
            .and_then(|h| h.get(name))
            .map(HeaderValue::as_str)
            .ok_or(LogError::MissingHeader(name))
    };
    let socket = match header(KIND)? {
        "blob" => PublisherSocket::Blob,
        "chunk" => PublisherSocket::Chunk,
        "control" => {
            let text =
                std::str::from_utf8(&payload).map_err(|e| LogError::BadControl(e.to_string()))?;
            return PublisherControl::parse(text)
                .map(Incoming::Control)
                .map_err(|e| LogError::BadControl(e.to_string()));
        }
        other => return Err(LogError::UnknownKind(other.to_owned())),
    };
    Ok(Incoming::Frame {
        socket,
        frame: payload,
        mime: header(MIME).ok().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> StreamName {
        StreamName::parse("cam").unwrap()
    }

    fn frame(generation: u64, offset: u64, payload: &[u8]) -> Bytes {
        FrameHeader { generation, offset }.frame(payload)
    }

    #[test]
    fn a_small_frame_is_one_message_carrying_the_frame_itself() {
        let f = frame(7, 0, b"webm header");
        let out = frame_messages(&name(), "s1", &f, true, Some("video/webm"), 1 << 20);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload.as_ptr(), f.as_ptr(), "shared, not copied");
        let h = &out[0].headers;
        assert_eq!(h.get(NATS_MESSAGE_ID).unwrap().as_str(), "cam/s1/7/0");
        assert_eq!(h.get(KIND).unwrap().as_str(), "blob");
        assert_eq!(h.get(MIME).unwrap().as_str(), "video/webm");
        assert_eq!(out[0].span, Some((7, 0, 11)));
        match parse(Some(h), out[0].payload.clone()).unwrap() {
            Incoming::Frame {
                socket,
                frame,
                mime,
            } => {
                assert_eq!(socket, PublisherSocket::Blob);
                assert_eq!(frame, f);
                assert_eq!(mime.as_deref(), Some("video/webm"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_frame_over_max_payload_is_cut_into_frames_that_follow_on() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let f = frame(3, 100, &payload);
        let out = frame_messages(&name(), "s1", &f, true, None, 2048 + HEADERS_ROOM);
        assert!(out.len() > 2);
        let mut offset = 100;
        let mut joined = Vec::new();
        for (i, message) in out.iter().enumerate() {
            assert!(message.payload.len() <= 2048);
            let header = FrameHeader::parse(&message.payload).unwrap();
            assert_eq!((header.generation, header.offset), (3, offset));
            let kind = message.headers.get(KIND).unwrap().as_str();
            assert_eq!(kind, if i == 0 { "blob" } else { "chunk" });
            let id = message.headers.get(NATS_MESSAGE_ID).unwrap().as_str();
            assert_eq!(id, format!("cam/s1/3/{offset}"));
            joined.extend_from_slice(&message.payload[HEADER_LEN..]);
            offset += (message.payload.len() - HEADER_LEN) as u64;
        }
        assert_eq!(joined, payload);
        assert_eq!(out.last().unwrap().span.unwrap().2, 5100);
    }

    #[test]
    fn controls_read_back_and_junk_is_an_error() {
        let start = PublisherControl::Start {
            mime: "video/webm".into(),
        };
        let message = control_message("s1", &start);
        assert_eq!(session_of(Some(&message.headers)), Ok("s1"));
        assert_eq!(
            parse(Some(&message.headers), message.payload).unwrap(),
            Incoming::Control(start)
        );
        let stop = control_message(
            "s1",
            &PublisherControl::Stop {
                generation: None,
                length: None,
            },
        );
        assert_eq!(
            parse(Some(&stop.headers), stop.payload).unwrap(),
            Incoming::Control(PublisherControl::Stop {
                generation: None,
                length: None
            })
        );
        assert_eq!(
            parse(None, Bytes::new()),
            Err(LogError::MissingHeader(KIND))
        );
        let mut odd = HeaderMap::new();
        odd.insert(KIND, "video");
        assert!(matches!(
            parse(Some(&odd), Bytes::new()),
            Err(LogError::UnknownKind(_))
        ));
    }
}
