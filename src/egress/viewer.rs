//! A viewer's two sockets, each served by one task. The chunk socket sends every frame
//! appended after the viewer subscribed, reading straight from the shared `Buffer` with
//! its own cursor, so a viewer has no queue of its own: one that falls too far behind
//! the live edge is moved to the newest keyframe cluster if it joined at the live edge,
//! else (or if even that is too far) disconnected with a reason, as is one that takes
//! too long to accept a write. The blob socket sends the hello, the snapshot and each
//! new generation's blob, and `end`. Both write through `socket::ViewerSocket`.

use super::socket::{Heard, ViewerSocket, WriteFailed};
use crate::app::App;
use crate::conn_id::ConnId;
use crate::net::upgrade::RawSocket;
use crate::net::ws::{Closing, Socket};
use crate::protocol::{close, Join, OutFrame, StreamName, ViewerControl};
use crate::stream::buffer::{ChunkCursor, Lagging, Resume};
use crate::stream::registry::ViewerGuard;
use crate::stream::viewers::ViewerSlot;
use crate::stream::{Refusal, Snapshot, Status, Stream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

type Viewer = ViewerSocket<RawSocket>;

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
    /// The connection broke or ended without a close frame.
    Gone,
    /// The viewer sent its close frame (with this code): it is answered.
    ClosedByViewer(Option<u16>),
    /// We close it, with this code and reason.
    Closing(Closing),
}

pub async fn serve_chunks(io: RawSocket, app: App, request: WatchRequest, sub: ChunkSubscription) {
    let who = format!(
        "viewer {} {} on {}/chunk",
        request.conn,
        Socket(request.peer),
        request.stream
    );
    let mut socket = ViewerSocket::new(io);
    let guard = match sub.guard {
        Ok(guard) => guard,
        Err(refusal) => return refuse(&app, &who, socket, &refusal).await,
    };
    log::info!("{who} connected");
    let stream = guard.stream().clone();
    let mut cursor = sub.cursor.expect("a cursor comes with every guard");
    let slot = stream
        .viewers()
        .register(request.conn, request.peer, "chunk");
    // A viewer that asked for the live edge plays from keyframes, so it may be moved to
    // a newer one; one that plays whole files (blob mode) may not.
    let may_jump = request.join == Join::Live;
    let ended = send_chunks(
        &app,
        (&who, &slot),
        &stream,
        (&mut cursor, may_jump),
        &mut socket,
    )
    .await;
    finish(&app, &who, socket, ended).await;
    drop(guard);
}

async fn send_chunks(
    app: &App,
    (who, slot): (&str, &ViewerSlot),
    stream: &Stream,
    (cursor, may_jump): (&mut ChunkCursor, bool),
    socket: &mut Viewer,
) -> Ended {
    let max_lag = app.config.max_viewer_lag;
    let mut shutdown = app.shutdown.clone();
    let mut media = stream.watch_media();
    let mut liveness = Liveness::new();
    let mut batch = Vec::new();
    // Where this viewer is in the current generation, for reads without the lock.
    let mut reader = None;
    // The first message names the session of the frames that follow, and so does the
    // first message after every change of session.
    let mut epoch = None;
    loop {
        media.borrow_and_update();
        batch.clear();
        let read = match stream.read_chunks(cursor, &mut reader, max_lag, may_jump, &mut batch) {
            Ok(read) => read,
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
            if let Err(ended) = send_control(app, socket, &control).await {
                return ended;
            }
            epoch = Some(cursor.epoch());
        }
        if let Some(jump) = read.jumped {
            app.registry
                .metrics()
                .viewer_moved_to_keyframe(stream.name().as_str());
            log::debug!(
                "{who} fell behind: moved to generation {} offset {}",
                jump.generation,
                jump.offset
            );
            let control = ViewerControl::Jump {
                generation: jump.generation,
                offset: jump.offset,
            };
            if let Err(ended) = send_control(app, socket, &control).await {
                return ended;
            }
        }
        if !batch.is_empty() {
            // What the viewer was owed as this write began: its lag behind the live edge.
            let owed: usize = batch.iter().map(OutFrame::len).sum();
            app.registry.metrics().viewer_lag(owed as u64);
            slot.lagging(owed as u64);
            log::debug!("{who} sending {} frames, {owed} bytes", batch.len());
        }
        if let Err(ended) = send_frames(app, socket, &batch).await {
            return ended;
        }
        slot.sent(batch.iter().map(|f| f.len() as u64).sum());
        if let Some(arrived) = read.arrived {
            app.registry.metrics().fanout_latency(arrived.elapsed());
        }
        let deadline = liveness.deadline(socket);
        let woke = tokio::select! {
            changed = media.changed() => match changed {
                Ok(()) => Woke::Changed,
                Err(_) => return Ended::Gone,
            },
            heard = socket.hear() => Woke::Heard(heard),
            () = tokio::time::sleep_until(deadline) => Woke::Due,
            _ = shutdown.recv() => return shutting_down(),
        };
        if let Err(ended) = woke.handle(app, socket, &mut liveness).await {
            return ended;
        }
    }
}

pub async fn serve_blob(
    io: RawSocket,
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
    let mut socket = ViewerSocket::new(io);
    let guard = match guard {
        Ok(guard) => guard,
        Err(refusal) => return refuse(&app, &who, socket, &refusal).await,
    };
    log::info!("{who} connected");
    let stream = guard.stream().clone();
    let mode = join_label(request.join, request.resume.is_some());
    let slot = stream.viewers().register(request.conn, request.peer, mode);
    let ended = send_blobs(&app, (&who, &slot), &stream, &request, &mut socket).await;
    finish(&app, &who, socket, ended).await;
    drop(guard);
}

async fn send_blobs(
    app: &App,
    (who, slot): (&str, &ViewerSlot),
    stream: &Arc<Stream>,
    request: &WatchRequest,
    socket: &mut Viewer,
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
    if let Err(ended) = send_control(app, socket, &hello).await {
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
        if let Err(ended) = send_frames(app, socket, std::slice::from_ref(frame)).await {
            return ended;
        }
        slot.sent(frame.len() as u64);
        if let Some(started) = joining.take() {
            app.registry.metrics().joined(join_mode, started.elapsed());
        }
    }
    drop((frames, pin));

    let mut liveness = Liveness::new();
    loop {
        let deadline = liveness.deadline(socket);
        let woke = tokio::select! {
            changed = status.changed() => match changed {
                Ok(()) => Woke::Changed,
                Err(_) => return Ended::Gone,
            },
            heard = socket.hear() => Woke::Heard(heard),
            () = tokio::time::sleep_until(deadline) => Woke::Due,
            _ = shutdown.recv() => {
                let _ = send_control(app, socket, &ViewerControl::End).await;
                return shutting_down();
            }
        };
        if !matches!(woke, Woke::Changed) {
            if let Err(ended) = woke.handle(app, socket, &mut liveness).await {
                return ended;
            }
            continue;
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
                if let Err(ended) = send_control(app, socket, &hello).await {
                    return ended;
                }
                let blob_len = blob.len() as u64;
                if let Err(ended) = send_frames(app, socket, std::slice::from_ref(&blob)).await {
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
            if let Err(ended) = send_control(app, socket, &ViewerControl::End).await {
                return ended;
            }
            sent_generation = None;
            was_live = false;
        }
    }
}

/// Writes `frames` as one batch, in as few system calls as the socket takes them.
async fn send_frames(app: &App, socket: &mut Viewer, frames: &[OutFrame]) -> Result<(), Ended> {
    if frames.is_empty() {
        return Ok(());
    }
    socket
        .send(frames, app.send_timeout())
        .await
        .map_err(|failed| write_failed(app, failed))?;
    let bytes: usize = frames.iter().map(OutFrame::len).sum();
    app.registry.metrics().bytes_out(bytes as u64);
    Ok(())
}

async fn send_control(
    app: &App,
    socket: &mut Viewer,
    control: &ViewerControl,
) -> Result<(), Ended> {
    socket
        .send_text(&control.to_json(), app.send_timeout())
        .await
        .map_err(|failed| write_failed(app, failed))
}

fn write_failed(app: &App, failed: WriteFailed) -> Ended {
    match failed {
        WriteFailed::Gone => Ended::Gone,
        WriteFailed::TimedOut => {
            app.registry.metrics().viewer_write_timed_out();
            Ended::Closing(Closing::new(
                close::TOO_SLOW,
                format!("did not accept a write within {:?}", app.send_timeout()),
            ))
        }
    }
}

/// What woke a viewer's task.
enum Woke {
    /// The stream changed: there is something to send.
    Changed,
    /// The viewer sent something.
    Heard(Heard),
    /// A ping is due, or the viewer has been silent too long.
    Due,
}

impl Woke {
    /// Answers what the viewer sent and keeps the connection alive; `Changed` is the
    /// caller's to act on.
    async fn handle(
        self,
        app: &App,
        socket: &mut Viewer,
        liveness: &mut Liveness,
    ) -> Result<(), Ended> {
        match self {
            Woke::Changed => Ok(()),
            // Pongs and anything else are signs of life; a ping is answered.
            Woke::Heard(Heard::Something) => socket
                .answer_pings(app.send_timeout())
                .await
                .map_err(|failed| write_failed(app, failed)),
            Woke::Heard(Heard::Closed(code)) => Err(Ended::ClosedByViewer(code)),
            Woke::Heard(Heard::Broken(closing)) => Err(Ended::Closing(closing)),
            Woke::Due => liveness.tick(app, socket).await,
        }
    }
}

/// Pings keep idle sockets alive through proxies and NATs, and a viewer that answers
/// none of them for `VIEWER_SILENCE` has vanished (the kernel's keepalive would take
/// longer, and a stream with no publisher sends nothing that could fail).
const VIEWER_PING_EVERY: Duration = Duration::from_secs(10);
const VIEWER_SILENCE: Duration = Duration::from_secs(35);

/// When the next ping is due.
struct Liveness {
    next_ping: tokio::time::Instant,
}

impl Liveness {
    fn new() -> Liveness {
        Liveness {
            next_ping: tokio::time::Instant::now() + VIEWER_PING_EVERY,
        }
    }

    /// When to wake for a ping, or to give up on a silent viewer.
    fn deadline(&self, socket: &Viewer) -> tokio::time::Instant {
        let silent_at = tokio::time::Instant::from_std(socket.last_heard() + VIEWER_SILENCE);
        self.next_ping.min(silent_at)
    }

    async fn tick(&mut self, app: &App, socket: &mut Viewer) -> Result<(), Ended> {
        if socket.last_heard().elapsed() >= VIEWER_SILENCE {
            return Err(Ended::Closing(Closing::new(
                close::TOO_SLOW,
                format!("answered no ping for {VIEWER_SILENCE:?}"),
            )));
        }
        if tokio::time::Instant::now() >= self.next_ping {
            socket
                .ping(app.send_timeout())
                .await
                .map_err(|failed| write_failed(app, failed))?;
            self.next_ping = tokio::time::Instant::now() + VIEWER_PING_EVERY;
        }
        Ok(())
    }
}

fn shutting_down() -> Ended {
    Ended::Closing(Closing::new(close::GOING_AWAY, "server shutting down"))
}

async fn refuse(app: &App, who: &str, socket: Viewer, refusal: &Refusal) {
    app.registry.metrics().connection_refused();
    let closing = Closing::refusal(refusal);
    app.registry.metrics().refused_with(closing.code);
    log::info!("{who} refused: {}", closing.reason);
    socket.close_with(closing).await;
}

async fn finish(app: &App, who: &str, socket: Viewer, ended: Ended) {
    match ended {
        Ended::Gone => log::info!("{who} disconnected"),
        Ended::ClosedByViewer(code) => {
            log::info!("{who} disconnected");
            socket.answer_close(code).await;
        }
        Ended::Closing(closing) => {
            app.registry.metrics().refused_with(closing.code);
            log::info!("{who} closed: {} {}", closing.code, closing.reason);
            socket.close_with(closing).await;
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
