//! [`SseResume`]: finds a request's stream and cursor, and decides what
//! to ask the upstream.

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::SseResumeBody;
use crate::config::{Config, builder_methods};
use crate::decision::{Decision, Resumption};
use crate::future::ResponseFuture;
use crate::headers::{LAST_EVENT_ID, client_cursor, header_value, mcp_without_resumption};
use crate::layer::SseResumeLayer;
use crate::linger::LingerConfig;
use crate::query;
use crate::store::{MemoryStore, StreamKey, TrackerStore};
use crate::stream::{DEFAULT_WINDOW_LEN, Request as StreamRequest, Serve};

/// How long a takeover waits for the held stream's task to hand its
/// upstream over: it answers at once, unless it is gone.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Middleware that makes the event streams of `S` resumable and
/// duplicate-free. Made by [`SseResumeLayer`].
pub struct SseResume<S, T = MemoryStore> {
    inner: S,
    config: Config<T>,
}

impl<S> SseResume<S> {
    /// Wraps `inner` with the defaults of [`SseResumeLayer::new`].
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Config::new(MemoryStore::new()))
    }

    /// A layer that makes this middleware.
    pub fn layer() -> SseResumeLayer {
        SseResumeLayer::new()
    }
}

impl<S, T: TrackerStore> SseResume<S, T> {
    /// Keeps the streams in `store` behind the layer. Its streams in
    /// process start empty.
    pub fn store<U: TrackerStore>(self, store: U) -> SseResume<S, U> {
        SseResume {
            inner: self.inner,
            config: self.config.with_store(store),
        }
    }

    builder_methods!();
}

impl<S, T> SseResume<S, T> {
    pub(crate) fn from_config(inner: S, config: Config<T>) -> Self {
        Self { inner, config }
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
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, T: fmt::Debug> fmt::Debug for SseResume<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseResume")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, T, ReqB, ResB> Service<Request<ReqB>> for SseResume<S, T>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
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
        let options = &self.config.options;

        let (mut parts, body) = request.into_parts();
        let query_cursor =
            (options.cursor_query.as_deref()).and_then(|name| query::find(&parts.uri, name));
        // A stream is its scope's and its credentials': a request with
        // other credentials is in another partition, and finds nothing.
        let bound = (options.scope.extract(&parts))
            .and_then(|scope| options.credentials.bind(scope, &parts));
        let Some(bound) = bound else {
            let decision = Decision::unscoped(DEFAULT_WINDOW_LEN, &options.stats);
            let request = Request::from_parts(parts, body);
            return ResponseFuture::call(inner, request, decision, Arc::clone(options));
        };
        if bound.changed {
            options.stats.credentials_changed();
            tracing::debug!("a request of a scope came with other credentials than the one before");
        }
        let warn_unshared_key = bound.fingerprinted && !options.credentials.has_shared_key();
        let scope = bound.scope;
        let stream = match query_cursor {
            // The parameter is not part of the stream key, and goes
            // upstream as `Last-Event-ID` too, unless the header is there.
            Some(found) => {
                let uri = mem::replace(&mut parts.uri, found.without);
                let stream = options.stream_key.extract(&parts);
                parts.uri = uri;
                if client_cursor(&parts.headers).is_none() {
                    if let Some(value) = header_value(&found.cursor) {
                        parts.headers.insert(LAST_EVENT_ID, value);
                    }
                }
                stream
            }
            None => options.stream_key.extract(&parts),
        };
        let stream = stream.unwrap_or_default();
        let cursor = client_cursor(&parts.headers);
        let may_resume = options.inject
            && !(options.mcp_protocol_gate && mcp_without_resumption(&parts.headers));
        let get = parts.method == Method::GET;
        let resumption = Resumption {
            inject: may_resume && cursor.is_none() && get,
            from_history: may_resume && cursor.is_some(),
            stamp: options.stamp_ids,
            per_request: !get,
            one_client: options.one_client_per_scope(),
            // MCP 2026-07-28 removed resumption, and priming with it.
            prime: (options.prime && !mcp_without_resumption(&parts.headers))
                .then_some(options.prime_retry),
        };
        // From MCP 2026-07-28 on, closing a stream cancels its request.
        let linger = (options.linger)
            .filter(|_| !mcp_without_resumption(&parts.headers))
            .map(|time| LingerConfig {
                time,
                holds: Arc::clone(self.config.streams.holds()),
                stats: options.stats.clone(),
            });
        let request = StreamRequest {
            get,
            linger: linger.is_some(),
            one_client: resumption.one_client,
        };

        let store = Arc::clone(&self.config.store);
        let streams = Arc::clone(&self.config.streams);
        let stats = options.stats.clone();
        let open = async move {
            let key = StreamKey::new(&scope, &stream);
            let snapshot = store.open(&key, cursor.as_deref()).await?;
            let opened = streams.open(key, cursor.as_deref(), snapshot, request);
            let key = opened.key.clone();
            let store_for_decision = Arc::clone(&store);
            let mut decision = Decision::scoped(
                opened,
                store_for_decision,
                stats,
                resumption,
                cursor,
                linger,
            );
            match &mut decision.serve {
                Serve::Takeover(answer) => {
                    // A task that does not answer in time lost its
                    // upstream: the request goes to the inner service.
                    if let Ok(Ok(handover)) = tokio::time::timeout(TAKEOVER_WAIT, answer).await {
                        decision.handover = Some(handover);
                    }
                    decision.serve = Serve::Upstream;
                }
                Serve::Follow(position) => {
                    // Another replica reads the upstream: this response
                    // follows what it records, and records nothing itself.
                    if let Some(follow) = store.follow(&key, *position) {
                        decision.recorder.mute();
                        decision.follow = Some(follow);
                        decision.follows_own = get && key.stream() == stream;
                    }
                    decision.serve = Serve::Upstream;
                }
                Serve::Upstream | Serve::Complete(_) => {}
            }
            let reads_upstream = decision.follow.is_none()
                && matches!(decision.serve, Serve::Upstream)
                && decision.linger.is_some();
            if reads_upstream {
                // Other replicas follow it while this one reads it.
                let lease = store.hold(&key);
                if lease.is_some() && warn_unshared_key {
                    warn_once_unshared_key();
                }
                decision.recorder.hold(lease, decision.per_request);
            }
            Ok(decision)
        };
        let request = Request::from_parts(parts, body);
        ResponseFuture::open(Box::pin(open), inner, request, Arc::clone(options))
    }
}

/// Says once that streams bound to credentials cannot be followed on
/// other replicas while each has a key of its own.
fn warn_once_unshared_key() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "streams bound to credentials are followed and resumed on this replica only: \
             give every replica the same SseResumeLayer::credential_key"
        );
    });
}
