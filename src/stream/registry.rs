//! [`Streams`]: the layer's registry of the streams in process.
//!
//! Every response of a stream attaches to the one [`Stream`] kept here, so
//! that the window, the history and the generation of a stream are in one
//! place whatever the store. With [`MemoryStore`](crate::MemoryStore), the
//! registry is all the state there is: it resolves cursors and replays from
//! its own histories. With a store behind it, a request opens with the
//! store's [`Snapshot`] of the stream, merged into the stream kept here.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{
    Attachment, Budget, DEFAULT_WINDOW_LEN, Handover, Head, HistoryLimits, HoldSender, Holds,
    Replay, Stream, StreamState,
};
use crate::stats::Stats;
use crate::store::{Snapshot, StoredStream, StreamKey};

/// The default [`SseResumeLayer::max_streams`](crate::SseResumeLayer::max_streams).
pub(crate) const DEFAULT_MAX_STREAMS: usize = 100_000;
/// The default [`SseResumeLayer::max_streams_per_scope`](crate::SseResumeLayer::max_streams_per_scope).
pub(crate) const DEFAULT_MAX_STREAMS_PER_SCOPE: usize = 64;
/// The default [`SseResumeLayer::idle_ttl`](crate::SseResumeLayer::idle_ttl): one hour.
pub(crate) const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(3600);
/// The default [`SseResumeLayer::max_held_streams`](crate::SseResumeLayer::max_held_streams).
pub(crate) const DEFAULT_MAX_HELD_STREAMS: usize = 1024;

/// A stream a store keeps is let go this long after its last response
/// detached: the store has it, and this process only shares it between
/// its own responses.
const STORED_GRACE: Duration = Duration::from_secs(5);
const MAX_SHARDS: usize = 64;
/// A full shard makes room for this share of its streams at once.
const EVICT_SHARE: usize = 32;

/// How many streams the registry keeps, and what each keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    pub(crate) max_streams: usize,
    pub(crate) max_streams_per_scope: usize,
    pub(crate) window_len: usize,
    pub(crate) idle_ttl: Duration,
    /// A replay history kept in process, for streams no store keeps.
    pub(crate) history: Option<HistoryLimits>,
    /// The most streams held at once, while linger is on.
    pub(crate) max_held: usize,
    /// Whether responses may linger: streams a store keeps then keep a
    /// history in process too, for the client that takes one over.
    pub(crate) linger: bool,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_scope: DEFAULT_MAX_STREAMS_PER_SCOPE,
            window_len: DEFAULT_WINDOW_LEN,
            idle_ttl: DEFAULT_IDLE_TTL,
            history: None,
            max_held: DEFAULT_MAX_HELD_STREAMS,
            linger: false,
        }
    }
}

/// The streams of one layer in this process, sharded by scope and bounded:
/// the number of streams, the streams per scope, and the time one may sit
/// idle. Past a bound, the least recently used stream that no response
/// holds goes first, so that a session's ended tool calls (per-request
/// streams) make room before its live stream does.
pub(crate) struct Streams {
    limits: StreamLimits,
    shards: Box<[Mutex<Shard>]>,
    /// The bytes every history holds, within `HistoryLimits::max_total_bytes`.
    history_budget: Budget,
    holds: Arc<Holds>,
    /// Whether the log said that linger needs a history.
    told_no_history: AtomicBool,
    stats: Stats,
}

/// What the request that opens a response is, as far as its stream cares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    /// A `GET`: a standing stream, that a reconnect without a cursor takes
    /// over when it is held.
    pub(crate) get: bool,
    /// Whether the response may linger, and take a held stream over.
    pub(crate) linger: bool,
    /// Whether one scope is one client: a request whose cursor the stream
    /// knows then also takes over an attached response's upstream.
    pub(crate) one_client: bool,
}

/// How a response is served.
#[derive(Debug)]
pub(crate) enum Serve {
    /// By the inner service, as without linger.
    Upstream,
    /// By the upstream of the stream's hold: its task answers here.
    Takeover(oneshot::Receiver<Handover>),
    /// By the history alone: the stream is complete.
    Complete(Arc<Head>),
    /// By following the stream as another replica records it, from after
    /// this position of the store's history.
    Follow(u64),
}

impl Serve {
    /// What serves the response, for the logs.
    pub(crate) fn name(&self) -> String {
        match self {
            Serve::Upstream => "upstream".to_owned(),
            Serve::Takeover(_) => "takeover".to_owned(),
            Serve::Complete(_) => "complete".to_owned(),
            Serve::Follow(position) => format!("follow after {position}"),
        }
    }
}

/// What opening a request's stream gave.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The stream the request belongs to: its own, or the one its cursor
    /// was recorded on.
    pub(crate) key: StreamKey,
    /// The response attached to the stream, made right after the cursor
    /// was applied: its client has what the window held then.
    pub(crate) attachment: Attachment,
    /// Whether the client's cursor was known; `None` without one.
    pub(crate) cursor_known: Option<bool>,
    pub(crate) replay: Replay,
    /// Where stamped ids start, when a store hands them out.
    pub(crate) stamp_epoch: Option<u64>,
    /// How the stream's forwarded ids go to the store that keeps it; `None`
    /// when nothing is kept behind the registry.
    pub(crate) stored: Option<Stored>,
    pub(crate) serve: Serve,
    /// Whether the response may linger: linger is on for the request, and
    /// the stream keeps a history.
    pub(crate) may_linger: bool,
}

/// How a response records into the store that keeps its stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// The stream's generation when the response opened.
    pub(crate) fence: u64,
    /// Whether batches carry the blocks, for the store's replay history.
    pub(crate) keeps_blocks: bool,
}

#[derive(Debug, Default)]
struct Shard {
    scopes: HashMap<Arc<str>, HashMap<Arc<str>, Entry>>,
    streams: usize,
    next_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    stream: Stream,
    last_used: Instant,
    /// Whether a store keeps the stream: then the registry only shares it
    /// between this process's responses, and lets it go soon.
    stored: bool,
}

/// Where a stream stands in the order of eviction: whether a response
/// holds it, then when it was last used.
type EvictionOrder = (bool, Instant);

impl Entry {
    /// Streams sort in the order they are evicted: those no response holds
    /// first, then the least recently used.
    fn eviction_order(&self) -> EvictionOrder {
        (self.stream.in_use(), self.last_used)
    }

    fn is_idle(&self, now: Instant, idle_ttl: Duration) -> bool {
        let ttl = if self.stored { STORED_GRACE } else { idle_ttl };
        !self.stream.in_use() && now.duration_since(self.last_used) >= ttl
    }
}

impl Streams {
    pub(crate) fn new(mut limits: StreamLimits, stats: Stats) -> Self {
        limits.max_streams = limits.max_streams.max(1);
        limits.max_streams_per_scope = limits.max_streams_per_scope.max(1);
        limits.window_len = limits.window_len.max(1);
        // Each shard holds an equal share, rounded down so the total stays
        // within the limit; a small limit gets fewer shards to keep shares
        // from rounding down to little.
        let shards = (limits.max_streams / 16).clamp(1, MAX_SHARDS);
        Self {
            holds: Arc::new(Holds::new(limits.max_held, stats.clone())),
            told_no_history: AtomicBool::new(false),
            limits,
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            // With linger, streams a store keeps have a history in process
            // too, within the defaults when the layer sets none.
            history_budget: Budget::reporting(
                (limits.history)
                    .or(limits.linger.then(HistoryLimits::default))
                    .map_or(0, |h| h.total_bytes()),
                stats.clone(),
            ),
            stats,
        }
    }

    pub(crate) fn limits(&self) -> StreamLimits {
        self.limits
    }

    pub(crate) fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    /// Opens the stream of `key` for a new response, with the client's
    /// `cursor`, as the store's `snapshot` of it says.
    pub(crate) fn open(
        &self,
        key: StreamKey,
        cursor: Option<&str>,
        snapshot: Snapshot,
        request: Request,
    ) -> Opened {
        let mut opened = match snapshot {
            Snapshot::InProcess => self.open_in_process(key, cursor, request),
            Snapshot::Stored(stored) => self.adopt(key.scope(), stored, cursor, request),
        };
        if request.linger && !opened.may_linger && !self.told_no_history.swap(true, Relaxed) {
            tracing::warn!("linger needs a replay history: set one on the layer or the store");
        }
        opened.may_linger &= request.linger;
        opened
    }

    /// Opens a stream nothing keeps behind the registry. The cursor
    /// resolves to the request's own stream when that one knows it (two
    /// streams may number alike), else to the scope's most recently used
    /// stream that does, else to the request's own.
    fn open_in_process(&self, key: StreamKey, cursor: Option<&str>, request: Request) -> Opened {
        let mut shard = self.shard(key.scope());
        let found = cursor.and_then(|id| {
            let own_knows = shard.get(&key).is_some_and(|s| s.lock().knows(id));
            (!own_knows).then(|| shard.find(key.scope(), id)).flatten()
        });
        let key = match found {
            Some(stream) => StreamKey::new(key.scope(), &stream),
            None => key,
        };
        let new_state = || {
            let history = self
                .limits
                .history
                .map(|h| (h, self.history_budget.clone()));
            StreamState::new(self.limits.window_len, history)
        };
        let stream = shard.get_or_insert(&key, &self.limits, self.per_shard(), new_state);
        drop(shard);
        if self.history_budget.exceeded() {
            self.trim_histories();
        }
        let mut state = stream.lock();
        let cursor_here = cursor.is_some_and(|id| state.knows(id));
        let evicted = evict(&mut state, request, cursor_here);
        let (cursor_known, mut replay) = match cursor {
            Some(id) => {
                let (known, replay) = state.resume(id);
                (Some(known), replay)
            }
            None => (None, Replay::Off),
        };
        let serve = serve(
            &mut state,
            request,
            cursor_known,
            &mut replay,
            evicted,
            None,
        );
        // Under the same lock as the cursor: the response's client has
        // exactly what the window holds now.
        let attachment = stream.attach_locked(&mut state);
        let may_linger = state.has_history();
        drop(state);
        Opened {
            key,
            attachment,
            cursor_known,
            replay,
            stamp_epoch: None,
            stored: None,
            serve,
            may_linger,
        }
    }

    /// Opens a stream a store keeps, as the store loaded it. A response of
    /// this process that holds the stream already keeps it, with what the
    /// store holds merged in: in the same generation, the store's ids first
    /// and the ones still on their way to it after; in a newer one (a
    /// cursor cut the window), what the store has.
    fn adopt(
        &self,
        scope: &str,
        stored: StoredStream,
        cursor: Option<&str>,
        request: Request,
    ) -> Opened {
        let key = StreamKey::new(scope, &stored.stream);
        let mut shard = self.shard(scope);
        let stream = match shard.get_in_use(&key) {
            Some(stream) => stream,
            None => {
                // With linger, a held stream is taken over from what this
                // process recorded, some of it maybe not in the store yet.
                let history = self.limits.linger.then(|| {
                    let limits = self.limits.history.unwrap_or_default();
                    (limits, self.history_budget.clone())
                });
                let stream = Stream::new(StreamState::new(self.limits.window_len, history));
                shard.replace(&key, &self.limits, self.per_shard(), stream.clone());
                stream
            }
        };
        drop(shard);
        let mut state = stream.lock();
        let evicted = evict(&mut state, request, stored.cursor_known == Some(true));
        let local: Vec<(String, u64)> = if state.generation() == stored.fence {
            state.entries().collect()
        } else {
            Vec::new()
        };
        let merged = stored.ids.iter().chain(&local);
        state.replace_ids(merged.map(|(id, content)| (id.as_str(), *content)));
        // Responses opened before a cursor cut the window stop recording.
        state.set_generation(stored.fence);
        let (mut cursor_known, mut replay) = (stored.cursor_known, stored.replay);
        if request.linger && state.is_held() {
            // This process's history has what its hold recorded.
            if let Some(id) = cursor {
                let (known, resumed) = state.resume(id);
                (cursor_known, replay) = (Some(known), resumed);
            }
        }
        // Followed from the end of the replay of a known cursor, or from
        // the newest block without one.
        let follow_from = stored.follow_from.filter(|_| cursor_known != Some(false));
        let serve = serve(
            &mut state,
            request,
            cursor_known,
            &mut replay,
            evicted,
            follow_from,
        );
        let attachment = stream.attach_locked(&mut state);
        drop(state);
        Opened {
            key,
            attachment,
            cursor_known,
            replay,
            stamp_epoch: stored.stamp_epoch,
            stored: Some(Stored {
                fence: stored.fence,
                keeps_blocks: stored.keeps_blocks,
            }),
            serve,
            may_linger: stored.keeps_blocks,
        }
    }

    /// Lets go of every stream no response holds, idle past its time.
    #[cfg(feature = "test-util")]
    pub(crate) fn expire(&self) -> usize {
        let now = Instant::now();
        (self.shards.iter())
            .map(|shard| self.lock_shard(shard).sweep(now, &self.limits))
            .sum()
    }

    /// The number of streams held now.
    #[cfg(feature = "test-util")]
    pub(crate) fn len(&self) -> usize {
        (self.shards.iter())
            .map(|shard| self.lock_shard(shard).streams)
            .sum()
    }

    fn per_shard(&self) -> usize {
        self.limits.max_streams / self.shards.len()
    }

    fn shard(&self, scope: &str) -> ShardGuard<'_> {
        let mut hasher = DefaultHasher::new();
        scope.hash(&mut hasher);
        let index = (hasher.finish() % self.shards.len() as u64) as usize;
        let mut shard = self.lock_shard(&self.shards[index]);
        shard.sweep_if_due(&self.limits);
        shard
    }

    fn lock_shard<'a>(&'a self, shard: &'a Mutex<Shard>) -> ShardGuard<'a> {
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        ShardGuard {
            before: shard.streams,
            shard,
            stats: &self.stats,
        }
    }

    /// Trims every history to its share of the budget: a stream trims its
    /// own as it records, and this catches up the quiet ones.
    fn trim_histories(&self) {
        for shard in &self.shards {
            let shard = self.lock_shard(shard);
            for entry in shard.scopes.values().flat_map(HashMap::values) {
                entry.stream.lock().trim_history();
            }
        }
    }
}

/// How a response of `state` is served, decided under the same lock as
/// its cursor. A held stream is taken over by a request whose cursor it
/// knows, or by a `GET` on its key: the client that went away, surely.
/// Without a cursor, the replay is what the hold recorded. A complete
/// stream resumed from a cursor its history holds is served from the
/// history alone.
///
/// Where one scope is one client, `evicted` is the attached response a
/// request with a known cursor ended, taken before the cursor moved the
/// stream on: it hands its upstream over.
///
/// Otherwise, a stream that another replica holds (`follow_from`, from
/// the store) is followed from the end of the replay, when the replay
/// resumes the client's cursor, or by a `GET` on its key without a cursor
/// from its newest block.
fn serve(
    state: &mut StreamState,
    request: Request,
    cursor_known: Option<bool>,
    replay: &mut Replay,
    evicted: Option<HoldSender>,
    follow_from: Option<u64>,
) -> Serve {
    if !request.linger {
        return Serve::Upstream;
    }
    let head = state.head().cloned();
    if let (true, Some(head), Replay::Blocks(_)) = (state.is_complete(), head, &*replay) {
        if cursor_known == Some(true) {
            return Serve::Complete(head);
        }
    }
    let ask = if state.is_held() && (cursor_known == Some(true) || request.get) {
        let Some(hold) = state.take_any_hold() else {
            return Serve::Upstream;
        };
        if cursor_known.is_none() {
            *replay = state.replay_after(hold.mark);
        }
        hold.takeover
    } else if let Some(sender) = evicted {
        sender
    } else if let (Some(position), Replay::Blocks(_)) = (follow_from, &*replay) {
        return Serve::Follow(position);
    } else if let (Some(position), None, true) = (follow_from, cursor_known, request.get) {
        // A `GET` without a cursor on a stream another replica reads: as
        // it would take a held stream over here, it follows it there.
        return Serve::Follow(position);
    } else {
        return Serve::Upstream;
    };
    let (answer, answered) = oneshot::channel();
    match ask.send(answer) {
        Ok(()) => Serve::Takeover(answered),
        // The response or task is gone: the upstream with it.
        Err(_) => Serve::Upstream,
    }
}

/// Where one scope is one client, a request whose cursor the stream knows
/// is the client of the response attached to the stream, back while its old
/// connection still looks open: that response ends, and the request takes
/// its upstream. Only a response that opened alone offers itself, so two
/// clients of one scope cannot end each other's over and over.
fn evict(state: &mut StreamState, request: Request, cursor_known: bool) -> Option<HoldSender> {
    let applies = request.linger && request.one_client && cursor_known && !state.is_held();
    applies.then(|| state.evict()).flatten()
}

/// A locked shard, which tells the counters how many streams it gained or
/// lost while locked.
struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    before: usize,
    stats: &'a Stats,
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.stats
            .add_streams(self.shard.streams as i64 - self.before as i64);
    }
}

impl Shard {
    fn get(&mut self, key: &StreamKey) -> Option<Stream> {
        let entry = self.scopes.get_mut(key.scope())?.get_mut(key.stream())?;
        entry.last_used = Instant::now();
        Some(entry.stream.clone())
    }

    /// The stream of `key` when a response is attached to it.
    fn get_in_use(&mut self, key: &StreamKey) -> Option<Stream> {
        let entry = self.scopes.get_mut(key.scope())?.get_mut(key.stream())?;
        entry.last_used = Instant::now();
        entry.stream.in_use().then(|| entry.stream.clone())
    }

    /// The most recently used stream of `scope` that knows `id`.
    fn find(&self, scope: &str, id: &str) -> Option<Arc<str>> {
        let streams = self.scopes.get(scope)?;
        (streams.iter())
            .filter(|(_, entry)| entry.stream.lock().knows(id))
            .max_by_key(|(_, entry)| entry.last_used)
            .map(|(stream, _)| Arc::clone(stream))
    }

    fn get_or_insert(
        &mut self,
        key: &StreamKey,
        limits: &StreamLimits,
        per_shard: usize,
        new_state: impl FnOnce() -> StreamState,
    ) -> Stream {
        if let Some(stream) = self.get(key) {
            return stream;
        }
        let stream = Stream::new(new_state());
        self.insert(key, limits, per_shard, false, stream.clone());
        stream
    }

    /// Puts `stream` in the place of whatever `key` had: a stream a store
    /// keeps, loaded anew.
    fn replace(
        &mut self,
        key: &StreamKey,
        limits: &StreamLimits,
        per_shard: usize,
        stream: Stream,
    ) {
        self.remove(key.scope(), key.stream());
        self.insert(key, limits, per_shard, true, stream);
    }

    fn insert(
        &mut self,
        key: &StreamKey,
        limits: &StreamLimits,
        per_shard: usize,
        stored: bool,
        stream: Stream,
    ) {
        let streams_in_scope = self.scopes.get(key.scope()).map_or(0, HashMap::len);
        if streams_in_scope >= limits.max_streams_per_scope {
            self.evict_oldest_of(key.scope());
        } else if self.streams >= per_shard {
            self.sweep(Instant::now(), limits);
            if self.streams >= per_shard {
                // Both passes look at every stream of the shard: make room
                // for many at once, so that a full registry costs each new
                // key a share of them rather than all of them.
                self.evict_oldest_share(per_shard.div_ceil(EVICT_SHARE));
            }
        }
        let entry = Entry {
            stream,
            last_used: Instant::now(),
            stored,
        };
        self.scopes
            .entry(key.scope().into())
            .or_default()
            .insert(key.stream().into(), entry);
        self.streams += 1;
    }

    /// Removes the least recently used stream of `scope`, one that no
    /// response holds when there is one: a session's ended tool calls go
    /// before its live stream.
    fn evict_oldest_of(&mut self, scope: &str) {
        let oldest = self.scopes.get(scope).and_then(|streams| {
            (streams.iter())
                .min_by_key(|(_, entry)| entry.eviction_order())
                .map(|(stream, _)| Arc::clone(stream))
        });
        if let Some(stream) = oldest {
            self.remove(scope, &stream);
        }
    }

    /// Removes the `count` least recently used streams of the shard, those
    /// no response holds first.
    fn evict_oldest_share(&mut self, count: usize) {
        let mut by_age: Vec<(EvictionOrder, Arc<str>, Arc<str>)> = (self.scopes.iter())
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
            self.streams -= 1;
        }
        if streams.is_empty() {
            self.scopes.remove(scope);
        }
    }

    /// Sweeps idle streams now and then, so that a shard nobody fills up
    /// still lets go of them.
    fn sweep_if_due(&mut self, limits: &StreamLimits) {
        let now = Instant::now();
        if self.next_sweep.is_none_or(|due| now >= due) {
            self.sweep(now, limits);
            self.next_sweep = Some(now + (limits.idle_ttl / 4).min(STORED_GRACE));
        }
    }

    fn sweep(&mut self, now: Instant, limits: &StreamLimits) -> usize {
        let before = self.streams;
        for streams in self.scopes.values_mut() {
            streams.retain(|_, entry| !entry.is_idle(now, limits.idle_ttl));
        }
        self.scopes.retain(|_, streams| !streams.is_empty());
        self.streams = self.scopes.values().map(HashMap::len).sum();
        before - self.streams
    }
}
