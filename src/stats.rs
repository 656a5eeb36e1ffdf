//! Counters of what the layer did, read through a cheap handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A handle on the layer's counters. Clones share them.
///
/// Get one from [`SseResumeLayer::stats`](crate::SseResumeLayer::stats).
///
/// With the `metrics` cargo feature, every counter also goes, as it moves,
/// to the recorder installed for the [`metrics`](https://docs.rs/metrics)
/// facade (a Prometheus exporter, say; this crate ships none), by
/// Prometheus names: `sse_resume_` and the field of [`StatsSnapshot`],
/// with `_total` for counters (`sse_resume_events_forwarded_total`), and
/// without it for the gauges `sse_resume_streams`,
/// `sse_resume_history_bytes` and `sse_resume_held_streams`.
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
    held: AtomicU64,
    takeovers: AtomicU64,
    linger_expiries: AtomicU64,
    held_evicted: AtomicU64,
    events_held: AtomicU64,
    completes_replayed: AtomicU64,
    keep_alives: AtomicU64,
    follows: AtomicU64,
    follows_lost: AtomicU64,
    follows_resumed: AtomicU64,
    credentials_changed: AtomicU64,
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
    /// Streams held now: their client went away, and the layer reads on
    /// ([`SseResumeLayer::linger`](crate::SseResumeLayer::linger)).
    pub held: u64,
    /// Reconnects that took over a held stream instead of a new upstream
    /// request.
    pub takeovers: u64,
    /// Holds that ended because no client came back in time.
    pub linger_expiries: u64,
    /// Holds ended early to keep within
    /// [`SseResumeLayer::max_held_streams`](crate::SseResumeLayer::max_held_streams).
    pub held_evicted: u64,
    /// Blocks that dispatch an event, recorded while their stream was
    /// held.
    pub events_held: u64,
    /// Resumes of a complete per-request stream, answered from the history
    /// without an upstream request.
    pub completes_replayed: u64,
    /// Keep-alive comments sent to quiet streams
    /// ([`SseResumeLayer::keep_alive`](crate::SseResumeLayer::keep_alive)).
    pub keep_alives: u64,
    /// Reconnects that followed a stream another replica holds, instead
    /// of a new upstream request ([`TrackerStore::follow`](crate::TrackerStore::follow)).
    pub follows: u64,
    /// Follows that ended with the gap signal: the holder of a
    /// per-request stream went away without ending it, the store stayed
    /// unreachable, or the upstream could not be asked in its place.
    pub follows_lost: u64,
    /// Follows of a standing stream whose holder went away, that went on
    /// from the upstream, asked from the stream's last id.
    pub follows_resumed: u64,
    /// Requests whose credentials were not those of their scope's
    /// previous request: a refreshed token, or another client that knows
    /// the scope. They found nothing the layer kept for the other
    /// credentials ([`SseResumeLayer::credentials`](crate::SseResumeLayer::credentials)).
    pub credentials_changed: u64,
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
            held: c.held.load(Relaxed),
            takeovers: c.takeovers.load(Relaxed),
            linger_expiries: c.linger_expiries.load(Relaxed),
            held_evicted: c.held_evicted.load(Relaxed),
            events_held: c.events_held.load(Relaxed),
            completes_replayed: c.completes_replayed.load(Relaxed),
            keep_alives: c.keep_alives.load(Relaxed),
            follows: c.follows.load(Relaxed),
            follows_lost: c.follows_lost.load(Relaxed),
            follows_resumed: c.follows_resumed.load(Relaxed),
            credentials_changed: c.credentials_changed.load(Relaxed),
        }
    }

    pub(crate) fn add_body_counts(&self, forwarded: u64, dropped: u64) {
        if forwarded > 0 {
            self.counters.events_forwarded.fetch_add(forwarded, Relaxed);
            report::count("sse_resume_events_forwarded_total", forwarded);
        }
        if dropped > 0 {
            self.counters.duplicates_dropped.fetch_add(dropped, Relaxed);
            report::count("sse_resume_duplicates_dropped_total", dropped);
        }
    }

    pub(crate) fn cursor_injected(&self) {
        self.counters.cursors_injected.fetch_add(1, Relaxed);
        report::count("sse_resume_cursors_injected_total", 1);
    }

    pub(crate) fn unknown_cursor(&self) {
        self.counters.unknown_cursors.fetch_add(1, Relaxed);
        report::count("sse_resume_unknown_cursors_total", 1);
    }

    pub(crate) fn add_replayed(&self, events: u64) {
        self.counters.events_replayed.fetch_add(events, Relaxed);
        report::count("sse_resume_events_replayed_total", events);
    }

    pub(crate) fn gap(&self) {
        self.counters.gaps.fetch_add(1, Relaxed);
        report::count("sse_resume_gaps_total", 1);
    }

    pub(crate) fn add_streams(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        add_signed(&self.counters.streams, delta);
        report::gauge("sse_resume_streams", delta);
    }

    pub(crate) fn add_history_bytes(&self, delta: i64) {
        add_signed(&self.counters.history_bytes, delta);
        report::gauge("sse_resume_history_bytes", delta);
    }

    pub(crate) fn add_held(&self, delta: i64) {
        add_signed(&self.counters.held, delta);
        report::gauge("sse_resume_held_streams", delta);
    }

    pub(crate) fn takeover(&self) {
        self.counters.takeovers.fetch_add(1, Relaxed);
        report::count("sse_resume_takeovers_total", 1);
    }

    pub(crate) fn linger_expired(&self) {
        self.counters.linger_expiries.fetch_add(1, Relaxed);
        report::count("sse_resume_linger_expiries_total", 1);
    }

    pub(crate) fn held_evicted(&self) {
        self.counters.held_evicted.fetch_add(1, Relaxed);
        report::count("sse_resume_held_evicted_total", 1);
    }

    pub(crate) fn add_events_held(&self, events: u64) {
        self.counters.events_held.fetch_add(events, Relaxed);
        report::count("sse_resume_events_held_total", events);
    }

    pub(crate) fn complete_replayed(&self) {
        self.counters.completes_replayed.fetch_add(1, Relaxed);
        report::count("sse_resume_completes_replayed_total", 1);
    }

    pub(crate) fn keep_alive(&self) {
        self.counters.keep_alives.fetch_add(1, Relaxed);
        report::count("sse_resume_keep_alives_total", 1);
    }

    pub(crate) fn follow(&self) {
        self.counters.follows.fetch_add(1, Relaxed);
        report::count("sse_resume_follows_total", 1);
    }

    pub(crate) fn follow_lost(&self) {
        self.counters.follows_lost.fetch_add(1, Relaxed);
        report::count("sse_resume_follows_lost_total", 1);
    }

    pub(crate) fn follow_resumed(&self) {
        self.counters.follows_resumed.fetch_add(1, Relaxed);
        report::count("sse_resume_follows_resumed_total", 1);
    }

    pub(crate) fn credentials_changed(&self) {
        self.counters.credentials_changed.fetch_add(1, Relaxed);
        report::count("sse_resume_credentials_changed_total", 1);
    }

    pub(crate) fn store_error(&self) {
        self.counters.store_errors.fetch_add(1, Relaxed);
        report::count("sse_resume_store_errors_total", 1);
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

/// With the `metrics` feature, every counter also goes to the `metrics`
/// facade, to whatever recorder the application installed, by Prometheus
/// names (`sse_resume_…_total` for counters; gauges without the suffix).
/// Without it, nothing.
mod report {
    #[cfg(feature = "metrics")]
    pub(super) fn count(name: &'static str, n: u64) {
        metrics::counter!(name).increment(n);
    }

    #[cfg(feature = "metrics")]
    pub(super) fn gauge(name: &'static str, delta: i64) {
        metrics::gauge!(name).increment(delta as f64);
    }

    #[cfg(not(feature = "metrics"))]
    pub(super) fn count(_name: &'static str, _n: u64) {}

    #[cfg(not(feature = "metrics"))]
    pub(super) fn gauge(_name: &'static str, _delta: i64) {}
}
