//! The Lua scripts, each run atomically in Redis, and the decoding of
//! their replies.

use std::sync::OnceLock;
use std::time::Duration;

use ::redis::{Cmd, FromRedisValue, Script, Value};
use bytes::{Buf, Bytes};

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
    pub(super) read: Lua,
    pub(super) refresh: Lua,
    pub(super) repair: Lua,
}

pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        open: Lua::new(format!("{POSITION_OF}{PREAMBLE}{OPEN}")),
        write: Lua::new(format!("{POSITION_OF}{PREAMBLE}{WRITE}")),
        read: Lua::new(format!("{POSITION_OF}{READ}")),
        refresh: Lua::new(REFRESH.to_owned()),
        repair: Lua::new(REPAIR.to_owned()),
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

/// Shared by the scripts with the preamble and the read script: the
/// position an entry of a history (`<ms>:<position>:<bytes>`) was kept
/// at, or nil.
const POSITION_OF: &str = r"
local function position_of(entry)
  if not entry then return nil end
  local first = string.find(entry, ':', 1, true)
  local second = first and string.find(entry, ':', first + 1, true)
  return second and tonumber(string.sub(entry, first + 1, second - 1))
end
";

/// What every script starts with. KEYS: the scope's streams and
/// generations. ARGV: the window key prefix, the TTL in ms, the window
/// length, the most streams per scope, the history's most blocks (0 for no
/// history), bytes and age in ms, the caller's time in ms, then each
/// script's own.
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
local history_bytes_key = scope_keys .. 'hb'
local positions_key = scope_keys .. 'hn'
local epoch_key = scope_keys .. 'e'

-- No call checks a key's type first: a key of ours that something else
-- gave another type fails the script with WRONGTYPE, and the store then
-- removes the stream's keys of the wrong type (`REPAIR`) and runs it again.
-- Only the search of a cursor through the scope's other streams skips one.
local function holds(list, id)
  return type(redis.pcall('LPOS', list, id)) == 'number'
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

-- A stream's history: its blocks, each kept as `<ms>:<position>:<bytes>`
-- (see `block_of`), and at the same places in a second list their ids
-- (empty for none).
local function history_keys(stream)
  return scope_keys .. 'h:' .. stream, scope_keys .. 'hi:' .. stream
end

local function forget_history(stream)
  local blocks, ids = history_keys(stream)
  redis.call('DEL', blocks, ids)
  redis.call('HDEL', history_bytes_key, stream)
end

-- A window's ids, and at the same places the fingerprints of their events.
local function window_keys(stream)
  return windows .. stream, scope_keys .. 'wf:' .. stream
end

local function forget(stream)
  redis.call('ZREM', streams_key, stream)
  redis.call('HDEL', generations_key, stream)
  redis.call('HDEL', positions_key, stream)
  redis.call('DEL', window_keys(stream))
  redis.call('DEL', scope_keys .. 'd:' .. stream)
  forget_history(stream)
end

-- The bytes of a history entry's block, and when it was kept. An entry
-- is `<ms>:<position>:<bytes>`; one without both is from no version of
-- this crate that reads it, and has no time: the next prune lets it go.
local function block_of(entry)
  local first = string.find(entry, ':', 1, true)
  local second = first and string.find(entry, ':', first + 1, true)
  if not second then return entry, nil end
  return string.sub(entry, second + 1), tonumber(string.sub(entry, 1, first - 1))
end

-- The position of the newest block ever kept in the history of `stream`:
-- positions rise by one per block, and the history's list ends there.
local function last_position(stream)
  return tonumber(redis.call('HGET', positions_key, stream)) or 0
end

-- The position of the newest block of `stream`'s history: the count, or
-- the list's last entry when the count is gone (the scope's hash of
-- counts expired before the list did).
local function newest_position(stream)
  local counted = tonumber(redis.call('HGET', positions_key, stream))
  if counted then return counted end
  local blocks = history_keys(stream)
  return position_of(redis.call('LINDEX', blocks, -1)) or 0
end

-- Lets the oldest blocks of a stream's history go past its bounds. A
-- history whose two lists disagree was written by something else: it goes.
-- A write gives the bytes it added and the lists' lengths its pushes
-- returned, and holds the count and bytes bounds; without them (an open),
-- they are read, and the age bound is held too.
local function prune_history(stream, added, len, ids_len)
  local blocks, ids = history_keys(stream)
  len = len or redis.call('LLEN', blocks)
  if len ~= (ids_len or redis.call('LLEN', ids)) then
    bad_values = bad_values + 1
    forget_history(stream)
    return
  end
  if len == 0 then
    redis.call('HDEL', history_bytes_key, stream)
    return
  end
  local total = tonumber(redis.call('HGET', history_bytes_key, stream))
  if total == nil then
    total = 0
    for _, entry in ipairs(redis.call('LRANGE', blocks, 0, -1)) do
      total = total + #block_of(entry)
    end
  else
    total = total + (added or 0)
  end
  -- Past the count, the oldest go at once: one pop of each list.
  local extra = len - history_len
  if extra > 0 then
    for _, entry in ipairs(redis.call('LPOP', blocks, extra)) do
      total = total - #block_of(entry)
    end
    redis.call('LPOP', ids, extra)
    len = len - extra
  end
  if added then
    -- A write holds the bytes bound, popping without a look first; the
    -- age bound waits for the next open, which reads the oldest block
    -- anyway: no replay is older, and count and bytes bound the memory.
    while len > 0 and total > history_bytes do
      total = total - #block_of(redis.call('LPOP', blocks))
      redis.call('LPOP', ids)
      len = len - 1
    end
  end
  while not added and len > 0 do
    local block, at = block_of(redis.call('LINDEX', blocks, 0))
    if at ~= nil and total <= history_bytes and at >= now - history_age then
      break
    end
    redis.call('LPOP', blocks)
    redis.call('LPOP', ids)
    total = total - #block
    len = len - 1
  end
  if len == 0 then
    redis.call('HDEL', history_bytes_key, stream)
  elseif redis.call('HSET', history_bytes_key, stream, math.max(total, 0)) == 1 then
    -- A new field, maybe a new hash: it gets its TTL now.
    redis.call('PEXPIRE', history_bytes_key, ttl)
  end
end

-- Where the blocks that followed `cursor` start in the history of
-- `stream`: their index in its list and the position of the first; nil
-- when the history does not hold it. The caller reads them itself: a
-- native read is many times faster than one through Lua.
local function replay_after(stream, cursor)
  prune_history(stream)
  local blocks, ids = history_keys(stream)
  local at = redis.call('LPOS', ids, cursor, 'RANK', -1)
  if not at then return nil end
  -- Read off the entries: the count in `hn` may not have survived a
  -- failover that the list did.
  local after = position_of(redis.call('LINDEX', blocks, at + 1))
  if after then return at + 1, after end
  local at_cursor = position_of(redis.call('LINDEX', blocks, at))
  if at_cursor then return at + 1, at_cursor + 1 end
  local len = redis.call('LLEN', blocks)
  return at + 1, last_position(stream) - len + at + 2
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

-- Marks a stream used: refreshes the TTLs, and makes room in the scope.
local function touch(stream)
  local ids, fingerprints = window_keys(stream)
  redis.call('PEXPIRE', ids, ttl)
  redis.call('PEXPIRE', fingerprints, ttl)
  if history_len > 0 then
    local blocks, ids = history_keys(stream)
    redis.call('PEXPIRE', blocks, ttl)
    redis.call('PEXPIRE', ids, ttl)
    redis.call('PEXPIRE', history_bytes_key, ttl)
    redis.call('PEXPIRE', positions_key, ttl)
    redis.call('PEXPIRE', epoch_key, ttl)
  end
  mark_used(stream)
  redis.call('PEXPIRE', streams_key, ttl)
  redis.call('PEXPIRE', generations_key, ttl)
end

-- Marks a stream used after a write: all of it when `due` (the writer
-- asks once a quarter of the TTL has run since it last did) or when the
-- write made its window or history (a stream maybe new to the scope);
-- otherwise only the keys the write `made` get their TTL. So every key
-- keeps a TTL, and most writes refresh none.
local function touch_written(stream, made, due)
  if due or #made > 0 then
    touch(stream)
  end
end

-- Whether the window or the history of `stream` holds `id`.
local function knows(stream, id)
  if holds(windows .. stream, id) then return true end
  if history_len > 0 then
    local _, ids = history_keys(stream)
    return holds(ids, id)
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
/// stream knows the cursor while another process holds the stream.
/// Returns the stream, whether the cursor was known (-1 without one), the
/// generation, the bad values met, whether the history held the cursor
/// (-1 without a cursor or a history), where the blocks after it start
/// (their index in the history's list, and the position of the first;
/// without a cursor, the position of the newest block, after which a
/// follow starts), with a history an epoch for stamped ids (else 0), and
/// whether the stream is to be followed: 1 when another process holds it,
/// 2 when (with a cursor) it is complete; then
/// the window: its number of ids and the ids one per line, and the same
/// of their fingerprints, and -1; or with a replay, the window up to the
/// cursor, and the number of ids after it. The replay's blocks are read
/// natively, after the script.
const OPEN: &str = r"
local stream, cursor, search, me = ARGV[9], ARGV[10], ARGV[11] == '1', ARGV[12]
local wait = ARGV[13] == '1'
local known, gen, replayed, replay_index, replay_position = -1, 0, -1, 0, 0
local follow, keep = 0, false
local window, fingerprints = window_keys(stream)

-- The holder id of the process that reads `stream`'s upstream, or nil.
local function holder(stream)
  return redis.call('GET', scope_keys .. 'l:' .. stream) or nil
end

-- Whether another process than this one reads `stream`'s upstream.
local function held_elsewhere(stream)
  local held_by = holder(stream)
  return held_by ~= nil and held_by ~= me
end

-- Whether a client resuming `stream` follows it: 2 when it is complete,
-- 1 when another process holds it, else 0.
local function followed(stream)
  local ended = redis.call('GET', scope_keys .. 'd:' .. stream)
  if ended and string.sub(ended, 1, 1) == 'c' then return 2 end
  if held_elsewhere(stream) then return 1 end
  return 0
end
if cursor ~= '' then
  if search and not knows(stream, cursor) then
    local found = find(cursor)
    if not found and wait and held_elsewhere(stream) then
      -- Unknown, while another process holds the stream: its write of
      -- the cursor is likely on its way. Nothing is cut yet.
      return {'wait'}
    end
    stream = found or stream
    window, fingerprints = window_keys(stream)
  end
  local index, position = nil, nil
  if history_len > 0 then
    index, position = replay_after(stream, cursor)
    replayed = index and 1 or 0
  end
  if index then
    -- The window's ids after the cursor are those of the replayed blocks.
    known, replay_index, replay_position = 1, index, position
    -- The client follows the stream where its holder records it: that
    -- response is not superseded, and goes on recording.
    follow = followed(stream)
    if follow == 0 and holder(stream) == me then
      -- This process holds the stream: the client takes it over there,
      -- and what the hold recorded is still on its way here.
      keep = true
    end
  else
    local at = redis.call('LPOS', window, cursor)
    if at then
      -- Both lists end at the newest id: the cut keeps as many of each.
      local len = redis.call('LLEN', window)
      redis.call('LTRIM', window, 0, at)
      redis.call('LTRIM', fingerprints, 0, at - len + redis.call('LLEN', fingerprints))
      known = 1
    else
      redis.call('DEL', window, fingerprints)
      known = 0
    end
  end
  if follow > 0 or keep then
    gen = generation(stream) or 0
  else
    generation(stream)
    gen = redis.call('HINCRBY', generations_key, stream, 1)
  end
else
  gen = generation(stream) or 0
  if history_len > 0 and held_elsewhere(stream) then
    -- Another process reads the stream: a client without a cursor follows
    -- it rather than reading the upstream too, from its newest block, or
    -- when the holder's client went away, with what the holder read since
    -- replayed first, as a takeover there would.
    follow = 1
    replay_position = newest_position(stream)
    local away = tonumber(redis.call('GET', scope_keys .. 'a:' .. stream))
    local first = position_of(redis.call('LINDEX', history_keys(stream), 0))
    if away and first and away < replay_position then
      local from = math.max(away + 1, first)
      replayed, replay_index, replay_position = 1, from - first, from
    end
  end
end
local epoch = 0
if history_len > 0 then
  epoch = tonumber(redis.call('GET', epoch_key)) or 0
  epoch = math.max(now, epoch + 1)
  redis.call('SET', epoch_key, epoch, 'PX', ttl)
end
if redis.call('EXISTS', window) == 1 or gen > 0 or replayed >= 0 then touch(stream) end
-- The window goes back as two strings, each entry on a line (no id holds
-- a line break): one reply each rather than one per id. With a replay,
-- only up to the cursor, and how many ids follow it: those of the
-- replayed blocks, which the caller reads anyway.
local len, plen = redis.call('LLEN', window), redis.call('LLEN', fingerprints)
local first, last, tail = math.max(0, len - window_len), len - 1, -1
if replayed == 1 then
  local at = redis.call('LPOS', window, cursor, 'RANK', -1)
  if at then last, tail = at, len - at - 1 end
end
local ids = redis.call('LRANGE', window, first, last)
local prints = {}
if first - len + plen >= 0 then
  prints = redis.call('LRANGE', fingerprints, first - len + plen, last - len + plen)
end
return {stream, known, gen, bad_values, replayed, replay_index, replay_position, epoch, follow,
  #ids, table.concat(ids, '\n'), #prints, table.concat(prints, '\n'), tail}
";

/// `ARGV[9]`: the stream; `ARGV[10]`: the generation its ids were forwarded in,
/// or -1; `ARGV[11]`: the number of ids; `ARGV[12]`: `1` when the history
/// before these blocks is to be forgotten; `ARGV[13]`: `1` when the window
/// before these ids is; `ARGV[14]`: this process's holder id; `ARGV[15]`:
/// the lease in ms; `ARGV[16]`: `1` to take the stream's lease first;
/// `ARGV[17]`: `1` to let it go after; `ARGV[18]`: how the stream ended
/// after these blocks, `e` (its upstream ended) or `c` (complete: a
/// per-request stream); or `a<n>` when the reading response's client went
/// away before the last `n` of them, `b` when a client took the stream
/// over; or empty; `ARGV[19]`: the position of the newest
/// block this process wrote for the stream, or 0; `ARGV[20]`: `1` when
/// the stream's keys are due for their TTL and last use again (the writer
/// keeps the schedule, so that most writes read nothing for it); then the
/// ids, oldest
/// first, and the fingerprints of their events; then for the history,
/// each block's id (or empty) and bytes. Returns 1 when written, 0 when a
/// cursor cut the window since that generation, the bad values met, and
/// the position of the history's newest block. Tells the
/// stream's followers on its channel whenever its history or lease moved.
const WRITE: &str = r"
local stream, gen, count = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local forget_first, start_over = ARGV[12] == '1', ARGV[13] == '1'
local me, lease_ms = ARGV[14], tonumber(ARGV[15])
local claim, release, ending = ARGV[16] == '1', ARGV[17] == '1', ARGV[18]
local wrote_up_to = tonumber(ARGV[19]) or 0
local touch_due = ARGV[20] == '1'
local first_id = 21
local lease, ended = scope_keys .. 'l:' .. stream, scope_keys .. 'd:' .. stream
local moved = claim or release
-- The keys this write makes, or fields it adds to a hash: they get a TTL.
local made = {}
local function made_if(key, new)
  if new then made[#made + 1] = key end
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
      made_if(generations_key, redis.call('HSET', generations_key, stream, gen) == 1)
    end
  elseif current ~= gen then
    written = 0
  end
end
-- The position of the history's newest block, found once.
local newest = 0
if written == 1 then
  local first_print = first_id + count
  local first_block = first_print + count
  local window, fingerprints = window_keys(stream)
  if start_over then redis.call('DEL', window, fingerprints) end
  if count > 0 then
    local len, prints_len = 0, 0
    for first = first_id, first_print - 1, 1000 do
      local last = math.min(first + 999, first_print - 1)
      len = redis.call('RPUSH', window, unpack(ARGV, first, last))
      prints_len = redis.call('RPUSH', fingerprints, unpack(ARGV, first + count, last + count))
    end
    made_if(window, len == count)
    made_if(fingerprints, prints_len == count)
    if len > window_len then redis.call('LTRIM', window, -window_len, -1) end
    if prints_len > window_len then redis.call('LTRIM', fingerprints, -window_len, -1) end
  end
  if history_len > 0 then
    -- Pruned once, after the blocks go in: that prune holds every bound.
    if forget_first then forget_history(stream) end
    local blocks, ids = history_keys(stream)
    local before = newest_position(stream)
    if before < wrote_up_to then
      -- Blocks this process wrote are gone, not let go by a prune (that
      -- keeps the count): a failover lost them. No replay may skip them,
      -- and positions go on from the last one written.
      forget_history(stream)
      made_if(positions_key, redis.call('HSET', positions_key, stream, wrote_up_to) == 1)
      before, moved = wrote_up_to, true
    end
    local added, position, new_ids, new_blocks = 0, before, {}, {}
    for i = first_block, #ARGV - 1, 2 do
      position = position + 1
      new_ids[#new_ids + 1] = ARGV[i]
      new_blocks[#new_blocks + 1] = now .. ':' .. position .. ':' .. ARGV[i + 1]
      added = added + #ARGV[i + 1]
    end
    if position > before then
      -- One push per list, in slices that `unpack` takes.
      local len, ids_len = 0, 0
      for first = 1, #new_ids, 1000 do
        local last = math.min(first + 999, #new_ids)
        ids_len = redis.call('RPUSH', ids, unpack(new_ids, first, last))
        len = redis.call('RPUSH', blocks, unpack(new_blocks, first, last))
      end
      made_if(ids, ids_len == #new_ids)
      made_if(blocks, len == #new_blocks)
      made_if(positions_key, redis.call('HSET', positions_key, stream, position) == 1)
      prune_history(stream, added, len, ids_len)
      moved = true
    end
    if forget_first then moved = true end
    newest = position
  end
  local away = scope_keys .. 'a:' .. stream
  if string.sub(ending, 1, 1) == 'a' then
    -- Where a follower without a cursor starts, as a takeover would.
    local after = tonumber(string.sub(ending, 2)) or 0
    redis.call('SET', away, math.max(newest - after, 0), 'PX', ttl)
  elseif ending ~= '' then
    redis.call('DEL', away)
  end
  if ending == 'e' or ending == 'c' then
    redis.call('SET', ended, ending .. ':' .. newest, 'PX', ttl)
    moved = true
  end
  touch_written(stream, made, touch_due)
end
if release or (written == 1 and (ending == 'e' or ending == 'c')) then
  if redis.call('GET', lease) == me then
    redis.call('DEL', lease)
  end
end
if moved then
  redis.call('PUBLISH', scope_keys .. 'c:' .. stream, newest)
end
return {written, bad_values, newest}
";

/// What a follower reads, without the preamble: it changes nothing but its
/// own mark. `KEYS[1]`: the stream's history (for a Cluster's routing);
/// `ARGV[1]`: the scope's key prefix, `<prefix>{scope}:`; `ARGV[2]`: the
/// stream; `ARGV[3]`: the position of the first block wanted; `ARGV[4]`:
/// the most blocks to return; `ARGV[5]`: how long the mark that the stream
/// is followed lasts, in ms. Returns the newest position, the position of
/// the history's first block, 1 while a process holds the stream, how it
/// ended (`<e|c>:<position>`, or empty), and the blocks from the one
/// wanted with their ids.
const READ: &str = r"
local scope_keys, stream = ARGV[1], ARGV[2]
local from, most, mark_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local blocks, ids = KEYS[1], scope_keys .. 'hi:' .. stream
local mark = scope_keys .. 'f:' .. stream
redis.call('SET', mark, '1', 'PX', mark_ms)
local last = tonumber(redis.call('HGET', scope_keys .. 'hn', stream)) or 0
local held = redis.call('EXISTS', scope_keys .. 'l:' .. stream)
local ended = redis.call('GET', scope_keys .. 'd:' .. stream) or ''
local len = math.min(redis.call('LLEN', blocks), redis.call('LLEN', ids))
local first = last - len + 1
-- Read off the entries when they say: the count may not have survived a
-- failover that the list did.
if len > 0 then
  local head, tail = position_of(redis.call('LINDEX', blocks, 0)), position_of(redis.call('LINDEX', blocks, len - 1))
  if head and tail then first, last = head, tail end
end
local found, found_ids = {}, {}
if from <= last and len > 0 then
  local start = math.max(from, first) - first
  found = redis.call('LRANGE', blocks, start, start + most - 1)
  found_ids = redis.call('LRANGE', ids, start, start + most - 1)
end
return {last, first, held, ended, found, found_ids}
";

/// Keeps a lease: `KEYS[1]`, the lease; `ARGV[1]`: this process's holder
/// id; `ARGV[2]`: the lease in ms; `ARGV[3]`: the stream's mark that it is
/// followed. Takes the lease again when it lapsed, never from another
/// holder. Returns 1 while the stream is followed.
const REFRESH: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
end
return redis.call('EXISTS', ARGV[3])
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

/// What the open script returns: the stream, the cursor applied, and where
/// the replay and the window are to be read.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) stream: String,
    pub(super) cursor_known: Option<bool>,
    pub(super) generation: i64,
    pub(super) bad_values: u64,
    /// Whether the history held the cursor; `None` without a cursor or a
    /// history.
    pub(super) replayed: Option<bool>,
    /// Where the blocks after the cursor start: their index in the
    /// history's list, and the position of the first. Without a cursor,
    /// the position is that of the newest block, after which a follow
    /// starts.
    pub(super) replay_index: i64,
    pub(super) replay_position: u64,
    /// Where stamped ids start; 0 without a history.
    pub(super) epoch: u64,
    /// Whether another process holds the stream, or (with a cursor) it is
    /// complete.
    pub(super) follow: bool,
    /// Whether, with a cursor, the stream is complete: a per-request
    /// stream whose upstream ended.
    pub(super) complete: bool,
    /// The window: its ids, with the fingerprints of their events; with a
    /// replay, up to the cursor.
    pub(super) window: Vec<(String, u64)>,
    /// With a replay, the number of ids the window holds after the cursor:
    /// those of the replayed blocks that came with an id of their own.
    pub(super) window_tail: Option<usize>,
}

impl Opened {
    /// Whether the script asked to be run again, a little later.
    pub(super) fn is_wait(reply: &Value) -> bool {
        matches!(reply, Value::Array(items) if items.len() == 1)
    }

    pub(super) fn parse(reply: Value) -> Result<Self, StoreError> {
        let mut items = array(reply, 14)?.into_iter();
        let stream = bulk(next(&mut items)?)?;
        // Stream names come from this crate's `&str` keys: one that is not
        // UTF-8 was written by something else, and its window is no
        // stream's to adopt.
        let stream = String::from_utf8(stream)
            .map_err(|_| corrupt("a stream name that is not UTF-8".to_owned()))?;
        let known = int(next(&mut items)?)?;
        let generation = int(next(&mut items)?)?;
        let mut bad_values = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let replayed = int(next(&mut items)?)?;
        let replay_index = int(next(&mut items)?)?;
        let replay_position = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let epoch = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let follow = int(next(&mut items)?)?;
        let ids = lines(int(next(&mut items)?)?, bulk(next(&mut items)?)?);
        let prints = lines(int(next(&mut items)?)?, bulk(next(&mut items)?)?);
        let window = window_of(ids, prints, &mut bad_values);
        let window_tail = usize::try_from(int(next(&mut items)?)?).ok();
        Ok(Self {
            stream,
            cursor_known: (known >= 0).then_some(known == 1),
            generation,
            bad_values,
            replayed: (replayed >= 0).then_some(replayed == 1),
            replay_index,
            replay_position,
            epoch,
            follow: follow > 0,
            complete: follow == 2,
            window,
            window_tail,
        })
    }
}

/// The `count` lines of `joined`.
fn lines(count: i64, joined: Vec<u8>) -> Vec<Vec<u8>> {
    if count <= 0 {
        return Vec::new();
    }
    joined
        .split(|&byte| byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A window's ids, with the fingerprints of their events (0 where Redis
/// holds none). Counts into `bad_values` what it skips.
pub(super) fn window_of(
    ids: Vec<Vec<u8>>,
    prints: Vec<Vec<u8>>,
    bad_values: &mut u64,
) -> Vec<(String, u64)> {
    let mut kept = Vec::with_capacity(ids.len());
    for id in ids {
        // An id that is not UTF-8 was never recorded by this crate: skip
        // it, the rest of the window is still good.
        match String::from_utf8(id) {
            Ok(id) => kept.push(id),
            Err(_) => *bad_values += 1,
        }
    }
    let prints: Vec<u64> = prints
        .into_iter()
        .map(|print| std::str::from_utf8(&print).ok()?.parse().ok())
        .collect::<Option<_>>()
        .filter(|prints: &Vec<u64>| prints.len() == kept.len())
        // Fingerprints that do not match the ids say nothing: unknown
        // events, which an upstream's replay then passes (a duplicate,
        // never a loss).
        .unwrap_or_else(|| {
            *bad_values += u64::from(!kept.is_empty());
            vec![0; kept.len()]
        });
    kept.into_iter().zip(prints).collect()
}

/// The ids of `blocks` and the fingerprints of their events, as the
/// window recorded them, when exactly `expected` of the blocks have an id
/// of their own; `None` otherwise (some ids were stamped, or too long to
/// be kept): the window is then read as it is.
pub(super) fn ids_of(blocks: &[Bytes], expected: usize) -> Option<Vec<(String, u64)>> {
    let mut framer = crate::framer::Framer::new().fingerprints(true);
    let mut ids = Vec::with_capacity(expected);
    for block in blocks {
        framer.push(block.clone());
    }
    framer.finish();
    while let Some(segment) = framer.next_segment() {
        if let crate::framer::Segment::Block(block) = segment {
            if let Some(id) = block.id_bytes() {
                ids.push((
                    std::str::from_utf8(id).ok()?.to_owned(),
                    block.fingerprint(),
                ));
            }
        }
    }
    (ids.len() == expected).then_some(ids)
}

/// History entries read natively, from some before the one at position
/// `first`: the blocks from that one on, and the position of the last.
/// Those before it are skipped: writes in between may have let older
/// blocks go, which moves the list's indices down. `None` when the block
/// at `first` is not among them, or one is skipped: what the client missed
/// is no longer all there.
pub(super) fn parse_blocks(entries: Value, first: u64) -> Result<Option<Blocks>, StoreError> {
    let entries = list(entries, "history")?;
    let mut blocks = Vec::with_capacity(entries.len());
    let mut expected = first;
    for entry in entries {
        let (position, block) = entry_of(bulk(entry)?)?;
        if position < first {
            continue;
        }
        if position != expected {
            return Ok(None);
        }
        blocks.push(block);
        expected += 1;
    }
    Ok(Some(Blocks {
        blocks,
        last: expected - 1,
    }))
}

/// Blocks of a history, oldest first, and the position of the last.
#[derive(Debug)]
pub(super) struct Blocks {
    pub(super) blocks: Vec<Bytes>,
    pub(super) last: u64,
}

/// What the read script returns to a follower.
#[derive(Debug)]
pub(super) struct Read {
    /// The newest position of the history.
    pub(super) last: u64,
    /// The position of the history's first block.
    pub(super) first: u64,
    /// Whether a process holds the stream.
    pub(super) held: bool,
    /// The position the stream ended at, if it ended.
    pub(super) ended_at: Option<u64>,
    /// The blocks from the one asked for, each with its id (empty for
    /// none).
    pub(super) blocks: Vec<(u64, Bytes, Vec<u8>)>,
}

impl Read {
    pub(super) fn parse(reply: Value) -> Result<Self, StoreError> {
        let mut items = array(reply, 6)?.into_iter();
        let last = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let first = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let held = int(next(&mut items)?)? == 1;
        let ended = bulk(next(&mut items)?)?;
        let ended_at = std::str::from_utf8(&ended)
            .ok()
            .and_then(|ended| ended.split_once(':'))
            .and_then(|(_, at)| at.parse().ok());
        let entries = list(next(&mut items)?, "history")?;
        let ids = list(next(&mut items)?, "history ids")?;
        let mut blocks = Vec::with_capacity(entries.len());
        for (entry, id) in entries.into_iter().zip(ids) {
            let (position, block) = entry_of(bulk(entry)?)?;
            blocks.push((position, block, bulk(id)?));
        }
        Ok(Self {
            last,
            first,
            held,
            ended_at,
            blocks,
        })
    }
}

/// A history entry, `<ms>:<position>:<bytes>`: its position and block,
/// the block without copying it.
fn entry_of(entry: Vec<u8>) -> Result<(u64, Bytes), StoreError> {
    let mut colons = entry
        .iter()
        .enumerate()
        .filter(|&(_, &byte)| byte == b':')
        .map(|(at, _)| at);
    let (Some(first), Some(second)) = (colons.next(), colons.next()) else {
        return Err(corrupt("a history entry without its position".to_owned()));
    };
    let position = std::str::from_utf8(&entry[first + 1..second])
        .ok()
        .and_then(|position| position.parse().ok())
        .ok_or_else(|| corrupt("a history entry with a bad position".to_owned()))?;
    let mut block = Bytes::from(entry);
    // Unlike `slice`, this allocates nothing: the buffer stays the vector's.
    block.advance(second + 1);
    Ok((position, block))
}

fn list(value: Value, what: &str) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format!("{what} is not a list: {other:?}"))),
    }
}

pub(super) fn array(value: Value, len: usize) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) if items.len() == len => Ok(items),
        other => Err(corrupt(format!("unexpected script reply: {other:?}"))),
    }
}

pub(super) fn next(items: &mut impl Iterator<Item = Value>) -> Result<Value, StoreError> {
    items
        .next()
        .ok_or_else(|| corrupt("short script reply".to_owned()))
}

pub(super) fn int(value: Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(n),
        other => Err(corrupt(format!("expected an integer: {other:?}"))),
    }
}

pub(super) fn bulk(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(corrupt(format!("expected a string: {other:?}"))),
    }
}

pub(super) fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
