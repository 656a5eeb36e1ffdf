//! Counters of what the layer did, read through a cheap handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A handle on the layer's counters. Clones share them.
///
/// Get one from [`SseResumeLayer::stats`](crate::SseResumeLayer::stats).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    events_forwarded: AtomicU64,
    duplicates_dropped: AtomicU64,
    cursors_injected: AtomicU64,
    unknown_cursors: AtomicU64,
    store_errors: AtomicU64,
    events_replayed: AtomicU64,
    gaps: AtomicU64,
    streams: AtomicU64,
    history_bytes: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Blocks that dispatch an event, forwarded to clients.
    pub events_forwarded: u64,
    /// Blocks dropped because the client's stream already carried their id.
    pub duplicates_dropped: u64,
    /// Requests sent upstream with a `Last-Event-ID` the layer added.
    pub cursors_injected: u64,
    /// Client cursors their stream did not know, which cleared its window.
    pub unknown_cursors: u64,
    /// Store calls that failed or timed out.
    pub store_errors: u64,
    /// Blocks sent to reconnecting clients from the replay history.
    pub events_replayed: u64,
    /// Reconnecting clients whose cursor the replay history did not hold,
    /// told so with a gap event.
    pub gaps: u64,
    /// Streams the layer keeps in process now.
    pub streams: u64,
    /// Bytes of blocks the replay histories kept in process hold now.
    pub history_bytes: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.counters;
        StatsSnapshot {
            events_forwarded: c.events_forwarded.load(Relaxed),
            duplicates_dropped: c.duplicates_dropped.load(Relaxed),
            cursors_injected: c.cursors_injected.load(Relaxed),
            unknown_cursors: c.unknown_cursors.load(Relaxed),
            store_errors: c.store_errors.load(Relaxed),
            events_replayed: c.events_replayed.load(Relaxed),
            gaps: c.gaps.load(Relaxed),
            streams: c.streams.load(Relaxed),
            history_bytes: c.history_bytes.load(Relaxed),
        }
    }

    pub(crate) fn add_body_counts(&self, forwarded: u64, dropped: u64) {
        if forwarded > 0 {
            self.counters.events_forwarded.fetch_add(forwarded, Relaxed);
        }
        if dropped > 0 {
            self.counters.duplicates_dropped.fetch_add(dropped, Relaxed);
        }
    }

    pub(crate) fn cursor_injected(&self) {
        self.counters.cursors_injected.fetch_add(1, Relaxed);
    }

    pub(crate) fn unknown_cursor(&self) {
        self.counters.unknown_cursors.fetch_add(1, Relaxed);
    }

    pub(crate) fn add_replayed(&self, events: u64) {
        self.counters.events_replayed.fetch_add(events, Relaxed);
    }

    pub(crate) fn gap(&self) {
        self.counters.gaps.fetch_add(1, Relaxed);
    }

    pub(crate) fn add_streams(&self, delta: i64) {
        add_signed(&self.counters.streams, delta);
    }

    pub(crate) fn add_history_bytes(&self, delta: i64) {
        add_signed(&self.counters.history_bytes, delta);
    }

    pub(crate) fn store_error(&self) {
        self.counters.store_errors.fetch_add(1, Relaxed);
    }
}

/// Moves a gauge by `delta`.
fn add_signed(gauge: &AtomicU64, delta: i64) {
    if delta > 0 {
        gauge.fetch_add(delta.unsigned_abs(), Relaxed);
    } else if delta < 0 {
        gauge.fetch_sub(delta.unsigned_abs(), Relaxed);
    }
}
