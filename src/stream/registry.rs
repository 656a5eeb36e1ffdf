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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    Budget, Claim, DEFAULT_WINDOW_LEN, Head, HistoryLimits, Holds, Replay, Response, Stream,
    StreamState,
};
use crate::lock::lock;
use crate::stats::Stats;
use crate::store::{Snapshot, Stop, StoredStream, StreamKey};

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
    /// The replay history: kept in process for streams no store keeps,
    /// and by a store that keeps streams, within the same limits.
    pub(crate) history: Option<HistoryLimits>,
    /// The most streams held at once, while linger is on.
    pub(crate) max_held: usize,
    /// Whether responses may linger: streams a store keeps then keep
    /// their history in process too, for the client that takes one over
    /// (see `adopt`).
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
    /// Whether a task carries out the stops other replicas broadcast.
    listening: AtomicBool,
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
    /// The claim is taken from the stream under its lock, and claimed
    /// after, so that no message is sent under it.
    Takeover(Claim),
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
    pub(crate) response: Response,
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
    /// Whether nobody read the stream's upstream when the request came: no
    /// response was attached, and no replica held it. Its history then
    /// ends where the last reader stopped, not now.
    pub(crate) unread: bool,
    /// Whether the gap signal goes first: the request, without a cursor,
    /// takes over or follows from where a client went away that had been
    /// sent ids, and may be that client, lacking them.
    pub(crate) gap_first: bool,
}

/// How a response records into the store that keeps its stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// The stream's generation when the response opened.
    pub(crate) generation: u64,
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
            listening: AtomicBool::new(false),
            limits,
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            history_budget: Budget::reporting(
                limits.history.map_or(0, |h| h.total_bytes()),
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
        let unread = state.is_unread();
        let cursor_here = cursor.is_some_and(|id| state.knows(id));
        let displaced = displace(&mut state, request, cursor_here);
        let (cursor_known, mut replay) = match cursor {
            Some(id) => {
                let (known, replay) = state.resume(id);
                (Some(known), replay)
            }
            None => (None, Replay::Off),
        };
        let mut gap_first = false;
        let serve = serve(
            &mut state,
            request,
            cursor_known.into(),
            &mut replay,
            &mut gap_first,
            displaced,
            None,
        );
        // Under the same lock as the cursor: the response's client has
        // exactly what the window holds now.
        let response = stream.attach_locked(&mut state);
        let may_linger = state.has_history();
        drop(state);
        Opened {
            key,
            response,
            cursor_known,
            replay,
            stamp_epoch: None,
            stored: None,
            serve,
            may_linger,
            unread,
            gap_first,
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
                // process recorded: the store's history is written behind
                // the stream, in batches, and may lack the newest blocks
                // yet. So the holder keeps the stream's history in process
                // too, within the layer's limits, which the store keeps.
                let history = (self.limits.linger)
                    .then_some(self.limits.history)
                    .flatten()
                    .map(|limits| (limits, self.history_budget.clone()));
                let stream = Stream::new(StreamState::new(self.limits.window_len, history));
                shard.replace(&key, &self.limits, self.per_shard(), stream.clone());
                stream
            }
        };
        drop(shard);
        let mut state = stream.lock();
        let unread = state.is_unread() && stored.follow_from.is_none();
        let displaced = displace(&mut state, request, stored.cursor_known == Some(true));
        let local: Vec<(String, u64)> = if state.generation() == stored.generation {
            state.entries().collect()
        } else {
            Vec::new()
        };
        let merged = stored.ids.iter().chain(&local);
        state.replace_ids(merged.map(|(id, content)| (id.as_str(), *content)));
        // Responses opened before a cursor cut the window stop recording.
        state.set_generation(stored.generation);
        if stored.complete {
            state.complete_in_store();
        }
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
        // A follow without a cursor, from where the holder's client went
        // away, unless this process's own hold is taken over instead.
        let mut gap_first = stored.gap_first && cursor.is_none();
        let serve = serve(
            &mut state,
            request,
            cursor_known.into(),
            &mut replay,
            &mut gap_first,
            displaced,
            follow_from,
        );
        gap_first &= matches!(serve, Serve::Follow(_) | Serve::Takeover(_));
        let response = stream.attach_locked(&mut state);
        drop(state);
        Opened {
            key,
            response,
            cursor_known,
            replay,
            stamp_epoch: stored.stamp_epoch,
            stored: Some(Stored {
                generation: stored.generation,
                keeps_blocks: stored.keeps_blocks,
            }),
            serve,
            may_linger: stored.keeps_blocks && self.limits.history.is_some(),
            unread,
            gap_first,
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

    /// Ends every stream of `scope`, as when its MCP session ended: each
    /// hold lets its upstream go now, so do the responses still attached
    /// that read one (they end), and the streams are forgotten with their
    /// histories. Returns how many streams there were.
    pub(crate) fn end_scope(&self, scope: &str) -> usize {
        let ended = self.shard(scope).take_scope(scope);
        for stream in &ended {
            stop(stream, StreamState::forget_history);
        }
        ended.len()
    }

    /// Whether a task is to start listening to the stops other replicas
    /// broadcast: true once.
    pub(crate) fn start_listening(&self) -> bool {
        !self.listening.swap(true, Ordering::Relaxed)
    }

    /// Carries out a stop another replica (or this one) broadcast.
    pub(crate) fn carry_out(&self, stop: &Stop) {
        let stopped = match stop {
            Stop::Stream {
                scope,
                stream,
                cursor,
            } => usize::from(self.stop(scope, stream, cursor.as_deref())),
            Stop::Scope(scope) => self.end_scope(scope),
        };
        tracing::debug!(stopped, "a stop broadcast through the store");
    }

    /// Stops the stream of `scope` that knows `cursor`, else `stream`:
    /// its hold lets its upstream go, the responses attached that read one
    /// end, and the stream is complete. Returns whether there was an
    /// upstream to stop.
    pub(crate) fn stop(&self, scope: &str, stream: &str, cursor: Option<&str>) -> bool {
        let found = {
            let mut shard = self.shard(scope);
            let name = match cursor {
                Some(cursor) => shard.find(scope, cursor),
                None => Some(Arc::from(stream)),
            };
            name.and_then(|name| shard.get(&StreamKey::new(scope, &name)))
        };
        found.is_some_and(|found| stop(&found, StreamState::stop))
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
        let shard = lock(shard);
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

/// Stops `stream`, changed by `also` under the same lock: its hold lets
/// its upstream go, and the responses attached that read one end. Returns
/// whether there was an upstream to stop.
fn stop(stream: &Stream, also: impl FnOnce(&mut StreamState)) -> bool {
    let (hold, attached) = {
        let mut state = stream.lock();
        also(&mut state);
        (state.take_any_hold(), state.take_claims())
    };
    let stopped = hold.is_some() || !attached.is_empty();
    // Dropped, the hold tells its task to let the upstream go.
    drop(hold);
    for claim in attached {
        claim.release();
    }
    stopped
}

/// What a request's cursor is to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// The request has none.
    Absent,
    /// The stream knows it.
    Known,
    /// The stream does not know it.
    Unknown,
}

impl From<Option<bool>> for Cursor {
    fn from(known: Option<bool>) -> Self {
        match known {
            None => Cursor::Absent,
            Some(true) => Cursor::Known,
            Some(false) => Cursor::Unknown,
        }
    }
}

/// How a response of `state` is served, decided under the same lock as
/// its cursor, by the first of these that applies:
///
/// 1. A complete stream resumed from a cursor its history holds: from the
///    history alone.
/// 2. A held stream, by the client that went away, surely (a request whose
///    cursor it knows, or a `GET` on its key): its upstream is taken over.
///    Without a cursor, `replay` becomes what the hold recorded, and
///    `gap_first` says whether the client may lack what came before.
/// 3. Where one scope is one client, the attached response that a request
///    with a known cursor `displaced` (taken before the cursor moved the
///    stream on): its upstream is taken over.
/// 4. A stream another replica holds (`follow_from`, from the store):
///    followed from the end of the replay of a known cursor, or by a `GET`
///    without a cursor from its newest block.
/// 5. Otherwise, and always without linger: the upstream.
fn serve(
    state: &mut StreamState,
    request: Request,
    cursor: Cursor,
    replay: &mut Replay,
    gap_first: &mut bool,
    displaced: Option<Claim>,
    follow_from: Option<u64>,
) -> Serve {
    if !request.linger {
        return Serve::Upstream;
    }
    let replays = matches!(replay, Replay::Blocks(_));
    if state.is_complete() && cursor == Cursor::Known && replays {
        if let Some(head) = state.head() {
            return Serve::Complete(Arc::clone(head));
        }
    }
    if state.is_held() && (cursor == Cursor::Known || request.get) {
        if let Some(hold) = state.take_any_hold() {
            if cursor == Cursor::Absent {
                *replay = state.replay_after(hold.mark);
                *gap_first = hold.unconfirmed;
            }
            return Serve::Takeover(hold.takeover);
        }
    }
    if let Some(claim) = displaced {
        return Serve::Takeover(claim);
    }
    match follow_from {
        Some(position) if replays || (cursor == Cursor::Absent && request.get) => {
            Serve::Follow(position)
        }
        _ => Serve::Upstream,
    }
}

/// Where one scope is one client, a request whose cursor the stream knows
/// is the client of the response attached to the stream, back while its old
/// connection still looks open: that response ends, and the request takes
/// its upstream. Only a response that opened alone offers itself, so two
/// clients of one scope cannot end each other's over and over.
fn displace(state: &mut StreamState, request: Request, cursor_known: bool) -> Option<Claim> {
    let applies = request.linger && request.one_client && cursor_known && !state.is_held();
    applies.then(|| state.displace()).flatten()
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

    /// Takes every stream of `scope` out of the shard.
    fn take_scope(&mut self, scope: &str) -> Vec<Stream> {
        let streams = self.scopes.remove(scope).unwrap_or_default();
        self.streams -= streams.len();
        streams.into_values().map(|entry| entry.stream).collect()
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

#[cfg(test)]
mod tests {
    use std::any::Any;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode, Version};

    use super::*;
    use crate::stream::{Claimed, Handover, Leftover, claim};

    const GET: Request = Request {
        get: true,
        linger: true,
        one_client: false,
    };
    const POST: Request = Request {
        get: false,
        linger: true,
        one_client: false,
    };
    const NO_LINGER: Request = Request {
        get: true,
        linger: false,
        one_client: false,
    };
    const ONE_CLIENT: Request = Request {
        get: false,
        linger: true,
        one_client: true,
    };

    fn with_history() -> StreamLimits {
        StreamLimits {
            history: Some(HistoryLimits::default()),
            linger: true,
            ..StreamLimits::default()
        }
    }

    fn registry(limits: StreamLimits) -> Streams {
        Streams::new(limits, Stats::default())
    }

    fn key(scope: &str, stream: &str) -> StreamKey {
        StreamKey::new(scope, stream)
    }

    fn open(streams: &Streams, key: StreamKey, cursor: Option<&str>, request: Request) -> Opened {
        streams.open(key, cursor, Snapshot::InProcess, request)
    }

    fn block(id: &str) -> Bytes {
        Bytes::from(format!("id: {id}\ndata: {id}\n\n"))
    }

    /// Forwards the events `ids` on the stream of `opened`, as its body
    /// would: into the window and the history.
    fn forward(opened: &Opened, ids: &[&str]) {
        let mut state = opened.response.stream().lock();
        for id in ids {
            state.check_and_record(id);
            state.record_block(Some(id), &block(id));
        }
    }

    fn blocks(ids: &[&str]) -> Replay {
        Replay::Blocks(ids.iter().map(|id| block(id)).collect())
    }

    fn window(opened: &Opened) -> Vec<String> {
        opened.response.stream().lock().ids().collect()
    }

    fn generation(opened: &Opened) -> u64 {
        opened.response.stream().lock().generation()
    }

    /// Puts a hold on the stream of `opened`, as a lingering response does:
    /// returns what its task hears a takeover on.
    fn hold(opened: &Opened, id: u64) -> Claimed {
        let (asks, asked) = claim();
        assert!(opened.response.stream().lock().start_hold(id, asks, false));
        asked
    }

    fn head(per_request: bool) -> Arc<Head> {
        Arc::new(Head {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            per_request,
        })
    }

    /// What a lingering task hands over: its upstream body is pinned, as
    /// a service's body is.
    fn handover(body: &'static str) -> Handover {
        let body: Box<dyn Any + Send> = Box::new(Box::pin(body));
        Handover {
            body,
            pending: Vec::new(),
            leftover: Leftover::Nothing,
            head: head(false),
        }
    }

    /// Whether the registry keeps the stream of `key`.
    fn keeps(streams: &Streams, key: &StreamKey) -> bool {
        (streams.shards.iter()).any(|shard| {
            let shard = streams.lock_shard(shard);
            (shard.scopes.get(key.scope())).is_some_and(|s| s.contains_key(key.stream()))
        })
    }

    fn count(streams: &Streams) -> usize {
        (streams.shards.iter())
            .map(|shard| streams.lock_shard(shard).streams)
            .sum()
    }

    async fn later() {
        tokio::time::advance(Duration::from_secs(1)).await;
    }

    // The decision: how a response is served.

    #[test]
    fn a_request_that_may_not_linger_goes_upstream_even_to_a_held_stream() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "GET /"), None, GET);
        let _asked = hold(&first, 1);
        let second = open(&streams, key("s", "GET /"), None, NO_LINGER);
        assert_eq!(second.serve.name(), "upstream");
        assert!(first.response.stream().lock().holds(1), "the hold stays");
        assert!(!second.may_linger);
    }

    #[tokio::test]
    async fn a_get_without_a_cursor_takes_a_held_stream_over_replaying_what_the_hold_recorded() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "GET /"), None, GET);
        forward(&first, &["1"]);
        let mut asked = hold(&first, 1);
        forward(&first, &["2", "3"]);
        let second = open(&streams, key("s", "GET /"), None, GET);
        let Serve::Takeover(claim) = second.serve else {
            panic!("not a takeover: {:?}", second.serve);
        };
        let answered = claim.claim().expect("the hold's task listens");
        assert_eq!(second.replay, blocks(&["2", "3"]));
        assert!(
            !first.response.stream().lock().is_held(),
            "the hold is taken"
        );
        // The lingering task is asked, and its answer is the handover.
        let reply = asked.try_recv().expect("the hold's task is asked");
        reply.send(handover("upstream")).unwrap();
        let handed = answered.await.expect("the handover arrives");
        let taken = handed.typed::<&'static str>().expect("the body's type");
        assert_eq!(*taken.body, "upstream");
    }

    #[test]
    fn a_request_with_a_cursor_the_stream_knows_takes_a_held_stream_over_replaying_after_its_cursor()
     {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "POST /"), None, POST);
        forward(&first, &["1", "2"]);
        let _asked = hold(&first, 1);
        forward(&first, &["3"]);
        let second = open(&streams, key("s", "POST /"), Some("1"), POST);
        assert_eq!(second.serve.name(), "takeover");
        assert_eq!(second.cursor_known, Some(true));
        assert_eq!(second.replay, blocks(&["2", "3"]));
    }

    #[test]
    fn a_per_request_stream_without_a_cursor_does_not_take_a_held_stream_over() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "POST /"), None, POST);
        let _asked = hold(&first, 1);
        let second = open(&streams, key("s", "POST /"), None, POST);
        assert_eq!(second.serve.name(), "upstream");
        assert!(first.response.stream().lock().holds(1));
    }

    #[test]
    fn a_per_request_stream_with_a_cursor_it_does_not_know_does_not_take_a_held_stream_over() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "POST /"), None, POST);
        forward(&first, &["1"]);
        let _asked = hold(&first, 1);
        let second = open(&streams, key("s", "POST /"), Some("9"), POST);
        assert_eq!(second.serve.name(), "upstream");
        assert_eq!(second.cursor_known, Some(false));
        assert_eq!(second.replay, Replay::Gap);
    }

    #[test]
    fn a_hold_whose_task_is_gone_is_taken_but_claims_nothing() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "GET /"), None, GET);
        drop(hold(&first, 1));
        let second = open(&streams, key("s", "GET /"), None, GET);
        assert!(!first.response.stream().lock().is_held());
        let Serve::Takeover(claim) = second.serve else {
            panic!("not a takeover: {:?}", second.serve);
        };
        assert!(claim.claim().is_none(), "the request goes upstream");
    }

    #[test]
    fn a_complete_stream_resumed_from_a_cursor_its_history_holds_is_served_from_the_history() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "POST /"), None, POST);
        forward(&first, &["1", "2"]);
        let head = head(true);
        {
            let mut state = first.response.stream().lock();
            state.set_head(Arc::clone(&head));
            state.upstream_ended();
            assert!(state.is_complete());
        }
        let second = open(&streams, key("s", "POST /"), Some("1"), POST);
        let Serve::Complete(served) = &second.serve else {
            panic!("not complete: {:?}", second.serve);
        };
        assert!(Arc::ptr_eq(served, &head));
        assert_eq!(second.replay, blocks(&["2"]));
        // Without a cursor, or with one the history lacks, it is asked again.
        let third = open(&streams, key("s", "POST /"), None, POST);
        assert_eq!(third.serve.name(), "upstream");
        let fourth = open(&streams, key("s", "POST /"), Some("9"), POST);
        assert_eq!(fourth.serve.name(), "upstream");
    }

    #[test]
    fn a_standing_stream_whose_upstream_ended_is_never_complete() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "GET /"), None, GET);
        forward(&first, &["1", "2"]);
        {
            let mut state = first.response.stream().lock();
            state.set_head(head(false));
            state.upstream_ended();
            assert!(!state.is_complete());
        }
        let second = open(&streams, key("s", "GET /"), Some("1"), GET);
        assert_eq!(second.serve.name(), "upstream");
        assert_eq!(second.replay, blocks(&["2"]));
    }

    fn stored(stream: &str) -> StoredStream {
        StoredStream {
            keeps_blocks: true,
            ..StoredStream::new(stream)
        }
    }

    #[test]
    fn a_stream_another_replica_holds_is_followed_from_the_end_of_the_replay_of_a_known_cursor() {
        let streams = registry(with_history());
        let snapshot = Snapshot::Stored(StoredStream {
            ids: vec![("1".to_owned(), 0), ("2".to_owned(), 0)],
            cursor_known: Some(true),
            replay: blocks(&["2"]),
            follow_from: Some(7),
            ..stored("POST /")
        });
        let opened = streams.open(key("s", "POST /"), Some("1"), snapshot, POST);
        assert_eq!(opened.serve.name(), "follow after 7");
        assert_eq!(opened.replay, blocks(&["2"]));
    }

    #[test]
    fn a_get_without_a_cursor_follows_a_stream_another_replica_holds_from_its_newest_block() {
        let streams = registry(with_history());
        let snapshot = Snapshot::Stored(StoredStream {
            follow_from: Some(3),
            ..stored("GET /")
        });
        let opened = streams.open(key("s", "GET /"), None, snapshot, GET);
        assert_eq!(opened.serve.name(), "follow after 3");
        let snapshot = Snapshot::Stored(StoredStream {
            follow_from: Some(3),
            ..stored("POST /")
        });
        let opened = streams.open(key("s", "POST /"), None, snapshot, POST);
        assert_eq!(
            opened.serve.name(),
            "upstream",
            "a per-request stream without a cursor is asked anew"
        );
    }

    #[test]
    fn an_unknown_cursor_never_follows_another_replica() {
        let streams = registry(with_history());
        let snapshot = Snapshot::Stored(StoredStream {
            cursor_known: Some(false),
            replay: Replay::Gap,
            follow_from: Some(3),
            ..stored("GET /")
        });
        let opened = streams.open(key("s", "GET /"), Some("9"), snapshot, GET);
        assert_eq!(opened.serve.name(), "upstream");
    }

    /// A `GET` opened on a stream a store keeps, with linger on and the
    /// layer's history `history`.
    fn open_stored_lingering(history: Option<HistoryLimits>) -> Opened {
        let limits = StreamLimits {
            history,
            linger: true,
            ..StreamLimits::default()
        };
        let snapshot = Snapshot::Stored(stored("GET /"));
        registry(limits).open(key("s", "GET /"), None, snapshot, GET)
    }

    #[test]
    fn with_linger_a_stored_stream_keeps_its_history_in_process_within_the_layers_limits() {
        let opened = open_stored_lingering(Some(HistoryLimits::new().max_events(2)));
        assert!(opened.may_linger);
        let mut state = opened.response.stream().lock();
        for id in ["1", "2", "3"] {
            state.record_block(Some(id), &block(id));
        }
        let kept = state.history_len().0;
        assert_eq!(kept, 2, "the layer's limit, not the default");
    }

    #[test]
    fn with_linger_and_no_history_on_the_layer_a_stored_stream_keeps_none_and_does_not_linger() {
        let opened = open_stored_lingering(None);
        assert!(!opened.may_linger);
        assert!(!opened.response.stream().lock().has_history());
    }

    #[test]
    fn a_stored_stream_a_response_holds_keeps_the_ids_not_yet_in_the_store_at_the_same_generation()
    {
        let streams = registry(StreamLimits::default());
        let snapshot = Snapshot::Stored(StoredStream {
            ids: vec![("1".to_owned(), 0)],
            ..stored("GET /")
        });
        let first = streams.open(key("s", "GET /"), None, snapshot, NO_LINGER);
        first.response.stream().lock().check_and_record("2");
        let snapshot = Snapshot::Stored(StoredStream {
            ids: vec![("1".to_owned(), 0)],
            ..stored("GET /")
        });
        let second = streams.open(key("s", "GET /"), None, snapshot, NO_LINGER);
        assert!(Arc::ptr_eq(
            &first.response.stream().state,
            &second.response.stream().state
        ));
        assert_eq!(window(&second), ["1", "2"]);
        // In a newer generation, what the store has is the window.
        let snapshot = Snapshot::Stored(StoredStream {
            ids: vec![("1".to_owned(), 0)],
            generation: 1,
            ..stored("GET /")
        });
        let third = streams.open(key("s", "GET /"), None, snapshot, NO_LINGER);
        assert_eq!(window(&third), ["1"]);
        assert_eq!(generation(&third), 1);
        assert_eq!(third.stored.map(|s| s.generation), Some(1));
    }

    // Displacement, where one scope is one client.

    /// A response of a one-client scope that opened alone, forwarded `1`
    /// and offered itself to a reconnect of its client: with what its
    /// task hears a displacement on.
    fn offered(streams: &Streams) -> (Opened, Claimed) {
        let first = open(streams, key("s", "POST /"), None, ONE_CLIENT);
        forward(&first, &["1"]);
        let (offer, asked) = claim();
        first.response.offer(offer, true);
        (first, asked)
    }

    fn is_displaced(opened: &Opened) -> bool {
        opened.response.is_displaced()
    }

    #[test]
    fn where_one_scope_is_one_client_a_known_cursor_displaces_the_response_that_opened_alone() {
        let streams = registry(with_history());
        let (first, mut asked) = offered(&streams);
        let second = open(&streams, key("s", "POST /"), Some("1"), ONE_CLIENT);
        assert!(is_displaced(&first));
        let Serve::Takeover(claim) = second.serve else {
            panic!("not a takeover: {:?}", second.serve);
        };
        assert!(asked.try_recv().is_err(), "claimed once the lock is let go");
        let _answered = claim.claim().expect("the response listens");
        assert!(asked.try_recv().is_ok(), "the displaced response is asked");
    }

    #[test]
    fn a_cursor_the_stream_does_not_know_or_a_scope_of_many_clients_displaces_nobody() {
        let cases = [
            (Some("1"), POST, "a scope of many clients"),
            (Some("9"), ONE_CLIENT, "a cursor the stream does not know"),
            (None, ONE_CLIENT, "no cursor"),
        ];
        for (cursor, request, case) in cases {
            let streams = registry(with_history());
            let (first, _asked) = offered(&streams);
            let second = open(&streams, key("s", "POST /"), cursor, request);
            assert_eq!(second.serve.name(), "upstream", "{case}");
            assert!(!is_displaced(&first), "{case}");
        }
    }

    // Cursors.

    #[test]
    fn an_unknown_cursor_clears_the_window_and_bumps_the_generation() {
        let streams = registry(StreamLimits::default());
        let first = open(&streams, key("s", "GET /"), None, NO_LINGER);
        first.response.stream().lock().check_and_record("1");
        assert_eq!(generation(&first), 0);
        let second = open(&streams, key("s", "GET /"), Some("9"), NO_LINGER);
        assert_eq!(second.cursor_known, Some(false));
        assert_eq!(second.replay, Replay::Off, "no history: no gap either");
        assert!(window(&second).is_empty());
        assert_eq!(generation(&second), 1);
        assert_eq!(second.response.generation(), 1);
        assert_eq!(first.response.generation(), 0);
    }

    #[test]
    fn a_known_cursor_without_a_history_forgets_the_ids_after_it_and_bumps_the_generation() {
        let streams = registry(StreamLimits::default());
        let first = open(&streams, key("s", "GET /"), None, NO_LINGER);
        for id in ["1", "2", "3"] {
            first.response.stream().lock().check_and_record(id);
        }
        let second = open(&streams, key("s", "GET /"), Some("2"), NO_LINGER);
        assert_eq!(second.cursor_known, Some(true));
        assert_eq!(second.replay, Replay::Off);
        assert_eq!(window(&second), ["1", "2"]);
        assert_eq!(generation(&second), 1);
    }

    #[test]
    fn a_known_cursor_replays_from_the_history_and_keeps_the_window_for_the_upstreams_replay() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "GET /"), None, NO_LINGER);
        forward(&first, &["1", "2", "3"]);
        let second = open(&streams, key("s", "GET /"), Some("1"), NO_LINGER);
        assert_eq!(second.cursor_known, Some(true));
        assert_eq!(second.replay, blocks(&["2", "3"]));
        assert_eq!(window(&second), ["1", "2", "3"]);
        assert_eq!(generation(&second), 1);
    }

    #[test]
    fn an_unknown_cursor_with_a_history_is_a_gap() {
        let streams = registry(with_history());
        let first = open(&streams, key("s", "GET /"), None, NO_LINGER);
        forward(&first, &["1"]);
        let second = open(&streams, key("s", "GET /"), Some("9"), NO_LINGER);
        assert_eq!(second.cursor_known, Some(false));
        assert_eq!(second.replay, Replay::Gap);
        assert!(window(&second).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cursor_its_own_stream_lacks_resolves_to_the_scopes_most_recently_used_stream_that_knows_it()
     {
        let streams = registry(StreamLimits::default());
        for stream in ["POST /a", "POST /b"] {
            let opened = open(&streams, key("s", stream), None, NO_LINGER);
            opened.response.stream().lock().check_and_record("7");
            later().await;
        }
        let opened = open(&streams, key("s", "POST /c"), Some("7"), NO_LINGER);
        assert_eq!(opened.key, key("s", "POST /b"));
        assert_eq!(opened.cursor_known, Some(true));
        // Another scope's streams are never found.
        let opened = open(&streams, key("t", "POST /c"), Some("7"), NO_LINGER);
        assert_eq!(opened.key, key("t", "POST /c"));
        assert_eq!(opened.cursor_known, Some(false));
    }

    // Bounds.

    /// Opens and ends a response on each of `keys` in turn, a second apart.
    async fn use_in_turn(streams: &Streams, keys: &[(&str, &str)]) {
        for (scope, stream) in keys {
            later().await;
            drop(open(streams, key(scope, stream), None, NO_LINGER));
        }
    }

    /// The streams the registry keeps, as `scope stream`, sorted.
    fn kept(streams: &Streams) -> Vec<String> {
        let mut kept: Vec<String> = (streams.shards.iter())
            .flat_map(|shard| {
                let shard = streams.lock_shard(shard);
                (shard.scopes.iter())
                    .flat_map(|(scope, s)| s.keys().map(move |stream| format!("{scope} {stream}")))
                    .collect::<Vec<_>>()
            })
            .collect();
        kept.sort();
        assert_eq!(kept.len(), count(streams), "the count is kept right");
        kept
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_streams_of_a_scope_the_least_recently_used_that_no_response_holds_goes_first()
    {
        let limits = StreamLimits {
            max_streams_per_scope: 3,
            ..StreamLimits::default()
        };
        let streams = registry(limits);
        let _held = open(&streams, key("s", "GET /"), None, NO_LINGER);
        let used = [("s", "POST /a"), ("s", "POST /b"), ("s", "POST /a")];
        use_in_turn(&streams, &used).await;
        assert_eq!(kept(&streams), ["s GET /", "s POST /a", "s POST /b"]);
        use_in_turn(&streams, &[("s", "POST /c")]).await;
        // The live stream is the oldest but held; /a was used again lately.
        assert_eq!(kept(&streams), ["s GET /", "s POST /a", "s POST /c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_streams_of_a_scope_all_held_the_least_recently_used_goes_and_comes_back_empty()
     {
        let limits = StreamLimits {
            max_streams_per_scope: 2,
            ..StreamLimits::default()
        };
        let streams = registry(limits);
        let a = open(&streams, key("s", "POST /a"), None, NO_LINGER);
        a.response.stream().lock().check_and_record("1");
        later().await;
        let _b = open(&streams, key("s", "POST /b"), None, NO_LINGER);
        later().await;
        let _c = open(&streams, key("s", "POST /c"), None, NO_LINGER);
        // Another scope does not count against this one.
        let _other = open(&streams, key("t", "POST /a"), None, NO_LINGER);
        assert_eq!(kept(&streams), ["s POST /b", "s POST /c", "t POST /a"]);
        let again = open(&streams, key("s", "POST /a"), None, NO_LINGER);
        assert!(window(&again).is_empty(), "a new stream");
        assert_eq!(window(&a), ["1"], "the old one lives on in its response");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_most_streams_the_least_recently_used_stream_of_any_scope_goes_held_ones_last()
    {
        let limits = StreamLimits {
            max_streams: 3,
            ..StreamLimits::default()
        };
        let stats = Stats::default();
        let streams = Streams::new(limits, stats.clone());
        let _held = open(&streams, key("x", "GET /"), None, NO_LINGER);
        use_in_turn(&streams, &[("y", "GET /"), ("z", "GET /"), ("w", "GET /")]).await;
        assert_eq!(kept(&streams), ["w GET /", "x GET /", "z GET /"]);
        assert_eq!(stats.snapshot().streams, 3, "the gauge follows");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_no_response_holds_is_let_go_once_idle_past_its_ttl() {
        let limits = StreamLimits {
            idle_ttl: Duration::from_secs(60),
            ..StreamLimits::default()
        };
        let streams = registry(limits);
        drop(open(&streams, key("s", "GET /idle"), None, NO_LINGER));
        let held = open(&streams, key("s", "GET /held"), None, NO_LINGER);
        tokio::time::advance(Duration::from_secs(59)).await;
        // Any request of the shard sweeps it when a sweep is due.
        drop(open(&streams, key("s", "GET /other"), None, NO_LINGER));
        assert!(
            keeps(&streams, &key("s", "GET /idle")),
            "not idle long enough"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(open(&streams, key("s", "GET /other"), None, NO_LINGER));
        assert!(!keeps(&streams, &key("s", "GET /idle")));
        assert!(keeps(&streams, &key("s", "GET /held")), "held: never idle");
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_a_store_keeps_is_let_go_soon_after_its_last_response() {
        let streams = registry(StreamLimits::default());
        let snapshot = Snapshot::Stored(stored("GET /"));
        drop(streams.open(key("s", "GET /"), None, snapshot, NO_LINGER));
        tokio::time::advance(STORED_GRACE).await;
        drop(open(&streams, key("s", "GET /other"), None, NO_LINGER));
        assert!(!keeps(&streams, &key("s", "GET /")));
        assert!(keeps(&streams, &key("s", "GET /other")), "kept an hour");
    }
}
