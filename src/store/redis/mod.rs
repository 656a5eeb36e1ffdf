//! [`RedisStore`]: trackers in Redis or Valkey, shared by every replica of
//! a gateway.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, hash_map};
use std::error::Error as StdError;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Script,
    ServerErrorKind, Value,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::memory::{DEFAULT_IDLE_TTL, DEFAULT_MAX_STREAMS_PER_SCOPE};
use super::{IdBatch, Opened, StoreError, StreamKey, TrackerStore};
use crate::tracker::{DEFAULT_WINDOW_LEN, Tracker, Window};

/// The default [`RedisStore::prefix`].
pub const DEFAULT_PREFIX: &str = "sse-resume:";
/// The default [`RedisStore::timeout`]: 250 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// The default [`RedisStore::queue_len`], in ids.
pub const DEFAULT_QUEUE_LEN: usize = 65_536;

/// How long [`RedisStore::connect`] waits for a first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes are sent this many times at most before they are dropped.
const WRITE_ATTEMPTS: u32 = 4;
/// The pause before the first retry of a write; it doubles each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// A write waits at least this long for Redis, whatever the open timeout.
const MIN_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Write scripts per pipeline.
const PIPELINE_LEN: usize = 256;
/// Queued bytes allowed per queued id: the queue is bounded in bytes too.
const QUEUE_BYTES_PER_ID: usize = 256;
/// The most trackers this process keeps for sharing between its streams.
const LOCAL_TRACKERS: usize = 100_000;
const LOCAL_SHARDS: usize = 16;
/// A local tracker no stream holds is let go after this long.
const LOCAL_GRACE: Duration = Duration::from_secs(5);
/// Written instead of a generation when none is known: the write is not
/// fenced.
const UNFENCED: i64 = -1;

/// Keeps trackers in Redis or Valkey, so that every replica of a gateway
/// resumes and deduplicates a client's stream, wherever it reconnects.
///
/// Requires the `redis` cargo feature. Works with a single node (through a
/// reconnecting connection manager) and with Cluster
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
/// Clones share the connection, the write queue and the in-process
/// trackers. The builder methods change the handle they are called on
/// (and the clones made from it afterwards).
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
/// # Key layout
///
/// Every key starts with the store's prefix (`sse-resume:` by default),
/// followed by the scope in braces: the scope is the key's *hash tag*, so
/// that all keys of one scope live on one Cluster slot and one script can
/// touch them all. For a scope `S` and a stream `T` of it:
///
/// | key | type | holds |
/// |---|---|---|
/// | `<prefix>{S}:w:T` | list | the window of `T`: ids forwarded, oldest first, trimmed to the window length |
/// | `<prefix>{S}:s` | sorted set | the streams of `S`, scored by last use (ms): for finding a cursor's stream, capping the streams per scope and forgetting idle ones |
/// | `<prefix>{S}:g` | hash | per stream, its generation: bumped whenever a client cursor cuts the window |
///
/// In the prefix and the scope, `%`, `{` and `}` are written `%25`, `%7B`
/// and `%7D`, so that the braces of the hash tag are the only ones and two
/// scopes never share a key; the empty scope is written `%`. The stream
/// name is used as it is. Every key has the store's TTL, refreshed
/// whenever a stream of the scope is opened with ids or written.
///
/// # Round trips
///
/// Opening a stream is one Lua script (`EVALSHA`): it finds the stream of
/// the client's cursor within the scope, cuts the window after it (or
/// clears it), bumps the generation, and returns the window. Ids are
/// written behind the stream: [`TrackerStore::record`] only queues them
/// (bounded), and a background task sends what has piled up for all keys
/// as one pipeline of write scripts, one per key, coalesced to the last
/// window's worth of ids.
///
/// # What is atomic and what is best effort
///
/// Each script runs atomically in Redis. Within a process, streams of one
/// key share one [`Tracker`], so check-and-record is atomic there, as with
/// [`MemoryStore`](crate::MemoryStore). Across replicas:
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
///   it are refused (counted as fenced). A cursor still in its replica's
///   queue is unknown and clears the window.
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
    local: Local,
}

#[derive(Debug, Clone)]
struct Config {
    /// Escaped: see `escape`.
    prefix: String,
    ttl: Duration,
    window_len: usize,
    max_streams_per_scope: usize,
    timeout: Duration,
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
    /// Connects to the Redis or Valkey server at `url`, e.g.
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
            ConnectionManager::new_with_config(client, config),
        )
        .await?;
        Ok(Self::start(Connection::Single(manager)))
    }

    /// Connects to a Redis or Valkey Cluster through any of its `nodes`
    /// (URLs as for [`connect`](Self::connect)). All keys of a scope share
    /// a hash tag, so every script runs on one slot, and writes are
    /// pipelined per scope.
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(MIN_WRITE_TIMEOUT)
            .response_timeout(MIN_WRITE_TIMEOUT)
            .retries(3)
            .build()
            .map_err(unavailable)?;
        let connection = within(CONNECT_TIMEOUT, client.get_async_connection()).await?;
        Ok(Self::start(Connection::Cluster(connection)))
    }

    fn start(connection: Connection) -> Self {
        let (done, done_receiver) = watch::channel(0);
        let queue = Arc::new(Queue::new(DEFAULT_QUEUE_LEN, done_receiver));
        let writer = Writer {
            connection: connection.clone(),
            queue: Arc::clone(&queue),
            done,
        };
        tokio::spawn(writer.run());
        Self {
            shared: Arc::new(Shared {
                connection,
                queue,
                local: Local::new(),
            }),
            config: Arc::new(Config {
                prefix: escape(DEFAULT_PREFIX),
                ttl: DEFAULT_IDLE_TTL,
                window_len: DEFAULT_WINDOW_LEN,
                max_streams_per_scope: DEFAULT_MAX_STREAMS_PER_SCOPE,
                timeout: DEFAULT_TIMEOUT,
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// What every key starts with: `sse-resume:` by default. Stores with
    /// different prefixes never see each other's trackers.
    pub fn prefix(self, prefix: &str) -> Self {
        self.configure(|config| config.prefix = escape(prefix))
    }

    /// How long the keys of a scope live after its last use: one hour by
    /// default (at least 1 ms).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.configure(|config| config.ttl = ttl.max(Duration::from_millis(1)))
    }

    /// The most ids each window remembers (at least 1): 1024 by default.
    pub fn window_len(self, len: usize) -> Self {
        self.configure(|config| config.window_len = len.max(1))
    }

    /// The most streams kept per scope (at least 1): 64 by default. Past
    /// it, the least recently used stream of the scope goes.
    pub fn max_streams_per_scope(self, max: usize) -> Self {
        self.configure(|config| config.max_streams_per_scope = max.max(1))
    }

    /// How long a request waits for Redis when it starts, before it goes on
    /// without it: 250 ms by default. Writes wait at least 1 s.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.configure(|config| config.timeout = timeout)
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

    fn keys(&self, scope: &str) -> Keys {
        Keys::new(&self.config.prefix, scope)
    }

    /// Runs the open script: the window of `stream` with `cursor` applied,
    /// searching the scope for the cursor's stream when `search` is set.
    async fn open_script(
        &self,
        keys: &Keys,
        stream: &str,
        cursor: Option<&str>,
        search: bool,
    ) -> Result<Loaded, StoreError> {
        let config = &self.config;
        let mut invocation = scripts().open.prepare_invoke();
        keys.bind(&mut invocation, config)
            .arg(stream)
            .arg(cursor.unwrap_or(""))
            .arg(if search { "1" } else { "0" });
        let mut connection = self.shared.connection.clone();
        let reply: Value = within(config.timeout, invocation.invoke_async(&mut connection)).await?;
        match Loaded::parse(reply) {
            Ok(loaded) => {
                self.note_bad_values(loaded.bad_values, keys);
                Ok(loaded)
            }
            Err(error) => {
                self.note_bad_values(1, keys);
                Err(error)
            }
        }
    }

    /// Hands out the process's tracker of a loaded window.
    fn adopt(&self, keys: &Keys, loaded: &Loaded) -> Tracker {
        let window_key = keys.window(&loaded.stream);
        self.shared.local.adopt(
            &window_key,
            loaded.generation,
            &loaded.ids,
            self.config.window_len,
        )
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
    async fn load(&self, key: &StreamKey) -> Result<Tracker, StoreError> {
        let keys = self.keys(key.scope());
        let loaded = self.open_script(&keys, key.stream(), None, false).await?;
        Ok(self.adopt(&keys, &loaded))
    }

    fn record(&self, key: &StreamKey, ids: &IdBatch) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut window_key = scope_key(&self.config.prefix, key.scope(), "w:");
        window_key.push_str(key.stream());
        let generation = self
            .shared
            .local
            .generation(&window_key)
            .unwrap_or(UNFENCED);
        self.shared.queue.push(
            window_key,
            generation,
            ids,
            || Target {
                keys: self.keys(key.scope()),
                stream: key.stream().to_owned(),
                config: Arc::clone(&self.config),
            },
            self.config.window_len,
        )
    }

    async fn apply_cursor(&self, key: &StreamKey, id: &str) -> Result<bool, StoreError> {
        let keys = self.keys(key.scope());
        let loaded = self
            .open_script(&keys, key.stream(), Some(id), false)
            .await?;
        self.adopt(&keys, &loaded);
        Ok(loaded.cursor_known == Some(true))
    }

    async fn find_stream(&self, scope: &str, id: &str) -> Result<Option<String>, StoreError> {
        let keys = self.keys(scope);
        let mut invocation = scripts().find.prepare_invoke();
        keys.bind(&mut invocation, &self.config).arg(id);
        let mut connection = self.shared.connection.clone();
        let reply: Value = within(
            self.config.timeout,
            invocation.invoke_async(&mut connection),
        )
        .await?;
        let mut items = array(reply, 2)?.into_iter();
        let (found, bad_values) = (next(&mut items)?, int(next(&mut items)?)?);
        self.note_bad_values(bad_values as u64, &keys);
        match found {
            Value::Nil => Ok(None),
            found => match String::from_utf8(bulk(found)?) {
                Ok(stream) => Ok(Some(stream)),
                Err(_) => {
                    self.note_bad_values(1, &keys);
                    Ok(None)
                }
            },
        }
    }

    /// Redis expires keys on its own, by their TTL: this lets go of the
    /// trackers this process keeps that no stream holds, and returns how
    /// many went.
    async fn expire(&self) -> Result<usize, StoreError> {
        Ok(self.shared.local.sweep_all())
    }

    async fn open(
        &self,
        scope: &str,
        stream: &str,
        cursor: Option<&str>,
    ) -> Result<Opened, StoreError> {
        let keys = self.keys(scope);
        let loaded = self.open_script(&keys, stream, cursor, true).await?;
        let tracker = self.adopt(&keys, &loaded);
        Ok(Opened {
            key: StreamKey::new(scope, &loaded.stream),
            tracker,
            cursor_known: loaded.cursor_known,
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.shared.connection)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The writer sends what is left, then stops.
        self.queue.close();
    }
}

// ---------------------------------------------------------------------------
// Keys and scripts
// ---------------------------------------------------------------------------

/// The keys of one scope.
#[derive(Debug, Clone)]
struct Keys {
    streams: String,
    generations: String,
    /// Window keys are this followed by the stream.
    windows: String,
}

impl Keys {
    fn new(prefix: &str, scope: &str) -> Self {
        Self {
            streams: scope_key(prefix, scope, "s"),
            generations: scope_key(prefix, scope, "g"),
            windows: scope_key(prefix, scope, "w:"),
        }
    }

    fn window(&self, stream: &str) -> String {
        let mut key = String::with_capacity(self.windows.len() + stream.len());
        key.push_str(&self.windows);
        key.push_str(stream);
        key
    }

    /// Sets the keys and arguments every script starts with.
    fn bind<'a, 'b>(
        &self,
        invocation: &'b mut ::redis::ScriptInvocation<'a>,
        config: &Config,
    ) -> &'b mut ::redis::ScriptInvocation<'a> {
        invocation
            .key(&self.streams)
            .key(&self.generations)
            .arg(&self.windows)
            .arg(millis(config.ttl))
            .arg(config.window_len)
            .arg(config.max_streams_per_scope)
    }
}

/// `<prefix>{<scope>}:<suffix>`, `prefix` escaped already.
fn scope_key(prefix: &str, scope: &str, suffix: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + scope.len() + suffix.len() + 8);
    key.push_str(prefix);
    key.push('{');
    if scope.is_empty() {
        // `%` alone is no escape of anything, and an empty hash tag would
        // not be one.
        key.push('%');
    } else {
        escape_into(&mut key, scope);
    }
    key.push_str("}:");
    key.push_str(suffix);
    key
}

/// Escapes `%`, `{` and `}`, so that a hash tag's braces are the only ones
/// in a key and the escaped string maps back to one original.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    escape_into(&mut escaped, text);
    escaped
}

fn escape_into(escaped: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

struct Scripts {
    open: Script,
    find: Script,
    write: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        open: Script::new(&script_code(OPEN)),
        find: Script::new(&script_code(FIND)),
        write: Script::new(&script_code(WRITE)),
    })
}

fn script_code(body: &str) -> String {
    format!("{PREAMBLE}{body}")
}

/// What every script starts with. KEYS: the scope's streams and
/// generations. ARGV: the window key prefix, the TTL in ms, the window
/// length, the most streams per scope, then each script's own.
const PREAMBLE: &str = r"
local streams_key, generations_key = KEYS[1], KEYS[2]
local windows = ARGV[1]
local ttl = tonumber(ARGV[2])
local window_len = tonumber(ARGV[3])
local max_streams = tonumber(ARGV[4])
local bad_values = 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- A key of ours that something else gave another type is removed, rather
-- than failing every call on it. Returns whether the key is there now.
local function usable(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found == kind then return true end
  if found ~= 'none' then
    redis.call('DEL', key)
    bad_values = bad_values + 1
  end
  return false
end

local function generation(stream)
  local value = redis.call('HGET', generations_key, stream)
  if not value then return nil end
  local number = tonumber(value)
  if number == nil or number < 0 or number ~= math.floor(number) then
    redis.call('HDEL', generations_key, stream)
    bad_values = bad_values + 1
    return nil
  end
  return number
end

local function forget(stream)
  redis.call('ZREM', streams_key, stream)
  redis.call('HDEL', generations_key, stream)
  redis.call('DEL', windows .. stream)
end

-- Marks a stream used: refreshes the TTLs, and makes room in the scope.
local function touch(stream)
  redis.call('PEXPIRE', windows .. stream, ttl)
  if redis.call('ZADD', streams_key, now, stream) == 1 then
    local extra = redis.call('ZCARD', streams_key) - max_streams
    if extra > 0 then
      for _, oldest in ipairs(redis.call('ZRANGE', streams_key, 0, extra)) do
        if extra > 0 and oldest ~= stream then
          forget(oldest)
          extra = extra - 1
        end
      end
    end
  end
  redis.call('PEXPIRE', streams_key, ttl)
  redis.call('PEXPIRE', generations_key, ttl)
end

-- Finds the stream of the scope whose window holds `id`, the most
-- recently used first. Returns it and the id's position.
local function find(id)
  for _, stream in ipairs(redis.call('ZREVRANGE', streams_key, 0, -1)) do
    if usable(windows .. stream, 'list') then
      local at = redis.call('LPOS', windows .. stream, id)
      if at then return stream, at end
    end
  end
  return nil, nil
end

usable(streams_key, 'zset')
usable(generations_key, 'hash')
-- Streams unused for longer than the TTL: their windows are gone.
for _, stream in ipairs(redis.call('ZRANGEBYSCORE', streams_key, '-inf', now - ttl)) do
  forget(stream)
end
";

/// ARGV[5]: the stream; ARGV[6]: the client's cursor, or empty; ARGV[7]:
/// `1` to look for the cursor's stream in the whole scope. Returns the
/// stream, whether the cursor was known (-1 without one), the generation,
/// the bad values met, and the window.
const OPEN: &str = r"
local stream, cursor, search = ARGV[5], ARGV[6], ARGV[7] == '1'
local known, gen = -1, 0
if cursor ~= '' then
  local at = nil
  if search then
    local found, found_at = find(cursor)
    if found then stream, at = found, found_at end
  elseif usable(windows .. stream, 'list') then
    at = redis.call('LPOS', windows .. stream, cursor)
  end
  if at then
    redis.call('LTRIM', windows .. stream, 0, at)
    known = 1
  else
    redis.call('DEL', windows .. stream)
    known = 0
  end
  generation(stream)
  gen = redis.call('HINCRBY', generations_key, stream, 1)
else
  gen = generation(stream) or 0
end
local ids = {}
if usable(windows .. stream, 'list') then
  ids = redis.call('LRANGE', windows .. stream, -window_len, -1)
end
if #ids > 0 or gen > 0 then touch(stream) end
return {stream, known, gen, bad_values, ids}
";

/// ARGV[5]: the id. Returns the stream whose window holds it, or nil, and
/// the bad values met.
const FIND: &str = r"
local found = find(ARGV[5])
return {found or false, bad_values}
";

/// ARGV[5]: the stream; ARGV[6]: the generation its ids were forwarded in,
/// or -1; ARGV[7..]: the ids, oldest first. Returns 1 when written, 0 when
/// a cursor cut the window since that generation, and the bad values met.
const WRITE: &str = r"
local stream, gen = ARGV[5], tonumber(ARGV[6])
if gen >= 0 then
  local current = generation(stream)
  if current == nil then
    if gen > 0 then redis.call('HSET', generations_key, stream, gen) end
  elseif current ~= gen then
    return {0, bad_values}
  end
end
local window = windows .. stream
usable(window, 'list')
for first = 7, #ARGV, 1000 do
  redis.call('RPUSH', window, unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('LTRIM', window, -window_len, -1)
touch(stream)
return {1, bad_values}
";

/// A window as the open script returns it.
#[derive(Debug)]
struct Loaded {
    stream: String,
    cursor_known: Option<bool>,
    generation: i64,
    ids: Vec<String>,
    bad_values: u64,
}

impl Loaded {
    fn parse(reply: Value) -> Result<Self, StoreError> {
        let mut items = array(reply, 5)?.into_iter();
        let stream = bulk(next(&mut items)?)?;
        let known = int(next(&mut items)?)?;
        let generation = int(next(&mut items)?)?;
        let mut bad_values = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let raw_ids = match next(&mut items)? {
            Value::Array(ids) | Value::Set(ids) => ids,
            Value::Nil => Vec::new(),
            other => return Err(corrupt(format!("window is not a list: {other:?}"))),
        };
        let mut ids = Vec::with_capacity(raw_ids.len());
        for id in raw_ids {
            // An id that is not UTF-8 was never recorded by this crate:
            // skip it, the rest of the window is still good.
            match bulk(id).map(String::from_utf8) {
                Ok(Ok(id)) => ids.push(id),
                _ => bad_values += 1,
            }
        }
        // Stream names come from this crate's `&str` keys: one that is not
        // UTF-8 was written by something else, and its window is no
        // stream's to adopt.
        let stream = String::from_utf8(stream)
            .map_err(|_| corrupt("a stream name that is not UTF-8".to_owned()))?;
        Ok(Self {
            stream,
            cursor_known: match known {
                -1 => None,
                known => Some(known == 1),
            },
            generation,
            ids,
            bad_values,
        })
    }
}

fn array(value: Value, len: usize) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) if items.len() == len => Ok(items),
        other => Err(corrupt(format!("unexpected script reply: {other:?}"))),
    }
}

fn next(items: &mut impl Iterator<Item = Value>) -> Result<Value, StoreError> {
    items
        .next()
        .ok_or_else(|| corrupt("short script reply".to_owned()))
}

fn int(value: Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(n),
        other => Err(corrupt(format!("expected an integer: {other:?}"))),
    }
}

fn bulk(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(corrupt(format!("expected a string: {other:?}"))),
    }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

// ---------------------------------------------------------------------------
// Connection and errors
// ---------------------------------------------------------------------------

/// A single node through a reconnecting manager, or a Cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(manager) => manager.req_packed_command(cmd),
            Connection::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(manager) => manager.get_db(),
            Connection::Cluster(cluster) => cluster.get_db(),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Single",
            Connection::Cluster(_) => "Cluster",
        })
    }
}

/// Redis took longer than allowed.
#[derive(Debug)]
struct TimedOut(Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer from Redis within {:?}", self.0)
    }
}

impl StdError for TimedOut {}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

/// Runs a Redis call for `limit` at most.
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    match timeout(limit, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(Box::new(TimedOut(limit)))),
    }
}

// ---------------------------------------------------------------------------
// Trackers shared in process
// ---------------------------------------------------------------------------

/// The trackers of this process, by window key, so that its streams of one
/// key share one window. An entry no stream holds is let go soon; it stays
/// a moment for the generation of the last batch its stream records.
struct Local {
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
    fn new() -> Self {
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

    /// The tracker of a window just loaded at `generation`.
    ///
    /// A stream of this process that holds the tracker already keeps it,
    /// with what Redis holds merged in: in the same generation, the ids
    /// Redis has first and the ones still queued here after; in a newer
    /// one (a cursor cut the window), what Redis has.
    fn adopt(
        &self,
        window_key: &str,
        generation: i64,
        ids: &[String],
        window_len: usize,
    ) -> Tracker {
        let now = Instant::now();
        let mut shard = self.shard(window_key);
        shard.sweep_if_due(now);
        if let Some(entry) = shard.entries.get_mut(window_key) {
            if entry.tracker.in_use() {
                let mut window = entry.tracker.lock();
                let local: Vec<String> = if entry.generation == generation {
                    window.ids().collect()
                } else {
                    Vec::new()
                };
                let merged = ids.iter().chain(&local);
                *window = Window::from_ids(window.capacity(), merged);
                drop(window);
                entry.generation = generation;
                entry.last_used = now;
                return entry.tracker.clone();
            }
        }
        let tracker = Tracker::from_window(Window::from_ids(window_len, ids));
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
        tracker
    }

    fn generation(&self, window_key: &str) -> Option<i64> {
        self.shard(window_key)
            .entries
            .get(window_key)
            .map(|entry| entry.generation)
    }

    fn sweep_all(&self) -> usize {
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The write queue and its writer
// ---------------------------------------------------------------------------

/// Ids waiting to be written, coalesced per window, bounded in ids and
/// bytes.
struct Queue {
    state: Mutex<QueueState>,
    max_ids: AtomicUsize,
    wake: Notify,
    /// The number of `push`es the writer is done with.
    done: watch::Receiver<u64>,
    counters: Counters,
}

#[derive(Default)]
struct QueueState {
    pending: HashMap<String, Pending>,
    ids: usize,
    bytes: usize,
    pushes: u64,
    closed: bool,
}

/// The ids of one window waiting to be written.
struct Pending {
    target: Target,
    generation: i64,
    ids: IdBatch,
    bytes: usize,
}

/// Where a window's ids go.
struct Target {
    keys: Keys,
    stream: String,
    config: Arc<Config>,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    fenced: AtomicU64,
    retries: AtomicU64,
    bad_values: AtomicU64,
}

impl Queue {
    fn new(max_ids: usize, done: watch::Receiver<u64>) -> Self {
        Self {
            state: Mutex::default(),
            max_ids: AtomicUsize::new(max_ids),
            wake: Notify::new(),
            done,
            counters: Counters::default(),
        }
    }

    /// Queues `ids` for the window at `window_key`, without waiting.
    fn push(
        &self,
        window_key: String,
        generation: i64,
        ids: &IdBatch,
        target: impl FnOnce() -> Target,
        window_len: usize,
    ) -> Result<(), StoreError> {
        let count = ids.len();
        let bytes: usize = ids.iter().map(str::len).sum();
        let max_ids = self.max_ids.load(Relaxed);
        let mut state = lock(&self.state);
        if state.ids + count > max_ids || state.bytes + bytes > max_ids * QUEUE_BYTES_PER_ID {
            drop(state);
            self.counters.rejected.fetch_add(count as u64, Relaxed);
            return Err(StoreError::Backlogged);
        }
        let (mut added_ids, mut added_bytes) = (count as isize, bytes as isize);
        match state.pending.entry(window_key) {
            hash_map::Entry::Occupied(mut slot) => {
                let pending = slot.get_mut();
                if pending.generation != generation {
                    // The older ids would be refused: a cursor cut their
                    // window since.
                    self.counters
                        .fenced
                        .fetch_add(pending.ids.len() as u64, Relaxed);
                    added_ids -= pending.ids.len() as isize;
                    added_bytes -= pending.bytes as isize;
                    pending.ids.clear();
                    pending.bytes = 0;
                    pending.generation = generation;
                }
                for id in ids.iter() {
                    pending.ids.push(id);
                }
                pending.bytes += bytes;
                // Only the last window's worth can end up in Redis.
                if pending.ids.len() > 2 * window_len {
                    let (kept, kept_bytes) = last_ids(&pending.ids, window_len);
                    added_ids -= (pending.ids.len() - kept.len()) as isize;
                    added_bytes -= (pending.bytes - kept_bytes) as isize;
                    pending.ids = kept;
                    pending.bytes = kept_bytes;
                }
            }
            hash_map::Entry::Vacant(slot) => {
                slot.insert(Pending {
                    target: target(),
                    generation,
                    ids: ids.clone(),
                    bytes,
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

    /// Takes everything pending, and the number of pushes it covers.
    /// `None` once closed and empty.
    fn take(&self) -> Option<(Vec<Pending>, u64)> {
        let mut state = lock(&self.state);
        if state.pending.is_empty() && state.closed {
            return None;
        }
        state.ids = 0;
        state.bytes = 0;
        let pending = state.pending.drain().map(|(_, pending)| pending).collect();
        Some((pending, state.pushes))
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_one();
    }

    async fn flush(&self) {
        let target = lock(&self.state).pushes;
        self.wake.notify_one();
        let mut done = self.done.clone();
        // An error means the writer is gone (its runtime stopped): nothing
        // will be written any more.
        let _ = done.wait_for(|&done| done >= target).await;
    }

    fn stats(&self) -> RedisStats {
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

/// The last `n` ids of `ids`, and their length in bytes.
fn last_ids(ids: &IdBatch, n: usize) -> (IdBatch, usize) {
    let mut kept = IdBatch::new();
    let mut bytes = 0;
    for id in ids.iter().skip(ids.len().saturating_sub(n)) {
        kept.push(id);
        bytes += id.len();
    }
    (kept, bytes)
}

/// The background task that writes what the queue holds.
struct Writer {
    connection: Connection,
    queue: Arc<Queue>,
    done: watch::Sender<u64>,
}

/// The outcome of one write script.
enum Outcome {
    Written {
        bad_values: u64,
    },
    Fenced {
        bad_values: u64,
    },
    /// Redis has not the script (it restarted): send it whole.
    NoScript,
    /// The connection failed: retry.
    Failed(RedisError),
    /// Redis refused this write: retrying would not help.
    Refused(RedisError),
    Bad(StoreError),
}

impl Writer {
    async fn run(mut self) {
        loop {
            let Some((pending, pushes)) = self.queue.take() else {
                return;
            };
            if pending.is_empty() {
                self.done.send_replace(pushes);
                self.queue.wake.notified().await;
                continue;
            }
            self.write(pending).await;
            self.done.send_replace(pushes);
        }
    }

    /// Writes `pending`, retrying what failed a few times.
    async fn write(&mut self, mut pending: Vec<Pending>) {
        let mut backoff = RETRY_BACKOFF;
        let mut whole_script = false;
        let mut attempt = 1;
        loop {
            let outcomes = self.send(&pending, whole_script).await;
            let counters = &self.queue.counters;
            let mut retry = Vec::new();
            let (mut failed, mut missing_script) = (None, false);
            for (pending, outcome) in pending.into_iter().zip(outcomes) {
                let ids = pending.ids.len() as u64;
                match outcome {
                    Outcome::Written { bad_values } => {
                        counters.written.fetch_add(ids, Relaxed);
                        counters.bad_values.fetch_add(bad_values, Relaxed);
                    }
                    Outcome::Fenced { bad_values } => {
                        counters.fenced.fetch_add(ids, Relaxed);
                        counters.bad_values.fetch_add(bad_values, Relaxed);
                    }
                    Outcome::NoScript => {
                        missing_script = true;
                        retry.push(pending);
                    }
                    Outcome::Failed(error) => {
                        failed = Some(error);
                        retry.push(pending);
                    }
                    Outcome::Refused(error) => {
                        counters.dropped.fetch_add(ids, Relaxed);
                        tracing::error!(
                            window = %pending.target.keys.window(&pending.target.stream),
                            %error,
                            "Redis refused a write of forwarded ids"
                        );
                    }
                    Outcome::Bad(error) => {
                        counters.dropped.fetch_add(ids, Relaxed);
                        tracing::error!(%error, "unexpected reply to a write of forwarded ids");
                    }
                }
            }
            if retry.is_empty() {
                return;
            }
            pending = retry;
            if missing_script && !whole_script && failed.is_none() {
                // Redis lost its scripts (a restart): EVAL caches the script
                // again, and is no failure to count.
                whole_script = true;
                continue;
            }
            if attempt == WRITE_ATTEMPTS {
                let ids: usize = pending.iter().map(|pending| pending.ids.len()).sum();
                counters.dropped.fetch_add(ids as u64, Relaxed);
                let error =
                    failed.map_or_else(|| "the script is missing".to_owned(), |e| e.to_string());
                tracing::warn!(
                    ids,
                    %error,
                    "Redis failed: forwarded ids dropped after {WRITE_ATTEMPTS} attempts"
                );
                return;
            }
            attempt += 1;
            whole_script = missing_script;
            counters.retries.fetch_add(1, Relaxed);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// Sends one write script per pending window, pipelined, and returns
    /// their outcomes in order. `whole_script` sends the script's code
    /// rather than its hash.
    async fn send(&self, pending: &[Pending], whole_script: bool) -> Vec<Outcome> {
        // One pipeline per slot in a Cluster: a scope's keys share one.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        if self.connection.is_cluster() {
            let mut by_scope: HashMap<&str, usize> = HashMap::new();
            for (i, pending) in pending.iter().enumerate() {
                let group = *by_scope
                    .entry(pending.target.keys.streams.as_str())
                    .or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                groups[group].push(i);
            }
        } else {
            groups.push((0..pending.len()).collect());
        }
        let mut calls = JoinSet::new();
        for group in groups {
            for chunk in group.chunks(PIPELINE_LEN) {
                let mut pipeline = ::redis::pipe();
                pipeline.ignore_errors();
                let mut limit = MIN_WRITE_TIMEOUT;
                for &i in chunk {
                    pipeline.add_command(write_command(&pending[i], whole_script));
                    limit = limit.max(write_timeout(&pending[i].target.config));
                }
                let mut connection = self.connection.clone();
                let chunk = chunk.to_vec();
                calls.spawn(async move {
                    let replies = timeout(
                        limit,
                        pipeline.query_async::<Vec<RedisResult<Value>>>(&mut connection),
                    )
                    .await;
                    (chunk, replies, limit)
                });
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = (0..pending.len()).map(|_| None).collect();
        while let Some(joined) = calls.join_next().await {
            let Ok((chunk, replies, limit)) = joined else {
                continue;
            };
            let replies = match replies {
                Ok(Ok(replies)) if replies.len() == chunk.len() => replies,
                Ok(Ok(replies)) => {
                    let error = corrupt(format!(
                        "{} replies to a pipeline of {}",
                        replies.len(),
                        chunk.len()
                    ));
                    for i in chunk {
                        outcomes[i] = Some(Outcome::Bad(corrupt(error.to_string())));
                    }
                    continue;
                }
                Ok(Err(error)) => vec![Err(error); chunk.len()],
                Err(_) => {
                    let error = RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        TimedOut(limit),
                    ));
                    vec![Err(error); chunk.len()]
                }
            };
            for (i, reply) in chunk.into_iter().zip(replies) {
                outcomes[i] = Some(outcome(reply));
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Outcome::Failed(RedisError::from((ErrorKind::Client, "write task failed")))
                })
            })
            .collect()
    }
}

fn write_timeout(config: &Config) -> Duration {
    config.timeout.max(MIN_WRITE_TIMEOUT)
}

/// The write script for one window, as a pipeline command.
fn write_command(pending: &Pending, whole_script: bool) -> Cmd {
    let Target {
        keys,
        stream,
        config,
    } = &pending.target;
    let script = &scripts().write;
    let mut command = if whole_script {
        let mut command = ::redis::cmd("EVAL");
        command.arg(script_code(WRITE));
        command
    } else {
        let mut command = ::redis::cmd("EVALSHA");
        command.arg(script.get_hash());
        command
    };
    command
        .arg(2)
        .arg(&keys.streams)
        .arg(&keys.generations)
        .arg(&keys.windows)
        .arg(millis(config.ttl))
        .arg(config.window_len)
        .arg(config.max_streams_per_scope)
        .arg(stream)
        .arg(pending.generation);
    let skip = pending.ids.len().saturating_sub(config.window_len);
    for id in pending.ids.iter().skip(skip) {
        command.arg(id);
    }
    command
}

fn outcome(reply: RedisResult<Value>) -> Outcome {
    match reply {
        Ok(reply) => {
            let parsed = array(reply, 2).and_then(|items| {
                let mut items = items.into_iter();
                Ok((int(next(&mut items)?)?, int(next(&mut items)?)?))
            });
            match parsed {
                Ok((written, bad_values)) => {
                    let bad_values = u64::try_from(bad_values).unwrap_or(0);
                    if written == 1 {
                        Outcome::Written { bad_values }
                    } else {
                        Outcome::Fenced { bad_values }
                    }
                }
                Err(error) => Outcome::Bad(error),
            }
        }
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            Outcome::NoScript
        }
        Err(error) if error.is_unrecoverable_error() || error.is_timeout() => {
            Outcome::Failed(error)
        }
        Err(error) => match error.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::ReadOnly,
            ) => Outcome::Failed(error),
            _ => Outcome::Refused(error),
        },
    }
}
