//! The header names the layer reads and writes, and what it reads in them.

use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue};

/// The `Last-Event-ID` request header.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// The `MCP-Protocol-Version` request header.
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The response header set when a client's `Last-Event-ID` is not in the
/// replay history, for clients that read headers: `SSE-Resume-Gap: 1`.
/// The stream also starts with a [`GAP_EVENT`](crate::GAP_EVENT) event.
pub const SSE_RESUME_GAP: HeaderName = HeaderName::from_static("sse-resume-gap");
/// The first MCP revision without resumption: injection stops there.
const MCP_WITHOUT_RESUMPTION: &str = "2026-07-28";

/// The client's `Last-Event-ID`, when it sent a usable one.
pub(crate) fn client_cursor(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(LAST_EVENT_ID)?;
    let value = String::from_utf8_lossy(value.as_bytes());
    (!value.is_empty()).then(|| value.into_owned())
}

/// Whether the request speaks an MCP revision that removed resumption.
/// Revisions are dates, so they compare as strings.
pub(crate) fn mcp_without_resumption(headers: &HeaderMap) -> bool {
    headers
        .get(MCP_PROTOCOL_VERSION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|version| is_revision(version) && version >= MCP_WITHOUT_RESUMPTION)
}

fn is_revision(version: &str) -> bool {
    let bytes = version.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, byte)| match i {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// A header value for an id, when the id makes a valid one.
pub(crate) fn header_value(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(id).ok()
}

/// Whether the media type is `text/event-stream`, parameters allowed.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Whether the body is compressed, which this layer cannot read.
pub(crate) fn is_encoded(headers: &HeaderMap) -> bool {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let encoded = headers.get_all(CONTENT_ENCODING).iter().any(|value| {
        !value
            .to_str()
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("identity"))
    });
    if encoded && !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "passing an encoded event stream through undeduplicated; \
             put a decompression layer inside SseResumeLayer to deduplicate it"
        );
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_version(version: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            MCP_PROTOCOL_VERSION,
            HeaderValue::from_str(version).unwrap(),
        );
        headers
    }

    #[test]
    fn mcp_gate_starts_at_the_revision_without_resumption() {
        assert!(mcp_without_resumption(&with_version("2026-07-28")));
        assert!(mcp_without_resumption(&with_version("2027-01-01")));
        assert!(!mcp_without_resumption(&with_version("2025-11-25")));
        assert!(!mcp_without_resumption(&with_version("draft")));
        assert!(!mcp_without_resumption(&HeaderMap::new()));
    }
}
