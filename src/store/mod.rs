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

use crate::tracker::Tracker;

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
    /// With a client cursor, the stream is the one of `scope` that recorded
    /// it (falling back to `stream`), and the cursor is applied there. A
    /// store that can do all of it in one round trip should override this.
    fn open(
        &self,
        scope: &str,
        stream: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<Opened, StoreError>> + Send {
        async move {
            let found = match cursor {
                Some(id) => self.find_stream(scope, id).await?,
                None => None,
            };
            let key = StreamKey::new(scope, found.as_deref().unwrap_or(stream));
            let cursor_known = match cursor {
                Some(id) => Some(self.apply_cursor(&key, id).await?),
                None => None,
            };
            let tracker = self.load(&key).await?;
            Ok(Opened {
                key,
                tracker,
                cursor_known,
            })
        }
    }
}

/// Ids forwarded on a stream, oldest first, as [`TrackerStore::record`]
/// receives them: one buffer, not one allocation per id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdBatch {
    text: String,
    ends: Vec<usize>,
}

impl IdBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an id after the others.
    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    /// The ids, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.text[start..self.ends[i]]
        })
    }

    /// Removes every id, keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// The number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no id.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// What [`TrackerStore::open`] hands the layer.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The stream the request belongs to.
    pub key: StreamKey,
    /// Its tracker, with the client's cursor applied.
    pub tracker: Tracker,
    /// Whether the client's cursor was in the window; `None` without one.
    pub cursor_known: Option<bool>,
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
