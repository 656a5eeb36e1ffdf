//! The Lua scripts, each run atomically in Redis, and the one way they
//! run. What they return is read in `replies`.

use std::sync::OnceLock;

use ::redis::{Cmd, FromRedisValue, Script};

use super::connection::{Connection, within};
use crate::store::StoreError;

/// A script: its code, and the hash Redis knows it by once it has run it.
pub(super) struct Lua {
    hash: String,
    code: String,
}

impl Lua {
    fn new(code: String) -> Self {
        Self {
            hash: Script::new(&code).get_hash().to_owned(),
            code,
        }
    }

    /// The call of this script by its hash (`EVALSHA`), or with `whole`
    /// by its code (`EVAL`), which Redis keeps for the next call by hash;
    /// the number of keys and the rest follow.
    pub(super) fn call(&self, whole: bool) -> Cmd {
        if whole {
            let mut command = ::redis::cmd("EVAL");
            command.arg(&self.code);
            command
        } else {
            let mut command = ::redis::cmd("EVALSHA");
            command.arg(&self.hash);
            command
        }
    }
}

pub(super) struct Scripts {
    pub(super) open: Lua,
    pub(super) write: Lua,
    pub(super) repair: Lua,
    pub(super) forget_scope: Lua,
    pub(super) stop: Lua,
}

pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        open: Lua::new(format!("{PREAMBLE}{OPEN_HELPERS}{OPEN}")),
        write: Lua::new(format!("{PREAMBLE}{WRITE}")),
        repair: Lua::new(REPAIR.to_owned()),
        forget_scope: Lua::new(FORGET_SCOPE.to_owned()),
        stop: Lua::new(STOP.to_owned()),
    })
}

/// The one way a script runs, but for the writer's pipelines: by its hash,
/// and once more by its code when Redis has not got it (it restarted, or a
/// replica took over). `call(whole)` makes the command, as [`Lua::call`].
pub(super) async fn run<T: FromRedisValue>(
    connection: &Connection,
    limit: std::time::Duration,
    call: impl Fn(bool) -> Cmd,
) -> Result<T, StoreError> {
    let mut connection = connection.clone();
    match within(limit, call(false).query_async(&mut connection)).await {
        Err(StoreError::Unavailable(error)) if is_no_script(&*error) => {
            within(limit, call(true).query_async(&mut connection)).await
        }
        reply => reply,
    }
}

/// Whether `error` is Redis saying it has not the script asked for.
pub(super) fn is_no_script(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    (error.downcast_ref::<::redis::RedisError>())
        .is_some_and(|e| e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript))
}

/// Whether `error` is Redis saying a key holds another type than the call
/// wanted: a key of ours that something else wrote.
pub(super) fn is_wrong_type(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    (error.downcast_ref::<::redis::RedisError>())
        .is_some_and(|e| e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE"))
}

/// Removes those of `keys` (each with the type it should have: `list`,
/// `hash`, `zset`, `string`) that hold another type; returns how many.
pub(super) async fn repair(
    connection: &Connection,
    limit: std::time::Duration,
    keys: &[(String, &str)],
) -> Result<u64, StoreError> {
    let removed: i64 = run(connection, limit, |whole| {
        let mut command = scripts().repair.call(whole);
        command.arg(keys.len());
        for (key, _) in keys {
            command.arg(key);
        }
        for (_, kind) in keys {
            command.arg(*kind);
        }
        command
    })
    .await?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

/// The name of the consumer group through which an open reads its replay
/// natively (see [`OPEN`]), and of the one consumer it reads as.
pub(super) const REPLAY_GROUP: &str = "replay";
pub(super) const REPLAY_CONSUMER: &str = "open";

/// What every script starts with. KEYS: the scope's streams and
/// generations, then the keys of the stream the script is for (`ARGV[9]`):
/// its window (of the generation the caller knows), history, history's
/// index, lease, end and the place its client went away, then the scope's
/// epoch. (An open's `KEYS[3]` is where it copies the window for its
/// caller's native read instead.) ARGV: the window key prefix,
/// the TTL in ms, the window length, the most streams per scope, the
/// history's most blocks (0 for no history), bytes and age in ms, the
/// caller's time in ms, then each script's own.
///
/// A stream's window is one list, keyed by the stream's generation: each
/// id forwarded, oldest first, and right after it the fingerprint of its
/// event, as a NUL and its decimal digits (no id holds a NUL, so `LPOS` of
/// an id never finds a fingerprint), and with a history, a colon and where
/// the id's block starts in it, when the write that kept the block pushed
/// the id. Its history is one Redis Stream: an entry per block,
/// oldest first, with one field, `b`: when the block was kept (ms) and the
/// id a client may resume from after it (or none) on a line of their own,
/// `<ms>:<id>` (`<ms>*<id>` for an id the layer stamped: no event of the
/// window has it), then the block as forwarded. One field rather than three:
/// a native read of a stream costs by the element, several times a
/// list's. An entry's id is `<start>-<position>`: where its
/// bytes start among all the stream ever kept, and its place in the
/// stream; both only rise, so that a bytes bound is one native trim
/// (`MINID`), and a position that does not follow on from the one before
/// says that blocks are missing there. Beside it, the history's index,
/// for the resume ids the window does not point from (stamped ones, and
/// those of ids the window let go or a cursor cut from it before the
/// history did): a list of those ids, each followed by the start of its
/// block after a NUL, a little past the history's count at most. Both
/// are only ways in: an entry they point at that is gone, or holds
/// another id, is not in the history.
const PREAMBLE: &str = r"
local streams_key, generations_key = KEYS[1], KEYS[2]
local windows = ARGV[1]
local ttl = tonumber(ARGV[2])
local window_len = tonumber(ARGV[3])
local max_streams = tonumber(ARGV[4])
local history_len = tonumber(ARGV[5])
local history_bytes = tonumber(ARGV[6])
local history_age = tonumber(ARGV[7])
-- The caller's clock, in ms: no script asks Redis for the time. Replicas'
-- clocks differ by far less than any bound kept in ms here.
local now = tonumber(ARGV[8])
local bad_values = 0
-- `windows` is `<prefix>{scope}:w:`: the scope's other keys start alike.
local scope_keys = string.sub(windows, 1, -3)
local epoch_key = KEYS[9]
-- The keys of the stream the script is for come in KEYS, declared; those
-- of the scope's other streams, which only a cursor's search and the
-- scope's cap reach, are built alike, and share the hash tag.
local own_stream = ARGV[9]
local own_keys = {['h:'] = KEYS[4], ['hi:'] = KEYS[5], ['l:'] = KEYS[6],
  ['d:'] = KEYS[7], ['a:'] = KEYS[8]}
local function key_of(kind, stream)
  if stream == own_stream then return own_keys[kind] end
  return scope_keys .. kind .. stream
end

-- No call checks a key's type first: a key of ours that something else
-- gave another type fails the script with WRONGTYPE, and the store then
-- removes the stream's keys of the wrong type (`REPAIR`) and runs it again.
-- Only the search of a cursor through the scope's other streams skips one.

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

-- A stream's window is keyed by its generation, `w<generation>:<stream>`:
-- a write of ids forwarded in an older generation, still on its way when
-- a cursor cut the window, finds no window there (`RPUSHX`), so that the
-- writer appends natively, with nothing to check first. A write's
-- `KEYS[3]` is the window of its generation.
local function window_key(stream, gen)
  return scope_keys .. 'w' .. gen .. ':' .. stream
end

local function window_of(stream)
  return window_key(stream, generation(stream) or 0)
end

-- A stream's history and its index.
local function history_keys(stream)
  return key_of('h:', stream), key_of('hi:', stream)
end

-- Trimmed, not deleted: the history keeps its last entry id, so that
-- positions go on rising.
local function forget_history(stream)
  local blocks, index = history_keys(stream)
  redis.call('XTRIM', blocks, 'MAXLEN', 0)
  redis.call('DEL', index)
end

local function forget(stream)
  local window = window_of(stream)
  redis.call('ZREM', streams_key, stream)
  redis.call('HDEL', generations_key, stream)
  local blocks, index = history_keys(stream)
  redis.call('DEL', window, key_of('d:', stream), blocks, index)
end

-- The start and the position of a history entry id, or nil for a value
-- that is none.
local function id_parts(id)
  local dash = id and string.find(id, '-', 1, true)
  if not dash then return nil end
  local start, position = tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
  if not start or not position then return nil end
  return start, position
end

-- When a history entry's block was kept, its resume id, and its length:
-- the entry's one value is `<ms>:<id>` (`<ms>*<id>` for a stamped id), a
-- line break, then the block.
local function kept_of(entry)
  local value = entry[2][2] or ''
  local colon = string.find(value, '[:*]')
  local line_end = colon and string.find(value, '\n', colon, true)
  if not line_end then return nil end
  return tonumber(string.sub(value, 1, colon - 1)), string.sub(value, colon + 1, line_end - 1), #value - line_end
end

-- Where the next block of the history `blocks` goes, as the stream says:
-- right after its last entry id.
local function after_last(blocks)
  if redis.call('EXISTS', blocks) == 0 then return 1, 1 end
  local info = redis.call('XINFO', 'STREAM', blocks)
  local last_id, last_entry = nil, nil
  for i = 1, #info - 1, 2 do
    if info[i] == 'last-generated-id' then last_id = info[i + 1]
    elseif info[i] == 'last-entry' then last_entry = info[i + 1] end
  end
  local start, position = id_parts(last_id)
  if not start then return 1, 1 end
  local len = 1
  if last_entry and last_entry[1] == last_id then
    local _, _, kept = kept_of(last_entry)
    len = math.max(kept or 1, 1)
  end
  return start + len, position + 1
end

-- The most bytes of blocks a writer appends natively in one go (see
-- `fence_history`); the writer holds the same bound.
local fence_bytes = math.floor(history_bytes / 16)

-- Makes the history of `stream` refuse every block a write of an older
-- generation still has on its way: its last id moves past where such a
-- write could put one (its appends, at most `fence_bytes` at a time,
-- start no further than the history's end), by its start alone, so that
-- positions still follow on, and the history holds that many bytes fewer
-- until the gap leaves its bytes bound.
local function fence_history(stream)
  local blocks = history_keys(stream)
  if redis.call('EXISTS', blocks) == 0 then return end
  local start, position = after_last(blocks)
  redis.call('XSETID', blocks, (start + fence_bytes) .. '-' .. (position - 1))
end

-- Moves the pointers of the window entries of `stream` from `from` to `to`
-- into the history's index: the ids leave the window, their blocks may
-- still be in the history.
local function unpoint(stream, from, to)
  local window = window_of(stream)
  local _, index = history_keys(stream)
  local entries, moving = redis.call('LRANGE', window, from, to), {}
  for k = 1, #entries - 1 do
    local id, print = entries[k], entries[k + 1]
    local colon = string.byte(id, 1) ~= 0 and string.byte(print, 1) == 0 and string.find(print, ':', 2, true)
    if colon then
      moving[#moving + 1] = id
      moving[#moving + 1] = '\0' .. string.sub(print, colon + 1)
    end
  end
  for first = 1, #moving, 1000 do
    redis.call('RPUSH', index, unpack(moving, first, math.min(first + 999, #moving)))
  end
end

-- Counts `stream` among the scope's streams, used now; a stream new to
-- the scope makes room in it.
local function mark_used(stream)
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
    return true
  end
  return false
end

-- Gives the keys of `stream`, whose window is `window`, and the scope's
-- their TTL again.
local function refresh_ttls(stream, window)
  redis.call('PEXPIRE', window, ttl)
  if history_len > 0 then
    local blocks, index = history_keys(stream)
    redis.call('PEXPIRE', blocks, ttl)
    redis.call('PEXPIRE', index, ttl)
    redis.call('PEXPIRE', epoch_key, ttl)
  end
  redis.call('PEXPIRE', streams_key, ttl)
  redis.call('PEXPIRE', generations_key, ttl)
end

-- Marks a stream used: refreshes the TTLs, and makes room in the scope.
local function touch(stream, window)
  mark_used(stream)
  refresh_ttls(stream, window)
end

";

/// The open script's own helpers, after the preamble: the write needs
/// none of them, and a script makes each of its functions anew at every
/// call.
const OPEN_HELPERS: &str = r"
-- Whether the list `list` holds `id`; a list of another type does not.
-- Looked for from the newest end, where a client's cursor mostly is.
local function holds(list, id)
  return type(redis.pcall('LPOS', list, id, 'RANK', -1)) == 'number'
end

-- Whether entry id `a` comes before `b`.
local function before(a_start, a_position, b_start, b_position)
  return a_start < b_start or (a_start == b_start and a_position < b_position)
end

-- The newest entry of the history `blocks`, or nil.
local function newest_entry(blocks)
  return redis.call('XREVRANGE', blocks, '+', '-', 'COUNT', 1)[1]
end

-- The id of the newest entry of the history `blocks`, or nil.
local function newest_id(blocks)
  local newest = newest_entry(blocks)
  return newest and newest[1]
end

-- The id of the entry of `stream`'s history after whose block a client
-- with `cursor` resumes, when the history holds it within its bounds:
-- among its newest `history_len`, starting within `history_bytes` of the
-- newest block's end (a write trims to those only now and then), and
-- kept within its age (no write trims to that). Nil otherwise. Second,
-- when the window's entry of the cursor led there, its place in the
-- window: the window's entries after it are the ids of the blocks after.
local function entry_after(stream, window, cursor)
  local blocks, index = history_keys(stream)
  -- The entry of the history at `start` when it holds the cursor's block.
  local function block_at(start)
    local entry = start and redis.call('XRANGE', blocks, start, start)[1]
    if not entry then return nil end
    local _, id = kept_of(entry)
    if id ~= cursor then return nil end
    return entry
  end
  -- The window's entry of the id points at its block, or the index does:
  -- a window entry whose block went elsewhere (the writer appended the
  -- id natively, and another process had written the history since) has
  -- its place in the index.
  local entry, window_at = nil, nil
  local at = redis.call('LPOS', window, cursor, 'RANK', -1)
  local print = at and redis.call('LINDEX', window, at + 1)
  local colon = print and string.byte(print, 1) == 0 and string.find(print, ':', 2, true)
  if colon then entry = block_at(string.sub(print, colon + 1)) end
  if entry then
    window_at = at
  else
    local indexed = redis.call('LPOS', index, cursor, 'RANK', -1)
    local start = indexed and redis.call('LINDEX', index, indexed + 1)
    if not start or string.byte(start, 1) ~= 0 then return nil end
    entry = block_at(string.sub(start, 2))
    if not entry then return nil end
  end
  local at = kept_of(entry)
  if (at or 0) < now - history_age then return nil end
  local start, position = id_parts(entry[1])
  local newest = newest_entry(blocks)
  local newest_start, newest_position = id_parts(newest and newest[1])
  if not position or not newest_position or newest_position - position >= history_len then
    return nil
  end
  local _, _, newest_len = kept_of(newest)
  if newest_start + (newest_len or 0) - start > history_bytes then return nil end
  return entry[1], window_at
end

-- Whether the window or the history of `stream` holds `id`.
local function knows(stream, id)
  if holds(window_of(stream), id) then return true end
  if history_len > 0 then
    local _, index = history_keys(stream)
    return holds(index, id)
  end
  return false
end

-- Finds the stream of the scope whose window or history holds `id`, the
-- most recently used first.
local function find(id)
  for _, stream in ipairs(redis.call('ZREVRANGE', streams_key, 0, -1)) do
    if knows(stream, id) then return stream end
  end
  return nil
end
";

/// `ARGV[9]`: the stream; `ARGV[10]`: the client's cursor, or empty;
/// `ARGV[11]`: `1` to look for the cursor's stream in the whole scope when
/// the stream does not know it; `ARGV[12]`: this process's holder id;
/// `ARGV[13]`: `1` to return `{'wait'}`, changing nothing, when no
/// stream knows the cursor while another process holds the stream;
/// `ARGV[14]`: `1` to return the window even of the stream asked for.
///
/// The caller sends it in a transaction with a native `XREADGROUP` of the
/// history of the stream asked for, through [`REPLAY_GROUP`]: the script
/// points that group at the entry after which the replay starts (or at
/// the end, for no replay), so that the replay's blocks come back natively
/// in the same round trip. Redis builds no reply of them in Lua, which
/// costs several times a native read. When the cursor belongs to another
/// stream of the scope, the caller reads that one's blocks after.
///
/// Returns the stream, whether the cursor was known (-1 without one), the
/// generation, the bad values met, whether the history held the cursor
/// (-1 without a cursor or a history), the id of the entry after which the
/// replay starts (or empty), the position its first block must have (0:
/// any), with a history an epoch for stamped ids (else 0), whether the
/// stream is to be followed (1 when another process holds it, 2 when,
/// with a cursor, it is complete), without a cursor the start of the
/// history's newest block (after which a follow starts; 0 for none), and
/// the window: its number of entries and the entries one per line (an
/// id, then its fingerprint); or -1 and nothing for the stream asked for,
/// whose window the script copies to `KEYS[3]` (`COPY`, whatever its
/// generation), which the caller reads natively and deletes in the same
/// transaction (an `LRANGE` of its newest `2 * window_len` entries); last,
/// 1 when that copy ends at the cursor, its ids after it being those of
/// the blocks the replay reads (else 0).
const OPEN: &str = r"
local stream, cursor, search, me = ARGV[9], ARGV[10], ARGV[11] == '1', ARGV[12]
local wait, window_here = ARGV[13] == '1', ARGV[14] == '1'
local asked = stream
local known, gen, replayed, replay_after, expect = -1, 0, -1, '', 0
local follow, keep, follow_at = 0, false, 0
-- With a replay, the place in the window of the cursor's entry, when that
-- led to the cursor's block.
local window_at = nil
-- 1 when a follow without a cursor starts where the holder's client went
-- away, that client having been sent ids: the follow hears of a gap first.
local unconfirmed = 0
-- The generation of `stream` as the script found it, and its window.
local found_gen = generation(stream) or 0
local window = window_key(stream, found_gen)

-- The holder id of the process that reads `stream`'s upstream, or nil.
local function holder(stream)
  return redis.call('GET', key_of('l:', stream)) or nil
end

-- Whether another process than this one reads `stream`'s upstream, and
-- the holder id of the one that does, if any.
local function held_elsewhere(stream)
  local held_by = holder(stream)
  return held_by ~= nil and held_by ~= me, held_by
end

-- Whether a client resuming `stream` follows it: 2 when it is complete,
-- 1 when another process holds it, else 0 and the stream's holder, if
-- any (this process).
local function followed(stream)
  local ended = redis.call('GET', key_of('d:', stream))
  if ended and string.sub(ended, 1, 1) == 'c' then return 2 end
  local elsewhere, held_by = held_elsewhere(stream)
  if elsewhere then return 1 end
  return 0, held_by
end

-- Points the replay group of the asked stream's history after `after`,
-- or at its end (`$`) for no replay: the caller's XREADGROUP then reads
-- what follows. A history without the group gets it when it has a replay.
local function point_replay(after)
  if history_len == 0 then return end
  local blocks = history_keys(asked)
  local pointed = redis.pcall('XGROUP', 'SETID', blocks, 'replay', after)
  if type(pointed) == 'table' and pointed.err and after ~= '$' then
    redis.call('XGROUP', 'CREATE', blocks, 'replay', after)
  end
end

if cursor ~= '' then
  -- Most cursors are the asked stream's, their block in its history: one
  -- look in its window finds them, and no other is needed.
  local after, at = nil, nil
  if history_len > 0 then after, at = entry_after(stream, window, cursor) end
  window_at = at
  if not after and search and not knows(stream, cursor) then
    local found = find(cursor)
    if not found and wait and held_elsewhere(stream) then
      -- Unknown, while another process holds the stream: its write of
      -- the cursor is likely on its way. Nothing is cut yet.
      point_replay('$')
      return {'wait'}
    end
    stream = found or stream
    found_gen = generation(stream) or 0
    window = window_key(stream, found_gen)
    if found and history_len > 0 then after = entry_after(stream, window, cursor) end
    window_at = nil
  end
  if history_len > 0 then replayed = after and 1 or 0 end
  if after then
    -- The window's ids after the cursor are those of the replayed blocks.
    known, replay_after = 1, after
    local _, position = id_parts(after)
    expect = position + 1
    -- The client follows the stream where its holder records it: that
    -- response is not superseded, and goes on recording.
    local held_by
    follow, held_by = followed(stream)
    if follow == 0 and held_by == me then
      -- This process holds the stream: the client takes it over there,
      -- and what the hold recorded is still on its way here.
      keep = true
    end
  else
    local at = redis.call('LPOS', window, cursor)
    if at then
      -- The cursor and its fingerprint stay; what followed goes, and
      -- where the blocks of those ids are, to the index.
      if history_len > 0 then unpoint(stream, at + 2, -1) end
      redis.call('LTRIM', window, 0, at + 1)
      known = 1
    else
      if history_len > 0 then unpoint(stream, 0, -1) end
      redis.call('DEL', window)
      known = 0
    end
  end
  if follow > 0 or keep then
    gen = found_gen
  else
    -- A new generation: its window is the old one's, moved, and the
    -- history refuses what a write of the old one still has on its way.
    gen = redis.call('HINCRBY', generations_key, stream, 1)
    if redis.call('EXISTS', window) == 1 then
      redis.call('RENAME', window, window_key(stream, gen))
    end
    window = window_key(stream, gen)
    if history_len > 0 then fence_history(stream) end
  end
else
  gen = found_gen
  if history_len > 0 and held_elsewhere(stream) then
    -- Another process reads the stream: a client without a cursor follows
    -- it rather than reading the upstream too, from its newest block, or
    -- when the holder's client went away, with what the holder read since
    -- replayed first, as a takeover there would.
    follow = 1
    local blocks = history_keys(stream)
    local newest = newest_id(blocks)
    local newest_start, newest_position = id_parts(newest)
    follow_at = newest_start or 0
    local away = redis.call('GET', key_of('a:', stream))
    if away and string.sub(away, -1) == '!' then
      away, unconfirmed = string.sub(away, 1, -2), 1
    end
    local away_start, away_position = id_parts(away)
    if away and not away_start then bad_values = bad_values + 1 end
    if away_start and newest_start and before(away_start, away_position, newest_start, newest_position) then
      -- From the oldest block kept, when the history let go of some the
      -- client never got: as much as is left.
      replayed, replay_after = 1, away
    end
  end
end
local epoch = 0
if history_len > 0 then
  epoch = tonumber(redis.call('GET', epoch_key)) or 0
  epoch = math.max(now, epoch + 1)
  redis.call('SET', epoch_key, epoch, 'PX', ttl)
end
point_replay((replayed == 1 and stream == asked) and replay_after or '$')
if replayed >= 0 or gen > 0 or redis.call('EXISTS', window) == 1 then
  -- The stream's keys had their TTL refreshed together: they get it
  -- again once a quarter of it has run since (the window's TTL says so),
  -- or when the script made a key (a new generation moves the window and
  -- may make the index; a stream new to the scope may make the scope's
  -- streams). Otherwise only the stream's last use is marked.
  local due = gen ~= found_gen or redis.call('PTTL', window) <= ttl - math.floor(ttl / 4)
  if mark_used(stream) or due then refresh_ttls(stream, window) end
end
-- The caller reads the window of the stream it asked for natively, after
-- the script: a copy at `KEYS[3]`, which it deletes then (the copy costs
-- a fiftieth of what building the window into a reply in Lua does).
-- Another stream's, or when the caller asks (it runs the script alone),
-- goes back as one string, an entry a line (no id holds a line break).
local entries, joined, ids_replayed = -1, '', 0
if stream ~= asked or window_here then
  local found = redis.call('LRANGE', window, -2 * window_len, -1)
  entries, joined = #found, table.concat(found, '\n')
elseif redis.call('COPY', window, KEYS[3], 'REPLACE') == 0 then
  redis.call('DEL', KEYS[3])
elseif replayed == 1 and window_at then
  -- The window's ids after the cursor are those of the blocks the replay
  -- reads, forwarded after the cursor's: the caller takes them from the
  -- blocks, and reads the window up to the cursor only.
  redis.call('LTRIM', KEYS[3], 0, window_at + 1)
  ids_replayed = 1
end
return {stream, known, gen, bad_values, replayed, replay_after, expect, epoch, follow, follow_at,
  entries, joined, unconfirmed, ids_replayed}
";

/// `ARGV[9]`: the stream; `ARGV[10]`: the generation its ids were
/// forwarded in, or -1; `ARGV[11]`: the number of ids; `ARGV[12]`: `1`
/// when the history before these blocks is to be forgotten; `ARGV[13]`:
/// `1` when the window before these ids is; `ARGV[14]`: this process's
/// holder id; `ARGV[15]`: the lease in ms; `ARGV[16]`: `1` to take the
/// stream's lease first; `ARGV[17]`: `1` to let it go after; `ARGV[18]`:
/// how the stream ended after these blocks, `e` (its upstream ended) or
/// `c` (complete: a per-request stream); or `a<n>` when the reading
/// response's client went away before the last `n` of them (`A<n>` when
/// it had been sent ids, which a request without a cursor names none of:
/// the away mark then ends in `!`, and such a follow hears of a gap
/// first), `b` when a
/// client took the stream over; or empty; `ARGV[19]` and `ARGV[20]`:
/// where this process's last write left the history (the start and the
/// position of its next block), or 0 and 0; `ARGV[21]`: `1` when the
/// stream's keys are due for their TTL and last use again (the writer
/// keeps the schedule, so that most writes read nothing for it); then
/// the window's new entries, oldest first (each id, then its
/// fingerprint); then for the history, each block's id (or empty) and
/// its entry's value (`<ms>:<id>`, a line break, the block). Returns 1 when written, 0 when a cursor cut the window since
/// that generation, the bad values met, and where the history's next
/// block goes (its start and position; 0 and 0 without a history). Tells
/// the stream's followers on its channel whenever its history, lease or
/// end moved: `m` when the lease or the end did, else `b`.
const WRITE: &str = r"
local stream, gen, count = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local forget_first, start_over = ARGV[12] == '1', ARGV[13] == '1'
local me, lease_ms = ARGV[14], tonumber(ARGV[15])
local claim, release, ending = ARGV[16] == '1', ARGV[17] == '1', ARGV[18]
local next_start, next_position = tonumber(ARGV[19]) or 0, tonumber(ARGV[20]) or 0
local touch_due = ARGV[21] == '1'
local first_entry = 22
local first_block = first_entry + 2 * count
local lease, ended = key_of('l:', stream), key_of('d:', stream)
local moved = claim or release
-- Where a follower without a cursor starts, when the client went away.
local missed_from = nil
-- Whether the lease or the end moved: the followers then read those too.
local marks = claim or release
-- Whether this write made a key, which then gets its TTL.
local made = false
-- The count bound is held every this many positions, not at each write:
-- an open holds it exactly, and the memory it costs is bounded.
local trim_every = math.floor(history_len / 8) + 1
local slack = math.floor(window_len / 8) + 1

-- The window's entries the arguments from `first_entry` to before
-- `first_block` hold (each id, then its fingerprint), each id whose block
-- this write kept at `kept_at[id]` pointing there; those ids leave
-- `kept_at`, which keeps the ones the index is to point from.
local function window_entries(first_entry, first_block, kept_at)
  local entries = {}
  for k = first_entry, first_block - 1, 2 do
    local id, print = ARGV[k], ARGV[k + 1]
    local at = kept_at[id]
    if at then
      print = print .. ':' .. at
      kept_at[id] = nil
    end
    entries[#entries + 1] = id
    entries[#entries + 1] = print
  end
  return entries
end

-- The call that keeps `value` (a block, after its line of time and id)
-- in the history `blocks` at `start`, `position`; with `existing`, only
-- in a history that exists. The write trims to the bytes bound after its
-- last block.
local function add(blocks, start, position, value, existing)
  if existing then
    return 'XADD', blocks, 'NOMKSTREAM', start .. '-' .. position, 'b', value
  end
  return 'XADD', blocks, start .. '-' .. position, 'b', value
end

-- Appends `block` to the history at `start`, `position`: where this
-- process's last write left it. When another process wrote since, or this
-- one does not know, it goes right after the stream's last entry instead.
-- When the stream ends before that place, blocks written there are gone
-- (a failover lost them): the jump in positions makes a replay or a
-- follow across it a gap, never a silent skip. Returns where the next
-- block goes.
local function append(blocks, start, position, value, len)
  if start > 0 then
    local added = redis.pcall(add(blocks, start, position, value, true))
    if type(added) == 'string' then return start + len, position + 1 end
    if not added then
      -- No history (Redis lost it, or it expired): made again where this
      -- process left it, so that positions go on from there.
      made = true
      redis.call(add(blocks, start, position, value, false))
      return start + len, position + 1
    end
  end
  made = made or redis.call('EXISTS', blocks) == 0
  start, position = after_last(blocks)
  redis.call(add(blocks, start, position, value, false))
  return start + len, position + 1
end

if claim then
  redis.call('SET', lease, me, 'PX', lease_ms)
  redis.call('DEL', ended)
end
local written = 1
if gen >= 0 then
  local current = generation(stream)
  if current == nil then
    if gen > 0 then
      made = redis.call('HSET', generations_key, stream, gen) == 1 or made
    end
  elseif current ~= gen then
    written = 0
  end
end
if written == 1 then
  local window = window_of(stream)
  -- The start of each block this write keeps, by its resume id: the
  -- window's entry of that id points at it, the index at the others'.
  local kept_at, kept_ids = {}, {}
  local blocks, index = history_keys(stream)
  if history_len > 0 then
    if forget_first then
      forget_history(stream)
      moved, made = true, true
    end
    local first_position = nil
    local away_before = tonumber(string.sub(ending, 2)) or 0
    local blocks_count = (#ARGV - first_block + 1) / 2
    for i = first_block, #ARGV - 1, 2 do
      local id, value = ARGV[i], ARGV[i + 1]
      local len = #value - string.find(value, '\n', 1, true)
      next_start, next_position = append(blocks, next_start, next_position, value, len)
      local start_then = next_start - len
      first_position = first_position or next_position - 1
      if id ~= '' then
        kept_at[id] = start_then
        kept_ids[#kept_ids + 1] = id
      end
      if blocks_count - (i - first_block) / 2 == away_before then
        -- The first block the reading response's client missed.
        missed_from = start_then .. '-' .. (next_position - 2)
      end
      moved = true
    end
    if first_position then
      redis.call('XTRIM', blocks, 'MINID', math.max(next_start - history_bytes, 0))
    end
    if first_position and math.floor((next_position - 1) / trim_every) > math.floor((first_position - 1) / trim_every) then
      redis.call('XTRIM', blocks, 'MAXLEN', history_len)
      redis.call('LTRIM', index, -2 * history_len, -1)
    end
  end
  if start_over then
    if history_len > 0 then unpoint(stream, 0, -1) end
    redis.call('DEL', window)
  end
  if count > 0 then
    local entries, len = window_entries(first_entry, first_block, kept_at), 0
    for first = 1, #entries, 1000 do
      len = redis.call('RPUSH', window, unpack(entries, first, math.min(first + 999, #entries)))
    end
    made = made or len == #entries
    -- Trimmed a little past the window's length, not at every write: an
    -- open reads only the newest `window_len` ids. Ids the window lets go
    -- before the history does leave their pointers to the index.
    if len > 2 * (window_len + slack) then
      if history_len > window_len then unpoint(stream, 0, len - 2 * window_len - 1) end
      redis.call('LTRIM', window, -2 * window_len, -1)
    end
  end
  if history_len > 0 then
    local pointers = {}
    for _, id in ipairs(kept_ids) do
      if kept_at[id] then
        pointers[#pointers + 1] = id
        pointers[#pointers + 1] = '\0' .. kept_at[id]
        kept_at[id] = nil
      end
    end
    local indexed = 0
    for first = 1, #pointers, 1000 do
      indexed = redis.call('RPUSH', index, unpack(pointers, first, math.min(first + 999, #pointers)))
    end
    made = made or (#pointers > 0 and indexed == #pointers)
    local away = key_of('a:', stream)
    local away_kind = string.sub(ending, 1, 1)
    if away_kind == 'a' or away_kind == 'A' then
      -- Where a follower without a cursor starts, as a takeover would:
      -- after the last block the client got.
      if not missed_from then
        if next_start == 0 then next_start, next_position = after_last(blocks) end
        missed_from = next_start .. '-' .. (next_position - 1)
      end
      if away_kind == 'A' then missed_from = missed_from .. '!' end
      redis.call('SET', away, missed_from, 'PX', ttl)
    elseif ending ~= '' then
      redis.call('DEL', away)
    end
  end
  if ending == 'e' or ending == 'c' then
    if history_len > 0 and next_start == 0 then
      next_start, next_position = after_last(history_keys(stream))
    end
    redis.call('SET', ended, ending .. ':' .. math.max(next_position - 1, 0), 'PX', ttl)
    moved, marks = true, true
  end
  if touch_due or made then touch(stream, window) end
end
if release or (written == 1 and (ending == 'e' or ending == 'c')) then
  if redis.call('GET', lease) == me then
    redis.call('DEL', lease)
  end
end
if moved then
  redis.call('PUBLISH', scope_keys .. 'c:' .. stream, marks and 'm' or 'b')
end
return {written, bad_values, next_start, next_position}
";

/// Forgets every stream of a scope, for the end of its session: each
/// stream's window, history and index, end and away marks, then the
/// scope's streams. Each stream's generation moves on instead of going:
/// a write still on its way from the replica that read the stream is
/// refused then, rather than bring its keys back. `KEYS`: the scope's
/// streams and generations; `ARGV[1]`: what the scope's keys start with,
/// whose hash tag every key built here shares; `ARGV[2]`: the TTL in ms.
/// A lease is left to its holder, which lets it go as it ends the stream.
/// Returns how many streams it forgot.
const FORGET_SCOPE: &str = r"
local streams = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, stream in ipairs(streams) do
  local key = function(kind) return ARGV[1] .. kind .. stream end
  local gen = redis.call('HGET', KEYS[2], stream) or '0'
  redis.call('DEL', key('w' .. gen .. ':'), key('h:'), key('hi:'), key('d:'), key('a:'))
  redis.call('HINCRBY', KEYS[2], stream, 1)
end
redis.call('DEL', KEYS[1])
if #streams > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return #streams
";

/// Says a stop to every replica: keeps it in the stops' log, a Redis
/// Stream (`KEYS[1]`), then publishes it on the stops' channel
/// (`ARGV[1]`) after its entry's id and a space. A replica whose
/// subscription was down reads the stops it missed from the log once it
/// is back, and tells each apart from one it heard by its id. `ARGV[2]`:
/// the stop; `ARGV[3]`: the log's TTL in ms; `ARGV[4]`: about how many
/// stops it keeps. Returns the entry's id.
const STOP: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[2])
return id
";

/// Removes the keys of the wrong type: `KEYS`, each of the type named by
/// the `ARGV` at its place (a key that is not there is fine). Returns how
/// many it removed. Run when a script met `WRONGTYPE`, before it runs
/// again: no script checks types itself.
const REPAIR: &str = r"
local removed = 0
for i, key in ipairs(KEYS) do
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= ARGV[i] then
    redis.call('DEL', key)
    removed = removed + 1
  end
end
return removed
";
