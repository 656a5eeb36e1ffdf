//! [`SseResume`]: finds a request's stream and cursor, and decides on
//! injection.

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::SseResumeBody;
use crate::future::{Plan, ResponseFuture, Resumption};
use crate::layer::{Settings, SseResumeLayer, knobs};
use crate::store::{MemoryStore, TrackerStore};

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

/// Middleware that makes the event streams of `S` resumable and
/// duplicate-free. Made by [`SseResumeLayer`].
pub struct SseResume<S, T = MemoryStore> {
    inner: S,
    settings: Settings<T>,
}

impl<S> SseResume<S> {
    /// Wraps `inner` with the defaults of [`SseResumeLayer::new`].
    pub fn new(inner: S) -> Self {
        Self::from_settings(inner, SseResumeLayer::new().settings)
    }

    /// A layer that makes this middleware.
    pub fn layer() -> SseResumeLayer {
        SseResumeLayer::new()
    }
}

impl<S, T: TrackerStore> SseResume<S, T> {
    /// Keeps trackers in `store` instead.
    pub fn store<U: TrackerStore>(self, store: U) -> SseResume<S, U> {
        SseResume {
            inner: self.inner,
            settings: self.settings.with_store(store),
        }
    }

    knobs!();
}

impl<S, T> SseResume<S, T> {
    pub(crate) fn from_settings(inner: S, settings: Settings<T>) -> Self {
        Self { inner, settings }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives up the wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, T> Clone for SseResume<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: fmt::Debug, T: fmt::Debug> fmt::Debug for SseResume<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseResume")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<S, T, ReqB, ResB> Service<Request<ReqB>> for SseResume<S, T>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: Body,
    T: TrackerStore,
{
    type Response = Response<SseResumeBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The ready service goes into the future; a clone stays for next time.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let settings = &self.settings;

        let (parts, body) = request.into_parts();
        let Some(scope) = settings.knobs.scope.extract(&parts) else {
            return ResponseFuture::call(inner, Request::from_parts(parts, body), settings);
        };
        let stream = settings
            .knobs
            .stream_key
            .extract(&parts)
            .unwrap_or_default();
        let cursor = client_cursor(&parts.headers);
        let knobs = &settings.knobs;
        let may_resume =
            knobs.inject && !(knobs.mcp_protocol_gate && mcp_without_resumption(&parts.headers));
        let resumption = Resumption {
            inject: may_resume && cursor.is_none() && parts.method == Method::GET,
            from_history: may_resume && cursor.is_some(),
            stamp: knobs.stamp_ids,
        };

        let store = Arc::clone(&settings.store);
        let stats = knobs.stats.clone();
        let open = async move {
            let opened = store.open(&scope, &stream, cursor.as_deref()).await?;
            Ok(Plan::scoped(opened, store, stats, resumption, cursor))
        };
        ResponseFuture::open(
            Box::pin(open),
            inner,
            Request::from_parts(parts, body),
            settings,
        )
    }
}

/// The client's `Last-Event-ID`, when it sent a usable one.
fn client_cursor(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(LAST_EVENT_ID)?;
    let value = String::from_utf8_lossy(value.as_bytes());
    (!value.is_empty()).then(|| value.into_owned())
}

/// Whether the request speaks an MCP revision that removed resumption.
/// Revisions are dates, so they compare as strings.
fn mcp_without_resumption(headers: &HeaderMap) -> bool {
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
