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
    /// The store that keeps the stream, and the batch on its way there;
    /// `None` when nothing keeps it (`MemoryStore`). Boxed: a response of
    /// such a stream carries a pointer rather than an empty batch.
    to: Option<Box<ToStore>>,
    stats: Stats,
    /// While the response reads its stream's upstream, the store's mark
    /// that it does, for other replicas to follow. Let go after the last
    /// batch.
    lease: Option<Lease>,
    /// How the stream ends when its upstream does.
    end: StreamEnd,
}

/// Where a recorder's batches go.
struct ToStore {
    key: StreamKey,
    sink: Arc<dyn RecordSink>,
    /// The stream's generation when the response opened.
    generation: u64,
    /// Whether batches carry the blocks, for the store's replay history.
    wants_blocks: bool,
    batch: IdBatch,
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
        let to = ToStore {
            key,
            sink: store,
            generation: stored.generation,
            wants_blocks: stored.keeps_blocks,
            batch: IdBatch::new(),
            muted: false,
        };
        Self {
            to: Some(Box::new(to)),
            stats,
            lease: None,
            end: StreamEnd::Ended,
        }
    }

    /// A recorder for a stream nothing keeps behind the layer.
    pub(crate) fn nowhere(stats: Stats) -> Self {
        Self {
            to: None,
            stats,
            lease: None,
            end: StreamEnd::Ended,
        }
    }

    /// Records nothing: another replica records the stream, and this
    /// response follows it.
    pub(crate) fn mute(&mut self) {
        if let Some(to) = &mut self.to {
            to.muted = true;
        }
    }

    /// Records again: the replica that recorded the stream went away, and
    /// this response reads the upstream itself now. With `hold`, it holds
    /// the stream as any response that reads an upstream and may linger:
    /// other replicas follow it rather than ask the upstream again.
    pub(crate) fn unmute(&mut self, hold: bool) {
        if let Some(to) = &mut self.to {
            to.muted = false;
            if hold {
                self.lease = to.sink.hold(&to.key);
                self.end = StreamEnd::Ended;
            }
        }
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

    /// Whether another replica holds the stream now: this one's lease
    /// lapsed, and the other went on from the upstream and took it. A
    /// hold then lets the stream go; a response whose client is attached
    /// records on, for its client's next cursor.
    pub(crate) fn is_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(Lease::is_lost)
    }

    /// This response's client went away, its stream held (`true`), or
    /// this response took a held stream over (`false`): the next batch
    /// says so, for a replica that follows the stream for a request
    /// without a cursor; with `sent_ids` when the client that went away
    /// had been sent ids (such a request may lack them).
    pub(crate) fn client_away(&mut self, away: bool, sent_ids: bool) {
        if let (Some(_), Some(to)) = (&self.lease, &mut self.to) {
            to.batch.mark_client_away(away, sent_ids);
        }
    }

    /// The upstream ended: the last batch says so, for the followers.
    pub(crate) fn end_stream(&mut self) {
        if let (Some(_), Some(to)) = (&self.lease, &mut self.to) {
            to.batch.end_stream(self.end);
        }
        self.flush();
    }

    /// The store to record into, unless nothing keeps the stream or
    /// another replica records it.
    fn recording(&mut self) -> Option<&mut ToStore> {
        self.to.as_deref_mut().filter(|to| !to.muted)
    }

    /// Hands on an id new to the stream, with the fingerprint of its
    /// event; `starts_over` when the window started over from it.
    // Inlined: most streams record nowhere, and then this asks one thing.
    #[inline]
    pub(crate) fn push(&mut self, id: &[u8], fingerprint: u64, starts_over: bool) {
        if self.to.is_some() {
            self.push_to_store(id, fingerprint, starts_over);
        }
    }

    fn push_to_store(&mut self, id: &[u8], fingerprint: u64, starts_over: bool) {
        let Some(to) = self.recording() else {
            return;
        };
        if starts_over {
            to.batch.start_window_over();
        }
        to.batch
            .push_event(&String::from_utf8_lossy(id), fingerprint);
        self.flush_if_full();
    }

    /// Whether the store keeps the blocks of a replay history itself.
    pub(crate) fn wants_blocks(&self) -> bool {
        self.to.as_ref().is_some_and(|to| to.wants_blocks)
    }

    /// Hands on a block for the history, with the id a client resumes
    /// from after it; `stamped` when the layer stamped that id.
    pub(crate) fn push_block(&mut self, id: Option<&str>, block: &[u8], stamped: bool) {
        if let Some(to) = self.recording().filter(|to| to.wants_blocks) {
            to.batch.push_kept_block(id, block, stamped);
            self.flush_if_full();
        }
    }

    pub(crate) fn forget_history(&mut self) {
        if let Some(to) = self.recording().filter(|to| to.wants_blocks) {
            to.batch.forget_history();
        }
    }

    fn flush_if_full(&mut self) {
        let Some(to) = &self.to else {
            return;
        };
        let batch = &to.batch;
        if batch.len() >= RECORD_BATCH
            || batch.blocks().len() >= RECORD_BATCH
            || batch.byte_len() >= RECORD_BATCH_BYTES
        {
            self.flush();
        }
    }

    // Inlined: called whenever the upstream is quiet, mostly with
    // nothing to write.
    #[inline]
    pub(crate) fn flush(&mut self) {
        if self.to.as_ref().is_some_and(|to| !to.batch.is_empty()) {
            self.write_batch();
        }
    }

    fn write_batch(&mut self) {
        let Some(to) = &mut self.to else {
            return;
        };
        let recorded = to.sink.record(&to.key, to.generation, &to.batch);
        let ids = to.batch.len();
        to.batch.clear();
        if let Err(error) = recorded {
            self.stats.store_error();
            let key = &to.key;
            tracing::warn!(%key, %error, ids, "could not record forwarded ids");
        }
    }

    pub(crate) fn key_for_logs(&self) -> String {
        self.to
            .as_ref()
            .map_or_else(|| "(unscoped)".to_owned(), |to| to.key.to_string())
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
        let to = self.to.as_deref();
        f.debug_struct("Recorder")
            .field("key", &to.map(|to| &to.key))
            .field("batch", &to.map_or(0, |to| to.batch.len()))
            .finish()
    }
}

/// The one store method the body needs, object safe so that the body is not
/// generic over the store.
trait RecordSink: Send + Sync {
    fn record(&self, key: &StreamKey, generation: u64, ids: &IdBatch) -> Result<(), StoreError>;
    fn hold(&self, key: &StreamKey) -> Option<Lease>;
}

impl<T: TrackerStore> RecordSink for T {
    fn record(&self, key: &StreamKey, generation: u64, ids: &IdBatch) -> Result<(), StoreError> {
        TrackerStore::record(self, key, generation, ids)
    }

    fn hold(&self, key: &StreamKey) -> Option<Lease> {
        TrackerStore::hold(self, key)
    }
}
