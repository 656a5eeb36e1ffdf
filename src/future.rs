//! [`ResponseFuture`]: waits for the store's part of the decision, sends
//! the request upstream as decided, and wraps the response body.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{Dedup, Resume, SseResumeBody};
use crate::config::{FailurePolicy, Options};
use crate::decision::{Decision, UpstreamCursor};
use crate::headers::{LAST_EVENT_ID, SSE_RESUME_GAP, is_encoded, is_event_stream};
use crate::linger::Linger;
use crate::store::{Follow, StoreError};
use crate::stream::{DEFAULT_WINDOW_LEN, Handover, Head, Leftover, Replay, Serve};

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
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
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
                            Decision::unscoped(DEFAULT_WINDOW_LEN, &options.stats)
                        }
                    };
                    if let Some(handover) = decision.handover.take() {
                        match take_over(handover, decision, options) {
                            Ok(response) => return Poll::Ready(Ok(response)),
                            // Another service's body: its upstream goes, and
                            // this request goes to the inner service.
                            Err(back) => decision = *back,
                        }
                    }
                    if let Some(follow) = decision.follow.take() {
                        options.stats.follow();
                        // A standing stream goes on from the upstream when
                        // its holder goes away; a per-request one cannot be
                        // sent again, and a `GET` resuming it is no request
                        // for it.
                        let resume = decision.follows_own.then(|| resume(service, request));
                        let response = follow_response(follow, decision, resume, options);
                        return Poll::Ready(Ok(response));
                    }
                    if let Serve::Complete(head) = &decision.serve {
                        let head = Arc::clone(head);
                        options.stats.complete_replayed();
                        return Poll::Ready(Ok(replay_complete(&head, decision, options)));
                    }
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
fn wrap<B>(
    response: Response<B>,
    mut decision: Decision,
    options: &Options,
) -> Response<SseResumeBody<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let (mut parts, body) = response.into_parts();
    if !is_event_stream(&parts.headers) || is_encoded(&parts.headers) {
        return Response::from_parts(parts, SseResumeBody::passthrough(body));
    }
    parts.headers.remove(CONTENT_LENGTH);
    let Some(linger) = decision.linger.take() else {
        mark_gap(&mut parts.headers, &decision);
        let dedup = Dedup::new(decision, options);
        return Response::from_parts(parts, SseResumeBody::resume(body, dedup));
    };
    // The response a client that takes the stream over starts with.
    let head = Head {
        status: parts.status,
        version: parts.version,
        headers: parts.headers.clone(),
        per_request: decision.per_request,
    };
    decision.attachment.stream.lock().set_head(Arc::new(head));
    mark_gap(&mut parts.headers, &decision);
    let one_client = decision.one_client;
    let dedup = Box::new(Dedup::new(decision, options));
    let linger = Some(Linger::new(linger));
    let body = SseResumeBody::lingering(Box::pin(body), dedup, linger, one_client);
    Response::from_parts(parts, body)
}

/// Says in the headers when the response starts with the gap signal.
fn mark_gap(headers: &mut http::HeaderMap, decision: &Decision) {
    if decision.replay == Replay::Gap {
        headers.insert(SSE_RESUME_GAP, HeaderValue::from_static("1"));
    }
}

/// Starts a response as the held stream's did, with the history after
/// the client's cursor, then its upstream from where its task stopped.
/// Gives the decision back when the upstream is another service's body.
#[allow(clippy::result_large_err)]
fn take_over<B>(
    handover: Handover,
    mut decision: Decision,
    options: &Options,
) -> Result<Response<SseResumeBody<B>>, Box<Decision>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let Handover {
        body,
        pending,
        leftover,
        head,
    } = handover;
    let Ok(body) = body.downcast::<Pin<Box<B>>>() else {
        return Err(Box::new(decision));
    };
    let linger = decision.linger.take();
    let response = head_response(&head, &decision);
    let mut dedup = Box::new(Dedup::new(decision, options));
    for chunk in pending {
        dedup.push(chunk);
    }
    match leftover {
        Leftover::Nothing => {}
        Leftover::Trailers(trailers) => {
            dedup.end();
            dedup.trailers = Some(trailers);
        }
        Leftover::End => {
            dedup.end();
        }
    }
    // Taken over, it is no longer offered to the next reconnect: two
    // clients of one scope cannot end each other's over and over.
    let body = SseResumeBody::lingering(*body, dedup, linger.map(Linger::new), false);
    options.stats.takeover();
    tracing::debug!("took a held stream over");
    Ok(response.map(|()| body))
}

/// What a complete stream's history holds after the client's cursor, as
/// the stream's responses started, and the end.
fn replay_complete<B: Body>(
    head: &Head,
    decision: Decision,
    options: &Options,
) -> Response<SseResumeBody<B>> {
    let response = head_response(head, &decision);
    response.map(|()| SseResumeBody::replayed(Dedup::new(decision, options)))
}

/// A response that follows a stream another replica holds: the replay,
/// then what that replica records, until the stream ends. Its head is
/// that of an event stream, not the upstream's, which this replica never
/// saw.
fn follow_response<B: Body>(
    follow: Follow,
    decision: Decision,
    resume: Option<Resume<B>>,
    options: &Options,
) -> Response<SseResumeBody<B>> {
    let cursor = decision.cursor.clone().unwrap_or_default();
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    mark_gap(headers, &decision);
    tracing::debug!("following a stream another replica holds");
    let dedup = Dedup::new(decision, options);
    response.map(|()| SseResumeBody::following(follow, dedup, cursor, resume))
}

/// Sends `request` to `service` later, with the `Last-Event-ID` given
/// then: for a follow that outlives its holder.
fn resume<S, ReqB, B>(mut service: S, mut request: Request<ReqB>) -> Resume<B>
where
    S: Service<Request<ReqB>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
{
    Box::new(move |last_id| {
        if let Some(id) = last_id {
            request.headers_mut().insert(LAST_EVENT_ID, id);
        }
        let call = service.call(request);
        Box::pin(async move { call.await.ok() })
    })
}

/// A response with the status and headers of `head`.
fn head_response<T: Default>(head: &Head, decision: &Decision) -> Response<T> {
    let mut response = Response::new(T::default());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers.clone();
    mark_gap(response.headers_mut(), decision);
    response
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
