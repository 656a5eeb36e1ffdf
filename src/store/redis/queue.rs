//! The write queue: ids waiting to be written, coalesced per window and
//! bounded, until the writer takes them.

use std::collections::{HashMap, HashSet, hash_map};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use super::keys::Keys;
use super::{Config, RedisStats};
use crate::lock::lock;
use crate::store::{IdBatch, StoreError, StoreLimits};

/// Queued bytes allowed per queued id: the queue is bounded in bytes too.
const QUEUE_BYTES_PER_ID: usize = 256;
/// The most windows remembered as having a hole: past it, a hole is
/// still counted as dropped ids, but its stream's next write does not
/// forget the history before it.
const MAX_HOLES: usize = 65_536;

/// Ids waiting to be written, coalesced per window, bounded in ids and
/// bytes.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    pub(super) max_ids: AtomicUsize,
    pub(super) wake: Notify,
    /// The number of `push`es the writer is done with.
    done: watch::Receiver<u64>,
    pub(super) counters: Counters,
}

#[derive(Default)]
struct QueueState {
    pending: HashMap<String, Pending>,
    /// Windows whose dropped blocks the next write must account for.
    holes: HashSet<String>,
    ids: usize,
    bytes: usize,
    pushes: u64,
    closed: bool,
}

impl QueueState {
    /// Notes that blocks of the window at `window_key` never reached Redis.
    fn note_hole(&mut self, window_key: String) {
        match self.pending.get_mut(&window_key) {
            Some(pending) => pending.after_hole = true,
            None if self.holes.len() < MAX_HOLES => {
                self.holes.insert(window_key);
            }
            None => {}
        }
    }
}

/// The ids of one window waiting to be written, and what becomes of the
/// stream's lease: taken before them, let go after.
pub(super) struct Pending {
    pub(super) target: Target,
    pub(super) generation: i64,
    pub(super) ids: IdBatch,
    bytes: usize,
    pub(super) claim: bool,
    pub(super) release: bool,
    /// Whether blocks of this stream written before were dropped: the
    /// history before these is forgotten, so that no replay skips them.
    pub(super) after_hole: bool,
    /// What an append wrote of these already.
    pub(super) landed: Landed,
}

/// What an append wrote of a pending window before it had to stop: the
/// whole write that finishes it leaves that out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Landed {
    /// The ids are in the window.
    pub(super) ids: bool,
    /// The blocks are in the history, from this start on.
    pub(super) blocks_at: Option<u64>,
}

/// How many ids and blocks Redis keeps per window: more queued are
/// overwritten before they are written.
#[derive(Clone, Copy)]
pub(super) struct Kept {
    pub(super) window: usize,
    pub(super) history: usize,
}

impl Pending {
    /// The generation whose window these ids go to (a lease's alone, with
    /// no generation, names the first's).
    pub(super) fn window_generation(&self) -> u64 {
        u64::try_from(self.generation).unwrap_or(0)
    }

    /// Ids and blocks waiting.
    fn count(&self) -> usize {
        self.ids.len() + self.ids.blocks().len()
    }
}

/// Where a window's ids go.
pub(super) struct Target {
    pub(super) keys: Keys,
    pub(super) stream: String,
    pub(super) config: Arc<Config>,
    /// The layer's limits when the stream was first queued.
    pub(super) limits: StoreLimits,
    /// This process's holder id, and its lease in ms, for the stream's
    /// lease.
    pub(super) holder: Arc<str>,
    pub(super) lease_ms: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) written: AtomicU64,
    rejected: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) fenced: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) bad_values: AtomicU64,
}

impl Queue {
    pub(super) fn new(max_ids: usize, done: watch::Receiver<u64>) -> Self {
        Self {
            state: Mutex::default(),
            max_ids: AtomicUsize::new(max_ids),
            wake: Notify::new(),
            done,
            counters: Counters::default(),
        }
    }

    /// Queues `ids` for the window at `window_key`, without waiting.
    pub(super) fn push(
        &self,
        window_key: String,
        generation: i64,
        ids: &IdBatch,
        target: impl FnOnce() -> Target,
        kept: Kept,
    ) -> Result<(), StoreError> {
        let count = ids.len() + ids.blocks().len();
        let bytes = ids.byte_len();
        let max_ids = self.max_ids.load(Relaxed);
        let mut state = lock(&self.state);
        if state.ids + count > max_ids || state.bytes + bytes > max_ids * QUEUE_BYTES_PER_ID {
            if ids.blocks().len() > 0 {
                // The history will lack these blocks: no replay may skip
                // them.
                state.note_hole(window_key);
            }
            drop(state);
            self.counters.rejected.fetch_add(count as u64, Relaxed);
            return Err(StoreError::Backlogged);
        }
        let (mut added_ids, mut added_bytes) = (count as isize, bytes as isize);
        let QueueState { pending, holes, .. } = &mut *state;
        match pending.entry(window_key) {
            hash_map::Entry::Occupied(mut slot) => {
                let pending = slot.get_mut();
                if generation < pending.generation {
                    // These ids would be refused: a cursor cut their window
                    // since their response opened.
                    drop(state);
                    self.counters.fenced.fetch_add(ids.len() as u64, Relaxed);
                    return Ok(());
                }
                if pending.generation != generation {
                    // The older ids would be refused: a cursor cut their
                    // window since.
                    self.counters
                        .fenced
                        .fetch_add(pending.ids.len() as u64, Relaxed);
                    added_ids -= pending.count() as isize;
                    added_bytes -= pending.bytes as isize;
                    pending.ids.clear();
                    pending.bytes = 0;
                    pending.generation = generation;
                }
                pending.ids.extend(ids);
                pending.bytes += bytes;
                // Only the last window's worth, and the last history's,
                // can end up in Redis.
                if pending.ids.len() > 2 * kept.window
                    || pending.ids.blocks().len() > 2 * kept.history
                {
                    let before = pending.count();
                    pending.ids.keep_last(kept.window, kept.history);
                    added_ids -= (before - pending.count()) as isize;
                    added_bytes -= (pending.bytes - pending.ids.byte_len()) as isize;
                    pending.bytes = pending.ids.byte_len();
                }
            }
            hash_map::Entry::Vacant(slot) => {
                let after_hole = holes.remove(slot.key());
                slot.insert(Pending {
                    target: target(),
                    generation,
                    ids: ids.clone(),
                    bytes,
                    claim: false,
                    release: false,
                    after_hole,
                    landed: Landed::default(),
                });
            }
        }
        state.ids = state.ids.saturating_add_signed(added_ids);
        state.bytes = state.bytes.saturating_add_signed(added_bytes);
        state.pushes += 1;
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues taking (`claim`) or letting go of the lease of the stream
    /// of `window_key`, in order with its ids: a claim goes before the ids
    /// queued after it, a release after every id queued before it. Never
    /// refused: a lease is one flag per stream.
    pub(super) fn push_lease(
        &self,
        window_key: String,
        target: impl FnOnce() -> Target,
        claim: bool,
    ) {
        let mut state = lock(&self.state);
        let after_hole = state.holes.remove(&window_key);
        let pending = state.pending.entry(window_key).or_insert_with(|| Pending {
            target: target(),
            generation: -1,
            ids: IdBatch::new(),
            bytes: 0,
            claim: false,
            release: false,
            after_hole,
            landed: Landed::default(),
        });
        if claim {
            // Taken again before the release went: it stays taken.
            pending.claim = true;
            pending.release = false;
        } else {
            pending.release = true;
        }
        state.pushes += 1;
        drop(state);
        self.wake.notify_one();
    }

    /// Notes that the blocks of `dropped` never reached Redis: the next
    /// write of its stream forgets the history before it.
    pub(super) fn mark_hole(&self, dropped: &Pending) {
        if dropped.ids.blocks().len() == 0 {
            return;
        }
        let window_key = dropped.target.keys.of("w:", &dropped.target.stream);
        lock(&self.state).note_hole(window_key);
    }

    /// Takes everything pending, and the number of pushes it covers.
    /// `None` once closed and empty.
    pub(super) fn take(&self) -> Option<(Vec<Pending>, u64)> {
        let mut state = lock(&self.state);
        if state.pending.is_empty() && state.closed {
            return None;
        }
        state.ids = 0;
        state.bytes = 0;
        let pending = state.pending.drain().map(|(_, pending)| pending).collect();
        Some((pending, state.pushes))
    }

    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_one();
    }

    pub(super) async fn flush(&self) {
        let target = lock(&self.state).pushes;
        self.wake.notify_one();
        let mut done = self.done.clone();
        // An error means the writer is gone (its runtime stopped): nothing
        // will be written any more.
        let _ = done.wait_for(|&done| done >= target).await;
    }

    pub(super) fn stats(&self) -> RedisStats {
        let c = &self.counters;
        RedisStats {
            written: c.written.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            fenced: c.fenced.load(Relaxed),
            retries: c.retries.load(Relaxed),
            bad_values: c.bad_values.load(Relaxed),
            queued: lock(&self.state).ids as u64,
        }
    }
}
