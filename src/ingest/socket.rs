//! A publisher's socket (its credentials were checked before the upgrade, by `auth`):
//! claims the stream for its session, then turns each incoming frame into a `Buffer`
//! update, closing with a code and a reason on the first frame that breaks the protocol
//! or when an admin kicks the session.

use super::frame::{accept_frame, PublisherSocket};
use crate::app::App;
use crate::conn_id::ConnId;
use crate::net::upgrade::WebSocket;
use crate::net::ws::{answer_close, close_with, Closing, Socket};
use crate::protocol::{close, PublisherControl, StreamName};
use crate::stream::Stream;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug)]
pub struct PublishRequest {
    pub stream: StreamName,
    pub socket: PublisherSocket,
    pub session: String,
    pub peer: Option<SocketAddr>,
    /// `?name_prefix=` on the blob socket: the start of the recording's file name.
    pub name_prefix: Option<String>,
    pub conn: ConnId,
}

pub async fn serve(ws: WebSocket, app: App, request: PublishRequest) {
    let (mut tx, mut rx) = ws.split();
    let who = format!(
        "publisher {} {} on {}/{} (session {})",
        request.conn,
        Socket(request.peer),
        request.stream,
        request.socket.name(),
        request.session
    );
    // In a cluster, another node's session may hold the stream (docs/cluster.md).
    let claimed = match &app.cluster {
        Some(cluster) => cluster.claim(&request.stream, &request.session).await,
        None => Ok(None),
    };
    let attached = claimed.and_then(|claim| {
        let guard = app
            .registry
            .attach_publisher(&request.stream, &request.session)?;
        if let Some(cluster) = &app.cluster {
            cluster.publish(guard.stream(), &request.session, claim);
        }
        Ok(guard)
    });
    let guard = match attached {
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
    if request.socket == PublisherSocket::Blob {
        stream.set_name_prefix(request.name_prefix.clone());
    }
    let mut shutdown = app.shutdown.clone();
    let mut kicked = stream.watch_kick();
    let replaced = stream.take_publisher_socket(request.socket as usize);
    // Pings make a silent peer answer; a peer that sends neither media nor a pong for
    // the timeout has vanished without a FIN (a laptop lid, a dropped Wi-Fi).
    let silence = app.publisher_timeout();
    let mut ping = tokio::time::interval(silence / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut last_heard = Instant::now();
    let closing = loop {
        tokio::select! {
            message = rx.next() => match message {
                None => break None,
                Some(Err(err)) => break Closing::read_error(&err),
                Some(Ok(message)) if message.is_close() => break None,
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    if let Err(closing) = handle(&stream, &app, request.socket, message) {
                        break Some(closing);
                    }
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= silence {
                    app.registry.metrics().publisher_timed_out();
                    break Some(Closing::new(
                        close::TOO_SLOW,
                        format!("sent neither media nor a pong for {silence:?}"),
                    ));
                }
                let ping = tx.send(Message::Ping(Bytes::new()));
                if tokio::time::timeout(silence / 3, ping).await.is_err() {
                    log::debug!("{who}: a ping could not be sent within {:?}", silence / 3);
                }
            }
            _ = replaced.notified() => break Some(Closing::new(
                close::PUBLISHER_BUSY,
                "replaced by a newer connection of the same publish session",
            )),
            _ = shutdown.recv() => break Some(Closing::new(close::GOING_AWAY, "server shutting down")),
            // The guard `wait_for` returns is not Send: drop it inside the future.
            _ = async { kicked.wait_for(|kicked| *kicked).await.is_ok() } => {
                break Some(Closing::new(close::KICKED, "kicked by admin"))
            }
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
        None => {
            log::info!("{who} disconnected");
            answer_close(&mut tx).await;
        }
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
        let text = message.to_text().unwrap_or_default();
        match (PublisherControl::parse(text), socket) {
            (Ok(PublisherControl::Start { mime }), PublisherSocket::Blob) => stream.start(mime),
            (Ok(PublisherControl::Start { .. }), PublisherSocket::Chunk) => {
                return Err(Closing::new(
                    close::MALFORMED,
                    "start goes on the blob socket, before its generation's blob",
                ))
            }
            // On the chunk socket a stop comes after the last chunk, in order; on the
            // blob socket it may overtake chunks still on their way, which are then lost.
            (Ok(PublisherControl::Stop { generation, length }), _) => {
                stream.stop(generation.zip(length))
            }
            (Err(err), _) => return Err(Closing::new(close::MALFORMED, err.to_string())),
        }
        return Ok(());
    }
    if !message.is_binary() {
        return Ok(());
    }
    // A copy of our own, sized to the frame: the received one is a slice of the socket's
    // read buffer and would keep that whole allocation alive for as long as the chunk is
    // buffered (twice the media's size in memory). One copy per chunk, not per viewer.
    let frame = Bytes::copy_from_slice(&message.into_data());
    accept_frame(stream, app.config.max_frame, socket, frame)
        .map(|_| ())
        .map_err(|refused| Closing::new(refused.close_code(), refused.reason))
}
