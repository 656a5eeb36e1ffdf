//! A stream: what the upstream sends under one scope and stream key, and
//! the responses attached to it.
//!
//! A [`Stream`] is the layer's in-process state of one stream, shared by
//! every response of it: the window of ids forwarded on it, its replay
//! history when it keeps one, its generation, and the bookkeeping of the
//! responses attached to it. [`Streams`] is the registry the layer keeps
//! them in. The body checks each block against its stream under one short
//! lock per chunk, and never waits on a store.
//!
//! # Glossary
//!
//! One word, one meaning, here and in the rest of the crate:
//!
//! - **scope**: whose streams: a session id, with the fingerprint of the
//!   request's credentials when it has some. Nothing crosses scopes.
//! - **stream key**: which stream of the scope: a `GET`'s method, path
//!   and query, or a per-request stream's key of its own.
//! - **stream**: what the upstream sends under one scope and stream key,
//!   over every response of it.
//! - **response**: one client's view of a stream, *attached* to it while
//!   it lives: what its client has, and what it forwards.
//! - **cursor**: the id a client says it has (`Last-Event-ID`).
//! - **window**: the ids a stream forwarded lately, with what each event
//!   was: what deduplicates.
//! - **history**: the blocks a stream forwarded lately: what a *replay*
//!   sends a client from after its cursor. A cursor it does not hold gets
//!   the *gap* signal.
//! - **generation**: goes up each time a client's cursor makes the
//!   stream forget ids (those after the cursor, or all of them for an
//!   unknown one). A response records only at the generation it opened
//!   at; a store *fences* (refuses) writes of an older one: each batch
//!   carries its writer's generation.
//! - **hold**: a response whose client went away, its upstream still read
//!   for a while ([`SseResumeLayer::linger`](crate::SseResumeLayer::linger));
//!   the stream is *held*. A client that comes back *takes over* the
//!   upstream.
//! - **claim**: how a request takes an upstream over: the reader of the
//!   upstream (a hold's task, or a displaceable response) offers a claim,
//!   the stream keeps it, and the request that takes it is handed the
//!   upstream.
//! - **lease**: a store's mark that this process holds a stream, so that
//!   another replica *follows* it (sends what this one records) rather
//!   than asking the upstream again.
//! - **complete**: a per-request stream whose upstream ended: resumed from
//!   its history alone.
//! - **displace**: where one scope is one client, a reconnect ends the
//!   response still attached (its client's old connection) and takes its
//!   upstream over.
//! - **evict**: a bound making room: the least recently used streams, the
//!   oldest holds past the most held, the oldest ids and blocks of a window
//!   or history.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::time::Instant;

use crate::lock::lock;

pub use history::HistoryLimits;
pub(crate) use history::{Budget, History};
pub(crate) use hold::{Claim, Claimed, Handover, Head, Hold, Holds, Leftover, TakenOver, claim};
pub(crate) use ids::{Ids, Seen};
pub(crate) use registry::{Opened, Request, Serve, Stored, StreamLimits, Streams};
pub(crate) use response::{Check, Response, Verdict};
use responses::Responses;

mod any;
mod history;
mod hold;
mod ids;
mod registry;
mod response;
mod responses;
mod ring;
mod rising;

pub(crate) use rising::decimal;

/// The default [`SseResumeLayer::window_len`](crate::SseResumeLayer::window_len):
/// the number of ids a stream's window remembers.
pub(crate) const DEFAULT_WINDOW_LEN: usize = 1024;

/// A shared handle on the state of one stream. Clones share it.
#[derive(Clone)]
pub(crate) struct Stream {
    state: Arc<Mutex<StreamState>>,
}

/// The state of one stream, in named parts: its window, its history, its
/// generation, the responses attached to it, and its hold.
///
/// The window holds the ids forwarded on the stream, oldest first, at most
/// `capacity` of them, each with a fingerprint of its event. Ids are
/// compared as bytes. While every id is a decimal number greater
/// than the one before, as many servers number their events, the window
/// keeps them as numbers, which costs next to nothing to check; the first
/// id that is not moves it for good to a general form: the ids back to back
/// in one byte ring with a hash index, allocating nothing per id once warm.
///
/// The history is kept under the same lock as the window, so that a replay
/// and the ids it covers are one snapshot.
pub(crate) struct StreamState {
    /// The ids forwarded lately: what deduplicates.
    window: Ids,
    /// The blocks forwarded lately, when the stream keeps a replay history.
    history: Option<Box<History>>,
    /// Bumped whenever a client's cursor is applied: a response opened
    /// before that may have forwarded ids its client never got, and must
    /// stop recording them. A store that fences writes counts them too.
    generation: u64,
    /// The bookkeeping of the responses attached: who has what.
    responses: Responses,
    /// The response whose client went away, reading on in the background.
    hold: Option<Hold>,
    /// How the stream's responses start, kept while linger is on.
    head: Option<Arc<Head>>,
    /// Whether the upstream body of a per-request stream ended: resuming
    /// it replays from the history and needs no upstream.
    complete: bool,
}

/// What a client's cursor resumes: the blocks a replay history holds after
/// it, or a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// No replay history is kept, or the client sent no cursor.
    Off,
    /// The history holds the cursor: these blocks followed it, oldest
    /// first, and go to the client before the upstream's stream.
    Blocks(Vec<Bytes>),
    /// The history does not hold the cursor (evicted, or never seen): the
    /// client is told of a possible gap.
    Gap,
}

impl Replay {
    /// What the replay holds, for the logs: the ids of its first and last
    /// blocks, when they have one.
    pub(crate) fn summary(&self) -> String {
        match self {
            Replay::Off => "off".to_owned(),
            Replay::Gap => "gap".to_owned(),
            Replay::Blocks(blocks) => format!(
                "{} blocks, {:?} to {:?}",
                blocks.len(),
                blocks.first().and_then(block_id),
                blocks.last().and_then(block_id)
            ),
        }
    }

    /// The id of the last block replayed that has one: what the client
    /// has once it got the replay.
    pub(crate) fn last_id(&self) -> Option<String> {
        match self {
            Replay::Blocks(blocks) => blocks.iter().rev().find_map(block_id),
            Replay::Off | Replay::Gap => None,
        }
    }

    /// Drops each block whose id an earlier block of the replay has, and
    /// returns how many it dropped. A shared history holds an event twice
    /// when two replicas both read the stream's upstream: after Redis
    /// restarted empty, or when a holder's lease lapsed while another
    /// replica took the stream, both record it until the first learns so
    /// at its next lease refresh. Its client gets it once all the same.
    pub(crate) fn drop_repeated_ids(&mut self) -> usize {
        let Replay::Blocks(blocks) = self else {
            return 0;
        };
        let before = blocks.len();
        let mut seen = std::collections::HashSet::new();
        blocks.retain(|block| block_id(block).is_none_or(|id| seen.insert(id)));
        before - blocks.len()
    }
}

/// The id of a kept block, decoded lossily from UTF-8.
fn block_id(block: &Bytes) -> Option<String> {
    read_kept(block, false, |block| {
        Some(String::from_utf8_lossy(block.id_bytes()?).into_owned())
    })
    .flatten()
}

/// The fingerprint of the event of a kept block
/// ([`Block::fingerprint`](crate::framer::Block::fingerprint)), as it was
/// when the block was forwarded.
#[cfg(feature = "redis")]
pub(crate) fn block_fingerprint(block: &Bytes) -> Option<u64> {
    read_kept(block, true, |block| block.fingerprint())
}

/// What `read` finds in a kept block, one whole block as it was
/// forwarded, whatever its length.
fn read_kept<T>(
    block: &Bytes,
    fingerprints: bool,
    read: impl FnOnce(&crate::framer::Block<'_>) -> T,
) -> Option<T> {
    let mut framer =
        crate::framer::Framer::with_max_block_len(block.len() + 1).fingerprints(fingerprints);
    framer.push(block.clone());
    framer.finish();
    match framer.next_segment()? {
        crate::framer::Segment::Block(block) => Some(read(&block)),
        crate::framer::Segment::Passthrough(_) => None,
    }
}

/// Locks a stream's state through a handle of any kind.
pub(crate) fn lock_state(state: &Mutex<StreamState>) -> MutexGuard<'_, StreamState> {
    lock(state)
}

impl Stream {
    pub(crate) fn new(state: StreamState) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Locks the state, to check and record many ids at once.
    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock_state(&self.state)
    }

    /// Attaches a new response: its client has the ids the window holds
    /// now, and those it will forward.
    pub(crate) fn attach(&self) -> Response {
        let mut state = self.lock();
        self.attach_locked(&mut state)
    }

    /// Attaches a new response to `state`, which is this stream's, locked
    /// by the caller together with the change that opens the response.
    pub(crate) fn attach_locked(&self, state: &mut StreamState) -> Response {
        Response::attach(self, state)
    }

    /// Whether a response holds another handle on this stream.
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.state) > 1
    }

    /// A handle that does not keep the stream.
    pub(crate) fn downgrade(&self) -> Weak<Mutex<StreamState>> {
        Arc::downgrade(&self.state)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stream").field(&*self.lock()).finish()
    }
}

impl StreamState {
    /// An empty window of `capacity` ids (at least one), with a replay
    /// history within `history` when given, its bytes counting against a
    /// `budget` shared with the other streams.
    pub(crate) fn new(capacity: usize, history: Option<(HistoryLimits, Budget)>) -> Self {
        Self {
            window: Ids::new(capacity),
            history: history.map(|(limits, budget)| Box::new(History::sharing(limits, budget))),
            generation: 0,
            responses: Responses::default(),
            hold: None,
            head: None,
            complete: false,
        }
    }

    /// Ends the response that offered itself to a reconnect of its client:
    /// returns how to ask it for its upstream.
    pub(crate) fn displace(&mut self) -> Option<Claim> {
        self.responses.displace()
    }

    /// Starts holding the stream, unless another hold has it; `unconfirmed`
    /// when the client that went away had been sent ids.
    pub(crate) fn start_hold(&mut self, id: u64, takeover: Claim, unconfirmed: bool) -> bool {
        if self.hold.is_some() {
            return false;
        }
        let mark = self.history.as_deref().map_or(0, History::mark);
        self.hold = Some(Hold {
            id,
            takeover,
            mark,
            unconfirmed,
        });
        true
    }

    /// Whether the hold `id` still has the stream.
    pub(crate) fn holds(&self, id: u64) -> bool {
        self.hold.as_ref().is_some_and(|hold| hold.id == id)
    }

    /// Takes the hold `id` off the stream, if it is still there.
    pub(crate) fn take_hold(&mut self, id: u64) -> Option<Hold> {
        if self.holds(id) {
            self.hold.take()
        } else {
            None
        }
    }

    /// Takes whatever hold the stream has, to take the stream over.
    pub(crate) fn take_any_hold(&mut self) -> Option<Hold> {
        self.hold.take()
    }

    /// Whether nobody reads the stream's upstream in this process: no
    /// response is attached, and no hold has it.
    pub(crate) fn is_unread(&self) -> bool {
        self.responses.attached() == 0 && self.hold.is_none()
    }

    /// Whether a hold has the stream.
    pub(crate) fn is_held(&self) -> bool {
        self.hold.is_some()
    }

    /// The blocks kept since the history stood at `mark`, or a gap.
    pub(crate) fn replay_after(&mut self, mark: u64) -> Replay {
        match &mut self.history {
            Some(history) => match history.after_mark(mark, Instant::now()) {
                Some(blocks) => Replay::Blocks(blocks),
                None => Replay::Gap,
            },
            None => Replay::Gap,
        }
    }

    pub(crate) fn set_head(&mut self, head: Arc<Head>) {
        self.head = Some(head);
    }

    pub(crate) fn head(&self) -> Option<&Arc<Head>> {
        self.head.as_ref()
    }

    /// The upstream body of a response of the stream ended.
    pub(crate) fn upstream_ended(&mut self) {
        if self.head.as_ref().is_some_and(|head| head.per_request) {
            self.complete = true;
        }
    }

    /// A store says the stream is complete: resumed from the history alone,
    /// as another replica read it when this one has no head of its own.
    pub(crate) fn complete_in_store(&mut self) {
        self.complete = true;
        if self.head.is_none() {
            self.head = Some(Arc::new(Head::event_stream(true)));
        }
    }

    /// The application stopped the stream: it is complete, as if its
    /// upstream had ended.
    pub(crate) fn stop(&mut self) {
        self.complete = true;
    }

    /// The claims on the upstreams its attached responses read, for a stop
    /// to release.
    pub(crate) fn take_claims(&mut self) -> Vec<Claim> {
        self.responses.take_claims()
    }

    /// Whether the stream is per-request and its upstream ended, or it
    /// was stopped.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Records `id` unless the window has it already. Returns whether it was
    /// new. The event the id comes with is not compared.
    #[cfg(test)]
    pub(crate) fn check_and_record(&mut self, id: impl AsRef<[u8]>) -> bool {
        self.window.observe(id.as_ref(), None) != Seen::Same
    }

    /// Looks `id` up, with the fingerprint of its event (`None` trusts the
    /// id alone), and records it when it is new to the window.
    #[inline]
    pub(crate) fn observe(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        self.window.observe(id, content)
    }

    /// Records an id a response forwarded to its own client into the
    /// stream, which another response may be ahead on: see
    /// [`Ids::observe_in_order`].
    #[inline]
    pub(crate) fn record_forwarded(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        self.window.observe_in_order(id, content)
    }

    /// Replaces the ids, as when a store loaded newer ones; the responses
    /// attached keep what their clients have.
    pub(crate) fn replace_ids<'a>(&mut self, entries: impl IntoIterator<Item = (&'a str, u64)>) {
        self.responses.hand_off(&self.window);
        self.window.clear();
        for (id, content) in entries {
            self.window.observe(id.as_bytes(), Some(content));
        }
    }

    /// The ids with the fingerprints of their events, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.window.entries()
    }

    /// Whether the window holds `id`, or the history a block with it.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.window.contains(id.as_bytes()) || self.history.as_ref().is_some_and(|h| h.contains(id))
    }

    /// Applies a client's cursor: the client has every event up to `id`.
    ///
    /// The ids recorded after it were forwarded but maybe never delivered,
    /// so they are forgotten and a replay of them goes through. When the
    /// window does not know `id` at all it is cleared: a duplicate is better
    /// than a loss. Returns whether the cursor was known.
    pub(crate) fn apply_cursor(&mut self, id: impl AsRef<[u8]>) -> bool {
        self.next_generation();
        self.window.cut_after(id.as_ref())
    }

    fn next_generation(&mut self) {
        self.set_generation(self.generation + 1);
    }

    /// Resumes a client from its cursor `id`.
    ///
    /// When the history holds `id`, the blocks after it are returned for
    /// replay and the window is left as it is: the ids it holds after `id`
    /// are exactly those of the replayed blocks, so an upstream's replay of
    /// them is dropped. Otherwise the cursor is applied as by
    /// [`apply_cursor`](Self::apply_cursor), and with a history that is a
    /// [`Replay::Gap`]. Returns whether the cursor was known, and the replay.
    pub(crate) fn resume(&mut self, id: &str) -> (bool, Replay) {
        let replay = match &mut self.history {
            Some(history) => history.after(id, Instant::now()),
            None => return (self.apply_cursor(id), Replay::Off),
        };
        match replay {
            Some(blocks) => {
                self.next_generation();
                (true, Replay::Blocks(blocks))
            }
            None => (self.apply_cursor(id), Replay::Gap),
        }
    }

    /// Keeps a forwarded block in the history, if there is one. `id` is the
    /// id a client may resume from, the block's own or a stamped one.
    pub(crate) fn record_block(&mut self, id: Option<&str>, block: &[u8]) {
        if let Some(history) = &mut self.history {
            history.push(id, block, Instant::now());
        }
    }

    /// Trims the history to its share of the budget, when all the streams
    /// hold more than that in all.
    pub(crate) fn trim_history(&mut self) {
        if let Some(history) = &mut self.history {
            history.trim_to_share();
        }
    }

    /// Forgets the history, as when a block was forwarded that it could not
    /// keep: no replay may skip it.
    pub(crate) fn forget_history(&mut self) {
        if let Some(history) = &mut self.history {
            history.clear();
        }
    }

    /// Whether the stream keeps a replay history in process.
    pub(crate) fn has_history(&self) -> bool {
        self.history.is_some()
    }

    /// The number of blocks and of bytes the history holds.
    pub(crate) fn history_len(&self) -> (usize, usize) {
        self.history
            .as_ref()
            .map_or((0, 0), |history| (history.len(), history.bytes()))
    }

    /// How many times a client's cursor was applied: a response opened at
    /// an older generation may have forwarded ids its client never got.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the generation, for a store that counts them. In a new one,
    /// the responses attached so far stop recording, and the one whose
    /// view was the window keeps a copy.
    pub(crate) fn set_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.responses.new_generation(&self.window);
            self.generation = generation;
        }
    }

    /// The newest id, decoded lossily from UTF-8.
    pub(crate) fn last_id(&self) -> Option<String> {
        self.window.last_id()
    }

    /// The ids, oldest first, decoded lossily from UTF-8.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.window.entries().map(|(id, _)| id)
    }
}

impl fmt::Debug for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamState")
            .field("window", &self.window)
            .field("history", &self.history_len())
            .field("generation", &self.generation)
            .field("attached", &self.responses.current())
            .finish()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_replay_gives_each_id_once() {
        let block = |text: &str| Bytes::from(text.to_owned());
        let mut replay = Replay::Blocks(vec![
            block("id: 1\ndata: a\n\n"),
            block("id: 2\ndata: b\n\n"),
            block("data: no id\n\n"),
            block("id: 2\ndata: b\n\n"),
            block("data: no id\n\n"),
            block("id: 3\ndata: c\n\n"),
        ]);
        assert_eq!(replay.drop_repeated_ids(), 1);
        let Replay::Blocks(blocks) = replay else {
            panic!("blocks");
        };
        let text: Vec<_> = blocks.iter().map(|b| String::from_utf8_lossy(b)).collect();
        assert_eq!(
            text,
            [
                "id: 1\ndata: a\n\n",
                "id: 2\ndata: b\n\n",
                "data: no id\n\n",
                "data: no id\n\n",
                "id: 3\ndata: c\n\n"
            ],
            "the second 2 goes; blocks without an id stay"
        );
    }

    use super::*;

    fn state(capacity: usize, ids: &[&str]) -> StreamState {
        let mut state = StreamState::new(capacity, None);
        for id in ids {
            state.check_and_record(id);
        }
        state
    }

    fn ids(state: &StreamState) -> Vec<String> {
        state.ids().collect()
    }

    #[test]
    fn records_each_id_once() {
        let mut state = state(8, &[]);
        assert!(state.check_and_record("1"));
        assert!(state.check_and_record("2"));
        assert!(!state.check_and_record("1"));
        assert_eq!(ids(&state), ["1", "2"]);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut state = state(3, &["1", "2", "3", "4"]);
        assert_eq!(ids(&state), ["2", "3", "4"]);
        assert!(state.check_and_record("1"), "an evicted id is new again");
    }

    #[test]
    fn known_cursor_forgets_what_came_after_it() {
        let mut state = state(8, &["1", "2", "3", "4", "5"]);
        assert!(state.apply_cursor("3"));
        assert_eq!(ids(&state), ["1", "2", "3"]);
        assert!(state.check_and_record("4"));
        assert!(!state.check_and_record("2"));
    }

    #[test]
    fn unknown_cursor_clears_the_window() {
        let mut state = state(8, &["1", "2"]);
        assert!(!state.apply_cursor("9"));
        assert!(ids(&state).is_empty());
    }

    #[test]
    fn clones_of_a_stream_share_its_state() {
        let stream = Stream::new(StreamState::new(4, None));
        let other = stream.clone();
        assert!(stream.lock().check_and_record("a"));
        assert!(!other.lock().check_and_record("a"));
        assert_eq!(other.lock().last_id().as_deref(), Some("a"));
        assert!(stream.in_use());
        drop(other);
        assert!(!stream.in_use());
    }

    #[test]
    fn rising_numbers_then_anything() {
        let mut state = state(4, &[]);
        for id in ["1", "2", "3"] {
            assert!(state.check_and_record(id));
        }
        assert!(state.window.is_rising());
        assert!(!state.check_and_record("2"), "a replay of a number it has");
        assert!(
            state.check_and_record("05"),
            "not a plain number: ids in general"
        );
        assert!(!state.window.is_rising());
        assert!(!state.check_and_record("3"), "what it had is kept");
        assert!(state.check_and_record("5"), "\"05\" is not \"5\"");
        assert_eq!(ids(&state), ["2", "3", "05", "5"]);
    }

    #[test]
    fn a_number_below_the_others_that_it_lacks_is_new() {
        let mut state = state(8, &["10", "20"]);
        assert!(state.check_and_record("15"));
        assert!(!state.check_and_record("15"));
        assert!(!state.check_and_record("20"));
        assert_eq!(ids(&state), ["10", "20", "15"]);
    }

    #[test]
    fn cursors_on_rising_numbers() {
        let mut state = state(3, &["1", "2", "3", "4"]);
        assert!(!state.check_and_record("4"));
        assert!(state.check_and_record("1"), "evicted, so new again");
        let mut state = self::state(8, &["1", "2", "3"]);
        assert!(state.apply_cursor("2"));
        assert_eq!(ids(&state), ["1", "2"]);
        assert!(!state.apply_cursor("x"));
        assert!(ids(&state).is_empty());
    }
}
