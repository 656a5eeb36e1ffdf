//! The soak's upstream: every stream (one per session) numbers its events
//! `1, 2, 3, ...` at a steady rate from when the upstream (re)started,
//! whoever is connected. Each event's data says which stream, which
//! number, and which *epoch*: the upstream's life since it last numbered
//! from 1, so that a client tells a renumbered event from a duplicate.
//!
//! Two kinds, as `Kind` says: one that resumes from `Last-Event-ID`,
//! replaying two events early (as the demo's does), and one that cannot
//! resume at all. Restarting drops every connection; the upstream then
//! goes on numbering, or numbers from 1 again in a new epoch.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::service_fn;

use crate::accounting::{EpochSpan, Timeline};
use crate::replica::NAME_HEADER;
use crate::reverse_proxy::{self, ProxyBody};

/// What the upstream does with a client's `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Resumes after it, two events early; a cursor from before a
    /// renumbering (higher than any event of this epoch) starts from 1.
    Resumes,
    /// Ignores it: a client gets the events that happen while it is
    /// connected.
    Live,
}

/// The upstream, shared by its connections.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    kind: Kind,
    /// Events per second on each stream.
    rate: u32,
    epoch: Mutex<Epoch>,
    /// Every epoch so far, the one now last, with when each ended.
    epochs: Mutex<Vec<(Epoch, Option<Instant>)>>,
    /// What each stream was sent, and who reads it.
    streams: Mutex<HashMap<String, Sent>>,
    /// Bumped on every restart: every body open ends.
    restarts: watch::Sender<u64>,
    /// Set when the soak ends: no event is numbered after it.
    frozen_at: Mutex<Option<Instant>>,
}

/// What the upstream sent on one stream.
#[derive(Default)]
struct Sent {
    /// The first event sent: its epoch and number.
    first: Option<(u64, u64)>,
    /// The connections open now, per replica that opened them.
    open: HashMap<String, usize>,
}

/// Marks one connection of a stream open while it lives.
struct Open {
    state: Arc<State>,
    stream: String,
    replica: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut streams = self.state.streams.lock().unwrap();
        if let Some(open) =
            (streams.get_mut(&self.stream)).and_then(|s| s.open.get_mut(&self.replica))
        {
            *open -= 1;
        }
    }
}

#[derive(Clone, Copy)]
struct Epoch {
    number: u64,
    started: Instant,
}

impl Upstream {
    pub(crate) async fn start(kind: Kind, rate: u32) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let first = Epoch {
            number: 1,
            started: Instant::now(),
        };
        let state = Arc::new(State {
            kind,
            rate,
            epoch: Mutex::new(first),
            epochs: Mutex::new(vec![(first, None)]),
            streams: Mutex::default(),
            restarts: watch::channel(0).0,
            frozen_at: Mutex::new(None),
        });
        let shared = Arc::clone(&state);
        let service = service_fn(move |request| {
            std::future::ready(Ok::<_, Infallible>(respond(&shared, &request)))
        });
        tokio::spawn(reverse_proxy::serve(listener, service));
        Ok(Self { addr, state })
    }

    /// Drops every connection; the upstream numbers from 1 again in a new
    /// epoch when `renumber`, else goes on numbering.
    pub(crate) fn restart(&self, renumber: bool) {
        if renumber {
            let mut epoch = self.state.epoch.lock().unwrap();
            let now = Instant::now();
            epoch.number += 1;
            epoch.started = now;
            let mut epochs = self.state.epochs.lock().unwrap();
            if let Some((_, ended)) = epochs.last_mut() {
                *ended = Some(now);
            }
            epochs.push((*epoch, None));
        }
        self.state.restarts.send_modify(|n| *n += 1);
    }

    /// Numbers no event after now.
    pub(crate) fn freeze(&self) {
        *self.state.frozen_at.lock().unwrap() = Some(Instant::now());
    }

    /// Every epoch so far, with the last event each numbered, in seconds
    /// since `origin`.
    pub(crate) fn timeline(&self, origin: Instant) -> Timeline {
        let epochs = self.state.epochs.lock().unwrap();
        let epochs = (epochs.iter())
            .map(|&(epoch, ended)| EpochSpan {
                number: epoch.number,
                started: (epoch.started.saturating_duration_since(origin)).as_secs_f64(),
                last: self
                    .state
                    .numbered(epoch, ended.unwrap_or_else(Instant::now)),
            })
            .collect();
        Timeline {
            rate: self.state.rate,
            epochs,
        }
    }

    /// Where a connection opened now without a cursor starts: its epoch
    /// and first event.
    pub(crate) fn start_now(&self) -> (u64, u64) {
        let epoch = *self.state.epoch.lock().unwrap();
        match self.state.kind {
            Kind::Resumes => (epoch.number, 1),
            Kind::Live => (epoch.number, self.state.numbered(epoch, Instant::now()) + 1),
        }
    }

    /// The first event sent on `stream`, if any: its epoch and number.
    pub(crate) fn first_sent(&self, stream: &str) -> Option<(u64, u64)> {
        let streams = self.state.streams.lock().unwrap();
        streams.get(stream)?.first
    }

    /// The streams that `replica` reads from the upstream now.
    pub(crate) fn held_by(&self, replica: &str) -> BTreeSet<String> {
        let streams = self.state.streams.lock().unwrap();
        (streams.iter())
            .filter(|(_, sent)| sent.open.get(replica).is_some_and(|&open| open > 0))
            .map(|(stream, _)| stream.clone())
            .collect()
    }
}

impl State {
    /// How many events a stream has had in `epoch` at `at`.
    fn numbered(&self, epoch: Epoch, at: Instant) -> u64 {
        let at = match *self.frozen_at.lock().unwrap() {
            Some(frozen) => at.min(frozen),
            None => at,
        };
        let elapsed = at.saturating_duration_since(epoch.started);
        (elapsed.as_secs_f64() * f64::from(self.rate)) as u64
    }
}

/// The event `n` of `stream` in `epoch`.
pub(crate) fn event(stream: &str, epoch: u64, n: u64) -> String {
    format!("id: {n}\ndata: {stream} {epoch} {n}\n\n")
}

/// Reads an event's data back: its stream's epoch and number.
pub(crate) fn parse_data(data: &str) -> Option<(u64, u64)> {
    let mut fields = data.split(' ').skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn respond(state: &Arc<State>, request: &Request<Incoming>) -> Response<ProxyBody> {
    let stream = request
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    let epoch = *state.epoch.lock().unwrap();
    let now = state.numbered(epoch, Instant::now());
    let cursor = request
        .headers()
        .get("last-event-id")
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let first = match (state.kind, cursor) {
        (Kind::Resumes, Some(cursor)) if cursor <= now => cursor.saturating_sub(2).max(1),
        // From before a renumbering: this epoch knows nothing of it.
        (Kind::Resumes, Some(_)) => 1,
        (Kind::Resumes, None) => 1,
        (Kind::Live, _) => now + 1,
    };
    // Which replica opened this connection: it holds the stream.
    let replica = request
        .headers()
        .get(NAME_HEADER)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let open = {
        let mut streams = state.streams.lock().unwrap();
        *(streams.entry(stream.clone()).or_default().open)
            .entry(replica.clone())
            .or_default() += 1;
        Open {
            state: Arc::clone(state),
            stream: stream.clone(),
            replica,
        }
    };
    let restarts = state.restarts.subscribe();
    let state = Arc::clone(state);
    let frames = futures_util::stream::unfold(
        (first, restarts, open),
        move |(next, mut restarts, open)| {
            let (state, stream) = (Arc::clone(&state), stream.clone());
            async move {
                // The events already numbered go at once; then one per tick.
                loop {
                    if state.numbered(epoch, Instant::now()) >= next {
                        if next == first {
                            let mut streams = state.streams.lock().unwrap();
                            let sent = streams.entry(stream.clone()).or_default();
                            let this = (epoch.number, next);
                            sent.first = Some(sent.first.map_or(this, |first| first.min(this)));
                        }
                        let text = event(&stream, epoch.number, next);
                        let frame = Ok::<_, Infallible>(Frame::data(Bytes::from(text)));
                        return Some((frame, (next + 1, restarts, open)));
                    }
                    let due = epoch.started
                        + Duration::from_secs_f64(next as f64 / f64::from(state.rate));
                    if state
                        .frozen_at
                        .lock()
                        .unwrap()
                        .is_some_and(|frozen| due > frozen)
                    {
                        // No more events: the connection stays open, quiet.
                        let _ = restarts.changed().await;
                        return None;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        // Restarted: this connection is gone.
                        _ = restarts.changed() => return None,
                    }
                    if restarts.has_changed().unwrap_or(true) {
                        return None;
                    }
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(frames).map_err(|e| match e {}).boxed())
        .expect("a valid response")
}
