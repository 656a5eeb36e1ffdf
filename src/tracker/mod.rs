//! The in-process window of ids forwarded on one stream.
//!
//! A [`Tracker`] is what the body checks each block against: a bounded,
//! ordered window of the ids this layer forwarded, shared by every stream of
//! one key in this process, so that check-and-record is atomic per key.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

pub(crate) use history::{Budget, History};
pub use history::{
    DEFAULT_HISTORY_AGE, DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENTS,
    DEFAULT_HISTORY_TOTAL_BYTES, HistoryLimits,
};
pub(crate) use ids::{Ids, Seen};
use responses::{Responses, Role};

mod any;
mod history;
mod ids;
mod responses;
mod ring;
mod rising;

/// The default number of ids a window remembers.
pub const DEFAULT_WINDOW_LEN: usize = 1024;

/// A shared handle on the window of one stream.
///
/// Clones share the window. Every operation takes a short lock; take the
/// lock once for many ids with [`Tracker::lock`].
#[derive(Clone)]
pub struct Tracker {
    window: Arc<Mutex<Window>>,
}

/// The ids forwarded on a stream, oldest first, at most `capacity` of them,
/// each with a fingerprint of its event, and the responses attached to it.
///
/// Ids are compared as bytes. While every id is a decimal number greater
/// than the one before, as many servers number their events, the window
/// keeps them as numbers, which costs next to nothing to check; the first
/// id that is not moves it for good to a general form: the ids back to back
/// in one byte ring with a hash index, allocating nothing per id once warm.
///
/// A window may also keep a replay history: the blocks forwarded, as raw
/// bytes, so that a client can be resumed from it. It is kept under the
/// window's lock, so that a replay and the ids it covers are one snapshot.
#[derive(Clone)]
pub struct Window {
    ids: Ids,
    history: Option<History>,
    /// Bumped whenever a client's cursor is applied: a stream opened before
    /// that may have forwarded ids its client never got, and must stop
    /// recording them.
    generation: u64,
    responses: Responses,
}

/// A response attached to a stream's window, detached when dropped.
pub struct Attachment {
    pub(crate) tracker: Tracker,
    pub(crate) role: Role,
}

/// What a client's cursor resumes, as [`Window::resume`] finds it.
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

impl Tracker {
    /// A tracker with an empty window of `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self::from_window(Window::new(capacity))
    }

    /// A tracker over a window filled elsewhere, for example by a store.
    pub fn from_window(window: Window) -> Self {
        Self {
            window: Arc::new(Mutex::new(window)),
        }
    }

    /// Locks the window, to check and record many ids at once.
    pub fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic elsewhere while the lock was held cannot leave the window
        // half-updated in a way that matters more than losing the window.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest id in the window.
    pub fn last_id(&self) -> Option<String> {
        self.lock().last_id()
    }

    /// Attaches a new response to the window: its client has the ids the
    /// window holds now, and those it will forward.
    pub fn attach(&self) -> Attachment {
        let mut window = self.lock();
        self.attach_locked(&mut window)
    }

    /// Attaches a new response to `window`, which is this tracker's, locked
    /// by the caller together with the change that opens the response.
    pub(crate) fn attach_locked(&self, window: &mut Window) -> Attachment {
        let role = window.responses.attach(&window.ids, window.generation);
        Attachment {
            tracker: self.clone(),
            role,
        }
    }

    /// Whether a stream holds another handle on this window.
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.window) > 1
    }

    /// Whether two handles share one window.
    pub fn same_window(&self, other: &Tracker) -> bool {
        Arc::ptr_eq(&self.window, &other.window)
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tracker").field(&*self.lock()).finish()
    }
}

impl Window {
    /// An empty window of `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            ids: Ids::new(capacity),
            history: None,
            generation: 0,
            responses: Responses::default(),
        }
    }

    /// An empty window of `capacity` ids that also keeps a replay history
    /// within `limits`.
    pub fn with_history(capacity: usize, limits: HistoryLimits) -> Self {
        Self {
            history: Some(History::new(limits)),
            ..Self::new(capacity)
        }
    }

    /// Like [`with_history`](Self::with_history), the history's bytes
    /// counting against a `budget` shared with a store's other windows.
    pub(crate) fn with_shared_history(
        capacity: usize,
        limits: HistoryLimits,
        budget: Budget,
    ) -> Self {
        Self {
            history: Some(History::sharing(limits, budget)),
            ..Self::new(capacity)
        }
    }

    /// A window holding `ids`, oldest first; the oldest go when there are
    /// more than `capacity`. Repeated ids keep their first place.
    pub fn from_ids<I>(capacity: usize, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut window = Self::new(capacity);
        for id in ids {
            window.check_and_record(id.as_ref());
        }
        window
    }

    /// Records `id` unless the window has it already. Returns whether it was
    /// new, that is whether the block carrying it should be forwarded.
    /// Ids longer than `u32::MAX` bytes are never recorded and always new.
    /// The event the id comes with is not compared: see
    /// [`SseResumeLayer::trust_ids`](crate::SseResumeLayer::trust_ids).
    pub fn check_and_record(&mut self, id: impl AsRef<[u8]>) -> bool {
        self.ids.observe(id.as_ref(), None) != Seen::Same
    }

    /// Looks `id` up, with the fingerprint of its event (`None` trusts the
    /// id alone), and records it when it is new to the window.
    #[inline]
    pub(crate) fn observe(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        self.ids.observe(id, content)
    }

    /// Records an id a response forwarded to its own client into the
    /// stream, which another response may be ahead on: see
    /// [`Ids::observe_in_order`].
    #[inline]
    pub(crate) fn record_forwarded(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        self.ids.observe_in_order(id, content)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Replaces the ids, as when a store loaded newer ones; the responses
    /// attached keep what their clients have.
    pub(crate) fn replace_ids<'a>(&mut self, entries: impl IntoIterator<Item = (&'a str, u64)>) {
        self.responses.hand_off(&self.ids);
        self.ids.clear();
        for (id, content) in entries {
            self.ids.observe(id.as_bytes(), Some(content));
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// The ids with the fingerprints of their events, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.ids.entries()
    }

    /// Whether the window holds `id`, or its history a block with it.
    pub fn knows(&self, id: &str) -> bool {
        self.contains(id) || self.history.as_ref().is_some_and(|h| h.contains(id))
    }

    /// Whether the window holds `id`.
    pub fn contains(&self, id: impl AsRef<[u8]>) -> bool {
        self.ids.contains(id.as_ref())
    }

    /// Applies a client's cursor: the client has every event up to `id`.
    ///
    /// The ids recorded after it were forwarded but maybe never delivered,
    /// so they are forgotten and a replay of them goes through. When the
    /// window does not know `id` at all it is cleared: a duplicate is better
    /// than a loss. Returns whether the cursor was known.
    pub fn apply_cursor(&mut self, id: impl AsRef<[u8]>) -> bool {
        self.next_generation();
        self.ids.cut_after(id.as_ref())
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
    pub fn resume(&mut self, id: &str) -> (bool, Replay) {
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
    pub fn record_block(&mut self, id: Option<&str>, block: &[u8]) {
        if let Some(history) = &mut self.history {
            history.push(id, block, Instant::now());
        }
    }

    /// Trims the history to its share of a store's budget, when the store
    /// holds more than that in all.
    pub(crate) fn trim_history(&mut self) {
        if let Some(history) = &mut self.history {
            history.trim_to_share();
        }
    }

    /// Forgets the history, as when a block was forwarded that it could not
    /// keep: no replay may skip it.
    pub fn forget_history(&mut self) {
        if let Some(history) = &mut self.history {
            history.clear();
        }
    }

    /// Whether the window keeps a replay history.
    pub fn has_history(&self) -> bool {
        self.history.is_some()
    }

    /// The number of blocks and of bytes the history holds.
    pub fn history_len(&self) -> (usize, usize) {
        self.history
            .as_ref()
            .map_or((0, 0), |history| (history.len(), history.bytes()))
    }

    /// How many times a client's cursor was applied: a stream opened at an
    /// older generation may have forwarded ids its client never got.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the generation, for a store that counts them elsewhere. In a
    /// new one, the responses attached so far stop recording, and the one
    /// whose view was the window keeps a copy.
    pub fn set_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.responses.new_generation(&self.ids);
            self.generation = generation;
        }
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.responses.hand_off(&self.ids);
        self.ids.clear();
    }

    /// The newest id, decoded lossily from UTF-8.
    pub fn last_id(&self) -> Option<String> {
        self.ids.last_id()
    }

    /// The ids, oldest first, decoded lossily from UTF-8.
    pub fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.ids.entries().map(|(id, _)| id)
    }

    /// The number of ids held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn responses(&mut self) -> &mut Responses {
        &mut self.responses
    }

    /// Whether the window holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most ids the window holds.
    pub fn capacity(&self) -> usize {
        self.ids.capacity()
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("ids", &self.ids)
            .field("history", &self.history_len())
            .field("generation", &self.generation)
            .field("attached", &self.responses.current())
            .finish()
    }
}

impl Attachment {
    /// The tracker of the stream the response is attached to.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut window = self.tracker.lock();
        let generation = window.generation;
        window.responses.detach(&self.role, generation);
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("tag", &self.role.tag)
            .field("generation", &self.role.generation)
            .field("solo", &self.role.own.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(window: &Window) -> Vec<String> {
        window.ids().collect()
    }

    #[test]
    fn records_each_id_once() {
        let mut window = Window::new(8);
        assert!(window.check_and_record("1"));
        assert!(window.check_and_record("2"));
        assert!(!window.check_and_record("1"));
        assert_eq!(ids(&window), ["1", "2"]);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut window = Window::from_ids(3, ["1", "2", "3", "4"]);
        assert_eq!(ids(&window), ["2", "3", "4"]);
        assert!(window.check_and_record("1"), "an evicted id is new again");
    }

    #[test]
    fn known_cursor_forgets_what_came_after_it() {
        let mut window = Window::from_ids(8, ["1", "2", "3", "4", "5"]);
        assert!(window.apply_cursor("3"));
        assert_eq!(ids(&window), ["1", "2", "3"]);
        assert!(window.check_and_record("4"));
        assert!(!window.check_and_record("2"));
    }

    #[test]
    fn unknown_cursor_clears_the_window() {
        let mut window = Window::from_ids(8, ["1", "2"]);
        assert!(!window.apply_cursor("9"));
        assert!(window.is_empty());
    }

    #[test]
    fn clones_of_a_tracker_share_one_window() {
        let tracker = Tracker::new(4);
        let other = tracker.clone();
        assert!(tracker.lock().check_and_record("a"));
        assert!(!other.lock().check_and_record("a"));
        assert_eq!(other.last_id().as_deref(), Some("a"));
        assert!(tracker.same_window(&other));
        assert!(!tracker.same_window(&Tracker::new(4)));
    }

    #[test]
    fn rising_numbers_then_anything() {
        let mut window = Window::new(4);
        for id in ["1", "2", "3"] {
            assert!(window.check_and_record(id));
        }
        assert!(window.ids.is_rising());
        assert!(!window.check_and_record("2"), "a replay of a number it has");
        assert!(
            window.check_and_record("05"),
            "not a plain number: ids in general"
        );
        assert!(!window.ids.is_rising());
        assert!(!window.check_and_record("3"), "what it had is kept");
        assert!(window.check_and_record("5"), "\"05\" is not \"5\"");
        assert_eq!(ids(&window), ["2", "3", "05", "5"]);
    }

    #[test]
    fn a_number_below_the_others_that_it_lacks_is_new() {
        let mut window = Window::from_ids(8, ["10", "20"]);
        assert!(window.check_and_record("15"));
        assert!(!window.check_and_record("15"));
        assert!(!window.check_and_record("20"));
        assert_eq!(ids(&window), ["10", "20", "15"]);
    }

    #[test]
    fn cursors_on_rising_numbers() {
        let mut window = Window::from_ids(3, ["1", "2", "3", "4"]);
        assert!(!window.check_and_record("4"));
        assert!(window.check_and_record("1"), "evicted, so new again");
        let mut window = Window::from_ids(8, ["1", "2", "3"]);
        assert!(window.apply_cursor("2"));
        assert_eq!(ids(&window), ["1", "2"]);
        assert!(!window.apply_cursor("x"));
        assert!(window.is_empty());
    }
}
