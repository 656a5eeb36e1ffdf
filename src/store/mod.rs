//! Where streams are kept behind the layer: the [`TrackerStore`] trait and
//! its stores.
//!
//! The layer keeps every stream it serves in process: its window of ids,
//! its replay history, its generation, and the responses attached to it.
//! A store is only what is kept *behind* that, over plain data, so that
//! other replicas and later requests see it:
//!
//! - [`MemoryStore`], the default, keeps nothing behind the layer: the
//!   streams in process are all there is.
//! - `RedisStore` (feature `redis`) keeps them in Redis or Valkey, shared
//!   by every replica of a gateway.
//!
//! # Writing a store
//!
//! [`TrackerStore`] has seven methods. A store implements two, both over
//! plain data; the other five have defaults that a store no other
//! replica shares keeps: two for following across replicas (the
//! [`follow`] module), two for stops across replicas
//! ([`broadcast_stop`](TrackerStore::broadcast_stop),
//! [`stops`](TrackerStore::stops)), and one that hands the store the
//! layer's bounds:
//!
//! - [`open`](TrackerStore::open) is called once per request that has a
//!   scope, before the inner service is called, and may do I/O: one round
//!   trip, ideally. It returns a [`Snapshot`] of the stream:
//!   [`Snapshot::InProcess`] when the store keeps nothing (the layer then
//!   resolves the cursor and replays from its own streams), or
//!   [`Snapshot::Stored`] with what the store keeps, the client's cursor
//!   applied: the stream the cursor belongs to, its window, its
//!   *generation*, and the replay.
//! - [`record`](TrackerStore::record) takes the ids (and, when the store
//!   keeps a history, the blocks) a response forwarded, in an [`IdBatch`],
//!   with the generation its response opened at. It must not wait: queue
//!   the batch, bounded, and write it in the background. Refuse (*fence*) a
//!   batch whose generation is older than the stream's: its ids were
//!   forwarded to a client that may have reconnected since.
//! - [`hold`](TrackerStore::hold) marks a stream as read from its upstream
//!   by this replica, for as long as the [`Lease`] it returns lives, and
//!   [`follow`](TrackerStore::follow) delivers, as a [`Follow`], what the
//!   replica that holds a stream records, from a position of its history;
//!   [`StoredStream::follow_from`] says when a stream is to be followed.
//! - [`set_limits`](TrackerStore::set_limits) hands the store the bounds
//!   set on the layer that it keeps too ([`StoreLimits`]): the window's
//!   length, the streams per scope and the replay history, each set once,
//!   on the layer.
//!
//! What a store must do with a cursor is written down as checks in the
//! conformance suite, `tower_sse_resume::test_util` (feature
//! `test-util`), which the crate's own stores run. A store that wraps
//! another, to watch what is recorded, say, delegates every method (left
//! to their defaults, `hold` and `follow` would turn following off, and
//! `broadcast_stop` and `stops` stops across replicas):
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use tower_sse_resume::store::follow::{Follow, Lease, Stop, Stops};
//! use tower_sse_resume::{
//!     IdBatch, MemoryStore, Snapshot, StoreError, StoreLimits, StreamKey, TrackerStore,
//! };
//!
//! struct Counted<T> {
//!     inner: T,
//!     ids: AtomicU64,
//! }
//!
//! impl<T: TrackerStore> TrackerStore for Counted<T> {
//!     async fn open(&self, key: &StreamKey, cursor: Option<&str>) -> Result<Snapshot, StoreError> {
//!         self.inner.open(key, cursor).await
//!     }
//!
//!     fn record(&self, key: &StreamKey, generation: u64, batch: &IdBatch) -> Result<(), StoreError> {
//!         self.ids.fetch_add(batch.len() as u64, Ordering::Relaxed);
//!         self.inner.record(key, generation, batch)
//!     }
//!
//!     fn hold(&self, key: &StreamKey) -> Option<Lease> {
//!         self.inner.hold(key)
//!     }
//!
//!     fn follow(&self, key: &StreamKey, position: u64) -> Option<Follow> {
//!         self.inner.follow(key, position)
//!     }
//!
//!     fn broadcast_stop(&self, stop: &Stop) -> bool {
//!         self.inner.broadcast_stop(stop)
//!     }
//!
//!     fn stops(&self) -> Option<Stops> {
//!         self.inner.stops()
//!     }
//!
//!     fn set_limits(&self, limits: StoreLimits) {
//!         self.inner.set_limits(limits)
//!     }
//! }
//!
//! let layer = tower_sse_resume::SseResumeLayer::new().store(Counted {
//!     inner: MemoryStore::new(),
//!     ids: AtomicU64::new(0),
//! });
//! # let _ = layer;
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::stream::{HistoryLimits, Replay};

pub mod follow;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub(crate) use follow::{Follow, Followed, Lease, Stop, Stops, StreamEnd};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStats, RedisStore};

/// What keeps a layer's streams behind it. See the [module docs](self) for
/// writing one.
///
/// Every method may be called concurrently from many requests.
pub trait TrackerStore: Send + Sync + 'static {
    /// Loads the stream of `key` for a new response, with the client's
    /// `cursor` applied, in one round trip.
    ///
    /// With a cursor, the stream is `key`'s when it knows the cursor, else
    /// the stream of the scope that recorded it, else `key`'s. The cursor is
    /// then applied there: with a replay history that holds it, the blocks
    /// after it are the replay and the window stays; otherwise the ids
    /// after it are forgotten (all of them when it is unknown, and with a
    /// history that is a [`Replay::Gap`]) and the stream's generation goes
    /// up.
    fn open(
        &self,
        key: &StreamKey,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Keeps what a response of the stream of `key` forwarded, oldest
    /// first. `generation` is the stream's generation when that response
    /// opened: refuse the batch when the stream has a newer one. The batch
    /// is reused once this returns: copy what must outlive the call.
    ///
    /// This must not wait on I/O: a store that writes elsewhere queues the
    /// batch (bounded) and writes it in the background, coalescing batches.
    /// It is only called for streams the store opened with
    /// [`Snapshot::Stored`].
    fn record(&self, key: &StreamKey, generation: u64, batch: &IdBatch) -> Result<(), StoreError>;

    /// Marks the stream of `key` as read from its upstream by this process,
    /// for as long as the returned lease lives, so that a client that
    /// reconnects to another replica follows it there
    /// ([`StoredStream::follow_from`]). Called for a response that may
    /// linger, once it is served by its upstream. `None`, the default,
    /// for a store that no other replica shares.
    fn hold(&self, key: &StreamKey) -> Option<Lease> {
        let _ = key;
        None
    }

    /// Follows the stream of `key` that another replica holds, from after
    /// the block at `position` of its history, as that replica records it,
    /// until it ends. Called when [`open`](Self::open) gave
    /// [`StoredStream::follow_from`]. `None`, the default, sends the
    /// request upstream instead.
    fn follow(&self, key: &StreamKey, position: u64) -> Option<Follow> {
        let _ = (key, position);
        None
    }

    /// Tells every replica that shares the store of `stop`, this one
    /// included, through [`stops`](Self::stops): the one that reads the
    /// stream's upstream ends it. Must not wait. Returns whether it was
    /// sent. `false`, the default, for a store that no other replica
    /// shares: the layer stops what this process holds itself.
    fn broadcast_stop(&self, stop: &Stop) -> bool {
        let _ = stop;
        false
    }

    /// The stops the replicas sharing the store broadcast, for the layer to
    /// carry out in this process. `None`, the default, for a store that no
    /// other replica shares.
    fn stops(&self) -> Option<Stops> {
        None
    }

    /// Takes the layer's bounds that the store keeps too (the window's
    /// length, the streams per scope, the replay history), so that each is
    /// set once, on the layer. The layer calls it when it is given the
    /// store ([`SseResumeLayer::store`](crate::SseResumeLayer::store)) and
    /// whenever one of them changes afterwards, before any request. A
    /// store that keeps nothing of its own ignores it: the default.
    fn set_limits(&self, limits: StoreLimits) {
        let _ = limits;
    }
}

/// The bounds of a layer that a store keeps too, as
/// [`TrackerStore::set_limits`] hands them over: each is set on the
/// layer ([`SseResumeLayer::window_len`](crate::SseResumeLayer::window_len),
/// [`max_streams_per_scope`](crate::SseResumeLayer::max_streams_per_scope),
/// [`history`](crate::SseResumeLayer::history)), and only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreLimits {
    window_len: usize,
    max_streams_per_scope: usize,
    history: Option<HistoryLimits>,
}

impl Default for StoreLimits {
    /// The layer's defaults: a window of 1024 ids, 64 streams per scope,
    /// no history.
    fn default() -> Self {
        Self::from(&crate::stream::StreamLimits::default())
    }
}

impl StoreLimits {
    /// The most ids each stream's window remembers (at least 1).
    pub fn window_len(&self) -> usize {
        self.window_len
    }

    /// The most streams kept per scope (at least 1).
    pub fn max_streams_per_scope(&self) -> usize {
        self.max_streams_per_scope
    }

    /// The replay history each stream keeps, if any.
    pub fn history(&self) -> Option<HistoryLimits> {
        self.history
    }

    /// These limits with a window of `len` ids (at least 1): for a
    /// store's own tests, which have no layer.
    pub fn with_window_len(mut self, len: usize) -> Self {
        self.window_len = len.max(1);
        self
    }

    /// These limits with `max` streams per scope (at least 1).
    pub fn with_max_streams_per_scope(mut self, max: usize) -> Self {
        self.max_streams_per_scope = max.max(1);
        self
    }

    /// These limits with a replay history within `history`, or none.
    pub fn with_history(mut self, history: Option<HistoryLimits>) -> Self {
        self.history = history;
        self
    }
}

impl From<&crate::stream::StreamLimits> for StoreLimits {
    fn from(limits: &crate::stream::StreamLimits) -> Self {
        Self {
            window_len: limits.window_len.max(1),
            max_streams_per_scope: limits.max_streams_per_scope.max(1),
            history: limits.history,
        }
    }
}

/// What [`TrackerStore::open`] found of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Snapshot {
    /// The store keeps nothing: the layer's streams in process are all
    /// there is, and the layer resolves the cursor and replays from them.
    InProcess,
    /// What the store keeps of the stream, the cursor applied.
    Stored(StoredStream),
}

/// What a store keeps of a stream, as [`TrackerStore::open`] returns it,
/// the client's cursor applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredStream {
    /// The stream of the request's scope that the request belongs to: its
    /// own, or the one its cursor was recorded on.
    pub stream: String,
    /// The window: the ids forwarded on the stream, oldest first, each
    /// with the fingerprint of its event
    /// ([`Block::fingerprint`](crate::framer::Block::fingerprint)).
    pub ids: Vec<(String, u64)>,
    /// The stream's generation, which every cursor applied bumps: the
    /// responses of this process that opened before it stop recording, and
    /// [`TrackerStore::record`] gets it back with each batch.
    pub generation: u64,
    /// Whether the client's cursor was known to the stream; `None` without
    /// one.
    pub cursor_known: Option<bool>,
    /// What the replay history gives the client before the upstream's
    /// stream: [`Replay::Off`] without a history or a cursor.
    pub replay: Replay,
    /// Where stamped ids start for this response, unique to it and above
    /// any the stream had before (see
    /// [`SseResumeLayer::stamp_ids`](crate::SseResumeLayer::stamp_ids));
    /// `None` leaves it to the process's clock.
    pub stamp_epoch: Option<u64>,
    /// Whether the store keeps a replay history of the stream itself: then
    /// the batches it records carry the blocks forwarded.
    pub keeps_blocks: bool,
    /// Whether the stream is complete: a per-request stream whose upstream
    /// ended, resumed from its history alone (the replay, then the end; a
    /// client that has all of it gets `204 No Content`). Set with a
    /// [`Replay::Blocks`] only.
    pub complete: bool,
    /// Set when another replica holds the stream (it reads the stream's
    /// upstream), or the stream's upstream ended: the position in the
    /// history of the newest block of the replay (without a cursor, of the
    /// history's newest block, and only while another replica holds the
    /// stream), from which the response may
    /// [follow](TrackerStore::follow) the stream instead of calling the
    /// upstream.
    pub follow_from: Option<u64>,
    /// Set with a follow without a cursor from where the holder's client
    /// went away, when that client had been sent ids: the request names
    /// none of them, and may be that client, lacking them. Its response
    /// starts with the gap signal.
    pub gap_first: bool,
}

impl StoredStream {
    /// An empty stream named `stream`, at generation 0, no cursor applied.
    pub fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            ids: Vec::new(),
            generation: 0,
            cursor_known: None,
            replay: Replay::Off,
            stamp_epoch: None,
            keeps_blocks: false,
            complete: false,
            follow_from: None,
            gap_first: false,
        }
    }
}

/// Ids forwarded on a stream, oldest first, as [`TrackerStore::record`]
/// receives them, and for a store that
/// [keeps blocks](StoredStream::keeps_blocks), the blocks for its replay
/// history: a few buffers, not one allocation per id.
///
/// The layer fills it; a store reads it. [`push`](Self::push),
/// [`push_event`](Self::push_event) and [`push_block`](Self::push_block)
/// build one, to hand a store in its own tests. A store that keeps a
/// batch past [`record`](TrackerStore::record) clones it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdBatch {
    ids: Strings,
    /// The fingerprint of each id's event, at the same places as `ids`.
    fingerprints: Vec<u64>,
    starts_window_over: bool,
    block_ids: Strings,
    blocks: Strings,
    /// Whether the id of each block is one the layer stamped, at the same
    /// places as `blocks`: no event had it, and the window holds none.
    stamped: Vec<bool>,
    forgets_history: bool,
    stream_end: Option<StreamEnd>,
    /// Whether the client of the response that reads the stream went away
    /// (`true`, its stream held) or came back (`false`), and after how
    /// many of this batch's blocks.
    client_away: Option<(bool, usize)>,
    /// Whether the client that went away had been sent ids.
    away_sent_ids: bool,
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
    pub(crate) fn start_window_over(&mut self) {
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
        self.push_kept_block(id, block, false);
    }

    /// [`push_block`](Self::push_block), `stamped` when the id is one the
    /// layer stamped on the block rather than its event's own.
    pub(crate) fn push_kept_block(&mut self, id: Option<&str>, block: &[u8], stamped: bool) {
        self.block_ids.push(id.unwrap_or_default().as_bytes());
        self.blocks.push(block);
        self.stamped.push(stamped);
    }

    /// The blocks for the replay history, oldest first, with their ids
    /// (empty for none).
    pub fn blocks(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        let ids = self.block_ids.iter();
        ids.map(|id| std::str::from_utf8(id).unwrap_or_default())
            .zip(self.blocks.iter())
    }

    /// Whether the id of each block, in the order of
    /// [`blocks`](Self::blocks), is one the layer stamped: no event of
    /// the window has it.
    #[cfg(feature = "redis")]
    pub(crate) fn stamped(&self) -> impl ExactSizeIterator<Item = bool> + '_ {
        self.stamped.iter().copied()
    }

    /// Marks the history before this batch's blocks as lost: a block was
    /// forwarded that it could not keep, and no replay may skip it. The
    /// blocks pushed so far are dropped.
    pub(crate) fn forget_history(&mut self) {
        self.block_ids.clear();
        self.blocks.clear();
        self.stamped.clear();
        self.forgets_history = true;
    }

    /// Whether the history before this batch's blocks is to be forgotten.
    pub fn forgets_history(&self) -> bool {
        self.forgets_history
    }

    /// Marks the stream's upstream as ended after this batch: a replica
    /// that follows the stream ends its response there.
    pub(crate) fn end_stream(&mut self, end: StreamEnd) {
        self.stream_end = Some(end);
    }

    /// How the stream's upstream ended after this batch, if it did.
    pub fn stream_end(&self) -> Option<StreamEnd> {
        self.stream_end
    }

    /// Marks that the client of the response reading the stream went away
    /// after the blocks pushed so far (`true`), or that a client took the
    /// stream over (`false`): a replica that follows the stream for a
    /// request without a cursor starts where the client went away, as a
    /// takeover would. With `sent_ids`, that client had been sent ids: a
    /// request without a cursor names none of them, and may lack them.
    pub(crate) fn mark_client_away(&mut self, away: bool, sent_ids: bool) {
        self.client_away = Some((away, self.blocks.len()));
        self.away_sent_ids = away && sent_ids;
    }

    /// Whether the reading response's client went away (`true`) or came
    /// back (`false`), and after how many of this batch's blocks, if
    /// either.
    pub fn client_away(&self) -> Option<(bool, usize)> {
        self.client_away
    }

    /// Whether the client that went away (see
    /// [`client_away`](Self::client_away)) had been sent ids: a follow
    /// without a cursor from where it went away starts with the gap signal.
    pub fn away_client_sent_ids(&self) -> bool {
        self.away_sent_ids
    }

    /// Appends everything `other` holds after what this batch holds: a
    /// queued store coalescing batches.
    #[cfg(feature = "redis")]
    pub(crate) fn extend(&mut self, other: &IdBatch) {
        self.stream_end = other.stream_end.or(self.stream_end);
        let blocks_before = self.blocks.len();
        if let Some((away, after)) = other.client_away {
            self.client_away = Some((away, blocks_before + after));
            self.away_sent_ids = other.away_sent_ids;
        }
        if other.forgets_history {
            self.forget_history();
        }
        if other.starts_window_over {
            self.start_window_over();
        }
        for (id, fingerprint) in other.events() {
            self.push_event(id, fingerprint);
        }
        for ((id, block), stamped) in other.blocks().zip(other.stamped()) {
            self.push_kept_block(Some(id), block, stamped);
        }
    }

    /// Keeps only the newest `ids` ids and `blocks` blocks.
    #[cfg(feature = "redis")]
    pub(crate) fn keep_last(&mut self, ids: usize, blocks: usize) {
        let cut = self.fingerprints.len().saturating_sub(ids);
        self.fingerprints.drain(..cut);
        self.ids.keep_last(ids);
        if self.blocks.len() > blocks {
            let cut = self.blocks.len() - blocks;
            if let Some((_, after)) = &mut self.client_away {
                *after = after.saturating_sub(cut);
            }
            self.block_ids.keep_last(blocks);
            self.blocks.keep_last(blocks);
            self.stamped.drain(..cut);
            // What went is history lost before the blocks that stay.
            self.forgets_history = true;
        }
    }

    /// Removes everything, keeping the buffers.
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.fingerprints.clear();
        self.starts_window_over = false;
        self.block_ids.clear();
        self.blocks.clear();
        self.stamped.clear();
        self.forgets_history = false;
        self.stream_end = None;
        self.client_away = None;
        self.away_sent_ids = false;
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
            && self.stream_end.is_none()
            && self.client_away.is_none()
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

    #[cfg(feature = "redis")]
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

/// Which stream: a stream inside a scope.
///
/// The scope says whose stream it is (a session, a principal); a stream
/// never crosses scopes. The stream key says which one of theirs.
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
        write!(f, "{}/{}", self.scope.escape_debug(), self.stream)
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

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::IdBatch;

    /// Which of a batch's blocks have a stamped id stays with each block
    /// however batches are joined and cut: a stamped id taken for an
    /// event's own would join the window, and an event's own taken for a
    /// stamped one would leave it.
    #[test]
    fn a_blocks_stamp_stays_with_it_through_joins_and_cuts() {
        let mut first = IdBatch::new();
        first.push_block(Some("1"), b"id: 1\n\n");
        first.push_kept_block(Some("7-1"), b"id: 7-1\n\n", true);
        first.push_kept_block(Some("7-2"), b"id: 7-2\n\n", true);
        let mut second = IdBatch::new();
        second.push_block(None, b"data: x\n\n");
        second.push_block(Some("3"), b"id: 3\n\n");
        first.extend(&second);
        let stamps = |batch: &IdBatch| -> Vec<(String, bool)> {
            (batch.blocks().zip(batch.stamped()))
                .map(|((id, _), stamped)| (id.to_owned(), stamped))
                .collect()
        };
        let expect = |stamps: &[(&str, bool)]| -> Vec<(String, bool)> {
            (stamps.iter())
                .map(|&(id, stamped)| (id.to_owned(), stamped))
                .collect()
        };
        let all = [
            ("1", false),
            ("7-1", true),
            ("7-2", true),
            ("", false),
            ("3", false),
        ];
        assert_eq!(stamps(&first), expect(&all));
        first.keep_last(0, 3);
        assert_eq!(stamps(&first), expect(&all[2..]));
        first.forget_history();
        first.push_block(Some("4"), b"id: 4\n\n");
        assert_eq!(stamps(&first), expect(&[("4", false)]));
    }
}
