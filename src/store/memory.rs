//! The in-process store: sharded, bounded maps of live trackers.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::future::{Future, ready};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{IdBatch, StoreError, StreamKey, TrackerStore};
use crate::tracker::{Budget, DEFAULT_WINDOW_LEN, HistoryLimits, Tracker, Window};

/// Keeps trackers in this process: the default store.
///
/// The responses of one stream share one [`Tracker`]. Everything is
/// bounded: the number of trackers, the streams per scope, the ids per
/// window, and the time a tracker may sit idle. Past a bound, the least
/// recently used tracker that no response holds goes first, so that a
/// session's ended tool calls (per-request streams) make room before its
/// live stream does.
///
/// Clones share the same trackers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sse_resume::MemoryStore;
///
/// let store = MemoryStore::new()
///     .max_keys(50_000)
///     .window_len(256)
///     .idle_ttl(Duration::from_secs(600));
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    shards: Box<[Mutex<Shard>]>,
    /// The bytes every history holds, within `HistoryLimits::max_total_bytes`.
    history_budget: Budget,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_keys: usize,
    max_streams_per_scope: usize,
    window_len: usize,
    idle_ttl: Duration,
    history: Option<HistoryLimits>,
    shards: usize,
}

#[derive(Debug, Default)]
struct Shard {
    scopes: HashMap<Arc<str>, HashMap<Arc<str>, Entry>>,
    trackers: usize,
    next_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    tracker: Tracker,
    last_used: Instant,
}

/// Where a tracker stands in the order of eviction: whether a response
/// holds it, then when it was last used.
type EvictionOrder = (bool, Instant);

impl Entry {
    /// Trackers sort in the order they are evicted: those no response
    /// holds first, then the least recently used.
    fn eviction_order(&self) -> EvictionOrder {
        (self.tracker.in_use(), self.last_used)
    }
}

const MAX_SHARDS: usize = 64;
/// A full shard makes room for this share of its trackers at once.
const EVICT_SHARE: usize = 32;

/// The default [`MemoryStore::max_keys`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// The default [`MemoryStore::max_streams_per_scope`].
pub const DEFAULT_MAX_STREAMS_PER_SCOPE: usize = 64;
/// The default [`MemoryStore::idle_ttl`]: one hour.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(3600);

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store with the default limits: 100,000 trackers, 64 streams per
    /// scope, windows of 1024 ids, one hour idle.
    pub fn new() -> Self {
        Self::with_limits(Limits {
            max_keys: DEFAULT_MAX_KEYS,
            max_streams_per_scope: DEFAULT_MAX_STREAMS_PER_SCOPE,
            window_len: DEFAULT_WINDOW_LEN,
            idle_ttl: DEFAULT_IDLE_TTL,
            history: None,
            shards: MAX_SHARDS,
        })
    }

    fn with_limits(mut limits: Limits) -> Self {
        limits.max_keys = limits.max_keys.max(1);
        limits.max_streams_per_scope = limits.max_streams_per_scope.max(1);
        // Each shard holds an equal share, rounded down so the total stays
        // within the limit; a small limit gets fewer shards to keep shares
        // from rounding down to little.
        limits.shards = (limits.max_keys / 16).clamp(1, MAX_SHARDS);
        let shards = (0..limits.shards).map(|_| Mutex::default()).collect();
        let history_budget = Budget::new(limits.history.map_or(0, |h| h.total_bytes()));
        Self {
            inner: Arc::new(Inner {
                limits,
                shards,
                history_budget,
            }),
        }
    }

    fn reconfigure(self, change: impl FnOnce(&mut Limits)) -> Self {
        let mut limits = self.inner.limits;
        change(&mut limits);
        Self::with_limits(limits)
    }

    /// The most trackers kept (at least 1). When full, the least recently
    /// used trackers of a shard make room, those no response holds first.
    /// Setting it empties the store.
    pub fn max_keys(self, max: usize) -> Self {
        self.reconfigure(|limits| limits.max_keys = max)
    }

    /// The most streams kept per scope (at least 1): 64 by default. When
    /// full, the least recently used stream of the scope that no response
    /// holds makes room. Setting it empties the store.
    pub fn max_streams_per_scope(self, max: usize) -> Self {
        self.reconfigure(|limits| limits.max_streams_per_scope = max)
    }

    /// The most ids each window remembers (at least 1). Setting it empties
    /// the store.
    pub fn window_len(self, len: usize) -> Self {
        self.reconfigure(|limits| limits.window_len = len)
    }

    /// How long a tracker may sit unused before it is dropped. Setting it
    /// empties the store.
    pub fn idle_ttl(self, ttl: Duration) -> Self {
        self.reconfigure(|limits| limits.idle_ttl = ttl)
    }

    /// Keeps a replay history of each stream within `limits`, so that a
    /// client reconnecting with `Last-Event-ID` gets the blocks it missed
    /// from the store, even from an upstream that cannot resume. Off by
    /// default. Setting it empties the store.
    pub fn history(self, limits: HistoryLimits) -> Self {
        self.reconfigure(|config| config.history = Some(limits))
    }

    /// The number of trackers held now.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).trackers)
            .sum()
    }

    /// Whether the store holds no tracker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, scope: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        scope.hash(&mut hasher);
        let index = (hasher.finish() % self.inner.shards.len() as u64) as usize;
        let mut shard = lock(&self.inner.shards[index]);
        shard.sweep_if_due(&self.inner.limits);
        shard
    }

    fn tracker(&self, key: &StreamKey) -> Tracker {
        let limits = &self.inner.limits;
        let per_shard = limits.max_keys / limits.shards;
        let new_window = || match limits.history {
            Some(history) => Window::with_shared_history(
                limits.window_len,
                history,
                self.inner.history_budget.clone(),
            ),
            None => Window::new(limits.window_len),
        };
        let tracker = self
            .shard(key.scope())
            .get_or_insert(key, limits, per_shard, new_window);
        if self.inner.history_budget.exceeded() {
            self.trim_histories();
        }
        tracker
    }

    /// Trims every history to its share of the budget: a stream trims its
    /// own as it records, and this catches up the quiet ones.
    fn trim_histories(&self) {
        for shard in &self.inner.shards {
            let shard = lock(shard);
            for entry in shard.scopes.values().flat_map(HashMap::values) {
                entry.tracker.lock().trim_history();
            }
        }
    }

    /// The bytes of blocks all the histories of the store hold now.
    pub fn history_bytes(&self) -> usize {
        self.inner.history_budget.used()
    }
}

impl TrackerStore for MemoryStore {
    fn load(&self, key: &StreamKey) -> impl Future<Output = Result<Tracker, StoreError>> + Send {
        ready(Ok(self.tracker(key)))
    }

    fn record(&self, _key: &StreamKey, _ids: &IdBatch) -> Result<(), StoreError> {
        // The trackers handed out are the stored state: nothing to persist.
        Ok(())
    }

    fn persists_ids(&self) -> bool {
        false
    }

    fn apply_cursor(
        &self,
        key: &StreamKey,
        id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.tracker(key).lock().apply_cursor(id)))
    }

    fn find_stream(
        &self,
        scope: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        let shard = self.shard(scope);
        let found = shard
            .scopes
            .get(scope)
            .into_iter()
            .flatten()
            .filter(|(_, entry)| entry.tracker.lock().knows(id))
            .max_by_key(|(_, entry)| entry.last_used)
            .map(|(stream, _)| stream.to_string());
        ready(Ok(found))
    }

    fn expire(&self) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let limits = &self.inner.limits;
        let removed = self
            .inner
            .shards
            .iter()
            .map(|shard| lock(shard).sweep(limits))
            .sum();
        ready(Ok(removed))
    }
}

impl Shard {
    fn get_or_insert(
        &mut self,
        key: &StreamKey,
        limits: &Limits,
        per_shard: usize,
        new_window: impl FnOnce() -> Window,
    ) -> Tracker {
        let now = Instant::now();
        if let Some(entry) = self.entry_mut(key) {
            entry.last_used = now;
            return entry.tracker.clone();
        }
        let streams_in_scope = self.scopes.get(key.scope()).map_or(0, HashMap::len);
        if streams_in_scope >= limits.max_streams_per_scope {
            self.evict_oldest_of(key.scope());
        } else if self.trackers >= per_shard {
            self.sweep(limits);
            if self.trackers >= per_shard {
                // Both passes look at every tracker of the shard: make room
                // for many at once, so that a full store costs each new key
                // a share of them rather than all of them.
                self.evict_oldest_share(per_shard.div_ceil(EVICT_SHARE));
            }
        }
        let tracker = Tracker::from_window(new_window());
        let entry = Entry {
            tracker: tracker.clone(),
            last_used: now,
        };
        self.scopes
            .entry(key.scope().into())
            .or_default()
            .insert(key.stream().into(), entry);
        self.trackers += 1;
        tracker
    }

    fn entry_mut(&mut self, key: &StreamKey) -> Option<&mut Entry> {
        self.scopes.get_mut(key.scope())?.get_mut(key.stream())
    }

    /// Removes the least recently used tracker of `scope`, one that no
    /// response holds when there is one: a session's ended tool calls go
    /// before its live stream.
    fn evict_oldest_of(&mut self, scope: &str) {
        let oldest = self.scopes.get(scope).and_then(|streams| {
            streams
                .iter()
                .min_by_key(|(_, entry)| entry.eviction_order())
                .map(|(stream, _)| Arc::clone(stream))
        });
        if let Some(stream) = oldest {
            self.remove(scope, &stream);
        }
    }

    /// Removes the `count` least recently used trackers of the shard, those
    /// no response holds first.
    fn evict_oldest_share(&mut self, count: usize) {
        let mut by_age: Vec<(EvictionOrder, Arc<str>, Arc<str>)> = self
            .scopes
            .iter()
            .flat_map(|(scope, streams)| {
                streams.iter().map(move |(stream, entry)| {
                    (
                        entry.eviction_order(),
                        Arc::clone(scope),
                        Arc::clone(stream),
                    )
                })
            })
            .collect();
        let count = count.clamp(1, by_age.len().max(1));
        if by_age.len() > count {
            by_age.select_nth_unstable_by_key(count - 1, |(order, ..)| *order);
        }
        for (_, scope, stream) in by_age.iter().take(count) {
            self.remove(scope, stream);
        }
    }

    fn remove(&mut self, scope: &str, stream: &str) {
        let Some(streams) = self.scopes.get_mut(scope) else {
            return;
        };
        if streams.remove(stream).is_some() {
            self.trackers -= 1;
        }
        if streams.is_empty() {
            self.scopes.remove(scope);
        }
    }

    /// Sweeps idle trackers now and then, so that a shard nobody fills up
    /// still lets go of them.
    fn sweep_if_due(&mut self, limits: &Limits) {
        let now = Instant::now();
        if self.next_sweep.is_none_or(|due| now >= due) {
            self.sweep(limits);
            self.next_sweep = Some(now + limits.idle_ttl / 4);
        }
    }

    fn sweep(&mut self, limits: &Limits) -> usize {
        let now = Instant::now();
        let before = self.trackers;
        for streams in self.scopes.values_mut() {
            // A tracker a live stream still holds is not idle, however long ago it was loaded.
            streams.retain(|_, entry| {
                entry.tracker.in_use() || now.duration_since(entry.last_used) < limits.idle_ttl
            });
        }
        self.scopes.retain(|_, streams| !streams.is_empty());
        self.trackers = self.scopes.values().map(HashMap::len).sum();
        before - self.trackers
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
