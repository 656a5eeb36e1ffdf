//! [`MemoryStore`]: nothing behind the layer's own streams.

use std::future::{Future, ready};

use super::{IdBatch, Snapshot, StoreError, StreamKey, TrackerStore};

/// Keeps nothing behind the layer: the default store.
///
/// The layer keeps every stream in process, bounded (see
/// [`SseResumeLayer::max_streams`](crate::SseResumeLayer::max_streams) and
/// the knobs beside it), and with this store that is all the state there
/// is: every service made from one layer shares it, and it is gone when
/// the process ends. For many replicas, use
/// `RedisStore` (feature `redis`).
///
/// # Examples
///
/// ```
/// use tower_sse_resume::{HistoryLimits, MemoryStore, SseResumeLayer};
///
/// // The same as `SseResumeLayer::new()`, with a replay history.
/// let layer = SseResumeLayer::new()
///     .store(MemoryStore::new())
///     .history(HistoryLimits::new());
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MemoryStore;

impl MemoryStore {
    /// The store.
    pub fn new() -> Self {
        Self
    }
}

impl TrackerStore for MemoryStore {
    fn open(
        &self,
        _key: &StreamKey,
        _cursor: Option<&str>,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        ready(Ok(Snapshot::InProcess))
    }

    fn record(
        &self,
        _key: &StreamKey,
        _generation: u64,
        _batch: &IdBatch,
    ) -> Result<(), StoreError> {
        // Never called: a stream opened in process records nowhere else.
        Ok(())
    }
}
