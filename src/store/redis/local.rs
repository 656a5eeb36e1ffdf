//! The trackers shared in process by the streams of one key.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::lock;
use crate::tracker::{Attachment, Tracker, Window};

/// The most trackers this process keeps for sharing between its streams.
const LOCAL_TRACKERS: usize = 100_000;
const LOCAL_SHARDS: usize = 16;
/// A local tracker no stream holds is let go after this long.
const LOCAL_GRACE: Duration = Duration::from_secs(5);

/// The trackers of this process, by window key, so that its streams of one
/// key share one window. An entry no stream holds is let go soon; it stays
/// a moment for the generation of the last batch its stream records.
pub(super) struct Local {
    shards: Box<[Mutex<LocalShard>]>,
}

#[derive(Default)]
struct LocalShard {
    entries: HashMap<String, LocalEntry>,
    next_sweep: Option<Instant>,
}

struct LocalEntry {
    tracker: Tracker,
    generation: i64,
    last_used: Instant,
}

impl Local {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..LOCAL_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, window_key: &str) -> MutexGuard<'_, LocalShard> {
        let mut hasher = DefaultHasher::new();
        window_key.hash(&mut hasher);
        let index = (hasher.finish() % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }

    /// A new response attached to the tracker of a window just loaded at
    /// `generation`, holding `entries` (ids with the fingerprints of their
    /// events).
    ///
    /// A stream of this process that holds the tracker already keeps it,
    /// with what Redis holds merged in: in the same generation, the ids
    /// Redis has first and the ones still queued here after; in a newer
    /// one (a cursor cut the window), what Redis has.
    pub(super) fn adopt(
        &self,
        window_key: &str,
        generation: i64,
        entries: &[(String, u64)],
        window_len: usize,
    ) -> Attachment {
        let now = Instant::now();
        let mut shard = self.shard(window_key);
        shard.sweep_if_due(now);
        if let Some(entry) = shard.entries.get_mut(window_key) {
            if entry.tracker.in_use() {
                let mut window = entry.tracker.lock();
                let local: Vec<(String, u64)> = if entry.generation == generation {
                    window.entries().collect()
                } else {
                    Vec::new()
                };
                let merged = entries.iter().chain(&local);
                window.replace_ids(merged.map(|(id, content)| (id.as_str(), *content)));
                // Streams opened before a cursor cut it stop recording.
                window.set_generation(generation_of(generation));
                let attachment = entry.tracker.attach_locked(&mut window);
                drop(window);
                entry.generation = generation;
                entry.last_used = now;
                return attachment;
            }
        }
        let mut window = Window::new(window_len);
        window.replace_ids(entries.iter().map(|(id, content)| (id.as_str(), *content)));
        window.set_generation(generation_of(generation));
        let tracker = Tracker::from_window(window);
        let attachment = tracker.attach();
        if shard.entries.len() >= LOCAL_TRACKERS / LOCAL_SHARDS
            && !shard.entries.contains_key(window_key)
        {
            shard.sweep(now, Duration::ZERO);
        }
        // When every entry is in use, this stream goes unshared: its writes
        // are not fenced either.
        if shard.entries.len() < LOCAL_TRACKERS / LOCAL_SHARDS
            || shard.entries.contains_key(window_key)
        {
            shard.entries.insert(
                window_key.to_owned(),
                LocalEntry {
                    tracker: tracker.clone(),
                    generation,
                    last_used: now,
                },
            );
        }
        attachment
    }

    pub(super) fn generation(&self, window_key: &str) -> Option<i64> {
        self.shard(window_key)
            .entries
            .get(window_key)
            .map(|entry| entry.generation)
    }

    pub(super) fn sweep_all(&self) -> usize {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|shard| lock(shard).sweep(now, Duration::ZERO))
            .sum()
    }
}

impl LocalShard {
    fn sweep_if_due(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|due| now >= due) {
            self.sweep(now, LOCAL_GRACE);
            self.next_sweep = Some(now + LOCAL_GRACE);
        }
    }

    /// Lets go of the entries no stream holds, idle for `grace` at least.
    fn sweep(&mut self, now: Instant, grace: Duration) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| {
            entry.tracker.in_use() || now.duration_since(entry.last_used) < grace
        });
        before - self.entries.len()
    }
}

/// A generation from Redis, where it is never negative, for a window.
pub(super) fn generation_of(generation: i64) -> u64 {
    u64::try_from(generation).unwrap_or(0)
}
