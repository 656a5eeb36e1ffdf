//! [`SseResumeBody`]: the response body, deduplicated as it streams.
//!
//! [`SseResumeBody`] wraps the upstream's body: untouched, or, for an event
//! stream, through a [`Dedup`] (`dedup.rs`): the framer and what the
//! client has, with `additions.rs` for replays, the history and stamped
//! ids, and `output.rs` for the bytes cut from the input chunks.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

mod additions;
mod dedup;
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
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Passthrough { #[pin] body: B },
        Resume {
            #[pin]
            body: B,
            dedup: Box<Dedup>,
            error: Option<<B as Body>::Error>,
        },
        Rejected { message: Option<Bytes> },
    }
}

impl<B: Body> fmt::Debug for SseResumeBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Resume { .. } => "Resume",
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

    pub(crate) fn resume(body: B, dedup: Dedup) -> Self {
        Self {
            kind: Kind::Resume {
                body,
                dedup: Box::new(dedup),
                error: None,
            },
        }
    }

    pub(crate) fn rejected(message: &'static str) -> Self {
        Self {
            kind: Kind::Rejected {
                message: Some(Bytes::from_static(message.as_bytes())),
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
            KindProj::Resume {
                mut body,
                dedup,
                error,
            } => loop {
                if let Some(bytes) = dedup.output.pop() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                if let Some(trailers) = dedup.trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                if dedup.ended {
                    return Poll::Ready(None);
                }
                let Poll::Ready(frame) = body.as_mut().poll_frame(cx) else {
                    // The upstream is quiet: a good moment to persist.
                    dedup.recorder.flush();
                    return Poll::Pending;
                };
                match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => dedup.push(into_bytes(data)),
                        Err(frame) => {
                            dedup.end();
                            dedup.trailers = frame.into_trailers().ok();
                        }
                    },
                    Some(Err(upstream)) => {
                        // Every complete block goes out before the error.
                        dedup.end();
                        *error = Some(upstream);
                    }
                    None => dedup.end(),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Resume { dedup, error, .. } => {
                dedup.ended
                    && dedup.output.is_empty()
                    && dedup.trailers.is_none()
                    && error.is_none()
            }
            Kind::Rejected { message } => message.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Resume { .. } => SizeHint::default(),
            Kind::Rejected { message } => {
                SizeHint::with_exact(message.as_ref().map_or(0, |m| m.len() as u64))
            }
        }
    }
}

fn into_bytes(mut data: impl Buf) -> Bytes {
    // Free for `Bytes` itself, the common case.
    data.copy_to_bytes(data.remaining())
}
