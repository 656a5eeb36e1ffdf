//! Extractors for a request's scope and stream key.
//!
//! The scope says whose stream a request is after (a session, a principal),
//! and the stream key says which of their streams. Both are read from the
//! request head by a [`KeyExtractor`]: one of the types here, or a closure
//! `Fn(&http::request::Parts) -> Option<String>`.

use std::fmt;

use http::header::{COOKIE, HeaderName};
use http::request::Parts;

/// Reads a key from a request head. `None` means the request has none.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of this request, if it has one.
    fn extract(&self, parts: &Parts) -> Option<String>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn extract(&self, parts: &Parts) -> Option<String> {
        self(parts)
    }
}

/// The name of the MCP session header, the default scope.
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// The value of a request header, when it is non-empty visible ASCII.
#[derive(Debug, Clone)]
pub struct Header(HeaderName);

impl Header {
    /// Reads the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self(name)
    }

    /// Reads `Mcp-Session-Id`: the default scope.
    pub fn mcp_session_id() -> Self {
        Self(MCP_SESSION_ID)
    }
}

/// Whether `extractor` reads `Mcp-Session-Id`: a scope that is one MCP
/// session, and so one client.
pub(crate) fn reads_mcp_session_id<E: KeyExtractor>(extractor: &E) -> bool {
    let extractor: &dyn std::any::Any = extractor;
    (extractor.downcast_ref::<Header>()).is_some_and(|header| header.0 == MCP_SESSION_ID)
}

impl KeyExtractor for Header {
    fn extract(&self, parts: &Parts) -> Option<String> {
        let value = parts.headers.get(&self.0)?.to_str().ok()?;
        (!value.is_empty()).then(|| value.to_owned())
    }
}

/// The value of a cookie.
#[derive(Debug, Clone)]
pub struct Cookie(String);

impl Cookie {
    /// Reads the cookie `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

impl KeyExtractor for Cookie {
    fn extract(&self, parts: &Parts) -> Option<String> {
        parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|header| header.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.0)
            .map(|(_, value)| value.trim_matches('"').to_owned())
            .filter(|value| !value.is_empty())
    }
}

/// The value of a query parameter, taken as it appears in the URI (still
/// percent-encoded: it only has to tell scopes apart).
#[derive(Debug, Clone)]
pub struct Query(String);

impl Query {
    /// Reads the query parameter `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

impl KeyExtractor for Query {
    fn extract(&self, parts: &Parts) -> Option<String> {
        parts
            .uri
            .query()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(name, _)| *name == self.0)
            .map(|(_, value)| value.to_owned())
            .filter(|value| !value.is_empty())
    }
}

/// The default stream key: a `GET` is a *standing* stream, keyed by its
/// method, path and query, like `GET /events?topic=a`; any other method
/// makes a *per-request* stream, a key of its own that no other request
/// shares, like `POST /mcp #5c1e…-7`.
///
/// So `/events?topic=a` and `/events?topic=b` are two streams, and two
/// chat completions streamed by `POST /chat` never share a window: the
/// second is never taken for a replay of the first. The ids of a
/// per-request stream still find it: a later `GET` whose `Last-Event-ID`
/// one of them is resumes that stream and no other, as MCP resumes every
/// stream by `GET`.
///
/// The layer reads its key without the query parameter of a client's
/// cursor ([`SseResumeLayer::cursor_query`](crate::SseResumeLayer::cursor_query)):
/// `/events?topic=a&last_event_id=7` is the stream of `/events?topic=a`.
/// So does every extractor the layer is given. Nor is a bearer token in
/// the URL ([`ACCESS_TOKEN_QUERY`]) part of the key: it is a credential,
/// and a key is kept.
///
/// # Choosing another key
///
/// A stream key says which upstream stream a response is a view of: two
/// requests should share one only when their upstream responses number
/// one sequence of events, so that an id seen on one means the same event
/// on the other. [`MethodAndPath`] ignores the query; [`Path`] lets
/// several methods share a stream; a closure can read anything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultStreamKey;

impl KeyExtractor for DefaultStreamKey {
    fn extract(&self, parts: &Parts) -> Option<String> {
        if parts.method == http::Method::GET {
            let uri = &parts.uri;
            return Some(match uri.query() {
                // A token in the URL is a credential, never part of a key.
                Some(query) if query.contains(ACCESS_TOKEN_QUERY) => {
                    let kept = query
                        .split('&')
                        .filter(|pair| pair.split('=').next() != Some(ACCESS_TOKEN_QUERY));
                    let kept: Vec<&str> = kept.collect();
                    match kept.is_empty() {
                        true => format!("GET {}", uri.path()),
                        false => format!("GET {}?{}", uri.path(), kept.join("&")),
                    }
                }
                Some(query) => format!("GET {}?{query}", uri.path()),
                None => format!("GET {}", uri.path()),
            });
        }
        Some(format!(
            "{} {} #{}",
            parts.method,
            parts.uri.path(),
            request_nonce()
        ))
    }
}

/// A string no other request gets, in this process or another: a random
/// number drawn once per process, and a count.
fn request_nonce() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    format!("{process:016x}-{}", COUNT.fetch_add(1, Relaxed))
}

/// The query parameter of an OAuth bearer token sent in the URL
/// (RFC 6750), as a browser's `EventSource` must when it cannot set
/// `Authorization`.
pub const ACCESS_TOKEN_QUERY: &str = "access_token";

/// The default credentials: the `Authorization` and `Proxy-Authorization`
/// headers, every value of each, and the bearer token of the
/// [`access_token`](ACCESS_TOKEN_QUERY) query parameter. A request with
/// none of them has none.
///
/// A stream belongs to the credentials of the request that opened it:
/// see [`SseResumeLayer::credentials`](crate::SseResumeLayer::credentials).
/// Their bytes are read exactly, escaped so that two requests share
/// credentials only when every value is the same.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultCredentials;

impl KeyExtractor for DefaultCredentials {
    fn extract(&self, parts: &Parts) -> Option<String> {
        let mut credentials = String::new();
        for name in [
            http::header::AUTHORIZATION,
            http::header::PROXY_AUTHORIZATION,
        ] {
            for value in parts.headers.get_all(&name) {
                push_line(&mut credentials, name.as_str(), value.as_bytes());
            }
        }
        let query = (parts.uri.query().into_iter()).flat_map(|query| query.split('&'));
        for pair in query {
            if let Some((ACCESS_TOKEN_QUERY, token)) = pair.split_once('=') {
                push_line(&mut credentials, ACCESS_TOKEN_QUERY, token.as_bytes());
            }
        }
        (!credentials.is_empty()).then_some(credentials)
    }
}

/// Adds `name:value` and a line feed, every byte of `value` that is not
/// visible ASCII (and the backslash) escaped, so that no two lists of
/// values read the same.
fn push_line(out: &mut String, name: &str, value: &[u8]) {
    use std::fmt::Write;
    out.push_str(name);
    out.push(':');
    for &byte in value {
        match byte {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('\n');
}

/// The method and the path, like `GET /mcp`: one stream for every request
/// of a method and path, whatever its query. Two `POST` responses then
/// share a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodAndPath;

impl KeyExtractor for MethodAndPath {
    fn extract(&self, parts: &Parts) -> Option<String> {
        Some(format!("{} {}", parts.method, parts.uri.path()))
    }
}

/// The path alone, for streams that several methods share.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path;

impl KeyExtractor for Path {
    fn extract(&self, parts: &Parts) -> Option<String> {
        Some(parts.uri.path().to_owned())
    }
}

/// A boxed extractor that can be printed.
pub(crate) struct BoxedExtractor(Box<dyn KeyExtractor>, &'static str);

impl BoxedExtractor {
    pub(crate) fn new<E: KeyExtractor>(extractor: E) -> Self {
        Self(Box::new(extractor), std::any::type_name::<E>())
    }

    pub(crate) fn extract(&self, parts: &Parts) -> Option<String> {
        self.0.extract(parts)
    }
}

impl fmt::Debug for BoxedExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn header_reads_the_session() {
        let request = parts(
            Request::get("/")
                .header("mcp-session-id", "abc")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            Header::mcp_session_id().extract(&request).as_deref(),
            Some("abc")
        );
        let empty = parts(
            Request::get("/")
                .header("mcp-session-id", "")
                .body(())
                .unwrap(),
        );
        assert_eq!(Header::mcp_session_id().extract(&empty), None);
    }

    #[test]
    fn cookie_finds_its_pair_among_others() {
        let request = parts(
            Request::get("/")
                .header("cookie", "a=1; sid=\"xyz\"")
                .header("cookie", "b=2")
                .body(())
                .unwrap(),
        );
        assert_eq!(Cookie::new("sid").extract(&request).as_deref(), Some("xyz"));
        assert_eq!(Cookie::new("b").extract(&request).as_deref(), Some("2"));
        assert_eq!(Cookie::new("c").extract(&request), None);
    }

    #[test]
    fn query_finds_its_parameter() {
        let request = parts(
            Request::get("/events?x&session=s%201&y=2")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            Query::new("session").extract(&request).as_deref(),
            Some("s%201")
        );
        assert_eq!(Query::new("x").extract(&request), None);
    }

    #[test]
    fn stream_keys_read_method_and_path() {
        let request = parts(Request::post("/mcp?a=b").body(()).unwrap());
        assert_eq!(
            MethodAndPath.extract(&request).as_deref(),
            Some("POST /mcp")
        );
        assert_eq!(Path.extract(&request).as_deref(), Some("/mcp"));
    }

    #[test]
    fn default_keys_tell_queries_and_requests_apart() {
        let key = |request: Request<()>| DefaultStreamKey.extract(&parts(request)).unwrap();
        let topic = |t: &str| key(Request::get(format!("/events?topic={t}")).body(()).unwrap());
        assert_eq!(topic("a"), "GET /events?topic=a");
        assert_eq!(topic("a"), topic("a"), "a standing stream");
        assert_ne!(topic("a"), topic("b"));
        let post = || key(Request::post("/chat?x=1").body(()).unwrap());
        let (first, second) = (post(), post());
        assert_ne!(first, second, "a stream per request");
        assert!(first.starts_with("POST /chat #"), "{first}");
    }

    #[test]
    fn closures_are_extractors() {
        let extractor = |parts: &Parts| Some(parts.uri.path().to_uppercase());
        let request = parts(Request::get("/a").body(()).unwrap());
        assert_eq!(
            BoxedExtractor::new(extractor).extract(&request).as_deref(),
            Some("/A")
        );
    }
}
