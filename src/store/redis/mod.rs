//! [`RedisStore`]: streams kept in Redis, shared by every replica of
//! a gateway.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::{Client, RedisResult, Value};
use tokio::sync::watch;

use super::{
    Follow, IdBatch, Lease, Snapshot, Stop, Stops, StoreError, StoreLimits, StoredStream,
    StreamKey, TrackerStore,
};
use crate::lock::lock;
use crate::stream::{Replay, StreamLimits};

use connection::{Connection, unavailable, within, within_raw};
use follow::{Follower, Subscriber};
use keys::{Keys, escape};
use lease::{Leases, RedisLease, refresh_leases};
use queue::{Kept, Queue, Target};
use replies::{Entry, Opened, following_on, millis, replayed_ids, window_read};
use scripts::{REPLAY_CONSUMER, REPLAY_GROUP, is_no_script, is_wrong_type, repair, scripts};
use writer::Writer;

mod connection;
mod follow;
mod keys;
mod lease;
mod queue;
mod replies;
mod scripts;
mod stops;
mod writer;

/// The default [`RedisStore::prefix`].
pub(crate) const DEFAULT_PREFIX: &str = "sse-resume:";
/// The default [`RedisStore::timeout`]: 250 ms.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// The default [`RedisStore::queue_len`], in ids.
pub(crate) const DEFAULT_QUEUE_LEN: usize = 65_536;
/// The default [`RedisStore::lease`]: 3 s.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// The default [`RedisStore::max_followers`].
pub(crate) const DEFAULT_MAX_FOLLOWERS: usize = 10_000;
/// What a follow holds unread before its follower waits.
const FOLLOW_CAPACITY: usize = 4;

/// How long [`RedisStore::connect`] waits for a first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write waits at least this long for Redis, whatever the open timeout.
const MIN_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Keeps streams in Redis, so that every replica of a gateway
/// resumes and deduplicates a client's stream, wherever it reconnects.
///
/// Requires the `redis` cargo feature. CI runs its tests, a single node,
/// a Cluster of three and a Cluster failover, against Redis 7.0 and
/// Valkey 8.1.
/// Works with a single node (through a reconnecting connection manager)
/// and with Cluster
/// ([`connect_cluster`](Self::connect_cluster)): all keys of a scope share
/// a hash tag. The sections below describe the key layout, the round trips
/// and what is atomic across replicas.
///
/// - **Off the hot path.** A request loads its window once, with the
///   client's cursor applied, in one round trip; dedup then runs in
///   process. Ids are queued (bounded) and written behind the stream in
///   pipelined, coalesced batches; the last batch goes when the stream ends
///   or the client goes away.
/// - **Misbehaving Redis.** Opening a stream gives up after
///   [`timeout`](Self::timeout) (250 ms by default) with
///   [`StoreError::Unavailable`], and the layer fails open or closed as
///   configured. Writes are retried a few times and then dropped and
///   counted; a full queue refuses ids with [`StoreError::Backlogged`].
///   The connection comes back on its own when Redis does. Values of the
///   wrong type found in Redis are removed, ids that are not UTF-8 are
///   skipped, and both are logged and counted.
///
/// Clones share the connection and the write queue. The builder methods change the handle they are called on
/// (and the clones made from it afterwards).
///
/// The window's length, the streams kept per scope and the replay history
/// are set on the layer ([`SseResumeLayer::window_len`](crate::SseResumeLayer::window_len),
/// [`max_streams_per_scope`](crate::SseResumeLayer::max_streams_per_scope),
/// [`history`](crate::SseResumeLayer::history)), which hands them to the
/// store when it is given it ([`TrackerStore::set_limits`]): the store and
/// its clones keep them, in Redis, within the same bounds as the layer in
/// process. A store shared by two layers keeps the limits of the last.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use tower_sse_resume::{RedisStore, SseResumeLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse_resume::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/")
///     .await?
///     .prefix("gateway:")
///     .ttl(Duration::from_secs(600))
///     .timeout(Duration::from_millis(100));
/// let layer = SseResumeLayer::new().store(store);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
///
/// It needs Redis 6.2 or later, or Valkey (a history's bytes bound is
/// `XTRIM ... MINID`, a lease's refresh `GETEX`); CI runs its tests
/// against Redis 7.0 and Valkey 8.1.
///
/// # Key layout
///
/// Every key starts with the store's prefix (`sse-resume:` by default),
/// followed by the scope in braces: the scope is the key's *hash tag*, so
/// that all keys of one scope live on one Cluster slot and one script can
/// touch them all. For a scope `S` and a stream `T` of it:
///
/// | key | type | holds |
/// |---|---|---|
/// | `<prefix>{S}:w<G>:T` | list | the window of `T` in its generation `G` (a cursor's cut moves it to the next generation's key): each id forwarded, oldest first, and right after it the fingerprint of its event (a NUL, then decimal digits; no id holds a NUL) and, with a history, where the id's block starts in it (a colon, then decimal digits), a little past the window's length at most |
/// | `<prefix>{S}:wo:T` | list | only within an open's transaction, never seen outside it: a copy of the window of `T` that the open reads natively, then deletes |
/// | `<prefix>{S}:s` | sorted set | the streams of `S`, scored by last use (ms): for finding a cursor's stream, capping the streams per scope and forgetting idle ones |
/// | `<prefix>{S}:g` | hash | per stream, its generation: bumped whenever a client cursor cuts the window |
/// | `<prefix>{S}:h:T` | stream | with a [history](crate::SseResumeLayer::history), the blocks of `T`, oldest first: an entry per block, its one field `b` when it was kept (ms) and its resume id (empty for none) on a line, `<ms>:<id>` (`<ms>*<id>` for an id the layer stamped, which no event of the window has), then its bytes as forwarded. The entry id is `<start>-<position>`: where the block's bytes start among all the stream ever kept, and its place in it, both rising, so that the bytes bound is a native trim and a position that does not follow on says blocks are missing. Its consumer group `replay` is how an open reads its replay natively |
/// | `<prefix>{S}:hi:T` | list | with a history, its index of the resume ids the window does not point from (stamped ones, and ids the window let go or a cursor cut before the history did): each followed by the start of its block after a NUL, a little past the history's count at most. The window and the index are only ways in: an entry they point at that is gone, or holds another id, is not in the history |
/// | `<prefix>{S}:e` | string | with a history, the last epoch handed out for stamped ids, so that every replica's are unique and rise |
/// | `<prefix>{S}:l:T` | string | while a replica reads the upstream of `T` and may linger: that replica's holder id, with the [lease](Self::lease) as TTL |
/// | `<prefix>{S}:f:T` | string | while a replica follows `T`: a mark, with the lease as TTL, that keeps the holder's linger going |
/// | `<prefix>{S}:a:T` | string | while `T` is held with its client gone: an entry id of the history after which the blocks the client missed start, where a follower without a cursor starts; ending in `!` when that client had been sent ids, so that such a follower hears of a gap first |
/// | `<prefix>{S}:d:T` | string | once the upstream of `T` ended: `e:<position>` for a standing stream, `c:<position>` for a complete per-request one, the position of its last block |
///
/// The history's writes are told on the channel `<prefix>{S}:c:T` (Pub/Sub,
/// not a key); an append's message carries its entries (up to 16 KiB), so
/// that a follower that keeps up reads nothing. Stops go on the channel
/// `<prefix>stops`, and are kept for the TTL in the stream
/// `<prefix>stops:log` (about the newest 1,024, each entry's field `s` the
/// stop), which a replica whose subscription was down reads once it is
/// back.
///
/// A script gets the keys of its scope and its stream as `KEYS`; the keys
/// of the scope's other streams, which only the search of a cursor's
/// stream and the cap on streams per scope reach, it names itself, within
/// the same hash tag.
///
/// In the prefix and the scope, `%`, `{` and `}` are written `%25`, `%7B`
/// and `%7D`, so that the braces of the hash tag are the only ones and two
/// scopes never share a key; the empty scope is written `%`. The stream
/// name is used as it is. Every key has the store's TTL, refreshed by
/// the opens (with ids) and the writes of a stream once a quarter of it
/// has run since the last refresh: the window's own TTL says when, to an
/// open, and the writer keeps the schedule of its writes. A key an open
/// or a write makes gets it at once, and an open marks the stream used
/// every time.
///
/// # Round trips
///
/// Opening a stream is one round trip: a transaction of the open script
/// (`EVALSHA`) and native reads of the replay and the window. The script
/// finds the stream of the client's cursor within the scope, cuts the
/// window after it (or clears it), bumps the generation, copies the
/// window to `wo:T`, and points the history's consumer group `replay`
/// after the cursor's block; the `XREADGROUP` and the `LRANGE` after it in
/// the transaction then return the replay's blocks and the window
/// natively, as fast as a range read, where a reply built in Lua would
/// cost several times that. With a replay, the copy ends at the cursor:
/// the window's ids after it are those of the blocks replayed, forwarded
/// after the cursor's, and the store takes them from those blocks (their
/// own ids, and their events' fingerprints) rather than read them twice.
/// A cursor recorded on another stream of the scope (a `POST`'s, resumed
/// by a `GET`) has its blocks read in a second round trip, and so does
/// every open of a Cluster while the client learns where a slot moved (a
/// transaction does not follow it).
/// Ids are written behind the stream: [`TrackerStore::record`] only queues
/// them (bounded), and a background task sends what has piled up for all
/// keys as one pipeline, coalesced to the last window's worth of ids per
/// key. Most writes are plain appends, where the process's last write
/// left the history and with nothing else to change: three native
/// commands for one event, no script (the history's `XADD`, the
/// window's `RPUSHX`, and once the blocks landed, the followers'
/// `PUBLISH`, which carries them). Nothing need be checked
/// first, for a cursor's cut fences off the writes of the generation
/// before it: the window moves to the new generation's key, where an
/// older write's `RPUSHX` finds none, and the history's last id (`XSETID`)
/// moves past every place an older append could add a block (an append
/// carries at most a sixteenth of the history's bytes bound), by the
/// start alone, so that positions still follow on. What an append's
/// command refuses, the whole write script does after it, with the
/// generation's check. The history's count and bytes bounds are held every
/// eighth of them (a trim at each `XADD` would cost it half as much again),
/// and exactly by an open, which replays no block past them; the window,
/// once an append finds it past its length and an eighth: by an `LTRIM`
/// right after the append's replies, or when the history may be longer
/// than the window (the ids that leave it may point at blocks the history
/// holds, which move to its index first), by the next write, a whole one,
/// as the stream's TTLs every quarter of the TTL.
///
/// # Following a stream another replica holds
///
/// With a history and linger on, a replica that reads a stream's upstream
/// holds a lease on it in Redis, renewed a third of the lease apart by one
/// task per store. A client that reconnects to another replica, with a
/// cursor the shared history holds, is served there from the history
/// after its cursor and then *follows* the stream as the holder records it,
/// until its upstream ends, with no upstream request. A `GET` on the
/// stream's key without a cursor (a client that got nothing yet, or a
/// second tab) follows it too, from its newest block, as it would take a
/// held stream over on the holder: one replica reads a stream's upstream
/// and records it, never two. Unlike a takeover on the holder, it gets no
/// replay of what the holder read while no client was attached: another
/// replica cannot tell when that client went away. Each write of the
/// history tells so on the stream's channel, an append once its blocks
/// landed and with them; one subscription per store carries every
/// channel, and each follower takes the blocks after the last one it
/// sent, by position, from the message when they follow on from it, else
/// read from the history, when told and only then: exactly once, in
/// order, whatever was published or missed. One
/// task per store looks at the leases of every stream its followers
/// follow, a third of the lease apart, in one pipeline: it marks each
/// followed (which keeps the holder's linger going) and tells the
/// followers of a stream whose lease lapsed, or all of them when Redis
/// does not answer, to read and find out. A store opens three
/// connections to a node: one for its writes, one for the rest, one for
/// the subscription (in a Cluster, two per primary and one for the
/// subscription), however many followers it serves
/// ([`max_followers`](Self::max_followers), 10,000 by default, bounds them).
///
/// When the holder goes away without ending the stream (it died, or its
/// linger ran out), its lease lapses and the follower notices within
/// twice the lease:
///
/// - **a standing stream** (the follower's own `GET`): the follower asks
///   the upstream itself, with the stream's last recorded id as
///   `Last-Event-ID`, and goes on from it, deduplicated. An upstream that
///   resumes loses nothing; one that cannot loses what it sent after the
///   holder's last write, up to twice the lease (counted as
///   `follows_resumed` in the layer's stats).
/// - **a per-request stream** (a tool call, resumed by a `GET`): it cannot
///   be sent again, and the response ends with the gap signal after the
///   last block recorded (counted as `follows_lost`).
///
/// A lease is one replica's. When the holder's lapsed while Redis was slow
/// to answer it, and another replica went on from the upstream and took
/// the stream, the first learns so at its next refresh (a third of the
/// lease later): it renews that lease no more, and a stream it holds with
/// no client attached lets its upstream go. Until then both record it,
/// and a replay gives each id once all the same.
///
/// When Redis is unreachable while a client follows, the follower retries;
/// past four times the lease it gives up as when the holder goes away.
/// Blocks that Redis refused, or that were dropped after the write retries,
/// leave a hole: the next write forgets the history before it, so that a
/// replay across it gets the gap signal instead of skipping it.
///
/// # What is atomic and what is best effort
///
/// Each script runs atomically in Redis. Within a process, the responses
/// of one stream share the layer's one copy of it, so check-and-record is
/// atomic there, as with [`MemoryStore`](crate::MemoryStore). Across
/// replicas:
///
/// - **No loss from late writes.** A write carries the generation its
///   stream was opened at, and is refused when a client cursor has cut the
///   window since: ids a stale stream forwarded to a client that already
///   reconnected elsewhere never come back into the window, where they
///   would drop the upstream's replay of events the client never got.
/// - **Best effort: duplicates.** Dedup runs on the window loaded when a
///   request starts. Ids another replica forwards after that, or that are
///   still in its queue (milliseconds), are unknown to this request, and a
///   replay of them is forwarded again: a duplicate, never a loss. Two
///   replicas streaming one key at once may both forward an id, and once
///   a cursor has cut the window, the writes of the stream opened before
///   it are refused (counted as fenced), except where the client follows
///   the stream or takes it over on the replica that holds it. A cursor
///   still in the queue of the replica that holds its stream is waited
///   for, within half the [`timeout`](Self::timeout); past that, or when
///   no replica holds the stream, it is unknown and clears the window.
/// - **Best effort: history.** Blocks that Redis refused or that were
///   dropped leave a hole in the shared history: the next write forgets
///   the history before it, and a replay across it gets the gap signal.
///   So do blocks a failover lost (Redis replicates asynchronously): the
///   writer remembers where it left each stream's history and goes on
///   from there, so that the positions Redis lost are left out, and a
///   replay or a follow across them gets the gap signal.
/// - **Best effort: writes.** When Redis is down, writes are retried a few
///   times and then dropped and counted (see [`RedisStats`]); the client's
///   stream goes on, deduplicated in process.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    config: Arc<Config>,
}

/// What the clones of a store share.
struct Shared {
    connection: Connection,
    queue: Arc<Queue>,
    /// This process's name in the leases it takes: unique per store.
    holder: Arc<str>,
    leases: Arc<Leases>,
    subscriber: Arc<Subscriber>,
    followers: Arc<AtomicUsize>,
    /// The lease, in ms: see [`RedisStore::lease`].
    lease: Arc<AtomicU64>,
    /// The layer's limits that the store keeps too, as
    /// [`TrackerStore::set_limits`] last gave them.
    limits: std::sync::Mutex<StoreLimits>,
    /// Tells the background tasks to stop.
    closing: watch::Sender<bool>,
}

#[derive(Debug, Clone)]
struct Config {
    /// Escaped: see `escape`.
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    max_followers: usize,
}

/// What a [`RedisStore`] did with the ids handed to it, counted in ids
/// since it connected. Read it with [`RedisStore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Ids written to Redis.
    pub written: u64,
    /// Ids refused because the write queue was full.
    pub rejected: u64,
    /// Ids dropped because Redis failed them past the retries.
    pub dropped: u64,
    /// Ids not written because a client cursor had cut their window since
    /// their stream opened: not an error, see [`RedisStore`].
    pub fenced: u64,
    /// Write rounds sent again after Redis failed them.
    pub retries: u64,
    /// Bad values found in Redis: keys of the wrong type (removed), ids or
    /// names that are not UTF-8 (skipped).
    pub bad_values: u64,
    /// Ids waiting in the queue now.
    pub queued: u64,
}

impl RedisStore {
    /// Connects to the Redis server at `url`, e.g.
    /// `redis://127.0.0.1:6379/` or `rediss://user:pass@host/0`, and starts
    /// the background writer on the current tokio runtime.
    ///
    /// Waits for the first connection (5 s at most); after that the
    /// connection is re-established in the background whenever it drops.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(MIN_WRITE_TIMEOUT))
            .set_response_timeout(Some(MIN_WRITE_TIMEOUT))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager = within(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await?;
        let writes = within(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        Ok(Self::start(
            Connection::Single(manager),
            Connection::Single(writes),
            vec![client],
        ))
    }

    /// Connects to a Redis Cluster through any of its `nodes`
    /// (URLs as for [`connect`](Self::connect)). All keys of a scope share
    /// a hash tag, so every script runs on one slot, and writes are
    /// pipelined per scope.
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        // Followers listen through any one node: a Cluster carries every
        // channel to every node.
        let subscribers = (nodes.iter())
            .map(|node| Client::open(node.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(MIN_WRITE_TIMEOUT)
            .response_timeout(MIN_WRITE_TIMEOUT)
            .retries(3)
            .build()
            .map_err(unavailable)?;
        if subscribers.is_empty() {
            return Err(StoreError::Unavailable("no Cluster node given".into()));
        }
        let connection = within(CONNECT_TIMEOUT, client.get_async_connection()).await?;
        let writes = within(CONNECT_TIMEOUT, client.get_async_connection()).await?;
        Ok(Self::start(
            Connection::Cluster(connection),
            Connection::Cluster(writes),
            subscribers,
        ))
    }

    /// Starts the background tasks: the writer, on `writes`, a connection
    /// of its own (a connection answers in order, and opens and the
    /// leases' refresh then wait behind no pipeline of writes), the leases'
    /// keeper, and the followers' subscription through `subscribers`.
    fn start(connection: Connection, writes: Connection, subscribers: Vec<Client>) -> Self {
        let (done, done_receiver) = watch::channel(0);
        let queue = Arc::new(Queue::new(DEFAULT_QUEUE_LEN, done_receiver));
        let writer = Writer {
            connection: writes,
            queue: Arc::clone(&queue),
            done,
            next_blocks: Default::default(),
            touched: Default::default(),
            whole_next: Default::default(),
        };
        tokio::spawn(writer.run());
        let (closing, closed) = watch::channel(false);
        let holder: Arc<str> = holder_id().into();
        let leases = Arc::new(Leases::default());
        let lease = Arc::new(AtomicU64::new(millis(DEFAULT_LEASE)));
        tokio::spawn(refresh_leases(
            Arc::downgrade(&leases),
            connection.clone(),
            Arc::clone(&holder),
            Arc::clone(&lease),
            closed.clone(),
        ));
        let subscriber = Arc::new(Subscriber::default());
        tokio::spawn(follow::watch_leases(
            Arc::downgrade(&subscriber),
            connection.clone(),
            Arc::clone(&lease),
            closed.clone(),
        ));
        tokio::spawn(Arc::clone(&subscriber).run(subscribers, connection.clone(), closed));
        let shared = Shared {
            connection,
            queue,
            holder,
            leases,
            subscriber,
            followers: Arc::default(),
            lease,
            limits: std::sync::Mutex::new(StoreLimits::default()),
            closing,
        };
        Self {
            shared: Arc::new(shared),
            config: Arc::new(Config {
                prefix: escape(DEFAULT_PREFIX),
                ttl: StreamLimits::default().idle_ttl,
                timeout: DEFAULT_TIMEOUT,
                max_followers: DEFAULT_MAX_FOLLOWERS,
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// What every key starts with: `sse-resume:` by default. Stores with
    /// different prefixes never see each other's streams.
    pub fn prefix(self, prefix: &str) -> Self {
        self.configure(|config| config.prefix = escape(prefix))
    }

    /// How long the keys of a scope live after its last use: one hour by
    /// default (at least 1 ms).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.configure(|config| config.ttl = ttl.max(Duration::from_millis(1)))
    }

    /// How long a request waits for Redis when it starts, before it goes on
    /// without it: 250 ms by default. Writes wait at least 1 s.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.configure(|config| config.timeout = timeout)
    }

    /// How long a replica's hold on a stream lasts in Redis without being
    /// renewed (at least 30 ms): 3 s by default. A replica renews its
    /// holds a third of it apart, so a follower on another replica notices
    /// within twice this long that the holder died. Set it alike on every
    /// replica. Shared with every clone.
    pub fn lease(self, lease: Duration) -> Self {
        let lease = lease.max(Duration::from_millis(30));
        self.shared.lease.store(millis(lease), Relaxed);
        self
    }

    /// The most responses of this process following streams that other
    /// replicas hold (at least 1): 10,000 by default. Past it, a request
    /// goes to the upstream as without following.
    pub fn max_followers(self, max: usize) -> Self {
        self.configure(|config| config.max_followers = max.max(1))
    }

    /// The number of responses of this process following a stream that
    /// another replica holds, now.
    pub fn followers(&self) -> usize {
        self.shared.followers.load(Relaxed)
    }

    /// The number of streams this process holds now: it reads their
    /// upstream, and other replicas follow them.
    pub fn holds(&self) -> usize {
        self.shared.leases.len()
    }

    /// The most ids waiting to be written (at least 1): 65,536 by default,
    /// and 256 bytes per id. Ids recorded past it are refused and counted.
    /// Shared with every clone.
    pub fn queue_len(self, len: usize) -> Self {
        self.shared.queue.max_ids.store(len.max(1), Relaxed);
        self
    }

    /// What the store did with the ids handed to it so far.
    pub fn stats(&self) -> RedisStats {
        self.shared.queue.stats()
    }

    /// Waits until every id recorded before this call is written, or
    /// dropped. For a graceful shutdown (bound it with a timeout) and for
    /// tests.
    pub async fn flush(&self) {
        self.shared.queue.flush().await;
    }

    /// The generation `stream` of `keys` is in, as Redis says (0 for none,
    /// or a value that is no number): for a repair, which needs its
    /// window's key.
    async fn generation(&self, keys: &Keys, stream: &str, limit: Duration) -> u64 {
        let mut connection = self.shared.connection.clone();
        let mut read = ::redis::cmd("HGET");
        read.arg(&keys.generations).arg(stream);
        let generation: Result<Option<String>, _> =
            within(limit, read.query_async(&mut connection)).await;
        (generation.ok().flatten())
            .and_then(|generation| generation.parse().ok())
            .unwrap_or(0)
    }

    fn keys(&self, scope: &str) -> Keys {
        Keys::new(&self.config.prefix, scope)
    }

    /// The layer's limits that the store keeps too.
    fn limits(&self) -> StoreLimits {
        *lock(&self.shared.limits)
    }

    /// Opens `stream` with `cursor` applied, in one round trip: the open
    /// script, and in the same transaction a native read of the replay
    /// (see `scripts::OPEN`). Only a cursor recorded on another stream of
    /// the scope takes a second round trip, to read that one's replay.
    async fn load(
        &self,
        keys: &Keys,
        stream: &str,
        cursor: Option<&str>,
    ) -> Result<StoredStream, StoreError> {
        let config = &self.config;
        let limits = self.limits();
        let history = limits.history();
        // `split`: the script alone, its replay read after. A Cluster's
        // client follows a slot that moved for a command, not for a
        // transaction; the script alone lets it learn where the slot went.
        let open = |whole: bool, wait: bool, split: bool| {
            let mut transaction = ::redis::pipe();
            transaction.ignore_errors();
            if !split {
                transaction.atomic();
            }
            // The script copies the window to where the transaction reads
            // it natively, whatever its generation, and deletes it then.
            let window = keys.of("wo:", stream);
            let mut command =
                keys.script_call(&scripts().open, whole, config, &limits, stream, &window);
            command
                .arg(stream)
                .arg(cursor.unwrap_or(""))
                .arg("1")
                .arg(&*self.shared.holder)
                .arg(if wait { "1" } else { "0" })
                .arg(if split { "1" } else { "0" });
            transaction.add_command(command);
            if let Some(history) = history.filter(|_| !split) {
                transaction
                    .cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(REPLAY_GROUP)
                    .arg(REPLAY_CONSUMER)
                    .arg("COUNT")
                    .arg(history.events())
                    // Nothing pending: a replay read is never acknowledged,
                    // and the group holds no entry for it.
                    .arg("NOACK")
                    .arg("STREAMS")
                    .arg(keys.of("h:", stream))
                    .arg(">");
            }
            if !split {
                let len = 2 * isize::try_from(limits.window_len()).unwrap_or(isize::MAX / 2);
                transaction.cmd("LRANGE").arg(&window).arg(-len).arg(-1);
                transaction.cmd("DEL").arg(&window).ignore();
            }
            transaction
        };
        let deadline = tokio::time::Instant::now() + config.timeout;
        let mut repaired = false;
        let mut whole = false;
        let mut split = false;
        let mut listening = None;
        let (reply, replay, window) = loop {
            // A cursor on its way from the replica that holds the stream is
            // waited for, within half the timeout.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left > config.timeout / 2;
            let mut connection = self.shared.connection.clone();
            let replies: RedisResult<Vec<RedisResult<Value>>> =
                within_raw(left, open(whole, wait, split).query_async(&mut connection)).await;
            let replies = match replies {
                Err(error) if !split && self.shared.connection.is_cluster() => {
                    tracing::debug!(%error, "the open's transaction failed: the script alone");
                    split = true;
                    continue;
                }
                replies => replies.map_err(unavailable)?,
            };
            let mut replies = replies.into_iter();
            let reply = replies.next().unwrap_or(Ok(Value::Nil));
            let replay = if history.is_some() && !split {
                replies.next()
            } else {
                None
            };
            let window = replies.next();
            match reply {
                Err(error) if !whole && is_no_script(&error) => whole = true,
                Err(error) if !repaired && is_wrong_type(&error) => {
                    // A key of the stream holds what no script of ours
                    // wrote: it goes, and the stream starts afresh.
                    repaired = true;
                    let generation = self.generation(keys, stream, left).await;
                    let typed = keys.typed(stream, generation);
                    let removed = repair(&self.shared.connection, left, &typed).await?;
                    self.note_bad_values(removed.max(1), keys);
                }
                Ok(reply) if Opened::is_wait(&reply) => {
                    // Asked again when the holder's next write is told on
                    // the stream's channel, not on a timer; past half the
                    // timeout, the script waits no more.
                    let listening = listening.get_or_insert_with(|| {
                        (self.shared.subscriber).listen(keys.of("c:", stream))
                    });
                    let waited = deadline - config.timeout / 2;
                    let _ = tokio::time::timeout_at(waited, listening.told()).await;
                }
                Ok(reply) => break (reply, replay, window),
                Err(error) => return Err(unavailable(error)),
            }
        };
        let mut opened = Opened::parse(reply).inspect_err(|_| self.note_bad_values(1, keys))?;
        let window = match opened.window.take() {
            Some(window) => window,
            None => {
                let read = window.unwrap_or(Ok(Value::Nil)).map_err(unavailable)?;
                window_read(read, &mut opened.bad_values)?
            }
        };
        self.note_bad_values(opened.bad_values, keys);
        let mut loaded = StoredStream::new(opened.stream);
        loaded.ids = window;
        loaded.replay = match opened.replayed {
            None => {
                if opened.follow && cursor.is_none() {
                    // Nothing to replay: the follow starts after the newest.
                    loaded.follow_from = Some(opened.follow_at);
                }
                Replay::Off
            }
            Some(false) => Replay::Gap,
            Some(true) => {
                let entries = match replay.filter(|_| loaded.stream == stream) {
                    Some(replay) => Entry::parse_read(replay.map_err(unavailable)?)?,
                    // The cursor's stream is another, or the script ran
                    // alone: the blocks are read now. Read later than the
                    // window, they may hold more than it does, never less.
                    None => {
                        let mut read = ::redis::cmd("XRANGE");
                        read.arg(keys.of("h:", &loaded.stream))
                            .arg(format!("({}", opened.replay_after))
                            .arg("+")
                            .arg("COUNT")
                            .arg(history.map_or(0, |history| history.events()));
                        let mut connection = self.shared.connection.clone();
                        Entry::parse_range(
                            within(config.timeout, read.query_async(&mut connection)).await?,
                        )?
                    }
                };
                if following_on(&entries, opened.expect) {
                    if opened.ids_replayed {
                        loaded.ids.extend(replayed_ids(&entries));
                    }
                    if opened.follow {
                        let after = opened.replay_after.split_once('-');
                        let after = after.and_then(|(start, _)| start.parse().ok());
                        let last = entries.last().map(|entry| entry.start).or(after);
                        loaded.follow_from = Some(last.unwrap_or(0));
                    }
                    loaded.complete = opened.complete;
                    Replay::Blocks(entries.into_iter().map(|entry| entry.block).collect())
                } else {
                    // Blocks are missing after the cursor (a failover lost
                    // them, or the history let them go meanwhile).
                    Replay::Gap
                }
            }
        };
        // Redis never counts below zero.
        loaded.generation = u64::try_from(opened.generation).unwrap_or(0);
        loaded.cursor_known = opened.cursor_known;
        loaded.stamp_epoch = (opened.epoch > 0).then_some(opened.epoch);
        loaded.keeps_blocks = history.is_some();
        loaded.gap_first = opened.unconfirmed && opened.follow && cursor.is_none();
        Ok(loaded)
    }

    fn target(&self, key: &StreamKey) -> Target {
        Target {
            keys: self.keys(key.scope()),
            stream: key.stream().to_owned(),
            config: Arc::clone(&self.config),
            limits: self.limits(),
            holder: Arc::clone(&self.shared.holder),
            lease_ms: self.shared.lease.load(Relaxed),
        }
    }

    fn note_bad_values(&self, count: u64, keys: &Keys) {
        if count > 0 {
            self.shared
                .queue
                .counters
                .bad_values
                .fetch_add(count, Relaxed);
            tracing::error!(
                scope_keys = %keys.streams,
                count,
                "bad values in Redis: removed keys of the wrong type or skipped ids that are not UTF-8"
            );
        }
    }
}

impl TrackerStore for RedisStore {
    async fn open(&self, key: &StreamKey, cursor: Option<&str>) -> Result<Snapshot, StoreError> {
        let keys = self.keys(key.scope());
        let stream = self.load(&keys, key.stream(), cursor).await?;
        Ok(Snapshot::Stored(stream))
    }

    fn record(&self, key: &StreamKey, generation: u64, batch: &IdBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let limits = self.limits();
        self.shared.queue.push(
            self.keys(key.scope()).of("w:", key.stream()),
            i64::try_from(generation).unwrap_or(i64::MAX),
            batch,
            || self.target(key),
            Kept {
                window: limits.window_len(),
                history: limits.history().map_or(0, |history| history.events()),
            },
        )
    }

    fn hold(&self, key: &StreamKey) -> Option<Lease> {
        // Only a stream with a shared history can be followed.
        self.limits().history()?;
        let keys = self.keys(key.scope());
        let lease_key = keys.of("l:", key.stream());
        let window_key = keys.of("w:", key.stream());
        let leases = &self.shared.leases;
        let (first, state) = leases.add(&lease_key, keys.of("f:", key.stream()));
        if first {
            (self.shared.queue).push_lease(window_key.clone(), || self.target(key), true);
        }
        Some(Lease::new(RedisLease {
            shared: Arc::clone(&self.shared),
            lease_key,
            window_key,
            target: Some(self.target(key)),
            state,
        }))
    }

    fn follow(&self, key: &StreamKey, position: u64) -> Option<Follow> {
        let followers = &self.shared.followers;
        let counted = followers.fetch_update(Relaxed, Relaxed, |n| {
            (n < self.config.max_followers).then_some(n + 1)
        });
        if counted.is_err() {
            tracing::warn!(%key, "too many followers: the request goes upstream");
            return None;
        }
        let (sender, follow) = Follow::channel(FOLLOW_CAPACITY);
        let follower = Follower {
            connection: self.shared.connection.clone(),
            keys: self.keys(key.scope()),
            stream: key.stream().to_owned(),
            config: Arc::clone(&self.config),
            subscriber: Arc::clone(&self.shared.subscriber),
            followers: Arc::clone(followers),
            lease: Duration::from_millis(self.shared.lease.load(Relaxed)),
            after: position,
            sender,
            _store: Arc::clone(&self.shared),
        };
        tokio::spawn(follower.run());
        Some(follow)
    }

    /// Publishes `stop` on the store's channel of stops, in the
    /// background, within the [`timeout`](Self::timeout): every replica's
    /// subscription hears it, this one's too. Kept in the stops' log for
    /// the store's TTL too: a replica whose subscription was down reads it
    /// there once it is back.
    fn broadcast_stop(&self, stop: &Stop) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let channel = stops::channel(&self.config.prefix);
        let message = stops::encode(stop);
        let connection = self.shared.connection.clone();
        let (limit, ttl) = (self.config.timeout, millis(self.config.ttl));
        // A session's end forgets its streams in Redis too, held or not:
        // no replica resumes them.
        let ended = match stop {
            Stop::Scope(scope) => Some(self.keys(scope)),
            Stop::Stream { .. } => None,
        };
        runtime.spawn(async move {
            let published = scripts::run::<Value>(&connection, limit, |whole| {
                let mut command = scripts::scripts().stop.call(whole);
                command
                    .arg(1)
                    .arg(stops::log_of(&channel))
                    .arg(&channel)
                    .arg(&message)
                    .arg(ttl)
                    .arg(stops::LOG_LEN);
                command
            });
            if let Err(error) = published.await {
                tracing::warn!(%error, "a stop could not reach the other replicas");
            }
            let Some(keys) = ended else {
                return;
            };
            let forgot = scripts::run::<i64>(&connection, limit, |whole| {
                let mut command = scripts::scripts().forget_scope.call(whole);
                command
                    .arg(2)
                    .arg(&keys.streams)
                    .arg(&keys.generations)
                    .arg(&keys.scope)
                    .arg(ttl);
                command
            });
            if let Err(error) = forgot.await {
                tracing::warn!(%error, "an ended session's streams could not be forgotten in Redis");
            }
        });
        true
    }

    fn stops(&self) -> Option<Stops> {
        let channel = stops::channel(&self.config.prefix);
        Some(self.shared.subscriber.listen_to_stops(channel))
    }

    /// Keeps the layer's window length, streams per scope and history, for
    /// this store and its clones (the last layer given one of them wins).
    fn set_limits(&self, limits: StoreLimits) {
        *lock(&self.shared.limits) = limits;
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.shared.connection)
            .field("config", &self.config)
            .field("limits", &self.limits())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The writer sends what is left, then stops; so do the others.
        self.queue.close();
        self.closing.send_replace(true);
    }
}

/// A name for this process's leases, unique to one store: the process id,
/// the time and a count.
fn holder_id() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let count = COUNT.fetch_add(1, Relaxed);
    format!("{}-{nanos:x}-{count}", std::process::id())
}
