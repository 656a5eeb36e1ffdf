//! [`ResponseFuture`]: opens the stream's tracker, calls the inner service
//! and wraps the response body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{Dedup, Recorder, SseResumeBody, Start};
use crate::layer::{FailurePolicy, Knobs, Settings};
use crate::service::{LAST_EVENT_ID, SSE_RESUME_GAP, header_value};
use crate::stamp::clock_epoch;
use crate::stats::Stats;
use crate::store::{Opened, StoreError, TrackerStore};
use crate::tracker::{Attachment, Replay, Tracker};

pub(crate) type OpenFuture = Pin<Box<dyn Future<Output = Result<Plan, StoreError>> + Send>>;

pin_project! {
    /// The response future of [`SseResume`](crate::SseResume).
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB>,
        knobs: Knobs,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        // Loading the tracker before the inner service is called, since the
        // request may need its last id.
        Opening { open: OpenFuture, call: Option<(S, Request<ReqB>)> },
        Calling { #[pin] future: S::Future, plan: Option<Plan> },
    }
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    /// Calls `service` right away: the request has no scope.
    pub(crate) fn call<T>(mut service: S, request: Request<ReqB>, settings: &Settings<T>) -> Self {
        let plan = Plan::unscoped(settings.knobs.unscoped_window_len, &settings.knobs.stats);
        let state = State::Calling {
            future: service.call(request),
            plan: Some(plan),
        };
        Self {
            state,
            knobs: settings.knobs.clone(),
        }
    }

    /// Opens the stream's tracker with `open`, then calls `service`.
    pub(crate) fn open<T>(
        open: OpenFuture,
        service: S,
        request: Request<ReqB>,
        settings: &Settings<T>,
    ) -> Self {
        let state = State::Opening {
            open,
            call: Some((service, request)),
        };
        Self {
            state,
            knobs: settings.knobs.clone(),
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    type Output = Result<Response<SseResumeBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Opening { open, call } => {
                    let opened = ready!(open.as_mut().poll(cx));
                    let Some((mut service, mut request)) = call.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let mut plan = match opened {
                        Ok(plan) => plan,
                        Err(error) => {
                            this.knobs.stats.store_error();
                            tracing::warn!(%error, policy = ?this.knobs.failure_policy, "tracker store failed");
                            if this.knobs.failure_policy == FailurePolicy::FailClosed {
                                return Poll::Ready(Ok(service_unavailable()));
                            }
                            Plan::unscoped(this.knobs.unscoped_window_len, &this.knobs.stats)
                        }
                    };
                    match std::mem::replace(&mut plan.upstream_cursor, UpstreamCursor::Keep) {
                        UpstreamCursor::Keep => {}
                        UpstreamCursor::Set(id) => {
                            request.headers_mut().insert(LAST_EVENT_ID, id);
                            this.knobs.stats.cursor_injected();
                        }
                        UpstreamCursor::Remove => {
                            request.headers_mut().remove(LAST_EVENT_ID);
                        }
                    }
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        plan: Some(plan),
                    });
                }
                StateProj::Calling { future, plan } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(plan) = plan.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    return Poll::Ready(Ok(plan.wrap(response, this.knobs)));
                }
            }
        }
    }
}

impl<S, ReqB> fmt::Debug for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Opening { .. } => "Opening",
            State::Calling { .. } => "Calling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// How one response is to be deduplicated, decided before the inner service
/// is called.
pub(crate) struct Plan {
    attachment: Attachment,
    recorder: Recorder,
    upstream_cursor: UpstreamCursor,
    start: Start,
}

/// What the upstream request's `Last-Event-ID` becomes.
enum UpstreamCursor {
    Keep,
    Set(HeaderValue),
    /// The client's cursor was replayed from the history, and the upstream
    /// never sent an id to resume from: the cursor means nothing to it.
    Remove,
}

/// How the request asks the upstream to resume, decided from its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resumption {
    /// Add the stream's last id to a request without `Last-Event-ID`.
    pub(crate) inject: bool,
    /// After a replay from the history, ask from the newest id it holds.
    pub(crate) from_history: bool,
    /// Stamp ids on events without one.
    pub(crate) stamp: bool,
}

impl Plan {
    /// A stream in a scope: its tracker from the store, maybe a replay,
    /// and what to ask the upstream.
    pub(crate) fn scoped<T: TrackerStore>(
        opened: Opened,
        store: Arc<T>,
        stats: Stats,
        resumption: Resumption,
        cursor: Option<String>,
    ) -> Self {
        let Opened {
            key,
            attachment,
            cursor_known,
            replay,
            stamp_epoch,
        } = opened;
        if cursor_known == Some(false) {
            stats.unknown_cursor();
            tracing::debug!(%key, "unknown client cursor: window cleared");
        }
        let replayed = matches!(replay, Replay::Blocks(_));
        // The newest id the upstream sent: stamped ids never go in the
        // window. One that is not a valid header value is never sent.
        let last_id = || {
            attachment
                .tracker()
                .last_id()
                .and_then(|id| header_value(&id))
        };
        let upstream_cursor = if resumption.inject {
            last_id().map_or(UpstreamCursor::Keep, UpstreamCursor::Set)
        } else if resumption.from_history && replayed {
            last_id().map_or(UpstreamCursor::Remove, UpstreamCursor::Set)
        } else {
            UpstreamCursor::Keep
        };
        if let UpstreamCursor::Set(id) = &upstream_cursor {
            tracing::debug!(%key, last_event_id = ?id, "asking the upstream to resume");
        }
        let stamp_epoch = resumption
            .stamp
            .then(|| stamp_epoch.unwrap_or_else(clock_epoch));
        Self {
            attachment,
            recorder: Recorder::to_store(store, key, stats),
            upstream_cursor,
            start: Start {
                replay,
                cursor,
                stamp_epoch,
            },
        }
    }

    /// A request without a scope: a window of its own response only.
    fn unscoped(window_len: usize, stats: &Stats) -> Self {
        Self {
            attachment: Tracker::new(window_len).attach(),
            recorder: Recorder::nowhere(stats.clone()),
            upstream_cursor: UpstreamCursor::Keep,
            start: Start {
                replay: Replay::Off,
                cursor: None,
                stamp_epoch: None,
            },
        }
    }

    fn wrap<B: Body>(self, response: Response<B>, knobs: &Knobs) -> Response<SseResumeBody<B>> {
        let (mut parts, body) = response.into_parts();
        if !is_event_stream(&parts.headers) || is_encoded(&parts.headers) {
            return Response::from_parts(parts, SseResumeBody::passthrough(body));
        }
        parts.headers.remove(CONTENT_LENGTH);
        if self.start.replay == Replay::Gap {
            parts
                .headers
                .insert(SSE_RESUME_GAP, HeaderValue::from_static("1"));
        }
        let dedup = Dedup::new(
            self.attachment,
            self.recorder,
            knobs.max_block_len,
            knobs.max_id_len,
            !knobs.trust_ids,
            knobs.stats.clone(),
            self.start,
        );
        Response::from_parts(parts, SseResumeBody::resume(body, dedup))
    }
}

/// Whether the media type is `text/event-stream`, parameters allowed.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Whether the body is compressed, which this layer cannot read.
fn is_encoded(headers: &HeaderMap) -> bool {
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

fn service_unavailable<B: Body>() -> Response<SseResumeBody<B>> {
    let mut response = Response::new(SseResumeBody::rejected("tracker store unavailable\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
