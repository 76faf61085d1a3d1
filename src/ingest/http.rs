//! HTTP upload ingest, for publishers that cannot hold a WebSocket:
//! `POST /api/streams/{stream}/blob|chunk` carries one frame per request (the 16-byte
//! header and payload as the body, or `X-Generation` / `X-Offset` headers and a raw
//! body), `POST /api/streams/{stream}/stop` ends the stream. The frames go through the
//! same rules as the publisher socket's (`ingest::frame::accept_frame`). An HTTP publisher
//! session holds its stream like an open socket until it stops or sends nothing for
//! `--ingest-timeout-secs`; then the stream ends as if its sockets closed.

use super::frame::{accept_frame, PublisherSocket, RefusedKind};
use crate::app::App;
use crate::auth::{Action, Asker, Credentials};
use crate::http_error::error_response;
use crate::protocol::{check_mime, is_token, FrameHeader, StreamName, HEADER_LEN};
use crate::stream::buffer::Accepted;
use crate::stream::Refusal;
use bytes::{Buf, BufMut, BytesMut};
use futures_util::{Stream as FutureStream, StreamExt};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{self, Reply, Response};

#[derive(Debug, Deserialize)]
pub struct IngestQuery {
    session: Option<String>,
    name_prefix: Option<String>,
    mime: Option<String>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    error_response(status, message)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} must be an unsigned integer")),
    }
}

/// `POST /api/streams/{stream}/{blob|chunk|stop}`.
#[allow(clippy::too_many_arguments)]
pub async fn post<S, B>(
    name: String,
    action: String,
    query: IngestQuery,
    credentials: Credentials,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: S,
    app: App,
) -> Response
where
    S: FutureStream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let asked = Asked { credentials, peer };
    let response = handle(name, action, query, asked, headers, body.as_mut(), &app).await;
    // A refusal comes before the body is read (or all of it): read the rest first, up
    // to a bound. A client cut off mid-upload sees a reset instead of the answer, and
    // a proxy that streams uploads (nginx with request buffering off) turns it into a
    // 502.
    let bound = app.config.max_frame + HEADER_LEN as u64;
    let timeout = Duration::from_secs(app.config.ingest_timeout_secs);
    let _ = tokio::time::timeout(timeout, drain(body, bound)).await;
    response
}

/// Reads and drops what is left of `body`, at most `bound` bytes.
async fn drain<S, B>(mut body: std::pin::Pin<&mut S>, bound: u64)
where
    S: FutureStream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut dropped = 0u64;
    while let Some(Ok(piece)) = body.next().await {
        dropped += piece.remaining() as u64;
        if dropped > bound {
            return;
        }
    }
}

/// Who posts, for `auth`.
struct Asked {
    credentials: Credentials,
    peer: Option<SocketAddr>,
}

async fn handle<S, B>(
    name: String,
    action: String,
    query: IngestQuery,
    asked: Asked,
    headers: HeaderMap,
    mut body: std::pin::Pin<&mut S>,
    app: &App,
) -> Response
where
    S: FutureStream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let stream_name = match StreamName::parse(&name) {
        Ok(name) => name,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    let socket = match action.as_str() {
        "blob" => PublisherSocket::Blob,
        "chunk" => PublisherSocket::Chunk,
        "stop" => PublisherSocket::Blob,
        _ => return refuse(StatusCode::NOT_FOUND, "not found"),
    };
    // Credentials before anything else about the request, as the socket does.
    let asker = Asker {
        peer: asked.peer,
        session: query.session.as_deref().filter(|s| is_token(s)),
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()),
    };
    let authorized = app
        .auth
        .authorize(Action::Publish, &stream_name, &asked.credentials, asker)
        .await;
    if let Err(denial) = authorized {
        app.registry.metrics().connection_refused();
        log::info!(
            "HTTP publisher on {stream_name} refused: {}",
            denial.reason()
        );
        return denial.response();
    }
    let session = match query.session.as_deref() {
        Some(session) if is_token(session) => session.to_owned(),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "?session= is required: 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
            )
        }
    };
    if action == "stop" {
        return stop(app, &stream_name, &session);
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("video/") || v.starts_with("audio/"));
    let mime = query.mime.as_deref().or(content_type);
    if let Err(err) = mime.map_or(Ok(()), check_mime) {
        app.registry.metrics().connection_refused();
        return refuse(StatusCode::BAD_REQUEST, &err.to_string());
    }

    // The frame: the wire frame as the body, or its header fields as HTTP headers.
    let (generation, offset) = match (
        header_u64(&headers, "x-generation"),
        header_u64(&headers, "x-offset"),
    ) {
        (Ok(generation), Ok(offset)) => (generation, offset),
        (Err(why), _) | (_, Err(why)) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let limit = app.config.max_frame + HEADER_LEN as u64;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return too_big(limit);
    }
    let mut frame = BytesMut::new();
    match generation {
        Some(generation) => {
            let offset = match (socket, offset) {
                (_, Some(offset)) => offset,
                (PublisherSocket::Blob, None) => 0,
                (PublisherSocket::Chunk, None) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "a chunk with X-Generation needs X-Offset",
                    )
                }
            };
            frame.put_u64(generation);
            frame.put_u64(offset);
        }
        None if offset.is_some() => {
            return refuse(StatusCode::BAD_REQUEST, "X-Offset needs X-Generation")
        }
        None => {}
    }
    while let Some(piece) = body.next().await {
        let mut piece = match piece {
            Ok(piece) => piece,
            Err(err) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the body: {err}"),
                )
            }
        };
        if (frame.len() + piece.remaining()) as u64 > limit {
            return too_big(limit);
        }
        while piece.has_remaining() {
            let chunk = piece.chunk();
            let n = chunk.len();
            frame.extend_from_slice(chunk);
            piece.advance(n);
        }
    }
    let frame = frame.freeze();
    let header = match FrameHeader::parse(&frame) {
        Ok(header) => header,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("{err} (or send X-Generation and X-Offset headers with a raw body)"),
            )
        }
    };
    if socket == PublisherSocket::Blob && header.offset != 0 {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "blob frame has offset {}; blobs start a generation at 0",
                header.offset
            ),
        );
    }

    // In a cluster, a session's first POST here claims the stream (docs/cluster.md).
    let claim = match &app.cluster {
        Some(cluster) if app.http_publishers.holds(&stream_name, &session) != Some(true) => {
            Some(cluster.claim(&stream_name, &session).await)
        }
        _ => None,
    };
    let held = match claim {
        Some(Err(refusal)) => Err(refusal),
        claim => app
            .http_publishers
            .hold(&stream_name, &session)
            .inspect(|stream| {
                if let (Some(cluster), Some(Ok(claim))) = (&app.cluster, claim) {
                    cluster.publish(stream, &session, claim);
                }
            }),
    };
    let stream = match held {
        Ok(stream) => stream,
        Err(refusal) => {
            app.registry.metrics().connection_refused();
            let status = match refusal {
                Refusal::PublisherBusy => StatusCode::CONFLICT,
                Refusal::TooManyStreams(_) | Refusal::TooManyViewers(_) => {
                    StatusCode::TOO_MANY_REQUESTS
                }
            };
            return refuse(status, &refusal.to_string());
        }
    };
    if socket == PublisherSocket::Blob {
        if query.name_prefix.is_some() {
            stream.set_name_prefix(query.name_prefix.clone());
        }
        if let Some(mime) = mime.filter(|m| stream.status().mime.as_deref() != Some(*m)) {
            stream.start(mime.to_owned());
        }
    }
    let payload = frame.len() - HEADER_LEN;
    match accept_frame(&stream, app.config.max_frame, socket, frame) {
        Ok(accepted) => {
            let accepted = match accepted {
                Accepted::NewGeneration { .. } => "new_generation",
                Accepted::Appended => "appended",
                Accepted::Held => "held",
                Accepted::Dropped => "dropped",
            };
            reply::json(&serde_json::json!({
                "accepted": accepted,
                "generation": header.generation,
                "offset": header.offset,
                "length": payload,
            }))
            .into_response()
        }
        Err(refused) => {
            app.registry.metrics().connection_refused();
            let status = match refused.kind {
                RefusedKind::Malformed => StatusCode::BAD_REQUEST,
                RefusedKind::TooBig | RefusedKind::BufferFull => StatusCode::PAYLOAD_TOO_LARGE,
                RefusedKind::Gap => StatusCode::UNPROCESSABLE_ENTITY,
                RefusedKind::Stopped => StatusCode::CONFLICT,
            };
            log::info!(
                "HTTP publisher {} on {stream_name} (session {session}) refused: {}",
                app.http_publishers.conn_of(&stream_name),
                refused.reason
            );
            refuse(status, &refused.reason)
        }
    }
}

fn too_big(limit: u64) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body exceeds {limit} bytes (--max-frame plus the {HEADER_LEN}-byte header)"),
    )
}

/// Ends the stream as a publisher's `stop` does, and releases an HTTP session.
fn stop(app: &App, name: &StreamName, session: &str) -> Response {
    let held_over_http = app.http_publishers.holds(name, session);
    let stream = app.registry.get(name);
    let publisher = stream.as_ref().and_then(|s| {
        s.presence
            .lock()
            .publisher
            .as_ref()
            .map(|p| p.id == session)
    });
    match (held_over_http, publisher) {
        (Some(false), _) | (None, Some(false)) => {
            refuse(StatusCode::CONFLICT, &Refusal::PublisherBusy.to_string())
        }
        (None, None) => refuse(StatusCode::NOT_FOUND, "no publisher session on this stream"),
        _ => {
            if let Some(stream) = stream {
                stream.end();
            }
            let conn = app.http_publishers.conn_of(name);
            app.http_publishers.release(name, None);
            log::info!("HTTP publisher {conn} on {name} (session {session}) stopped");
            reply::json(&serde_json::json!({ "stopped": true })).into_response()
        }
    }
}
