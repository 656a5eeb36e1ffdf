//! Where trackers live: the [`TrackerStore`] trait and its stores.
//!
//! A store hands the layer a [`Tracker`] when a request starts and takes the
//! ids the stream forwarded when it is done with them. The body checks ids
//! against the tracker in process and never waits on the store, so a store
//! doing network I/O keeps it off the hot path.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::tracker::{Attachment, Replay, Tracker};

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{DEFAULT_IDLE_TTL, DEFAULT_MAX_KEYS, DEFAULT_MAX_STREAMS_PER_SCOPE, MemoryStore};
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_PREFIX, DEFAULT_QUEUE_LEN, DEFAULT_TIMEOUT, RedisStats, RedisStore};

/// A store of per-stream trackers.
///
/// Every method may be called concurrently from many requests. The layer
/// calls [`open`](Self::open) once per request that has a scope, and
/// [`record`](Self::record) as the stream goes and when it ends.
pub trait TrackerStore: Send + Sync + 'static {
    /// Loads the tracker of `key`, creating an empty one when there is none.
    ///
    /// Streams of one key in one process should share the returned tracker,
    /// so that two of them racing on one id forward it once.
    fn load(&self, key: &StreamKey) -> impl Future<Output = Result<Tracker, StoreError>> + Send;

    /// Persists ids forwarded on the stream of `key`, oldest first. The
    /// batch is reused once this returns: copy what must outlive the call.
    ///
    /// This must not wait on I/O: a store that writes elsewhere queues the
    /// batch (bounded) and writes it in the background, coalescing batches.
    /// A store whose trackers are the stored state, like [`MemoryStore`],
    /// has nothing to do: [`Tracker`] recorded them already.
    fn record(&self, key: &StreamKey, ids: &IdBatch) -> Result<(), StoreError>;

    /// Whether [`record`](Self::record) is worth calling: `false` for a store
    /// whose trackers are the stored state, like [`MemoryStore`], which then
    /// gets no batches at all.
    fn persists_ids(&self) -> bool {
        true
    }

    /// Whether the batches should carry the forwarded blocks for a replay
    /// history the store keeps itself, as [`RedisStore`] does with one.
    /// `false` by default: a store whose trackers keep the history in
    /// process, like [`MemoryStore`], needs no copy.
    ///
    /// [`RedisStore`]: crate::RedisStore
    fn persists_blocks(&self) -> bool {
        false
    }

    /// Applies a client's cursor to the tracker of `key`: forget the ids
    /// recorded after `id`, or clear the window when `id` is not in it.
    /// Returns whether the cursor was known.
    fn apply_cursor(
        &self,
        key: &StreamKey,
        id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Finds the stream of `scope` that recorded `id`, if any.
    fn find_stream(
        &self,
        scope: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Removes the trackers idle for longer than the store's time to live,
    /// and returns how many went. Stores also expire trackers on their own;
    /// this is for callers that want it done now.
    fn expire(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Everything the layer needs when a request starts, in one call.
    ///
    /// With a client cursor, the stream is `stream` when it knows the
    /// cursor, else the one of `scope` that recorded it (falling back to
    /// `stream`), and the client is resumed there with
    /// [`Window::resume`](crate::tracker::Window::resume): from the replay
    /// history when the tracker keeps one, else by applying the cursor. A
    /// store that persists ids gets the cursor applied with
    /// [`apply_cursor`](Self::apply_cursor) too. A store that can do all of
    /// it in one round trip should override this.
    fn open(
        &self,
        scope: &str,
        stream: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<Opened, StoreError>> + Send {
        async move {
            let own = StreamKey::new(scope, stream);
            // The request's own stream first: two streams may number alike.
            let found = match cursor {
                Some(id) if !self.load(&own).await?.lock().knows(id) => {
                    self.find_stream(scope, id).await?
                }
                _ => None,
            };
            let key = found.map_or(own, |found| StreamKey::new(scope, &found));
            if let (Some(id), true) = (cursor, self.persists_ids()) {
                self.apply_cursor(&key, id).await?;
            }
            let tracker = self.load(&key).await?;
            let mut window = tracker.lock();
            let (cursor_known, replay) = match cursor {
                Some(id) => {
                    let (known, replay) = window.resume(id);
                    (Some(known), replay)
                }
                None => (None, Replay::Off),
            };
            // Under the same lock as the cursor: the response's client has
            // exactly what the window holds now.
            let attachment = tracker.attach_locked(&mut window);
            drop(window);
            Ok(Opened {
                key,
                attachment,
                cursor_known,
                replay,
                stamp_epoch: None,
            })
        }
    }
}

/// Ids forwarded on a stream, oldest first, as [`TrackerStore::record`]
/// receives them, and for a store that
/// [persists blocks](TrackerStore::persists_blocks), the blocks for its
/// replay history: a few buffers, not one allocation per id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdBatch {
    ids: Strings,
    /// The fingerprint of each id's event, at the same places as `ids`.
    fingerprints: Vec<u64>,
    starts_window_over: bool,
    block_ids: Strings,
    blocks: Strings,
    forgets_history: bool,
}

impl IdBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an id after the others, its event unknown.
    pub fn push(&mut self, id: &str) {
        self.push_event(id, 0);
    }

    /// Adds an id after the others, with the fingerprint of its event
    /// ([`Block::fingerprint`](crate::framer::Block::fingerprint)).
    pub fn push_event(&mut self, id: &str, fingerprint: u64) {
        self.ids.push(id.as_bytes());
        self.fingerprints.push(fingerprint);
    }

    /// Marks the window before this batch's ids as gone: an id came back
    /// with another event, so the upstream numbers anew and the window
    /// starts over from it. The ids pushed so far are dropped.
    pub fn start_window_over(&mut self) {
        self.ids.clear();
        self.fingerprints.clear();
        self.starts_window_over = true;
    }

    /// Whether the window before this batch's ids is to be forgotten.
    pub fn starts_window_over(&self) -> bool {
        self.starts_window_over
    }

    /// The ids with the fingerprints of their events, oldest first.
    pub fn events(&self) -> impl ExactSizeIterator<Item = (&str, u64)> + '_ {
        self.iter().zip(self.fingerprints.iter().copied())
    }

    /// The ids, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        // Only `push` adds ids, from `&str`.
        self.ids
            .iter()
            .map(|id| std::str::from_utf8(id).unwrap_or_default())
    }

    /// Adds a block for the replay history after the others, with the id a
    /// client may resume from (its own, or a stamped one).
    pub fn push_block(&mut self, id: Option<&str>, block: &[u8]) {
        self.block_ids.push(id.unwrap_or_default().as_bytes());
        self.blocks.push(block);
    }

    /// The blocks for the replay history, oldest first, with their ids
    /// (empty for none).
    pub fn blocks(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        let ids = self.block_ids.iter();
        ids.map(|id| std::str::from_utf8(id).unwrap_or_default())
            .zip(self.blocks.iter())
    }

    /// Marks the history before this batch's blocks as lost: a block was
    /// forwarded that it could not keep, and no replay may skip it. The
    /// blocks pushed so far are dropped.
    pub fn forget_history(&mut self) {
        self.block_ids.clear();
        self.blocks.clear();
        self.forgets_history = true;
    }

    /// Whether the history before this batch's blocks is to be forgotten.
    pub fn forgets_history(&self) -> bool {
        self.forgets_history
    }

    /// Appends everything `other` holds after what this batch holds.
    pub fn extend(&mut self, other: &IdBatch) {
        if other.forgets_history {
            self.forget_history();
        }
        if other.starts_window_over {
            self.start_window_over();
        }
        for (id, fingerprint) in other.events() {
            self.push_event(id, fingerprint);
        }
        for (id, block) in other.blocks() {
            self.push_block(Some(id), block);
        }
    }

    /// Keeps only the newest `ids` ids and `blocks` blocks.
    pub fn keep_last(&mut self, ids: usize, blocks: usize) {
        let cut = self.fingerprints.len().saturating_sub(ids);
        self.fingerprints.drain(..cut);
        self.ids.keep_last(ids);
        if self.blocks.len() > blocks {
            self.block_ids.keep_last(blocks);
            self.blocks.keep_last(blocks);
            // What went is history lost before the blocks that stay.
            self.forgets_history = true;
        }
    }

    /// Removes everything, keeping the buffers.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.fingerprints.clear();
        self.starts_window_over = false;
        self.block_ids.clear();
        self.blocks.clear();
        self.forgets_history = false;
    }

    /// The number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The number of bytes of ids and blocks.
    pub fn byte_len(&self) -> usize {
        self.ids.text.len() + self.block_ids.text.len() + self.blocks.text.len()
    }

    /// Whether the batch holds nothing to write: no id, no block, no
    /// history to forget and no window to start over.
    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
            && self.blocks.len() == 0
            && !self.forgets_history
            && !self.starts_window_over
    }
}

/// Byte strings back to back in one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Strings {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl Strings {
    fn push(&mut self, item: &[u8]) {
        self.text.extend_from_slice(item);
        self.ends.push(self.text.len());
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.text[start..self.ends[i]]
        })
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn keep_last(&mut self, n: usize) {
        let Some(cut) = self.len().checked_sub(n).filter(|&cut| cut > 0) else {
            return;
        };
        let offset = self.ends[cut - 1];
        self.text.drain(..offset);
        self.ends.drain(..cut);
        for end in &mut self.ends {
            *end -= offset;
        }
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
}

/// What [`TrackerStore::open`] hands the layer.
#[derive(Debug)]
pub struct Opened {
    /// The stream the request belongs to.
    pub key: StreamKey,
    /// The response attached to the stream's tracker, made with
    /// [`Tracker::attach`] right after the cursor was applied: its client
    /// has what the window held then. [`Attachment::tracker`] is the
    /// tracker, with the cursor applied.
    pub attachment: Attachment,
    /// Whether the client's cursor was in the window or the history;
    /// `None` without one.
    pub cursor_known: Option<bool>,
    /// What the replay history gives the client before the upstream's
    /// stream.
    pub replay: Replay,
    /// Where stamped ids start for this stream, unique to it and above any
    /// the stream had before (see
    /// [`SseResumeLayer::stamp_ids`](crate::SseResumeLayer::stamp_ids));
    /// `None` leaves it to the process's clock.
    pub stamp_epoch: Option<u64>,
}

/// Which tracker: a stream inside a scope.
///
/// The scope says whose stream it is (a session, a principal); a tracker
/// never crosses scopes. The stream says which one of theirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    scope: Arc<str>,
    stream: Arc<str>,
}

impl StreamKey {
    /// The key of `stream` inside `scope`.
    pub fn new(scope: &str, stream: &str) -> Self {
        Self {
            scope: scope.into(),
            stream: stream.into(),
        }
    }

    /// Whose stream it is.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Which stream of the scope it is.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scope, self.stream)
    }
}

/// A store failed to answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or took too long.
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// The store holds a value this crate cannot read.
    Corrupt(String),
    /// A write was refused because the store's queue is full.
    Backlogged,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(error) => write!(f, "tracker store unavailable: {error}"),
            StoreError::Corrupt(what) => write!(f, "tracker store holds a bad value: {what}"),
            StoreError::Backlogged => f.write_str("tracker store write queue is full"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Unavailable(error) => Some(&**error),
            _ => None,
        }
    }
}
