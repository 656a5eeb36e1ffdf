//! What Redis answers, read: the open script's reply, a window, and the
//! entries of a history as a native read returns them.

use std::time::Duration;

use ::redis::Value;
use bytes::{Buf, Bytes};

use crate::store::StoreError;
use crate::stream::block_fingerprint;

/// What the open script returns: the stream, the cursor applied, where
/// the replay starts, and the window.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) stream: String,
    pub(super) cursor_known: Option<bool>,
    pub(super) generation: i64,
    pub(super) bad_values: u64,
    /// Whether the history held the cursor; `None` without a cursor or a
    /// history.
    pub(super) replayed: Option<bool>,
    /// The id of the history entry after which the replay starts.
    pub(super) replay_after: String,
    /// The position the replay's first block must have; 0 for any.
    pub(super) expect: u64,
    /// Where stamped ids start; 0 without a history.
    pub(super) epoch: u64,
    /// Whether another process holds the stream, or (with a cursor) it is
    /// complete.
    pub(super) follow: bool,
    /// Whether, with a cursor, the stream is complete: a per-request
    /// stream whose upstream ended.
    pub(super) complete: bool,
    /// Without a cursor, the start of the history's newest block, after
    /// which a follow starts.
    pub(super) follow_at: u64,
    /// The window: its ids, with the fingerprints of their events; `None`
    /// when the caller reads it natively.
    pub(super) window: Option<Vec<(String, u64)>>,
    /// Without a cursor, whether the follow starts where the holder's
    /// client went away, that client having been sent ids.
    pub(super) unconfirmed: bool,
    /// Whether the window read natively ends at the cursor: its ids after
    /// it are those of the blocks replayed ([`replayed_ids`]).
    pub(super) ids_replayed: bool,
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
        let replay_after = String::from_utf8_lossy(&bulk(next(&mut items)?)?).into_owned();
        let expect = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let epoch = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let follow = int(next(&mut items)?)?;
        let follow_at = u64::try_from(int(next(&mut items)?)?).unwrap_or(0);
        let count = int(next(&mut items)?)?;
        let joined = bulk(next(&mut items)?)?;
        let unconfirmed = int(next(&mut items)?)? == 1;
        let ids_replayed = int(next(&mut items)?)? == 1;
        let window = (count >= 0).then(|| {
            let entries = joined.split(|&byte| byte == b'\n').filter(|_| count > 0);
            window_of(entries, &mut bad_values)
        });
        Ok(Self {
            stream,
            cursor_known: (known >= 0).then_some(known == 1),
            generation,
            bad_values,
            replayed: (replayed >= 0).then_some(replayed == 1),
            replay_after,
            expect,
            epoch,
            follow: follow > 0,
            complete: follow == 2,
            follow_at,
            window,
            unconfirmed,
            ids_replayed,
        })
    }
}

/// The window's ids that `replayed`, the blocks of a replay, give: each
/// block's own id, with the fingerprint of its event, oldest first. A
/// stamped id is none of the window's, nor is one that is not UTF-8.
pub(super) fn replayed_ids(replayed: &[Entry]) -> impl Iterator<Item = (String, u64)> + '_ {
    (replayed.iter())
        .filter(|entry| !entry.stamped && !entry.id.is_empty())
        .filter_map(|entry| {
            let id = std::str::from_utf8(&entry.id).ok()?;
            Some((id.to_owned(), block_fingerprint(&entry.block)?))
        })
}

/// The window of a native read of its list.
pub(super) fn window_read(
    reply: Value,
    bad_values: &mut u64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let entries = list(reply, "a window")?
        .into_iter()
        .map(bulk)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(window_of(entries.iter().map(Vec::as_slice), bad_values))
}

/// The window in `entries`: each id followed by the fingerprint of its
/// event (a NUL, then decimal digits, and with a history maybe a colon and
/// where the id's block starts). Counts into `bad_values` what it
/// skips: an entry out of place, or an id that is not UTF-8, was not
/// written by this crate.
fn window_of<'a>(
    entries: impl Iterator<Item = &'a [u8]>,
    bad_values: &mut u64,
) -> Vec<(String, u64)> {
    let mut window = Vec::new();
    let mut entries = entries.peekable();
    while let Some(entry) = entries.next() {
        if entry.first() == Some(&0) {
            // A fingerprint without its id: the window's oldest entries
            // were cut between the two.
            continue;
        }
        let print = entries
            .next_if(|print| print.first() == Some(&0))
            .and_then(|print| {
                // With a history, the start of the id's block follows.
                let print = std::str::from_utf8(&print[1..]).ok()?;
                print.split(':').next()?.parse().ok()
            });
        match (std::str::from_utf8(entry), print) {
            (Ok(id), Some(print)) => window.push((id.to_owned(), print)),
            _ => *bad_values += 1,
        }
    }
    window
}

/// A block of a history, as a native read returns it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Where its bytes start among all its stream ever kept.
    pub(super) start: u64,
    /// Its place in its stream.
    pub(super) position: u64,
    /// The id a client may resume from after it; empty for none.
    pub(super) id: Vec<u8>,
    /// Whether that id is one the layer stamped, not its event's own.
    pub(super) stamped: bool,
    pub(super) block: Bytes,
}

impl Entry {
    /// The entries of an `XRANGE` reply, oldest first.
    pub(super) fn parse_range(reply: Value) -> Result<Vec<Self>, StoreError> {
        list(reply, "history")?
            .into_iter()
            .map(Self::parse)
            .collect()
    }

    /// The entries of an `XREADGROUP` reply of one stream; none for nil.
    pub(super) fn parse_read(reply: Value) -> Result<Vec<Self>, StoreError> {
        let streams = match reply {
            Value::Nil => return Ok(Vec::new()),
            Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
            other => list(other, "a read of the history")?
                .into_iter()
                .map(|stream| {
                    let mut parts = list(stream, "a read of the history")?.into_iter();
                    let _key = next(&mut parts)?;
                    next(&mut parts)
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut entries = Vec::new();
        for stream in streams {
            entries.extend(Self::parse_range(stream)?);
        }
        Ok(entries)
    }

    fn parse(entry: Value) -> Result<Self, StoreError> {
        let mut parts = list(entry, "a history entry")?.into_iter();
        let entry_id = bulk(next(&mut parts)?)?;
        let (start, position) = id_parts(&entry_id)
            .ok_or_else(|| corrupt("a history entry with a bad id".to_owned()))?;
        let fields = match next(&mut parts)? {
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => list(other, "a history entry's fields")?,
        };
        // One field, `b`: `<ms>:<id>`, a line break, then the block.
        let value = fields.into_iter().nth(1).map(bulk).transpose()?;
        let value = value.ok_or_else(|| corrupt("a history entry without its block".to_owned()))?;
        // Unlike `slice`, `advance` allocates nothing: the buffer stays
        // the reply's.
        Self::of_value(start, position, Bytes::from(value))
    }

    /// The entry at `start`, `position` whose one value is `value`.
    fn of_value(start: u64, position: u64, mut value: Bytes) -> Result<Self, StoreError> {
        let line_end = (value.iter().position(|&byte| byte == b'\n'))
            .ok_or_else(|| corrupt("a history entry without its id".to_owned()))?;
        // `<ms>:<id>`, or `<ms>*<id>` for a stamped id.
        let mark = value[..line_end]
            .iter()
            .position(|&byte| byte == b':' || byte == b'*')
            .ok_or_else(|| corrupt("a history entry without its time".to_owned()))?;
        let id = value[mark + 1..line_end].to_vec();
        let stamped = value[mark] == b'*';
        value.advance(line_end + 1);
        Ok(Self {
            start,
            position,
            id,
            stamped,
            block: value,
        })
    }

    /// The entries a message on a stream's channel carries (see
    /// [`tell_entry`]), oldest first; `None` for a message that carries
    /// none, or that is not well formed.
    pub(super) fn parse_told(message: &[u8]) -> Option<Vec<Self>> {
        if message.len() > TOLD_MAX_BYTES {
            // No append of ours tells so much: not taken, and read instead.
            return None;
        }
        let mut rest = Bytes::copy_from_slice(message.strip_prefix(BLOCKS_TOLD)?);
        let mut entries = Vec::new();
        while !rest.is_empty() {
            let line_end = rest.iter().position(|&byte| byte == b'\n')?;
            let line = std::str::from_utf8(&rest[..line_end]).ok()?;
            let (entry_id, len) = line.split_once(' ')?;
            let (start, position) = id_parts(entry_id.as_bytes())?;
            let len: usize = len.parse().ok()?;
            rest.advance(line_end + 1);
            if rest.len() < len {
                return None;
            }
            let value = rest.split_to(len);
            entries.push(Self::of_value(start, position, value).ok()?);
        }
        Some(entries)
    }
}

/// What a message on a stream's channel starts with when it carries the
/// history's entries an append added, which a follower then need not
/// read: each as a line `<start>-<position> <length>`, then its value.
pub(super) const BLOCKS_TOLD: &[u8] = b"e";

/// The most bytes a message carrying entries holds: past it, an append's
/// message only says that the history moved, and its followers read.
pub(super) const TOLD_MAX_BYTES: usize = 16 * 1024;

/// Adds the entry at `start`, `position` whose value is `value` to the
/// message `told` (see [`BLOCKS_TOLD`]), when it stays within
/// [`TOLD_MAX_BYTES`]; returns whether it did.
pub(super) fn tell_entry(told: &mut Vec<u8>, start: u64, position: u64, value: &[u8]) -> bool {
    let line = format!("{start}-{position} {}\n", value.len());
    let prefix = if told.is_empty() {
        BLOCKS_TOLD.len()
    } else {
        0
    };
    if told.len() + prefix + line.len() + value.len() > TOLD_MAX_BYTES {
        return false;
    }
    if told.is_empty() {
        told.extend_from_slice(BLOCKS_TOLD);
    }
    told.extend_from_slice(line.as_bytes());
    told.extend_from_slice(value);
    true
}

/// The start and the position of a history entry id, `<start>-<position>`.
fn id_parts(id: &[u8]) -> Option<(u64, u64)> {
    let (start, position) = std::str::from_utf8(id).ok()?.split_once('-')?;
    Some((start.parse().ok()?, position.parse().ok()?))
}

/// Whether `entries` follow on from one another, oldest first: each at
/// the position after the one before, the first at `expect` (any when 0).
/// Where one does not, blocks are missing, and what the client missed is
/// not all there.
pub(super) fn following_on(entries: &[Entry], expect: u64) -> bool {
    let mut expected = (expect > 0).then_some(expect);
    for entry in entries {
        if expected.is_some_and(|expected| entry.position != expected) {
            return false;
        }
        expected = Some(entry.position + 1);
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_read_in_pairs_and_what_is_out_of_place_is_counted_not_taken() {
        let mut bad = 0;
        let joined = b"\x007\na\n\x001\nb\n\x002:40\nc\nd\n\x00x\ne\n\x005";
        let window = window_of(joined.split(|&byte| byte == b'\n'), &mut bad);
        assert_eq!(
            window,
            [
                ("a".to_owned(), 1),
                ("b".to_owned(), 2),
                ("e".to_owned(), 5)
            ]
        );
        assert_eq!(
            bad, 2,
            "an id without its fingerprint, one that is no number"
        );
    }

    #[test]
    fn the_entries_a_notice_carries_come_back_as_they_were_told() {
        let mut told = Vec::new();
        assert!(tell_entry(&mut told, 40, 3, b"1700:7\nid: 7\ndata: a\n\n"));
        assert!(tell_entry(&mut told, 58, 4, b"1700:\ndata: b\nc\n\n"));
        assert!(tell_entry(&mut told, 69, 5, b"1700*9-1\nid: 9-1\n\n"));
        let entries = Entry::parse_told(&told).expect("well formed");
        let got: Vec<_> = (entries.iter())
            .map(|entry| {
                let Entry {
                    start,
                    position,
                    id,
                    stamped,
                    block,
                } = entry;
                (*start, *position, &id[..], *stamped, &block[..])
            })
            .collect();
        assert_eq!(
            got,
            [
                (40, 3, &b"7"[..], false, &b"id: 7\ndata: a\n\n"[..]),
                (58, 4, &b""[..], false, &b"data: b\nc\n\n"[..]),
                (69, 5, &b"9-1"[..], true, &b"id: 9-1\n\n"[..]),
            ]
        );
    }

    #[test]
    fn a_notice_that_carries_no_well_formed_entries_is_none() {
        let mut told = Vec::new();
        assert!(tell_entry(&mut told, 40, 3, b"1700:7\nid: 7\n\n"));
        let mut too_long = Vec::new();
        let value = [b"1700:7\n".as_slice(), &[b'x'; 8000]].concat();
        assert!(tell_entry(&mut too_long, 40, 3, &value));
        assert!(tell_entry(&mut too_long, 8047, 4, &value));
        assert!(
            !tell_entry(&mut too_long, 16054, 5, &value),
            "past {TOLD_MAX_BYTES} bytes"
        );
        let mut over = too_long.clone();
        over.extend_from_slice(format!("16054-5 {}\n", value.len()).as_bytes());
        over.extend_from_slice(&value);
        assert!(Entry::parse_told(&too_long).is_some_and(|entries| entries.len() == 2));
        assert!(
            Entry::parse_told(&over).is_none(),
            "a message past the bound"
        );
        for message in [
            &b"b"[..],
            b"m",
            &told[..told.len() - 1],
            b"e40-3 x\n1700:7\n",
            b"e40 3\n1:7\n",
            b"e40-3 2\nab",
        ] {
            assert!(Entry::parse_told(message).is_none(), "{message:?}");
        }
    }

    #[test]
    fn blocks_follow_on_only_without_a_jump_in_positions() {
        let entry = |position| Entry {
            start: position * 10,
            position,
            id: Vec::new(),
            stamped: false,
            block: Bytes::new(),
        };
        assert!(following_on(&[entry(4), entry(5)], 4));
        assert!(following_on(&[entry(9), entry(10)], 0));
        assert!(!following_on(&[entry(4), entry(6)], 4));
        assert!(!following_on(&[entry(5)], 4));
        assert!(following_on(&[], 4));
    }
}
