//! [`ResponseFuture`]: waits for the request's decision and plan, then
//! carries the plan out: the request upstream, a takeover, a follow, a
//! complete stream's rest, or a refusal; and wraps the response body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{Dedup, Resume, SseResumeBody};
use crate::config::Options;
use crate::decision::{Decision, Plan, UpstreamCursor};
use crate::headers::{LAST_EVENT_ID, SSE_RESUME_GAP, is_encoded, is_event_stream};
use crate::linger::Linger;
use crate::store::Follow;
use crate::stream::{Head, Leftover, Replay, TakenOver};

/// Opens the request's stream and settles its plan.
pub(crate) type OpenFuture<B> = Pin<Box<dyn Future<Output = (Decision, Plan<B>)> + Send>>;

pin_project! {
    /// The response future of [`SseResume`](crate::SseResume); `ResB` is
    /// the inner service's response body.
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, ResB>,
        options: Arc<Options>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        // Deciding before the inner service is called, since the request
        // may need its stream's last id, or not go upstream at all.
        Opening { open: OpenFuture<ResB>, call: Option<(S, Request<ReqB>)> },
        // The decision is boxed: a server keeps room for this future for
        // as long as each connection lives.
        Calling { #[pin] future: S::Future, decision: Option<Box<Decision>> },
    }
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
{
    /// Calls `service` right away, for a response that `decision` wraps.
    pub(crate) fn call(
        mut service: S,
        request: Request<ReqB>,
        decision: Decision,
        options: Arc<Options>,
    ) -> Self {
        let state = State::Calling {
            future: service.call(request),
            decision: Some(Box::new(decision)),
        };
        Self { state, options }
    }

    /// Waits for `open` to decide, then calls `service`.
    pub(crate) fn open(
        open: OpenFuture<ResB>,
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

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
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
                    let (decision, plan) = ready!(open.as_mut().poll(cx));
                    let Some((mut service, mut request)) = call.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let options = &**this.options;
                    let cursor = match plan {
                        Plan::Upstream(cursor) => cursor,
                        Plan::TakeOver(taken) => {
                            return Poll::Ready(Ok(take_over(taken, decision, options)));
                        }
                        Plan::Follow { follow, own } => {
                            options.stats.follow();
                            // A per-request stream cannot be sent again, and
                            // a `GET` resuming it is no request for it.
                            // It keeps a clone, not the service made ready:
                            // that holds what its `poll_ready` took (a
                            // concurrency limit's permit) for no request.
                            let resume = own.then(|| resume(service.clone(), request));
                            drop(service);
                            let response = follow_response(follow, decision, resume, options);
                            return Poll::Ready(Ok(response));
                        }
                        Plan::Complete(head) => {
                            options.stats.complete_replayed();
                            // A client that has all of it is told it is
                            // over: an empty `200` says "reconnect".
                            if decision.replay == Replay::Blocks(Vec::new()) {
                                return Poll::Ready(Ok(no_content()));
                            }
                            return Poll::Ready(Ok(replay_complete(&head, decision, options)));
                        }
                        Plan::Reject => return Poll::Ready(Ok(service_unavailable())),
                    };
                    match cursor {
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
                        decision: Some(Box::new(decision)),
                    });
                }
                StateProj::Calling { future, decision } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(mut decision) = decision.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    if let Some(end) = decision.ends_scope.take() {
                        if response.status().is_success() {
                            end.run();
                        }
                    }
                    return Poll::Ready(Ok(wrap(response, *decision, this.options)));
                }
            }
        }
    }
}

impl<S, ReqB, ResB> fmt::Debug for ResponseFuture<S, ReqB, ResB>
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
    decision.response.stream().lock().set_head(Arc::new(head));
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
fn take_over<B>(
    taken: TakenOver<B>,
    mut decision: Decision,
    options: &Options,
) -> Response<SseResumeBody<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let TakenOver {
        body,
        pending,
        leftover,
        head,
    } = taken;
    let linger = decision.linger.take();
    let response = head_response(&head, &decision);
    let mut dedup = Box::new(Dedup::new(decision, options));
    // Its client is back: no replica follows from where it went away.
    dedup.recorder.client_away(false, false);
    for chunk in pending {
        dedup.push(chunk);
    }
    match leftover {
        Leftover::Nothing => {}
        Leftover::Trailers(trailers) => {
            dedup.end();
            dedup.trailers = Some(Box::new(trailers));
        }
        Leftover::End => {
            dedup.end();
        }
    }
    // Taken over, it is no longer offered to the next reconnect: two
    // clients of one scope cannot end each other's over and over.
    let body = SseResumeBody::lingering(body, dedup, linger.map(Linger::new), false);
    options.stats.takeover();
    tracing::debug!("took a held stream over");
    response.map(|()| body)
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
fn follow_response<B>(
    follow: Follow,
    mut decision: Decision,
    resume: Option<Resume<B>>,
    options: &Options,
) -> Response<SseResumeBody<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let cursor = decision.cursor.clone().unwrap_or_default();
    let response = head_response(&Head::event_stream(false), &decision);
    tracing::debug!("following a stream another replica holds");
    // Should it go on from the upstream, it lingers as a response that
    // read the upstream from the start would.
    let linger = (decision.linger.take())
        .filter(|_| resume.is_some())
        .map(Linger::new);
    let dedup = Dedup::new(decision, options);
    response.map(|()| SseResumeBody::following(follow, dedup, cursor, resume, linger))
}

/// Sends `request` to `service` later, once it is ready, with the
/// `Last-Event-ID` given then: for a follow that outlives its holder.
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
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .ok()?;
            service.call(request).await.ok()
        })
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

/// `204 No Content`: the stream is over and the client has all of it. An
/// `EventSource` stops reconnecting.
fn no_content<B: Body>() -> Response<SseResumeBody<B>> {
    let mut response = Response::new(SseResumeBody::rejected(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
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
