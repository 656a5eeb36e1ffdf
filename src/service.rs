//! [`SseResume`]: finds a request's stream and cursor, and decides what
//! to ask the upstream.

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::SseResumeBody;
use crate::config::FailurePolicy;
use crate::config::{Config, Options, builder_methods};
use crate::decision::{Decision, EndScope, Plan, Resumption, UpstreamCursor};
use crate::future::ResponseFuture;
use crate::headers::{LAST_EVENT_ID, client_cursor, header_value, mcp_without_resumption};
use crate::layer::SseResumeLayer;
use crate::linger::LingerConfig;
use crate::query;
use crate::stats::Stats;
use crate::store::{MemoryStore, StoreError, StreamKey, TrackerStore};
use crate::stream::{
    Claim, DEFAULT_WINDOW_LEN, Replay, Request as StreamRequest, Serve, Streams, TakenOver,
};

/// How long a takeover waits for the held stream's task to hand its
/// upstream over: it answers at once, unless it is gone.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Middleware that makes the event streams of `S` resumable and
/// duplicate-free. Made by [`SseResumeLayer`].
///
/// Every service a layer makes shares the layer's streams, its store and
/// their limits, which are set on the layer only; a service can still
/// change how it reads requests:
///
/// ```
/// # use tower_sse_resume::SseResume;
/// let service = SseResume::new(()).inject_last_event_id(false);
/// # let _ = service;
/// ```
///
/// ```compile_fail
/// # use tower_sse_resume::{HistoryLimits, SseResume};
/// // A history is a limit of the streams every sibling shares.
/// let service = SseResume::new(()).history(HistoryLimits::new());
/// ```
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

/// The options that only change how this service reads requests. The
/// store and the limits of the streams kept in process are set on the
/// [`SseResumeLayer`], once, for every service it makes: they share its
/// streams.
impl<S, T: TrackerStore> SseResume<S, T> {
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
    type Future = ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The ready service goes into the future; a clone stays for next time.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let options = &self.config.options;

        let (mut parts, body) = request.into_parts();
        // A stream is its scope's and its credentials': a request with
        // other credentials is in another partition, and finds nothing.
        let bound = (options.scope.extract(&parts))
            .and_then(|scope| options.credentials.bind(scope, &parts));
        let Some(bound) = bound else {
            let decision = Decision::unscoped(DEFAULT_WINDOW_LEN, &options.stats);
            let request = Request::from_parts(parts, body);
            return ResponseFuture::call(inner, request, decision, Arc::clone(options));
        };
        if parts.method == Method::DELETE && options.mcp_scope {
            // The end of an MCP session: once the upstream accepts it, the
            // streams of its scope (and credentials) end. Only where the
            // scope is MCP's session id: elsewhere a `DELETE` is any
            // request.
            let mut decision = Decision::unscoped(DEFAULT_WINDOW_LEN, &options.stats);
            let store = Arc::clone(&self.config.store);
            decision.ends_scope = Some(EndScope {
                streams: Arc::clone(&self.config.streams),
                scope: bound.scope,
                broadcast: Box::new(move |stop| store.broadcast_stop(stop)),
            });
            let request = Request::from_parts(parts, body);
            return ResponseFuture::call(inner, request, decision, Arc::clone(options));
        }
        if bound.changed {
            options.stats.credentials_changed();
            tracing::debug!("a request of a scope came with other credentials than the one before");
        }
        let warn_unshared_key = bound.fingerprinted && !options.credentials.has_shared_key();
        let scope = bound.scope;
        let (stream, cursor) = stream_and_cursor(options, &mut parts);
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
            upstream_resumes: options.upstream_resumes,
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
        let opening = Opening {
            key: StreamKey::new(&scope, &stream),
            stream,
            cursor,
            request,
            resumption,
            linger,
            warn_unshared_key,
        };
        let open_options = Arc::clone(options);
        let open = async move {
            // Kept for a failure, which has to tell the client of a gap.
            let cursor = opening.cursor.clone();
            match decide(opening, &store, streams, &open_options.stats).await {
                Ok(settled) => settled,
                Err(error) => store_failed(&error, cursor, &open_options),
            }
        };
        let request = Request::from_parts(parts, body);
        ResponseFuture::open(Box::pin(open), inner, request, Arc::clone(options))
    }
}

/// What a scoped request brings to its stream, before the store is asked.
struct Opening {
    key: StreamKey,
    /// The request's own stream key, within its scope.
    stream: String,
    cursor: Option<String>,
    request: StreamRequest,
    resumption: Resumption,
    linger: Option<LingerConfig>,
    /// The stream is bound to credentials under a key of this process's
    /// own: no other replica can follow it.
    warn_unshared_key: bool,
}

/// Opens the request's stream and settles how it is served: the one place
/// a plan is made. A takeover waits for the held stream's task to hand
/// its upstream over; a follow asks the store to follow. Either goes to
/// the inner service instead when it cannot be done.
async fn decide<T: TrackerStore, B: 'static>(
    opening: Opening,
    store: &Arc<T>,
    streams: Arc<Streams>,
    stats: &Stats,
) -> Result<(Decision, Plan<B>), StoreError> {
    let cursor = opening.cursor.as_deref();
    let snapshot = store.open(&opening.key, cursor).await?;
    let opened = streams.open(opening.key, cursor, snapshot, opening.request);
    let key = opened.key.clone();
    let resumption = opening.resumption;
    let (mut decision, serve, upstream_cursor) = Decision::scoped(
        opened,
        Arc::clone(store),
        stats.clone(),
        resumption,
        opening.cursor,
        opening.linger,
    );
    let plan = match serve {
        Serve::Upstream => Plan::Upstream(upstream_cursor),
        Serve::Complete(head) => Plan::Complete(head),
        Serve::Takeover(claim) => {
            (claim_upstream(claim).await).map_or(Plan::Upstream(upstream_cursor), Plan::TakeOver)
        }
        // Another replica reads the upstream: this response follows what
        // it records, and records nothing itself.
        Serve::Follow(position) => match store.follow(&key, position) {
            Some(follow) => {
                decision.recorder.mute();
                let own = !resumption.per_request && key.stream() == opening.stream;
                Plan::Follow { follow, own }
            }
            None => Plan::Upstream(upstream_cursor),
        },
    };
    if !matches!(plan, Plan::Upstream(_)) {
        // The stream's own reader serves it: its history runs up to now.
        decision.gap_after_replay = false;
        // A priming event starts a stream; a takeover, a follow or a
        // complete stream's replay goes on with one primed already, its
        // replay carrying ids. Recorded, it would land in the history
        // mid-stream, or after a complete stream's end.
        decision.prime = None;
    }
    let reads_upstream = matches!(plan, Plan::Upstream(_) | Plan::TakeOver(_));
    if reads_upstream && decision.linger.is_some() {
        // Other replicas follow it while this one reads it.
        let lease = store.hold(&key);
        if lease.is_some() && opening.warn_unshared_key {
            warn_once_unshared_key();
        }
        decision.recorder.hold(lease, decision.per_request);
    }
    tracing::debug!(%key, plan = plan.name(), "serving");
    Ok((decision, plan))
}

/// Claims the upstream of a held or displaced response. `None` when its
/// reader is gone, does not answer in time (it lost its upstream), or
/// reads another service's body, which cannot be served here.
async fn claim_upstream<B: 'static>(claim: Claim) -> Option<TakenOver<B>> {
    let answer = claim.claim()?;
    let handover = tokio::time::timeout(TAKEOVER_WAIT, answer)
        .await
        .ok()?
        .ok()?;
    let taken = handover.typed::<B>();
    if taken.is_none() {
        tracing::debug!("a held upstream of another service's body type: going upstream");
    }
    taken
}

/// A store that failed to open the stream: the response is deduplicated
/// within itself, or refused when the layer fails closed. Failing open on
/// a client's `cursor`, nothing tells what the client missed, and a live
/// upstream does not resume from it: the client gets the gap signal first,
/// unless the upstream resumes exactly where the client stopped.
fn store_failed<B>(
    error: &StoreError,
    cursor: Option<String>,
    options: &Options,
) -> (Decision, Plan<B>) {
    options.stats.store_error();
    tracing::warn!(%error, policy = ?options.failure_policy, "tracker store failed");
    let mut decision = Decision::unscoped(DEFAULT_WINDOW_LEN, &options.stats);
    if cursor.is_some() && !options.upstream_resumes {
        decision.replay = Replay::Gap;
        decision.cursor = cursor;
    }
    match options.failure_policy {
        FailurePolicy::FailClosed => (decision, Plan::Reject),
        FailurePolicy::FailOpen => (decision, Plan::Upstream(UpstreamCursor::Keep)),
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

/// The request's stream key and its client's cursor: its `Last-Event-ID`,
/// else the cursor in its URL ([`SseResumeLayer::cursor_query`]), which
/// then goes upstream as `Last-Event-ID` too and is not part of the key.
pub(crate) fn stream_and_cursor(options: &Options, parts: &mut Parts) -> (String, Option<String>) {
    let found = (options.cursor_query.as_deref()).and_then(|name| query::find(&parts.uri, name));
    let stream = match found {
        Some(found) => {
            let uri = mem::replace(&mut parts.uri, found.without);
            let stream = options.stream_key.extract(parts);
            parts.uri = uri;
            if client_cursor(&parts.headers).is_none() {
                if let Some(value) = header_value(&found.cursor) {
                    parts.headers.insert(LAST_EVENT_ID, value);
                }
            }
            stream
        }
        None => options.stream_key.extract(parts),
    };
    (stream.unwrap_or_default(), client_cursor(&parts.headers))
}
