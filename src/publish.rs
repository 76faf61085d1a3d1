//! A publisher's socket: checks the key, claims the stream for its session, then turns
//! each incoming frame into a `Buffer` update, closing with a code and a reason on the
//! first frame that breaks the protocol.

use crate::app::App;
use crate::protocol::{close, FrameHeader, PublisherControl, StreamName, HEADER_LEN};
use crate::stream::buffer::FrameError;
use crate::stream::Stream;
use crate::ws::{close_with, Closing, Socket};
use futures_util::StreamExt;
use std::net::SocketAddr;
use warp::ws::{Message, WebSocket};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherSocket {
    Blob,
    Chunk,
}

impl PublisherSocket {
    pub fn name(self) -> &'static str {
        match self {
            PublisherSocket::Blob => "blob",
            PublisherSocket::Chunk => "chunk",
        }
    }
}

#[derive(Debug)]
pub struct PublishRequest {
    pub stream: StreamName,
    pub socket: PublisherSocket,
    pub session: String,
    pub key: Option<String>,
    pub peer: Option<SocketAddr>,
}

pub async fn serve(ws: WebSocket, app: App, request: PublishRequest) {
    let (mut tx, mut rx) = ws.split();
    let who = format!(
        "publisher {} on {}/{} (session {})",
        Socket(request.peer),
        request.stream,
        request.socket.name(),
        request.session
    );
    if !app.publish_key_matches(request.key.as_deref()) {
        app.registry.metrics().connection_refused();
        let closing = Closing::new(close::UNAUTHORIZED, "wrong or missing publish key (?key=)");
        log::info!("{who} refused: {}", closing.reason);
        close_with(&mut tx, closing).await;
        return;
    }
    let guard = match app
        .registry
        .attach_publisher(&request.stream, &request.session)
    {
        Ok(guard) => guard,
        Err(refusal) => {
            app.registry.metrics().connection_refused();
            let closing = Closing::refusal(&refusal);
            log::info!("{who} refused: {}", closing.reason);
            close_with(&mut tx, closing).await;
            return;
        }
    };
    log::info!("{who} connected");
    let stream = guard.stream().clone();
    let mut shutdown = app.shutdown.clone();
    let closing = loop {
        tokio::select! {
            message = rx.next() => match message {
                None => break None,
                Some(Err(err)) => break Some(Closing::read_error(&err)),
                Some(Ok(message)) if message.is_close() => break None,
                Some(Ok(message)) => {
                    if let Err(closing) = handle(&stream, &app, request.socket, message) {
                        break Some(closing);
                    }
                }
            },
            _ = shutdown.recv() => break Some(Closing::new(close::GOING_AWAY, "server shutting down")),
        }
    };
    match closing {
        Some(closing) => {
            if closing.code != close::GOING_AWAY {
                app.registry.metrics().connection_refused();
            }
            log::info!("{who} closed: {} {}", closing.code, closing.reason);
            close_with(&mut tx, closing).await;
        }
        None => log::info!("{who} disconnected"),
    }
    drop(guard);
}

fn handle(
    stream: &Stream,
    app: &App,
    socket: PublisherSocket,
    message: Message,
) -> Result<(), Closing> {
    if message.is_text() {
        if socket != PublisherSocket::Blob {
            return Err(Closing::new(
                close::MALFORMED,
                "control messages go on the blob socket",
            ));
        }
        let text = message.to_str().unwrap_or_default();
        match PublisherControl::parse(text) {
            Ok(PublisherControl::Start { mime }) => stream.start(mime),
            Ok(PublisherControl::Stop) => stream.end(),
            Err(err) => return Err(Closing::new(close::MALFORMED, err.to_string())),
        }
        return Ok(());
    }
    if !message.is_binary() {
        return Ok(());
    }
    let frame = message.into_bytes();
    let header =
        FrameHeader::parse(&frame).map_err(|e| Closing::new(close::MALFORMED, e.to_string()))?;
    let payload = (frame.len() - HEADER_LEN) as u64;
    if payload > app.config.max_frame {
        return Err(Closing::new(
            close::TOO_BIG,
            format!(
                "frame payload of {payload} bytes exceeds the {}-byte limit",
                app.config.max_frame
            ),
        ));
    }
    let accepted = match socket {
        PublisherSocket::Blob if header.offset != 0 => {
            return Err(Closing::new(
                close::MALFORMED,
                format!(
                    "blob frame has offset {}; blobs start a generation at 0",
                    header.offset
                ),
            ))
        }
        PublisherSocket::Blob => stream.accept_blob(frame),
        PublisherSocket::Chunk => stream.accept_chunk(frame),
    };
    accepted.map(|_| ()).map_err(|err| {
        let code = match err {
            FrameError::Gap { .. } | FrameError::Overlap { .. } => close::GAP,
            FrameError::BufferFull { .. } => close::BUFFER_FULL,
        };
        Closing::new(code, err.to_string())
    })
}
