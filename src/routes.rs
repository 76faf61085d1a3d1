//! The route table: read it as the map of the API. Handlers live in `ingest` (publishers),
//! `egress` (viewers) and `api` (JSON and recordings); this module only parses requests
//! into them, refuses bad ones with HTTP 400 before any upgrade, and asks `auth` before
//! a socket is handed to its handler (a denied socket is closed with 4401, 4403 or 4503).

use crate::api::{recordings, streams};
use crate::app::App;
use crate::auth::{self, Action, Asker, Credentials};
use crate::cluster::Wants;
use crate::conn_id::ConnId;
use crate::egress::viewer::{self, ChunkSubscription, WatchRequest};
use crate::http_error::{self, HttpError};
use crate::ingest::frame::PublisherSocket;
use crate::ingest::http as ingest;
use crate::ingest::socket::{self as publisher, PublishRequest};
use crate::net::client_addr;
use crate::net::upgrade::{self, Upgrade};
use crate::net::ws::Socket;
use crate::protocol::{is_token, Join, StreamName, HEADER_LEN};
use crate::stream::buffer::Resume;
use crate::stream::registry::{ViewerGuard, ViewerSocket};
use crate::stream::Refusal;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

/// Headroom over the payload limit, so that an oversize frame reaches our own check
/// and its close reason rather than the WebSocket library's.
const FRAME_SLACK: usize = 64 * 1024;
/// Viewers send nothing but close frames and pings.
const VIEWER_MAX_MESSAGE: usize = 64 * 1024;
/// Enough for a viewer's pings and close frame; a bigger buffer only costs memory per
/// socket (and tungstenite zero-fills it before each read).
const VIEWER_READ_BUFFER: usize = 4 * 1024;

pub fn routes(
    app: App,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    let publish = warp::path!("ws" / "publish" / String / String)
        .and(upgrade::websocket())
        .and(warp::query::<PublishQuery>())
        .and(auth::credentials())
        .and(client_addr::remote(&app.config.trusted_proxies))
        .and(user_agent())
        .and(with(app.clone()))
        .and_then(publish_upgrade);

    let watch = warp::path!("ws" / "watch" / String / String)
        .and(upgrade::websocket())
        .and(warp::query::<WatchQuery>())
        .and(auth::credentials())
        .and(client_addr::remote(&app.config.trusted_proxies))
        .and(user_agent())
        .and(with(app.clone()))
        .and_then(watch_upgrade);

    let streams = warp::path!("api" / "streams")
        .and(warp::get())
        .and(auth::credentials())
        .and(with(app.clone()))
        .then(streams::list_streams);
    let stream = warp::path!("api" / "streams" / String)
        .and(warp::get())
        .and(auth::credentials())
        .and(with(app.clone()))
        .and_then(streams::get_stream);
    let stats = warp::path!("api" / "streams" / String / "stats")
        .and(warp::get())
        .and(auth::credentials())
        .and(with(app.clone()))
        .and_then(
            |name, credentials, app| async move { streams::stream_stats(name, credentials, app) },
        );
    // An admin ends a publish session. Before `ingest`, whose path it would match.
    let kick = warp::path!("api" / "streams" / String / "kick")
        .and(warp::post())
        .and(auth::credentials())
        .and(with(app.clone()))
        .and_then(|name, credentials, app| async move { streams::kick(name, credentials, app) });
    // HTTP upload ingest: one frame per POST (blob, chunk), or stop.
    let ingest = warp::path!("api" / "streams" / String / String)
        .and(warp::post())
        .and(warp::query::<ingest::IngestQuery>())
        .and(auth::credentials())
        .and(client_addr::remote(&app.config.trusted_proxies))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with(app.clone()))
        .then(ingest::post);
    let recording_list = warp::path!("api" / "recordings")
        .and(warp::get())
        .and(auth::credentials())
        .and(with(app.clone()))
        .map(recordings::list);
    let recording_delete = warp::path!("api" / "recordings" / String)
        .and(warp::delete())
        .and(auth::credentials())
        .and(client_addr::remote(&app.config.trusted_proxies))
        .and(with(app.clone()))
        .map(recordings::delete);
    // HEAD too, for download tools that ask the size first; hyper sends no body for it.
    let recording_file = warp::path!("recordings" / String)
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::optional::<String>("range"))
        .and(auth::credentials())
        .and(with(app.clone()))
        .then(recordings::file);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with(app.clone()))
        .map(streams::healthz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(auth::credentials())
        .and(with(app.clone()))
        .map(streams::metrics);

    let public = app.config.public_dir.clone();
    let index = warp::path::end().and(warp::fs::file(public.join("index.html")));
    let record = warp::path!("record").and(warp::fs::file(public.join("record.html")));
    let recordings_page =
        warp::path!("recordings").and(warp::fs::file(public.join("recordings.html")));
    let watch_page = warp::path!("watch" / String)
        .and(warp::fs::file(public.join("watch.html")))
        .map(|_stream: String, page| page);
    let files = warp::fs::dir(public);
    let pages = warp::get().and(
        index
            .or(record)
            .unify()
            .or(recordings_page)
            .unify()
            .or(watch_page)
            .unify()
            .or(files)
            .unify(),
    );

    // Each group is boxed: one deep `or` chain of every route makes a filter type too
    // deep for the release build's trait solver (E0275), and a box per group costs one
    // dynamic call per request.
    let sockets = publish.or(watch).unify().boxed();
    let api = streams
        .or(stream)
        .unify()
        .or(stats)
        .unify()
        .or(kick)
        .unify()
        .or(ingest)
        .unify()
        .or(healthz)
        .unify()
        .or(metrics)
        .unify()
        .boxed();
    let recordings = recording_list
        .or(recording_delete)
        .unify()
        .or(recording_file)
        .unify()
        .boxed();
    let pages = pages.map(Reply::into_response).boxed();

    sockets
        .or(api)
        .unify()
        .or(recordings)
        .unify()
        .or(pages)
        .unify()
        .recover(http_error::recover)
        .unify()
}

fn with(app: App) -> impl Filter<Extract = (App,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// For the auth callout; a header that is not text counts as none.
fn user_agent() -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone
{
    warp::header::optional::<String>("user-agent")
        .or(warp::any().map(|| None))
        .unify()
}

#[derive(Debug, Deserialize)]
struct PublishQuery {
    session: Option<String>,
    /// The start of the recording's file name (blob socket).
    name_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WatchQuery {
    gen: Option<u64>,
    offset: Option<u64>,
    /// The hello's epoch: the publish session `gen` and `offset` belong to.
    epoch: Option<u64>,
    #[serde(default)]
    join: Join,
}

fn stream_name(name: &str) -> Result<StreamName, Rejection> {
    StreamName::parse(name).map_err(|e| HttpError::bad_request(e.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn publish_upgrade(
    name: String,
    socket: String,
    ws: Upgrade,
    query: PublishQuery,
    credentials: Credentials,
    peer: Option<SocketAddr>,
    user_agent: Option<String>,
    app: App,
) -> Result<Response, Rejection> {
    let started = Instant::now();
    let conn = ConnId::next();
    let stream = stream_name(&name)?;
    let socket = match socket.as_str() {
        "blob" => PublisherSocket::Blob,
        "chunk" => PublisherSocket::Chunk,
        _ => return Err(warp::reject::not_found()),
    };
    let session = match query.session {
        Some(session) if is_token(&session) => session,
        _ => {
            return Err(HttpError::bad_request(
                "?session= is required: 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
            ))
        }
    };
    let limit = app.config.max_frame as usize + HEADER_LEN + FRAME_SLACK;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let asker = Asker {
        peer,
        session: Some(&session),
        user_agent: user_agent.as_deref(),
    };
    if let Err(denial) = app
        .auth
        .authorize(Action::Publish, &stream, &credentials, asker)
        .await
    {
        app.registry.metrics().connection_refused();
        let who = format!(
            "publisher {conn} {} on {stream}/{} (session {session})",
            Socket(peer),
            socket.name()
        );
        return Ok(ws.answer(config, move |ws| auth::refuse_socket(ws, who, denial)));
    }
    let request = PublishRequest {
        stream,
        socket,
        session,
        peer,
        name_prefix: query.name_prefix,
        conn,
    };
    Ok(ws.answer(config, move |ws| {
        app.registry.metrics().handshake(started.elapsed());
        publisher::serve(ws, app, request)
    }))
}

#[allow(clippy::too_many_arguments)]
async fn watch_upgrade(
    name: String,
    socket: String,
    ws: Upgrade,
    query: WatchQuery,
    credentials: Credentials,
    peer: Option<SocketAddr>,
    user_agent: Option<String>,
    app: App,
) -> Result<Response, Rejection> {
    let started = Instant::now();
    let conn = ConnId::next();
    let stream = stream_name(&name)?;
    let resume = match (query.gen, query.offset) {
        (Some(generation), Some(offset)) => Some(Resume {
            generation,
            offset,
            epoch: query.epoch,
        }),
        (None, None) => None,
        _ => return Err(HttpError::bad_request("?gen= and ?offset= go together")),
    };
    let request = WatchRequest {
        stream,
        peer,
        resume,
        join: query.join,
        conn,
        started,
    };
    // No write buffer: the send loop feeds a batch and flushes it, so a buffer would only
    // add a second copy of each frame, kept for the life of the socket.
    let config = WebSocketConfig::default()
        .read_buffer_size(VIEWER_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(VIEWER_MAX_MESSAGE))
        .max_frame_size(Some(VIEWER_MAX_MESSAGE));
    if !matches!(socket.as_str(), "chunk" | "blob") {
        return Err(warp::reject::not_found());
    }
    let asker = Asker {
        peer,
        session: None,
        user_agent: user_agent.as_deref(),
    };
    if let Err(denial) = app
        .auth
        .authorize(Action::Watch, &request.stream, &credentials, asker)
        .await
    {
        app.registry.metrics().connection_refused();
        let who = format!(
            "viewer {conn} {} on {}/{socket}",
            Socket(peer),
            request.stream
        );
        return Ok(ws.answer(config, move |ws| auth::refuse_socket(ws, who, denial)));
    }
    let reply = match socket.as_str() {
        "chunk" => {
            // Subscribe before answering the upgrade: the viewer connects its blob
            // socket only after this one is open, so its snapshot and these chunks meet.
            let guard = app
                .registry
                .attach_viewer(&request.stream, ViewerSocket::Chunk);
            watch_in_cluster(&app, &guard, &request).await;
            let cursor = guard
                .as_ref()
                .ok()
                .map(|g| g.stream().chunk_cursor(request.resume));
            let sub = ChunkSubscription { guard, cursor };
            ws.answer_raw(move |io| {
                app.registry.metrics().handshake(started.elapsed());
                viewer::serve_chunks(io, app, request, sub)
            })
        }
        "blob" => {
            let guard = app
                .registry
                .attach_viewer(&request.stream, ViewerSocket::Blob);
            watch_in_cluster(&app, &guard, &request).await;
            ws.answer_raw(move |io| {
                app.registry.metrics().handshake(started.elapsed());
                viewer::serve_blob(io, app, request, guard)
            })
        }
        _ => return Err(warp::reject::not_found()),
    };
    Ok(reply)
}

/// In a cluster, a viewer of a stream published on another node is fed by a replica.
async fn watch_in_cluster(app: &App, guard: &Result<ViewerGuard, Refusal>, request: &WatchRequest) {
    if let (Some(cluster), Ok(guard)) = (&app.cluster, guard) {
        let wants = Wants {
            live: request.join == Join::Live,
            resume: request.resume,
        };
        cluster.watch(guard.stream(), wants).await;
    }
}
