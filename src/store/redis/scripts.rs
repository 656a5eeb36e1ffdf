//! The Lua scripts, each run atomically in Redis, and the decoding of
//! their replies.

use std::sync::OnceLock;
use std::time::Duration;

use ::redis::{Script, Value};

use crate::store::StoreError;

pub(super) struct Scripts {
    pub(super) open: Script,
    pub(super) find: Script,
    pub(super) write: Script,
}

pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        open: Script::new(&script_code(OPEN)),
        find: Script::new(&script_code(FIND)),
        write: Script::new(&script_code(WRITE)),
    })
}

pub(super) fn script_code(body: &str) -> String {
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
pub(super) const WRITE: &str = r"
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
pub(super) struct Loaded {
    pub(super) stream: String,
    pub(super) cursor_known: Option<bool>,
    pub(super) generation: i64,
    pub(super) ids: Vec<String>,
    pub(super) bad_values: u64,
}

impl Loaded {
    pub(super) fn parse(reply: Value) -> Result<Self, StoreError> {
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
