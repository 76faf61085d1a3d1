//! A viewer's two sockets. The chunk socket sends every frame appended after the viewer
//! subscribed, reading straight from the shared `Buffer` with its own cursor, so a
//! viewer has no queue of its own: falling too far behind the live edge, or taking too
//! long to accept a write, disconnects it with a reason. The blob socket sends the hello,
//! the snapshot and each new generation's blob, and `end`.

use crate::app::App;
use crate::conn_id::ConnId;
use crate::net::upgrade::WebSocket;
use crate::net::ws::{
    answer_close, binary_fragments, close_with, Closing, Receiver, Sender, Socket,
};
use crate::protocol::{close, Join, OutFrame, StreamName, ViewerControl};
use crate::stream::buffer::{ChunkCursor, Lagging, Resume};
use crate::stream::registry::ViewerGuard;
use crate::stream::viewers::ViewerSlot;
use crate::stream::{Refusal, Snapshot, Status, Stream};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The chunk socket's subscription, taken before the upgrade is answered.
pub struct ChunkSubscription {
    pub guard: Result<ViewerGuard, Refusal>,
    pub cursor: Option<ChunkCursor>,
}

pub struct WatchRequest {
    pub stream: StreamName,
    pub peer: Option<SocketAddr>,
    pub resume: Option<Resume>,
    pub join: Join,
    pub conn: ConnId,
    /// When the upgrade request arrived: join times count from here.
    pub started: Instant,
}

/// Why a viewer's loop ended.
enum Ended {
    /// The viewer closed or vanished.
    ByViewer,
    /// We close it, with this code and reason.
    Closing(Closing),
}

pub async fn serve_chunks(ws: WebSocket, app: App, request: WatchRequest, sub: ChunkSubscription) {
    let who = format!(
        "viewer {} {} on {}/chunk",
        request.conn,
        Socket(request.peer),
        request.stream
    );
    let (mut tx, rx) = ws.split();
    let guard = match sub.guard {
        Ok(guard) => guard,
        Err(refusal) => return refuse(&app, &who, &mut tx, &refusal).await,
    };
    log::info!("{who} connected");
    let stream = guard.stream().clone();
    let mut cursor = sub.cursor.expect("a cursor comes with every guard");
    let mut departure = Departure::watch(rx);
    let slot = stream
        .viewers()
        .register(request.conn, request.peer, "chunk");
    let ended = send_chunks(
        &app,
        (&who, &slot),
        &stream,
        &mut cursor,
        &mut tx,
        &mut departure,
    )
    .await;
    finish(&app, &who, &mut tx, ended).await;
    drop(guard);
}

async fn send_chunks(
    app: &App,
    (who, slot): (&str, &ViewerSlot),
    stream: &Stream,
    cursor: &mut ChunkCursor,
    tx: &mut Sender,
    departure: &mut Departure,
) -> Ended {
    let max_lag = app.config.max_viewer_lag;
    let mut shutdown = app.shutdown.clone();
    let mut media = stream.watch_media();
    let mut batch = Vec::new();
    // The first message names the session of the frames that follow, and so does the
    // first message after every change of session.
    let mut epoch = None;
    let mut ping = pinger();
    loop {
        media.borrow_and_update();
        batch.clear();
        let arrived = match stream.read_chunks(cursor, max_lag, &mut batch) {
            Ok(arrived) => arrived,
            Err(Lagging { behind }) => {
                app.registry.metrics().viewer_lagged(stream.name().as_str());
                log::debug!("{who} lagged {behind} bytes behind the live edge");
                return Ended::Closing(Closing::new(
                    close::TOO_SLOW,
                    format!(
                        "fell {behind} bytes behind the live edge (limit {max_lag}); reconnect"
                    ),
                ));
            }
        };
        if epoch != Some(cursor.epoch()) {
            // A new publish session, whose generation numbers may repeat the old one's:
            // the viewer keeps these frames apart until its blob socket's hello.
            let control = ViewerControl::Epoch {
                epoch: cursor.epoch(),
            };
            if let Err(ended) = send_control(app, tx, &control).await {
                return ended;
            }
            epoch = Some(cursor.epoch());
        }
        if !batch.is_empty() {
            // What the viewer was owed as this write began: its lag behind the live edge.
            let owed: usize = batch.iter().map(OutFrame::len).sum();
            app.registry.metrics().viewer_lag(owed as u64);
            slot.lagging(owed as u64);
            log::debug!("{who} sending {} frames, {owed} bytes", batch.len());
        }
        if let Err(ended) = send_frames(app, tx, &batch).await {
            return ended;
        }
        slot.sent(batch.iter().map(|f| f.len() as u64).sum());
        if let Some(arrived) = arrived {
            app.registry.metrics().fanout_latency(arrived.elapsed());
        }
        tokio::select! {
            changed = media.changed() => if changed.is_err() { return Ended::ByViewer },
            ended = departure.wait() => return ended,
            _ = ping.tick() => if let Err(ended) = send_ping(app, tx).await { return ended },
            _ = shutdown.recv() => return shutting_down(),
        }
    }
}

pub async fn serve_blob(
    ws: WebSocket,
    app: App,
    request: WatchRequest,
    guard: Result<ViewerGuard, Refusal>,
) {
    let who = format!(
        "viewer {} {} on {}/blob",
        request.conn,
        Socket(request.peer),
        request.stream
    );
    let (mut tx, rx) = ws.split();
    let guard = match guard {
        Ok(guard) => guard,
        Err(refusal) => return refuse(&app, &who, &mut tx, &refusal).await,
    };
    log::info!("{who} connected");
    let stream = guard.stream().clone();
    let mut departure = Departure::watch(rx);
    let mode = join_label(request.join, request.resume.is_some());
    let slot = stream.viewers().register(request.conn, request.peer, mode);
    let ended = send_blobs(
        &app,
        (&who, &slot),
        &stream,
        &request,
        &mut tx,
        &mut departure,
    )
    .await;
    finish(&app, &who, &mut tx, ended).await;
    drop(guard);
}

async fn send_blobs(
    app: &App,
    (who, slot): (&str, &ViewerSlot),
    stream: &Arc<Stream>,
    request: &WatchRequest,
    tx: &mut Sender,
    departure: &mut Departure,
) -> Ended {
    let mut shutdown = app.shutdown.clone();
    let mut status = stream.watch_status();
    let (live, epoch) = {
        let status = status.borrow_and_update();
        (status.live, status.epoch)
    };

    let snapshot = if live {
        stream.snapshot(request.resume, request.join)
    } else {
        Snapshot {
            pin: None,
            taken_at: 0,
            epoch,
            generation: None,
            join: Join::Start,
            resumed: false,
            frames: Vec::new(),
        }
    };
    // A generation is identified by its epoch too: a new publish session may reuse
    // the number.
    let mut sent_generation = snapshot.generation.map(|g| (snapshot.epoch, g));
    let mut was_live = live && sent_generation.is_some();
    let hello = ViewerControl::Stream {
        stream: stream.name().clone(),
        epoch: snapshot.epoch,
        mime: stream.status().mime,
        generation: snapshot.generation,
        live: was_live,
        join: snapshot.join,
        resumed: snapshot.resumed,
    };
    if let Err(ended) = send_control(app, tx, &hello).await {
        return ended;
    }
    let join_mode = join_label(snapshot.join, snapshot.resumed);
    log::debug!(
        "{who} joins {join_mode}: generation {:?}, {} frames",
        snapshot.generation,
        snapshot.frames.len()
    );
    // Counted once, when the first decodable bytes (a generation's blob) have gone out.
    let mut joining = Some(request.started);
    // Sent, then let go at once: a viewer that stays must not pin its join generation.
    let (frames, pin) = (snapshot.frames, snapshot.pin);
    let gone_by = |status: &watch::Receiver<Status>| {
        status.borrow().generations_started >= snapshot.taken_at + 2
    };
    for frame in &frames {
        if gone_by(&status) {
            // Two newer generations have started while this viewer took its snapshot: it
            // would pin a generation nobody else needs, for as long as it dawdles.
            app.registry.metrics().viewer_lagged(stream.name().as_str());
            log::debug!("{who} lagged: two generations started during its snapshot");
            return Ended::Closing(Closing::new(
                close::TOO_SLOW,
                "did not take its snapshot before two newer generations started; reconnect",
            ));
        }
        if let Err(ended) = send_frames(app, tx, std::slice::from_ref(frame)).await {
            return ended;
        }
        slot.sent(frame.len() as u64);
        if let Some(started) = joining.take() {
            app.registry.metrics().joined(join_mode, started.elapsed());
        }
    }
    drop((frames, pin));

    let mut ping = pinger();
    loop {
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return Ended::ByViewer },
            ended = departure.wait() => return ended,
            _ = ping.tick() => {
                if let Err(ended) = send_ping(app, tx).await {
                    return ended;
                }
                continue;
            }
            _ = shutdown.recv() => {
                let _ = send_control(app, tx, &ViewerControl::End).await;
                return shutting_down();
            }
        }
        let live = status.borrow_and_update().live;
        if live {
            let Some((epoch, generation, blob)) = stream.current_blob() else {
                continue;
            };
            if sent_generation != Some((epoch, generation)) {
                // A new generation always starts at its blob, whatever the first join was.
                let hello = ViewerControl::Stream {
                    stream: stream.name().clone(),
                    epoch,
                    mime: stream.status().mime,
                    generation: Some(generation),
                    live: true,
                    join: Join::Start,
                    resumed: false,
                };
                if let Err(ended) = send_control(app, tx, &hello).await {
                    return ended;
                }
                let blob_len = blob.len() as u64;
                if let Err(ended) = send_frames(app, tx, &[OutFrame::Whole(blob)]).await {
                    return ended;
                }
                log::debug!("{who} sent generation {generation}'s blob");
                slot.sent(blob_len);
                if let Some(started) = joining.take() {
                    // Joined a stream that was not live yet: it starts at the blob.
                    app.registry.metrics().joined("start", started.elapsed());
                }
                sent_generation = Some((epoch, generation));
            }
            was_live = true;
        } else if was_live {
            if let Err(ended) = send_control(app, tx, &ViewerControl::End).await {
                return ended;
            }
            sent_generation = None;
            was_live = false;
        }
    }
}

/// Writes `frames` as one batch. The send timeout bounds each write, not the batch: a
/// joiner on a slow link may take its time over a big snapshot as long as it keeps
/// reading, and a viewer that stops reading is cut off after one timeout.
async fn send_frames(app: &App, tx: &mut Sender, frames: &[OutFrame]) -> Result<(), Ended> {
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames {
        for fragment in binary_fragments(frame) {
            within_send_timeout(app, tx.feed(fragment)).await?;
        }
    }
    within_send_timeout(app, tx.flush()).await?;
    let bytes: usize = frames.iter().map(OutFrame::len).sum();
    app.registry.metrics().bytes_out(bytes as u64);
    Ok(())
}

async fn within_send_timeout(
    app: &App,
    write: impl Future<Output = Result<(), WsError>>,
) -> Result<(), Ended> {
    match tokio::time::timeout(app.send_timeout(), write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::ByViewer),
        Err(_) => {
            app.registry.metrics().viewer_write_timed_out();
            Err(Ended::Closing(Closing::new(
                close::TOO_SLOW,
                format!("did not accept a write within {:?}", app.send_timeout()),
            )))
        }
    }
}

async fn send_control(app: &App, tx: &mut Sender, control: &ViewerControl) -> Result<(), Ended> {
    let write = tx.send(Message::text(control.to_json()));
    match tokio::time::timeout(app.send_timeout(), write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Ended::ByViewer),
    }
}

/// The read half of a viewer's socket, read in a task of its own. The send loop could
/// poll the read inside its `select!`, but then every chunk sent would poll the socket
/// once more, and each tungstenite read attempt resets its read buffer: at 1000 viewers
/// that was a third of the server's CPU. Here the read runs only when the socket wakes it.
struct Departure(JoinHandle<Ended>);

impl Departure {
    fn watch(rx: Receiver) -> Departure {
        Departure(tokio::spawn(viewer_gone(rx)))
    }

    /// Resolves when the viewer has closed or broken its socket. Cancel-safe.
    async fn wait(&mut self) -> Ended {
        (&mut self.0).await.unwrap_or(Ended::ByViewer)
    }
}

impl Drop for Departure {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves when the viewer closes or breaks its socket, or answers none of our pings
/// for `VIEWER_SILENCE`; anything it sends is ignored.
async fn viewer_gone(mut rx: Receiver) -> Ended {
    loop {
        let Ok(message) = tokio::time::timeout(VIEWER_SILENCE, rx.next()).await else {
            return Ended::Closing(Closing::new(
                close::TOO_SLOW,
                format!("answered no ping for {VIEWER_SILENCE:?}"),
            ));
        };
        match message {
            None => return Ended::ByViewer,
            Some(Ok(message)) if message.is_close() => return Ended::ByViewer,
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                return Closing::read_error(&err).map_or(Ended::ByViewer, Ended::Closing)
            }
        }
    }
}

/// Pings keep idle sockets alive through proxies and NATs, and a viewer that answers
/// none of them for `VIEWER_SILENCE` has vanished (the kernel's keepalive would take
/// longer, and a stream with no publisher sends nothing that could fail).
const VIEWER_PING_EVERY: Duration = Duration::from_secs(10);
const VIEWER_SILENCE: Duration = Duration::from_secs(35);

fn pinger() -> tokio::time::Interval {
    let mut ping = tokio::time::interval(VIEWER_PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    ping
}

async fn send_ping(app: &App, tx: &mut Sender) -> Result<(), Ended> {
    within_send_timeout(app, tx.send(Message::Ping(Default::default()))).await
}

fn shutting_down() -> Ended {
    Ended::Closing(Closing::new(close::GOING_AWAY, "server shutting down"))
}

async fn refuse(app: &App, who: &str, tx: &mut Sender, refusal: &Refusal) {
    app.registry.metrics().connection_refused();
    let closing = Closing::refusal(refusal);
    app.registry.metrics().refused_with(closing.code);
    log::info!("{who} refused: {}", closing.reason);
    close_with(tx, closing).await;
}

async fn finish(app: &App, who: &str, tx: &mut Sender, ended: Ended) {
    match ended {
        Ended::ByViewer => {
            log::info!("{who} disconnected");
            answer_close(tx).await;
        }
        Ended::Closing(closing) => {
            app.registry.metrics().refused_with(closing.code);
            log::info!("{who} closed: {} {}", closing.code, closing.reason);
            close_with(tx, closing).await;
        }
    }
}

/// The join mode's name in metrics and logs.
fn join_label(join: Join, resumed: bool) -> &'static str {
    match (join, resumed) {
        (_, true) => "resume",
        (Join::Start, false) => "start",
        (Join::Live, false) => "live",
    }
}
