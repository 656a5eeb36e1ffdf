//! [`ResponseFuture`]: waits for the store's part of the decision, sends
//! the request upstream as decided, and wraps the response body.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{Dedup, SseResumeBody};
use crate::config::{FailurePolicy, Options};
use crate::decision::{Decision, UpstreamCursor};
use crate::headers::{LAST_EVENT_ID, SSE_RESUME_GAP, is_encoded, is_event_stream};
use crate::store::StoreError;
use crate::stream::Replay;

pub(crate) type OpenFuture = Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send>>;

pin_project! {
    /// The response future of [`SseResume`](crate::SseResume).
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB>,
        options: Arc<Options>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        // Loading the stream before the inner service is called, since the
        // request may need its last id.
        Opening { open: OpenFuture, call: Option<(S, Request<ReqB>)> },
        Calling { #[pin] future: S::Future, decision: Option<Decision> },
    }
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    /// Calls `service` right away, as `decision` says.
    pub(crate) fn call(
        mut service: S,
        request: Request<ReqB>,
        decision: Decision,
        options: Arc<Options>,
    ) -> Self {
        let state = State::Calling {
            future: service.call(request),
            decision: Some(decision),
        };
        Self { state, options }
    }

    /// Waits for `open` to decide, then calls `service`.
    pub(crate) fn open(
        open: OpenFuture,
        service: S,
        request: Request<ReqB>,
        options: Arc<Options>,
    ) -> Self {
        let state = State::Opening {
            open,
            call: Some((service, request)),
        };
        Self { state, options }
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
                    let options = &**this.options;
                    let mut decision = match opened {
                        Ok(decision) => decision,
                        Err(error) => {
                            options.stats.store_error();
                            tracing::warn!(%error, policy = ?options.failure_policy, "tracker store failed");
                            if options.failure_policy == FailurePolicy::FailClosed {
                                return Poll::Ready(Ok(service_unavailable()));
                            }
                            Decision::unscoped(options.unscoped_window_len, &options.stats)
                        }
                    };
                    match mem::replace(&mut decision.upstream_cursor, UpstreamCursor::Keep) {
                        UpstreamCursor::Keep => {}
                        UpstreamCursor::Set(id) => {
                            request.headers_mut().insert(LAST_EVENT_ID, id);
                            options.stats.cursor_injected();
                        }
                        UpstreamCursor::Remove => {
                            request.headers_mut().remove(LAST_EVENT_ID);
                        }
                    }
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        decision: Some(decision),
                    });
                }
                StateProj::Calling { future, decision } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(decision) = decision.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    return Poll::Ready(Ok(wrap(response, decision, this.options)));
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

/// Wraps an event stream's body in the dedup `decision` set up; any other
/// response passes through.
fn wrap<B: Body>(
    response: Response<B>,
    decision: Decision,
    options: &Options,
) -> Response<SseResumeBody<B>> {
    let (mut parts, body) = response.into_parts();
    if !is_event_stream(&parts.headers) || is_encoded(&parts.headers) {
        return Response::from_parts(parts, SseResumeBody::passthrough(body));
    }
    parts.headers.remove(CONTENT_LENGTH);
    if decision.replay == Replay::Gap {
        parts
            .headers
            .insert(SSE_RESUME_GAP, HeaderValue::from_static("1"));
    }
    let dedup = Dedup::new(decision, options);
    Response::from_parts(parts, SseResumeBody::resume(body, dedup))
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
