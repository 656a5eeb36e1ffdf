//! The Lua scripts, each run atomically in Redis, and the decoding of
//! their replies.

use std::sync::OnceLock;
use std::time::Duration;

use ::redis::{Script, Value};
use bytes::{Buf, Bytes};

use crate::store::StoreError;
use crate::stream::Replay;

pub(super) struct Scripts {
    pub(super) open: Script,
    pub(super) write: Script,
}

pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        open: Script::new(&script_code(OPEN)),
        write: Script::new(&script_code(WRITE)),
    })
}

pub(super) fn script_code(body: &str) -> String {
    format!("{PREAMBLE}{body}")
}

/// What every script starts with. KEYS: the scope's streams and
/// generations. ARGV: the window key prefix, the TTL in ms, the window
/// length, the most streams per scope, the history's most blocks (0 for no
/// history), bytes and age in ms, then each script's own.
const PREAMBLE: &str = r"
local streams_key, generations_key = KEYS[1], KEYS[2]
local windows = ARGV[1]
local ttl = tonumber(ARGV[2])
local window_len = tonumber(ARGV[3])
local max_streams = tonumber(ARGV[4])
local history_len = tonumber(ARGV[5])
local history_bytes = tonumber(ARGV[6])
local history_age = tonumber(ARGV[7])
local bad_values = 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- `windows` is `<prefix>{scope}:w:`: the scope's other keys start alike.
local scope_keys = string.sub(windows, 1, -3)
local history_bytes_key = scope_keys .. 'hb'
local epoch_key = scope_keys .. 'e'

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

-- A stream's history: its blocks, each kept as `<ms>:<bytes>`, and at the
-- same places in a second list their ids (empty for none).
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
  redis.call('DEL', window_keys(stream))
  forget_history(stream)
end

-- The bytes of a history entry's block, without its time.
local function block_of(entry)
  local colon = string.find(entry, ':', 1, true)
  return string.sub(entry, (colon or 0) + 1), tonumber(string.sub(entry, 1, (colon or 1) - 1))
end

-- Lets the oldest blocks of a stream's history go past its bounds. A
-- history whose two lists disagree was written by something else: it goes.
local function prune_history(stream)
  local blocks, ids = history_keys(stream)
  local has_blocks, has_ids = usable(blocks, 'list'), usable(ids, 'list')
  local len = redis.call('LLEN', blocks)
  if has_blocks ~= has_ids or len ~= redis.call('LLEN', ids) then
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
  end
  while len > 0 do
    local block, at = block_of(redis.call('LINDEX', blocks, 0))
    if at ~= nil and len <= history_len and total <= history_bytes and at >= now - history_age then
      break
    end
    redis.call('LPOP', blocks)
    redis.call('LPOP', ids)
    total = total - #block
    len = len - 1
  end
  if len == 0 then
    redis.call('HDEL', history_bytes_key, stream)
  else
    redis.call('HSET', history_bytes_key, stream, math.max(total, 0))
  end
end

-- The blocks that followed `cursor` in the history of `stream`, oldest
-- first, or nil when the history does not hold it.
local function replay_after(stream, cursor)
  prune_history(stream)
  local blocks, ids = history_keys(stream)
  local at = redis.call('LPOS', ids, cursor, 'RANK', -1)
  if not at then return nil end
  -- Entries as kept, `<ms>:<bytes>`: the caller strips the times.
  return redis.call('LRANGE', blocks, at + 1, -1)
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
    redis.call('PEXPIRE', epoch_key, ttl)
  end
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

-- Whether the window or the history of `stream` holds `id`.
local function knows(stream, id)
  if usable(windows .. stream, 'list') and redis.call('LPOS', windows .. stream, id) then
    return true
  end
  if history_len > 0 then
    local _, ids = history_keys(stream)
    if usable(ids, 'list') and redis.call('LPOS', ids, id) then return true end
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

usable(streams_key, 'zset')
usable(generations_key, 'hash')
usable(history_bytes_key, 'hash')
-- Streams unused for longer than the TTL: their windows are gone.
for _, stream in ipairs(redis.call('ZRANGEBYSCORE', streams_key, '-inf', now - ttl)) do
  forget(stream)
end
";

/// `ARGV[8]`: the stream; `ARGV[9]`: the client's cursor, or empty; `ARGV[10]`:
/// `1` to look for the cursor's stream in the whole scope when the stream
/// does not know it. Returns the stream, whether the cursor was known (-1
/// without one), the generation, the bad values met, the window, whether
/// the history held the cursor (-1 without a cursor or a history), the
/// blocks that followed it, with a history an epoch for stamped ids (else
/// 0), and the fingerprints of the window's events.
const OPEN: &str = r"
local stream, cursor, search = ARGV[8], ARGV[9], ARGV[10] == '1'
local known, gen, replayed, replay = -1, 0, -1, {}
local window, fingerprints = window_keys(stream)
if cursor ~= '' then
  if search and not knows(stream, cursor) then
    stream = find(cursor) or stream
    window, fingerprints = window_keys(stream)
  end
  local blocks = nil
  if history_len > 0 then
    blocks = replay_after(stream, cursor)
    replayed = blocks and 1 or 0
  end
  if blocks then
    -- The window's ids after the cursor are those of the replayed blocks.
    known, replay = 1, blocks
  else
    local at = nil
    if usable(window, 'list') then
      at = redis.call('LPOS', window, cursor)
    end
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
  generation(stream)
  gen = redis.call('HINCRBY', generations_key, stream, 1)
else
  gen = generation(stream) or 0
end
local ids, prints = {}, {}
if usable(window, 'list') then
  ids = redis.call('LRANGE', window, -window_len, -1)
end
if usable(fingerprints, 'list') then
  prints = redis.call('LRANGE', fingerprints, -window_len, -1)
end
local epoch = 0
if history_len > 0 then
  if usable(epoch_key, 'string') then
    epoch = tonumber(redis.call('GET', epoch_key)) or 0
  end
  epoch = math.max(now, epoch + 1)
  redis.call('SET', epoch_key, epoch, 'PX', ttl)
end
if #ids > 0 or gen > 0 or replayed >= 0 then touch(stream) end
return {stream, known, gen, bad_values, ids, replayed, replay, epoch, prints}
";

/// `ARGV[8]`: the stream; `ARGV[9]`: the generation its ids were forwarded in,
/// or -1; `ARGV[10]`: the number of ids; `ARGV[11]`: `1` when the history
/// before these blocks is to be forgotten; `ARGV[12]`: `1` when the window
/// before these ids is; then the ids, oldest first, and the fingerprints
/// of their events; then for the history, each block's id (or empty) and
/// bytes. Returns 1 when written, 0 when a cursor cut the window since
/// that generation, and the bad values met.
pub(super) const WRITE: &str = r"
local stream, gen, count = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local forget_first, start_over = ARGV[11] == '1', ARGV[12] == '1'
local first_id = 13
if gen >= 0 then
  local current = generation(stream)
  if current == nil then
    if gen > 0 then redis.call('HSET', generations_key, stream, gen) end
  elseif current ~= gen then
    return {0, bad_values}
  end
end
local first_print = first_id + count
local first_block = first_print + count
local window, fingerprints = window_keys(stream)
if start_over then redis.call('DEL', window, fingerprints) end
if count > 0 then
  usable(window, 'list')
  usable(fingerprints, 'list')
  for first = first_id, first_print - 1, 1000 do
    local last = math.min(first + 999, first_print - 1)
    redis.call('RPUSH', window, unpack(ARGV, first, last))
    redis.call('RPUSH', fingerprints, unpack(ARGV, first + count, last + count))
  end
  redis.call('LTRIM', window, -window_len, -1)
  redis.call('LTRIM', fingerprints, -window_len, -1)
end
if history_len > 0 then
  if forget_first then forget_history(stream) end
  prune_history(stream)
  local blocks, ids = history_keys(stream)
  local added = 0
  for i = first_block, #ARGV - 1, 2 do
    redis.call('RPUSH', ids, ARGV[i])
    redis.call('RPUSH', blocks, now .. ':' .. ARGV[i + 1])
    added = added + #ARGV[i + 1]
  end
  if added > 0 then
    redis.call('HINCRBY', history_bytes_key, stream, added)
    prune_history(stream)
  end
end
touch(stream)
return {1, bad_values}
";

/// A window as the open script returns it.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) stream: String,
    pub(super) cursor_known: Option<bool>,
    pub(super) generation: i64,
    /// The window's ids, with the fingerprints of their events (0 where
    /// Redis holds none).
    pub(super) entries: Vec<(String, u64)>,
    pub(super) bad_values: u64,
    pub(super) replay: Replay,
    /// Where stamped ids start; 0 without a history.
    pub(super) epoch: u64,
}

impl Loaded {
    pub(super) fn parse(reply: Value) -> Result<Self, StoreError> {
        let mut items = array(reply, 9)?.into_iter();
        let stream = bulk(next(&mut items)?)?;
        let known = int(next(&mut items)?)?;
        let generation = int(next(&mut items)?)?;
        let mut bad_values = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let raw_ids = list(next(&mut items)?, "window")?;
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
        let replayed = int(next(&mut items)?)?;
        let blocks = list(next(&mut items)?, "replay")?;
        let replay = match replayed {
            1 => Replay::Blocks(
                blocks
                    .into_iter()
                    .map(|entry| bulk(entry).map(block_of))
                    .collect::<Result<_, _>>()?,
            ),
            0 => Replay::Gap,
            _ => Replay::Off,
        };
        let epoch = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let prints = list(next(&mut items)?, "fingerprints")?;
        let prints: Vec<u64> = prints
            .into_iter()
            .map(|print| {
                bulk(print)
                    .ok()
                    .and_then(|print| std::str::from_utf8(&print).ok()?.parse().ok())
            })
            .collect::<Option<_>>()
            .filter(|prints: &Vec<u64>| prints.len() == ids.len())
            // Fingerprints that do not match the ids say nothing: unknown
            // events, which an upstream's replay then passes (a duplicate,
            // never a loss).
            .unwrap_or_else(|| {
                bad_values += u64::from(!ids.is_empty());
                vec![0; ids.len()]
            });
        let entries = ids.into_iter().zip(prints).collect();
        Ok(Self {
            stream,
            cursor_known: match known {
                -1 => None,
                known => Some(known == 1),
            },
            generation,
            entries,
            bad_values,
            replay,
            epoch,
        })
    }
}

/// The block of a history entry, `<ms>:<bytes>`, without copying it.
fn block_of(entry: Vec<u8>) -> Bytes {
    let start = entry
        .iter()
        .position(|&byte| byte == b':')
        .map_or(0, |at| at + 1);
    let mut block = Bytes::from(entry);
    // Unlike `slice`, this allocates nothing: the buffer stays the vector's.
    block.advance(start);
    block
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
