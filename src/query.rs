//! The cursor a client may send in the URL, as a browser's `EventSource`
//! must after a page reload: it cannot set headers.

use http::Uri;
use http::uri::PathAndQuery;

/// The default [`SseResumeLayer::cursor_query`](crate::SseResumeLayer::cursor_query):
/// the query parameter read for a client's cursor, as Mercure and Nchan
/// read it.
pub(crate) const DEFAULT_CURSOR_QUERY: &str = "last_event_id";

/// A cursor found in a request's query.
#[derive(Debug)]
pub(crate) struct QueryCursor {
    /// The cursor, percent-decoded.
    pub(crate) cursor: String,
    /// The request's URI without the parameter: what the stream key is
    /// read from.
    pub(crate) without: Uri,
}

/// The value of the parameter `name` in `uri`'s query, decoded, when it is
/// there, not empty, and decodes to UTF-8; otherwise `None`, and the
/// parameter is left alone.
pub(crate) fn find(uri: &Uri, name: &str) -> Option<QueryCursor> {
    let query = uri.query()?;
    let mut cursor = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name && cursor.is_none() {
            cursor = Some(decode(value)?);
        } else {
            kept.push(pair);
        }
    }
    let cursor = cursor.filter(|cursor| !cursor.is_empty())?;
    let mut target = uri.path().to_owned();
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).ok()?);
    Some(QueryCursor {
        cursor,
        without: Uri::from_parts(parts).ok()?,
    })
}

/// Decodes `%XX` escapes and `+` for a space, as forms encode queries.
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                decoded.push(b' ');
                i += 1;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(uri: &str) -> Option<(String, String)> {
        let found = find(&uri.parse().unwrap(), DEFAULT_CURSOR_QUERY)?;
        Some((found.cursor, found.without.to_string()))
    }

    #[test]
    fn the_parameter_is_read_decoded_and_left_out_of_the_uri() {
        assert_eq!(
            found("/events?topic=a&last_event_id=42"),
            Some(("42".into(), "/events?topic=a".into()))
        );
        assert_eq!(
            found("/events?last_event_id=a%2Fb+c&x=1"),
            Some(("a/b c".into(), "/events?x=1".into()))
        );
        assert_eq!(
            found("http://h/e?last_event_id=1"),
            Some(("1".into(), "http://h/e".into()))
        );
    }

    #[test]
    fn an_absent_empty_or_undecodable_parameter_is_no_cursor() {
        assert_eq!(found("/events?topic=a"), None);
        assert_eq!(found("/events"), None);
        assert_eq!(found("/events?last_event_id="), None);
        assert_eq!(found("/events?last_event_id=%zz"), None);
        assert_eq!(found("/events?last_event_id=%ff"), None, "not UTF-8");
        assert_eq!(found("/events?last_event_idx=1"), None);
    }
}
