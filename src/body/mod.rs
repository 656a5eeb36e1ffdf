//! [`SseResumeBody`]: the response body, deduplicated as it streams.
//!
//! [`SseResumeBody`] wraps the upstream's body: untouched, or, for an event
//! stream, through a [`Dedup`] (`dedup.rs`): the framer and what the
//! client has, with `additions.rs` for replays, the history and stamped
//! ids, and `output.rs` for the bytes cut from the input chunks. With
//! linger on, the upstream body is boxed, so that it can outlive the
//! response when the client goes away (`crate::linger`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::headers::{header_value, is_encoded, is_event_stream};
use crate::linger::Linger;
use crate::store::{Follow, Followed};
use crate::stream::{Claimed, Handover, Head, claim};
use std::future::Future;
use tokio::sync::oneshot;

mod additions;
mod dedup;
mod keep_alive;
mod output;

pub use additions::GAP_EVENT;
pub(crate) use dedup::Dedup;

pin_project! {
    /// The response body of [`SseResume`](crate::SseResume).
    ///
    /// An event stream comes out with the blocks whose id the client's
    /// stream already carried removed, every other byte as received. Any
    /// other body passes through untouched, size hint included.
    pub struct SseResumeBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }

    impl<B: Body> PinnedDrop for SseResumeBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // A client that goes away before the upstream ends leaves the
            // upstream to read on for its stream, when linger is on. Only
            // here does the layer learn that the client went away.
            if let KindProj::Events { source: Source::Upstream { body, linger, .. }, dedup, .. } = this.project().kind.project() {
                if let (Some(body), Some(dedup), Some(linger)) = (body.take(), dedup.take(), linger.take()) {
                    if !dedup.is_ended() {
                        linger.start(body, dedup);
                    }
                }
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Passthrough { #[pin] body: B },
        // An event stream: the events of one source, through the dedup.
        Events {
            source: Source<B>,
            // Taken when the upstream goes on in the background.
            dedup: Option<Box<Dedup>>,
            error: Option<<B as Body>::Error>,
        },
        Rejected { message: Option<Bytes> },
    }
}

/// Where the events of an event stream come from.
enum Source<B: Body> {
    /// The upstream's body, boxed so that it can be handed on: to the
    /// background when the client goes away (with `linger`), then to the
    /// response that takes the stream over. `None` once handed on.
    Upstream {
        body: Option<Pin<Box<B>>>,
        linger: Option<Linger<B>>,
        /// Where a stop or a reconnect of the same client claims the
        /// upstream, which ends this response.
        claimed: Option<Claimed>,
    },
    /// Nothing beyond the replay: what the history holds of a complete
    /// stream.
    Replay,
    /// A stream another replica holds, as it records it: whole blocks,
    /// exactly once by their place in the history. When the holder goes
    /// away, a standing stream goes on from the upstream, asked through
    /// `resume`, and this response holds it from then on, lingering as
    /// `linger` says.
    Follow {
        follow: Follow,
        /// The client's cursor, for a gap.
        cursor: String,
        resume: Option<Resume<B>>,
        resuming: Option<ResumeFuture<B>>,
        linger: Option<Linger<B>>,
    },
}

impl<B: Body> fmt::Debug for SseResumeBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Events { source, .. } => match source {
                Source::Upstream { linger: None, .. } => "Resume",
                Source::Upstream { .. } => "Lingering",
                Source::Replay => "Replayed",
                Source::Follow { .. } => "Following",
            },
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("SseResumeBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B: Body> SseResumeBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    fn events(source: Source<B>, dedup: Box<Dedup>) -> Self {
        Self {
            kind: Kind::Events {
                source,
                dedup: Some(dedup),
                error: None,
            },
        }
    }

    /// The upstream's event stream, deduplicated.
    pub(crate) fn resume(body: B, dedup: Dedup) -> Self {
        Self::lingering(Box::pin(body), Box::new(dedup), None, false)
    }

    /// An event stream whose upstream goes on for its stream, as `linger`
    /// says, when the client goes away first. With linger, a stop may
    /// claim the upstream and end the response, and so may a reconnect of
    /// its client when `displaceable`.
    pub(crate) fn lingering(
        body: Pin<Box<B>>,
        dedup: Box<Dedup>,
        linger: Option<Linger<B>>,
        displaceable: bool,
    ) -> Self {
        let claimed = linger.is_some().then(|| {
            let (claim, claimed) = claim();
            dedup.offer(claim, displaceable);
            claimed
        });
        let body = Some(body);
        Self::events(
            Source::Upstream {
                body,
                linger,
                claimed,
            },
            dedup,
        )
    }

    /// What `dedup` replays, then the end.
    pub(crate) fn replayed(mut dedup: Dedup) -> Self {
        dedup.ended = true;
        Self::events(Source::Replay, Box::new(dedup))
    }

    /// What `dedup` replays, then what `follow` delivers; `cursor` is the
    /// client's, for a gap. When the stream is lost, `resume` asks the
    /// upstream, if there is one to ask, and the response then lingers as
    /// `linger` says.
    pub(crate) fn following(
        follow: Follow,
        dedup: Dedup,
        cursor: String,
        resume: Option<Resume<B>>,
        linger: Option<Linger<B>>,
    ) -> Self {
        let source = Source::Follow {
            follow,
            cursor,
            resume,
            resuming: None,
            linger,
        };
        Self::events(source, Box::new(dedup))
    }

    /// A body the layer answers with itself: `message`, or none at all.
    pub(crate) fn rejected(message: &'static str) -> Self {
        Self {
            kind: Kind::Rejected {
                message: (!message.is_empty()).then(|| Bytes::from_static(message.as_bytes())),
            },
        }
    }
}

impl<B> Body for SseResumeBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|frame| frame.map(|frame| frame.map_data(into_bytes))))
            }
            KindProj::Rejected { message } => {
                Poll::Ready(message.take().map(|m| Ok(Frame::data(m))))
            }
            KindProj::Events {
                source,
                dedup: Some(dedup),
                error,
            } => poll_events(source, dedup, error, cx),
            // Gone on in the background.
            KindProj::Events { dedup: None, .. } => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Events { dedup, error, .. } => {
                error.is_none()
                    && dedup.as_ref().is_none_or(|dedup| {
                        dedup.ended && dedup.output.is_empty() && dedup.trailers.is_none()
                    })
            }
            Kind::Rejected { message } => message.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Events { .. } => SizeHint::default(),
            Kind::Rejected { message } => {
                SizeHint::with_exact(message.as_ref().map_or(0, |m| m.len() as u64))
            }
        }
    }
}

/// Whether the upstream was claimed, the waker registered if not. Once
/// the offer is withdrawn, it is forgotten.
#[inline]
fn asked(claimed: &mut Option<Claimed>, cx: &mut Context<'_>) -> Option<oneshot::Sender<Handover>> {
    let claim = claimed.as_mut()?;
    let Poll::Ready(reply) = Pin::new(claim).poll(cx) else {
        return None;
    };
    *claimed = None;
    reply
}

/// Polls an event stream: what is ready first, then its source for more.
fn poll_events<B: Body>(
    source: &mut Source<B>,
    dedup: &mut Dedup,
    error: &mut Option<B::Error>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    loop {
        if let Some(bytes) = dedup.output.pop() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if let Some(trailers) = dedup.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        if let Some(error) = error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if dedup.ended {
            return Poll::Ready(None);
        }
        let polled = match source {
            Source::Upstream {
                body,
                linger,
                claimed,
            } => {
                let Some(upstream) = body.as_mut() else {
                    // Handed over.
                    return Poll::Ready(None);
                };
                let polled = poll_upstream(upstream.as_mut(), dedup, error, cx);
                // Asked only once the response waits, not per frame: what
                // it sent before was recorded before a reconnect took its
                // replay, and once ended it records nothing more.
                if polled.is_pending() {
                    if let Some(reply) = asked(claimed, cx) {
                        // A reconnect of this client takes the upstream
                        // over, or a stop lets it go: this response ends
                        // here.
                        if let (Some(body), Some(linger)) = (body.take(), linger.as_ref()) {
                            linger.hand_over(body, dedup, reply);
                        }
                        dedup.stopped();
                        return Poll::Ready(None);
                    }
                }
                polled
            }
            Source::Replay => return Poll::Ready(None),
            Source::Follow {
                follow,
                cursor,
                resume,
                resuming,
                linger,
            } => match poll_follow(follow, dedup, cursor, resume, resuming, cx) {
                Following::Pulled(polled) => polled,
                Following::Upstream(response) => {
                    let linger = linger.take();
                    *source = Source::upstream_after_follow(response, dedup, linger);
                    Poll::Ready(())
                }
            },
        };
        if polled.is_pending() {
            return match dedup.keep_alive_due(cx) {
                Some(keep_alive) => Poll::Ready(Some(Ok(Frame::data(keep_alive)))),
                None => Poll::Pending,
            };
        }
    }
}

impl<B: Body> Source<B> {
    /// The upstream a follow goes on from once its holder went away: this
    /// response reads the stream now, and holds it as any reader of an
    /// upstream does (with `linger`: other replicas follow it, it reads on
    /// when its client goes away, and a stop or a takeover may claim it).
    fn upstream_after_follow(
        response: Response<B>,
        dedup: &mut Dedup,
        linger: Option<Linger<B>>,
    ) -> Self {
        let (parts, body) = response.into_parts();
        dedup.resumed(linger.is_some());
        let claimed = linger.as_ref().map(|_| {
            // A takeover on this replica starts as this upstream did.
            let head = Head {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                per_request: false,
            };
            dedup.stream().lock().set_head(Arc::new(head));
            // Offered to a stop, not to a reconnect: its client is one
            // that came back already.
            let (claim, claimed) = claim();
            dedup.offer(claim, false);
            claimed
        });
        Source::Upstream {
            body: Some(Box::pin(body)),
            linger,
            claimed,
        }
    }
}

/// Pulls one frame of the upstream into `dedup`: ready once something
/// came, pending when the upstream is quiet.
fn poll_upstream<B: Body>(
    body: Pin<&mut B>,
    dedup: &mut Dedup,
    error: &mut Option<B::Error>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Poll::Ready(frame) = body.poll_frame(cx) else {
        // The upstream is quiet: a good moment to persist.
        dedup.recorder.flush();
        return Poll::Pending;
    };
    dedup.heard();
    match frame {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => {
                if !dedup.push(into_bytes(data)) {
                    // Ended for a reconnect of this client, which claims
                    // the upstream next: poll again for it.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            Err(frame) => end(dedup, frame.into_trailers().ok()),
        },
        Some(Err(upstream)) => {
            // Every complete block goes out before the error.
            dedup.end();
            *error = Some(upstream);
        }
        None => {
            dedup.end();
        }
    }
    Poll::Ready(())
}

/// How a follow whose holder went away asks the upstream itself, with the
/// `Last-Event-ID` given: made by the response future, which still holds
/// the request and the service.
pub(crate) type Resume<B> = Box<dyn FnOnce(Option<HeaderValue>) -> ResumeFuture<B> + Send>;
/// The upstream's response to a [`Resume`], or `None` when it failed.
pub(crate) type ResumeFuture<B> = Pin<Box<dyn Future<Output = Option<Response<B>>> + Send>>;

/// What pulling from a follow gave: something (or nothing yet), or the
/// upstream to go on from.
enum Following<B> {
    Pulled(Poll<()>),
    Upstream(Response<B>),
}

/// Pulls from a follow into `dedup`: what the holding replica records, so
/// that the window knows it; when the stream is lost, the upstream through
/// `resume`, or else the gap signal.
fn poll_follow<B: Body>(
    follow: &mut Follow,
    dedup: &mut Dedup,
    cursor: &str,
    resume: &mut Option<Resume<B>>,
    resuming: &mut Option<ResumeFuture<B>>,
    cx: &mut Context<'_>,
) -> Following<B> {
    if let Some(future) = resuming {
        let Poll::Ready(response) = future.as_mut().poll(cx) else {
            return Following::Pulled(Poll::Pending);
        };
        *resuming = None;
        let response =
            response.filter(|r| is_event_stream(r.headers()) && !is_encoded(r.headers()));
        let Some(response) = response else {
            dedup.follow_lost(cursor);
            return Following::Pulled(Poll::Ready(()));
        };
        return Following::Upstream(response);
    }
    let Poll::Ready(followed) = follow.poll_next(cx) else {
        return Following::Pulled(Poll::Pending);
    };
    match followed {
        Some(Followed::Blocks(blocks)) => {
            dedup.heard();
            dedup.push(blocks);
        }
        Some(Followed::End) => dedup.ended = true,
        // A follower that stopped without a word lost the stream too.
        lost => {
            let last_id = match lost {
                Some(Followed::Lost(last_id)) => last_id,
                _ => None,
            };
            match resume.take() {
                Some(resume) => {
                    // The stream's own last id: what the client has.
                    let last = dedup.stream().lock().last_id();
                    *resuming = Some(resume(last.and_then(|id| header_value(&id))));
                }
                None => dedup.follow_lost(last_id.as_deref().unwrap_or(cursor)),
            }
        }
    }
    Following::Pulled(Poll::Ready(()))
}

fn end(dedup: &mut Dedup, trailers: Option<HeaderMap>) {
    dedup.end();
    dedup.trailers = trailers.map(Box::new);
}

pub(crate) fn into_bytes(mut data: impl Buf) -> Bytes {
    // Free for `Bytes` itself, the common case.
    data.copy_to_bytes(data.remaining())
}
