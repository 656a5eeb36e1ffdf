//! Hands the ids a stream forwarded to the store, in batches.

use std::fmt;
use std::sync::Arc;

use crate::stats::Stats;
use crate::store::{IdBatch, Lease, StoreError, StreamEnd, StreamKey, TrackerStore};
use crate::stream::Stored;

/// Ids recorded since the last hand-over to the store, at most this many.
const RECORD_BATCH: usize = 64;
/// Bytes of ids and blocks recorded since the last hand-over, at most about
/// this many.
const RECORD_BATCH_BYTES: usize = 64 * 1024;

/// Hands recorded ids to the store in batches, and the last batch when the
/// stream ends or the client goes away.
pub(crate) struct Recorder {
    key: Option<StreamKey>,
    /// Where batches go; `None` when nothing keeps them.
    sink: Option<Arc<dyn RecordSink>>,
    /// The stream's generation when the response opened.
    generation: u64,
    /// Whether batches carry the blocks, for the store's replay history.
    wants_blocks: bool,
    batch: IdBatch,
    stats: Stats,
    /// While the response reads its stream's upstream, the store's mark
    /// that it does, for other replicas to follow. Let go after the last
    /// batch.
    lease: Option<Lease>,
    /// How the stream ends when its upstream does.
    end: StreamEnd,
    /// Records nothing while another replica records the stream.
    muted: bool,
}

impl Recorder {
    /// A recorder for a stream `store` keeps.
    pub(crate) fn to_store<T: TrackerStore>(
        store: Arc<T>,
        key: StreamKey,
        stored: Stored,
        stats: Stats,
    ) -> Self {
        Self {
            key: Some(key),
            sink: Some(store),
            generation: stored.generation,
            wants_blocks: stored.keeps_blocks,
            batch: IdBatch::new(),
            stats,
            lease: None,
            end: StreamEnd::Ended,
            muted: false,
        }
    }

    /// A recorder for a stream nothing keeps behind the layer.
    pub(crate) fn nowhere(stats: Stats) -> Self {
        Self {
            key: None,
            sink: None,
            generation: 0,
            wants_blocks: false,
            batch: IdBatch::new(),
            stats,
            lease: None,
            end: StreamEnd::Ended,
            muted: false,
        }
    }

    /// Records nothing: another replica records the stream, and this
    /// response follows it.
    pub(crate) fn mute(&mut self) {
        self.muted = true;
    }

    /// Records again: the replica that recorded the stream went away, and
    /// this response reads the upstream itself now.
    pub(crate) fn unmute(&mut self) {
        self.muted = false;
    }

    /// Holds `lease` while the response reads its stream's upstream; a
    /// per-request stream is complete when that ends.
    pub(crate) fn hold(&mut self, lease: Option<Lease>, per_request: bool) {
        self.lease = lease;
        self.end = if per_request {
            StreamEnd::Complete
        } else {
            StreamEnd::Ended
        };
    }

    /// Whether a response on another replica follows the stream now.
    pub(crate) fn is_followed(&self) -> bool {
        self.lease.as_ref().is_some_and(Lease::is_followed)
    }

    /// The upstream ended: the last batch says so, for the followers.
    pub(crate) fn end_stream(&mut self) {
        if self.lease.is_some() {
            self.batch.end_stream(self.end);
        }
        self.flush();
    }

    /// Hands on an id new to the stream, with the fingerprint of its
    /// event; `starts_over` when the window started over from it.
    pub(crate) fn push(&mut self, id: &[u8], fingerprint: u64, starts_over: bool) {
        if self.sink.is_none() || self.muted {
            return;
        }
        if starts_over {
            self.batch.start_window_over();
        }
        self.batch
            .push_event(&String::from_utf8_lossy(id), fingerprint);
        self.flush_if_full();
    }

    /// Whether the store keeps the blocks of a replay history itself.
    pub(crate) fn wants_blocks(&self) -> bool {
        self.wants_blocks
    }

    pub(crate) fn push_block(&mut self, id: Option<&str>, block: &[u8]) {
        if self.wants_blocks && !self.muted {
            self.batch.push_block(id, block);
            self.flush_if_full();
        }
    }

    pub(crate) fn forget_history(&mut self) {
        if self.wants_blocks && !self.muted {
            self.batch.forget_history();
        }
    }

    fn flush_if_full(&mut self) {
        let batch = &self.batch;
        if batch.len() >= RECORD_BATCH
            || batch.blocks().len() >= RECORD_BATCH
            || batch.byte_len() >= RECORD_BATCH_BYTES
        {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        let (Some(sink), Some(key)) = (&self.sink, &self.key) else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let recorded = sink.record(key, self.generation, &self.batch);
        let ids = self.batch.len();
        self.batch.clear();
        if let Err(error) = recorded {
            self.stats.store_error();
            tracing::warn!(%key, %error, ids, "could not record forwarded ids");
        }
    }

    pub(crate) fn key_for_logs(&self) -> String {
        self.key
            .as_ref()
            .map_or_else(|| "(unscoped)".to_owned(), StreamKey::to_string)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
        // After the last batch: the store lets the stream go in order.
        drop(self.lease.take());
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("key", &self.key)
            .field("batch", &self.batch.len())
            .finish()
    }
}

/// The one store method the body needs, object safe so that the body is not
/// generic over the store.
trait RecordSink: Send + Sync {
    fn record(&self, key: &StreamKey, generation: u64, ids: &IdBatch) -> Result<(), StoreError>;
}

impl<T: TrackerStore> RecordSink for T {
    fn record(&self, key: &StreamKey, generation: u64, ids: &IdBatch) -> Result<(), StoreError> {
        TrackerStore::record(self, key, generation, ids)
    }
}
