//! Holds: a stream whose client went away, its upstream still read in the
//! background for a while, so that the client can come back and take it
//! over (see `crate::linger`).

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use tokio::sync::oneshot;

use super::{StreamState, lock_state};
use crate::lock::lock;
use crate::stats::Stats;

/// What a response of a stream started with: enough to start another one
/// the same way when a client takes the stream over, or resumes it once
/// it is complete.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// Whether the request was not a `GET`: a per-request stream, which
    /// is complete once its upstream body ends.
    pub(crate) per_request: bool,
}

impl Head {
    /// The head of an event stream this process never saw start, as
    /// another replica read it: `200`, `text/event-stream`, not cached.
    pub(crate) fn event_stream(per_request: bool) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        Self {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers,
            per_request,
        }
    }
}

/// A stream's hold: the response whose client went away, reading its
/// upstream in the background. Dropping it ends the linger.
pub(crate) struct Hold {
    pub(crate) id: u64,
    /// Claims the upstream from the lingering task.
    pub(crate) takeover: Claim,
    /// Where the history stood when the client went away: a takeover
    /// without a cursor replays what came after it.
    pub(crate) mark: u64,
    /// Whether the client that went away had been sent ids: a request
    /// without a cursor names none of them back, and may lack them (they
    /// may have gone into a dead connection), so it hears of a gap first.
    pub(crate) unconfirmed: bool,
}

/// A claim on the upstream that a stream's reader offers, kept by the
/// stream: the reader is the task of its hold, or the response that a
/// reconnect of its client may displace. Whoever takes the claim from the
/// stream claims the upstream, and the reader hands it over.
#[derive(Debug)]
pub(crate) struct Claim(oneshot::Sender<oneshot::Sender<Handover>>);

/// The reader's side of a [`Claim`]: resolves when the upstream is
/// claimed, to where it is to be handed; to `None` once the claim is
/// dropped.
#[derive(Debug)]
pub(crate) struct Claimed(oneshot::Receiver<oneshot::Sender<Handover>>);

/// A claim for a reader to offer, and how the reader hears it taken.
pub(crate) fn claim() -> (Claim, Claimed) {
    let (claim, claimed) = oneshot::channel();
    (Claim(claim), Claimed(claimed))
}

impl Claim {
    /// Claims the upstream: the reader's handover arrives on the receiver.
    /// `None` when the reader is gone, and the upstream with it.
    pub(crate) fn claim(self) -> Option<oneshot::Receiver<Handover>> {
        let (answer, answered) = oneshot::channel();
        self.0.send(answer).ok().map(|()| answered)
    }

    /// Tells the reader that nobody takes its upstream over: it lets the
    /// upstream go now, as it does when a claim finds it cannot hand over.
    pub(crate) fn release(self) {
        drop(self.claim());
    }
}

#[cfg(test)]
impl Claimed {
    /// Whether the upstream was claimed, without waiting.
    pub(crate) fn try_recv(
        &mut self,
    ) -> Result<oneshot::Sender<Handover>, oneshot::error::TryRecvError> {
        self.0.try_recv()
    }
}

impl Future for Claimed {
    type Output = Option<oneshot::Sender<Handover>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

/// What a lingering task hands the response that takes its stream over.
pub(crate) struct Handover {
    /// The upstream body, a `Pin<Box<B>>` of the service's body type.
    pub(crate) body: Box<dyn Any + Send>,
    /// Upstream bytes read but not yet part of a whole block.
    pub(crate) pending: Vec<Bytes>,
    /// What the task read from the upstream after its hold was taken.
    pub(crate) leftover: Leftover,
    pub(crate) head: Arc<Head>,
}

impl Handover {
    /// This handover with its upstream body as a `B`, the body type of
    /// the service now asking; `None` when it is another service's.
    pub(crate) fn typed<B: 'static>(self) -> Option<TakenOver<B>> {
        let body = self.body.downcast::<Pin<Box<B>>>().ok()?;
        Some(TakenOver {
            body: *body,
            pending: self.pending,
            leftover: self.leftover,
            head: self.head,
        })
    }
}

/// A handover whose upstream body is of the asking service's type: what
/// a response that takes a stream over is made of.
pub(crate) struct TakenOver<B> {
    pub(crate) body: Pin<Box<B>>,
    /// Upstream bytes read but not yet part of a whole block.
    pub(crate) pending: Vec<Bytes>,
    /// What the task read from the upstream after its hold was taken.
    pub(crate) leftover: Leftover,
    pub(crate) head: Arc<Head>,
}

/// The last thing a lingering task read, that it could no longer record.
#[derive(Debug, Default)]
pub(crate) enum Leftover {
    #[default]
    Nothing,
    Trailers(HeaderMap),
    End,
}

/// The streams held in process, oldest first, at most `max` of them.
pub(crate) struct Holds {
    max: usize,
    held: Mutex<VecDeque<(u64, Weak<Mutex<StreamState>>)>>,
    next_id: Mutex<u64>,
    stats: Stats,
}

impl Holds {
    pub(crate) fn new(max: usize, stats: Stats) -> Self {
        Self {
            max: max.max(1),
            held: Mutex::default(),
            next_id: Mutex::new(1),
            stats,
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        let mut next = lock(&self.next_id);
        let id = *next;
        *next += 1;
        id
    }

    /// Counts a new hold of `stream`, and ends the oldest when there are
    /// more than the bound.
    pub(crate) fn add(&self, id: u64, stream: Weak<Mutex<StreamState>>) {
        self.stats.add_held(1);
        let evicted = {
            let mut held = lock(&self.held);
            held.push_back((id, stream));
            let excess = held.len().saturating_sub(self.max);
            held.drain(..excess).collect::<Vec<_>>()
        };
        for (id, stream) in evicted {
            self.stats.add_held(-1);
            if let Some(stream) = stream.upgrade() {
                // Dropping the hold tells its task to let the upstream go.
                let hold = lock_state(&stream).take_hold(id);
                if hold.is_some() {
                    self.stats.held_evicted();
                }
            }
        }
    }

    /// The hold `id` ended.
    pub(crate) fn remove(&self, id: u64) {
        let mut held = lock(&self.held);
        if let Some(at) = held.iter().position(|(held, _)| *held == id) {
            held.remove(at);
            self.stats.add_held(-1);
        }
    }
}

impl fmt::Debug for Holds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = lock(&self.held);
        f.debug_struct("Holds")
            .field("max", &self.max)
            .field("held", &held.len())
            .finish()
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("mark", &self.mark)
            .field("unconfirmed", &self.unconfirmed)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handover")
            .field("pending", &self.pending.len())
            .field("leftover", &self.leftover)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;
    use crate::stream::{HistoryLimits, Replay, Stream};

    /// A stream held by `id`, as a lingering response holds it: with what
    /// its task hears a takeover on.
    fn held(id: u64) -> (Stream, Claimed) {
        let stream = Stream::new(StreamState::new(8, None));
        let (asks, asked) = claim();
        assert!(stream.lock().start_hold(id, asks, false));
        (stream, asked)
    }

    fn head() -> Arc<Head> {
        Arc::new(Head {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            per_request: true,
        })
    }

    /// A handover whose upstream body is `body`, pinned as a service's is.
    fn handover<B: Send + 'static>(body: B) -> Handover {
        Handover {
            body: Box::new(Box::pin(body)),
            pending: vec![Bytes::from_static(b"id: 3\nda")],
            leftover: Leftover::End,
            head: head(),
        }
    }

    fn counts(stats: &Stats) -> (u64, u64) {
        let snapshot = stats.snapshot();
        (snapshot.held, snapshot.held_evicted)
    }

    #[test]
    fn hold_ids_are_unique_from_one() {
        let holds = Holds::new(4, Stats::default());
        let ids: Vec<u64> = (0..3).map(|_| holds.next_id()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn a_stream_has_one_hold_at_a_time_taken_only_by_its_own_id() {
        let (stream, _asked) = held(1);
        let (other, _) = claim();
        let mut state = stream.lock();
        assert!(!state.start_hold(2, other, false), "held already");
        assert!(state.holds(1) && !state.holds(2));
        assert!(state.take_hold(2).is_none());
        assert!(state.is_held());
        assert_eq!(state.take_hold(1).map(|hold| hold.id), Some(1));
        assert!(!state.is_held());
        assert!(state.take_hold(1).is_none(), "taken once");
    }

    #[tokio::test]
    async fn a_takeover_gets_the_handover_of_the_held_upstream() {
        let (stream, asked) = held(1);
        let hold = stream.lock().take_any_hold().expect("held");
        let answered = hold.takeover.claim().expect("the task listens");
        // The lingering task answers with its upstream.
        let reply = asked.await.expect("the task is asked");
        reply.send(handover("upstream")).expect("the taker waits");
        let taken = (answered.await.expect("handed over"))
            .typed::<&'static str>()
            .expect("the body is of the asking service's type");
        assert_eq!(*taken.body, "upstream");
        assert_eq!(taken.pending, [Bytes::from_static(b"id: 3\nda")]);
        assert!(matches!(taken.leftover, Leftover::End));
        assert!(taken.head.per_request);
    }

    #[test]
    fn a_handover_of_another_services_body_type_is_not_taken() {
        assert!(handover(7_u32).typed::<&'static str>().is_none());
        assert!(handover(7_u32).typed::<u32>().is_some());
    }

    #[test]
    fn a_hold_dropped_ends_its_linger() {
        let (stream, mut asked) = held(1);
        assert_eq!(asked.try_recv().unwrap_err(), TryRecvError::Empty);
        drop(stream.lock().take_hold(1));
        assert_eq!(asked.try_recv().unwrap_err(), TryRecvError::Closed);
    }

    #[test]
    fn a_hold_marks_where_the_history_stood_for_a_takeover_without_a_cursor() {
        let history = (
            HistoryLimits::default(),
            crate::stream::Budget::new(1 << 20),
        );
        let mut state = StreamState::new(8, Some(history));
        let block = |id: &str| Bytes::from(format!("id: {id}\ndata: x\n\n"));
        state.record_block(Some("1"), &block("1"));
        let (asks, _asked) = claim();
        assert!(state.start_hold(1, asks, false));
        state.record_block(Some("2"), &block("2"));
        state.record_block(Some("3"), &block("3"));
        let mark = state.take_any_hold().expect("held").mark;
        assert_eq!(
            state.replay_after(mark),
            Replay::Blocks(vec![block("2"), block("3")])
        );
        let mut without = StreamState::new(8, None);
        assert_eq!(without.replay_after(0), Replay::Gap);
    }

    /// Holds of at most `max` streams, with their counters.
    fn bounded(max: usize) -> (Holds, Stats) {
        let stats = Stats::default();
        (Holds::new(max, stats.clone()), stats)
    }

    /// A stream held by `id`, counted in `holds`.
    fn add(holds: &Holds, id: u64) -> (Stream, Claimed) {
        let (stream, asked) = held(id);
        holds.add(id, stream.downgrade());
        (stream, asked)
    }

    #[test]
    fn past_the_most_held_the_oldest_hold_is_ended_and_counted_as_evicted() {
        let (holds, stats) = bounded(2);
        let (oldest, mut oldest_asked) = add(&holds, 1);
        let (second, _asked) = add(&holds, 2);
        assert_eq!(counts(&stats), (2, 0));
        let (third, _asked) = add(&holds, 3);
        assert!(!oldest.lock().is_held());
        assert_eq!(oldest_asked.try_recv().unwrap_err(), TryRecvError::Closed);
        assert!(second.lock().holds(2) && third.lock().holds(3));
        assert_eq!(counts(&stats), (2, 1));
        // Its task, ending, removes it: it is not counted twice.
        holds.remove(1);
        assert_eq!(counts(&stats), (2, 1));
    }

    #[test]
    fn an_evicted_hold_that_already_ended_is_not_counted_as_evicted() {
        let (holds, stats) = bounded(1);
        drop(add(&holds, 1));
        let (taken, _asked) = add(&holds, 2);
        // Taken over, its task not yet done.
        let _hold = taken.lock().take_any_hold();
        let (third, _asked) = add(&holds, 3);
        assert_eq!(counts(&stats), (1, 0));
        assert!(third.lock().holds(3));
    }

    #[test]
    fn a_hold_removed_makes_room_and_is_removed_once() {
        let (holds, stats) = bounded(1);
        let (first, _asked) = add(&holds, 1);
        holds.remove(1);
        holds.remove(1);
        assert_eq!(counts(&stats), (0, 0));
        let _second = add(&holds, 2);
        assert!(first.lock().holds(1), "no longer counted: not evicted");
        assert_eq!(counts(&stats), (1, 0));
    }

    #[test]
    fn a_bound_of_no_holds_is_one() {
        let (holds, stats) = bounded(0);
        let (stream, _asked) = add(&holds, 1);
        assert!(stream.lock().holds(1));
        assert_eq!(counts(&stats), (1, 0));
        let _second = add(&holds, 2);
        assert!(!stream.lock().is_held());
        assert_eq!(counts(&stats), (1, 1));
    }
}
