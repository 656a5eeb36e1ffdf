//! Stops across replicas: a stop (a gateway's own, or an MCP session's
//! end) is published on the store's channel `<prefix>stops`, and every
//! replica's one subscription hears it and hands it to its layer, so that
//! whichever replica reads the stream's upstream ends it.
//!
//! A stop is kept too, for a while, in the stops' log `<prefix>stops:log`
//! (a Redis Stream): a replica whose subscription was down when a stop was
//! said reads it there once the subscription is back. The message
//! published is the stop's entry id in the log, a space, then the stop,
//! so that a stop read from the log is told apart from one heard.
//!
//! A stop is a kind byte, then fields each as its length in decimal, a
//! `:`, and its bytes: no field's content can be read as another's.

use ::redis::Value;

use crate::store::follow::Stop;

/// About how many stops the log keeps: a replica cut off for longer than
/// it takes to say these many misses the oldest.
pub(super) const LOG_LEN: usize = 1024;

/// The channel a store's stops go on.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}stops")
}

/// The log of the stops said on `channel`.
pub(super) fn log_of(channel: &str) -> String {
    format!("{channel}:log")
}

/// A stop's entry id in the log: its milliseconds and sequence number,
/// which order the stops as they were said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LogId(u64, u64);

impl LogId {
    /// Before any stop.
    pub(super) const START: LogId = LogId(0, 0);

    fn parse(id: &[u8]) -> Option<LogId> {
        let id = std::str::from_utf8(id).ok()?;
        let (ms, sequence) = id.split_once('-')?;
        Some(LogId(ms.parse().ok()?, sequence.parse().ok()?))
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// The stop a published message says, with its entry id in the log;
/// `None` for one this crate did not write.
pub(super) fn heard(message: &[u8]) -> Option<(LogId, Stop)> {
    let space = message.iter().position(|&b| b == b' ')?;
    Some((
        LogId::parse(&message[..space])?,
        decode(&message[space + 1..])?,
    ))
}

/// The stops of a read of the log (`XRANGE`, `XREVRANGE`), in the read's
/// order, each with its entry id; an entry this crate did not write is
/// left out, and so is its id.
pub(super) fn read_from_log(reply: Value) -> Vec<(LogId, Option<Stop>)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    (entries.into_iter())
        .filter_map(|entry| {
            let Value::Array(entry) = entry else {
                return None;
            };
            let mut entry = entry.into_iter();
            let id = match entry.next()? {
                Value::BulkString(id) => LogId::parse(&id)?,
                _ => return None,
            };
            // The fields: `s`, then the stop.
            let stop = match entry.next() {
                Some(Value::Array(fields)) => match fields.get(1) {
                    Some(Value::BulkString(stop)) => decode(stop),
                    _ => None,
                },
                _ => None,
            };
            Some((id, stop))
        })
        .collect()
}

/// `stop` as a message.
pub(super) fn encode(stop: &Stop) -> Vec<u8> {
    let mut message = Vec::new();
    let field = |message: &mut Vec<u8>, field: &str| {
        message.extend_from_slice(field.len().to_string().as_bytes());
        message.push(b':');
        message.extend_from_slice(field.as_bytes());
    };
    match stop {
        Stop::Stream {
            scope,
            stream,
            cursor,
        } => {
            message.push(match cursor {
                Some(_) => b'c',
                None => b's',
            });
            field(&mut message, scope);
            field(&mut message, stream);
            if let Some(cursor) = cursor {
                field(&mut message, cursor);
            }
        }
        Stop::Scope(scope) => {
            message.push(b'S');
            field(&mut message, scope);
        }
    }
    message
}

/// The stop `message` says; `None` for one this crate did not write.
pub(super) fn decode(message: &[u8]) -> Option<Stop> {
    let (&kind, mut rest) = message.split_first()?;
    let mut field = || -> Option<String> {
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let value = rest.get(colon + 1..colon + 1 + len)?;
        rest = &rest[colon + 1 + len..];
        String::from_utf8(value.to_vec()).ok()
    };
    let stop = match kind {
        b's' | b'c' => Stop::Stream {
            scope: field()?,
            stream: field()?,
            cursor: if kind == b'c' { Some(field()?) } else { None },
        },
        b'S' => Stop::Scope(field()?),
        _ => return None,
    };
    rest.is_empty().then_some(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(cursor: Option<&str>) -> Stop {
        Stop::Stream {
            scope: "s\u{1f}0123abcd".to_owned(),
            stream: "GET /mcp?x=1:2".to_owned(),
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn every_stop_reads_back_as_written_whatever_its_fields_hold() {
        let stops = [
            stream(None),
            stream(Some("")),
            stream(Some("12:3\n4")),
            Stop::Scope("a:b".to_owned()),
            Stop::Scope(String::new()),
        ];
        for stop in stops {
            assert_eq!(decode(&encode(&stop)), Some(stop));
        }
    }

    #[test]
    fn a_stop_heard_comes_with_its_place_in_the_log() {
        let mut message = b"1733600000000-7 ".to_vec();
        message.extend(encode(&stream(Some("9"))));
        assert_eq!(
            heard(&message),
            Some((LogId(1_733_600_000_000, 7), stream(Some("9"))))
        );
        for bad in [&b"1-2"[..], b"x-2 S1:a", b"1 S1:a", b"1-2 x", b" S1:a"] {
            assert_eq!(heard(bad), None, "{bad:?}");
        }
        assert!(LogId(5, 0) > LogId(4, 9) && LogId(5, 1) > LogId(5, 0));
    }

    #[test]
    fn a_read_of_the_log_gives_each_entry_in_order_and_no_stop_for_garbage() {
        let entry = |id: &str, value: Vec<u8>| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"s".to_vec()),
                    Value::BulkString(value),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            entry("3-0", encode(&Stop::Scope("a".to_owned()))),
            entry("3-1", b"garbage".to_vec()),
            entry("not an id", encode(&Stop::Scope("b".to_owned()))),
            Value::Int(4),
        ]);
        assert_eq!(
            read_from_log(reply),
            vec![
                (LogId(3, 0), Some(Stop::Scope("a".to_owned()))),
                (LogId(3, 1), None),
            ]
        );
        assert_eq!(read_from_log(Value::Nil), vec![]);
    }

    #[test]
    fn a_message_this_crate_did_not_write_is_no_stop() {
        let written = encode(&stream(Some("7")));
        for bad in [
            &b""[..],
            b"x1:a",
            b"S",
            b"S3:ab",
            b"S1:ab",
            b"S99999999999999999999999:a",
            b"s1:a",
            &written[..written.len() - 1],
            b"S2:\xff\xfe",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
