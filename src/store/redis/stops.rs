//! Stops across replicas: a stop (a gateway's own, or an MCP session's
//! end) is published on the store's channel `<prefix>stops`, and every
//! replica's one subscription hears it and hands it to its layer, so that
//! whichever replica reads the stream's upstream ends it.
//!
//! A message is a kind byte, then fields each as its length in decimal,
//! a `:`, and its bytes: no field's content can be read as another's.

use crate::store::follow::Stop;

/// The channel a store's stops go on.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}stops")
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
