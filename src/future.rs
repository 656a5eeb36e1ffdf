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

use crate::body::{Dedup, Recorder, SseResumeBody};
use crate::layer::{FailurePolicy, Knobs, Settings};
use crate::service::{LAST_EVENT_ID, header_value};
use crate::stats::Stats;
use crate::store::{Opened, StoreError, TrackerStore};
use crate::tracker::Tracker;

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
                    if let Some(id) = plan.inject.take() {
                        request.headers_mut().insert(LAST_EVENT_ID, id);
                        this.knobs.stats.cursor_injected();
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
    tracker: Tracker,
    recorder: Recorder,
    inject: Option<HeaderValue>,
}

impl Plan {
    /// A stream in a scope: its tracker from the store, and maybe its last
    /// id for the upstream.
    pub(crate) fn scoped<T: TrackerStore>(
        opened: Opened,
        store: Arc<T>,
        stats: Stats,
        inject: bool,
    ) -> Self {
        let Opened {
            key,
            tracker,
            cursor_known,
        } = opened;
        if cursor_known == Some(false) {
            stats.unknown_cursor();
            tracing::debug!(%key, "unknown client cursor: window cleared");
        }
        // A stored id that is not a valid header value is never sent.
        let inject = inject
            .then(|| tracker.last_id())
            .flatten()
            .and_then(|id| header_value(&id));
        if let Some(id) = &inject {
            tracing::debug!(%key, last_event_id = ?id, "injecting Last-Event-ID");
        }
        Self {
            tracker,
            recorder: Recorder::to_store(store, key, stats),
            inject,
        }
    }

    /// A request without a scope: a window of its own response only.
    fn unscoped(window_len: usize, stats: &Stats) -> Self {
        Self {
            tracker: Tracker::new(window_len),
            recorder: Recorder::nowhere(stats.clone()),
            inject: None,
        }
    }

    fn wrap<B: Body>(self, response: Response<B>, knobs: &Knobs) -> Response<SseResumeBody<B>> {
        let (mut parts, body) = response.into_parts();
        if !is_event_stream(&parts.headers) || is_encoded(&parts.headers) {
            return Response::from_parts(parts, SseResumeBody::passthrough(body));
        }
        parts.headers.remove(CONTENT_LENGTH);
        let dedup = Dedup::new(
            self.tracker,
            self.recorder,
            knobs.max_block_len,
            knobs.max_id_len,
            knobs.stats.clone(),
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
