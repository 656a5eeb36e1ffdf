//! [`SseResumeBody`]: the response body, deduplicated as it streams.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::framer::{Framer, Segment};
use crate::stats::Stats;
use crate::store::{IdBatch, StoreError, StreamKey, TrackerStore};
use crate::tracker::Tracker;

/// Ids recorded since the last hand-over to the store, at most this many.
const RECORD_BATCH: usize = 64;

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

/// The deduplicating state of an event-stream body.
#[derive(Debug)]
pub(crate) struct Dedup {
    framer: Framer,
    tracker: Tracker,
    recorder: Recorder,
    output: Output,
    max_id_len: usize,
    stats: Stats,
    forwarded: u64,
    dropped: u64,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// Carries the stream's key to every event logged for it.
    span: tracing::Span,
}

impl Dedup {
    pub(crate) fn new(
        tracker: Tracker,
        recorder: Recorder,
        max_block_len: usize,
        max_id_len: usize,
        stats: Stats,
    ) -> Self {
        Self {
            framer: Framer::with_max_block_len(max_block_len),
            tracker,
            output: Output::default(),
            max_id_len,
            stats,
            forwarded: 0,
            dropped: 0,
            trailers: None,
            ended: false,
            span: tracing::debug_span!("sse_resume", key = %recorder.key_for_logs()),
            recorder,
        }
    }

    fn push(&mut self, chunk: Bytes) {
        self.output.push_input(chunk.clone());
        self.framer.push(chunk);
        self.drain();
    }

    fn end(&mut self) {
        self.framer.finish();
        self.drain();
        self.recorder.flush();
        self.ended = true;
        let _span = self.span.enter();
        tracing::debug!(
            forwarded = self.forwarded,
            dropped = self.dropped,
            "sse stream ended"
        );
    }

    /// Checks every segment the framer has against the window, under one
    /// lock for the whole chunk.
    fn drain(&mut self) {
        let (mut forwarded, mut dropped) = (0, 0);
        let mut window = self.tracker.lock();
        while let Some(segment) = self.framer.next_segment() {
            let len = segment.raw().len();
            if let Segment::Block(block) = &segment {
                let trackable = block.id_bytes().filter(|id| id.len() <= self.max_id_len);
                if let Some(id) = trackable {
                    if !window.check_and_record(id) {
                        dropped += 1;
                        self.output.skip(len);
                        continue;
                    }
                    self.recorder.push(id);
                }
                forwarded += u64::from(block.dispatches());
            }
            self.output.forward(len);
        }
        drop(window);
        self.output.close();
        self.forwarded += forwarded;
        self.dropped += dropped;
        self.stats.add_body_counts(forwarded, dropped);
    }
}

/// Runs of output shorter than this are copied together rather than sent
/// as slices of their own.
const GATHER_BELOW: usize = 256;

/// The bytes to send, cut from the input chunks themselves.
///
/// The framer hands out every input byte exactly once, in order, so the
/// output needs only each segment's length: the next `len` bytes of input
/// are forwarded or skipped. Forwarded bytes go out as zero-copy slices of
/// the chunks they arrived in, even for a block the framer had to copy to
/// parse, and consecutive ones make a single slice. Tiny runs are gathered
/// into one buffer rather than sent as frames of their own.
#[derive(Debug, Default)]
struct Output {
    /// Input not handed out yet: `input[0][offset..]` comes next. Bounded
    /// by the framer, which hands out at least every block under its limit.
    input: VecDeque<Bytes>,
    offset: usize,
    /// Bytes of `input[0]` forwarded but not yet queued.
    run: Option<Range<usize>>,
    gathered: BytesMut,
    ready: VecDeque<Bytes>,
}

impl Output {
    fn push_input(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.input.push_back(chunk);
        }
    }

    /// Forwards the next `len` bytes of input.
    fn forward(&mut self, len: usize) {
        self.consume(len, true);
    }

    /// Drops the next `len` bytes of input.
    fn skip(&mut self, len: usize) {
        self.close_run();
        self.consume(len, false);
    }

    fn consume(&mut self, mut len: usize, forward: bool) {
        while len > 0 {
            let Some(front_len) = self.input.front().map(Bytes::len) else {
                return;
            };
            let take = len.min(front_len - self.offset);
            let taken = self.offset..self.offset + take;
            if forward {
                match &mut self.run {
                    Some(run) if run.end == taken.start => run.end = taken.end,
                    _ => {
                        self.close_run();
                        self.run = Some(taken);
                    }
                }
            }
            self.offset += take;
            len -= take;
            if self.offset == front_len {
                self.close_run();
                self.input.pop_front();
                self.offset = 0;
            }
        }
    }

    /// Queues everything forwarded so far.
    fn close(&mut self) {
        self.close_run();
        if !self.gathered.is_empty() {
            // A buffer of its own each time: splitting one would share it,
            // and every later copy would then need a new one anyway.
            self.ready
                .push_back(std::mem::take(&mut self.gathered).freeze());
        }
    }

    fn close_run(&mut self) {
        let (Some(run), Some(chunk)) = (self.run.take(), self.input.front()) else {
            return;
        };
        if run.len() >= GATHER_BELOW {
            let slice = chunk.slice(run);
            self.close();
            self.ready.push_back(slice);
            return;
        }
        self.gathered.extend_from_slice(&chunk[run]);
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.run.is_none() && self.gathered.is_empty()
    }
}

/// Hands recorded ids to the store in batches, and the last batch when the
/// stream ends or the client goes away.
pub(crate) struct Recorder {
    key: Option<StreamKey>,
    /// Where batches go; `None` when nothing keeps them.
    sink: Option<Arc<dyn RecordSink>>,
    batch: IdBatch,
    stats: Stats,
}

impl Recorder {
    /// A recorder for a stream of `store`.
    pub(crate) fn to_store<T: TrackerStore>(store: Arc<T>, key: StreamKey, stats: Stats) -> Self {
        // A store that keeps no ids gets no batches to build.
        let sink = store.persists_ids().then_some(store as Arc<dyn RecordSink>);
        Self {
            key: Some(key),
            sink,
            batch: IdBatch::new(),
            stats,
        }
    }

    /// A recorder for a per-response window that nothing keeps.
    pub(crate) fn nowhere(stats: Stats) -> Self {
        Self {
            key: None,
            sink: None,
            batch: IdBatch::new(),
            stats,
        }
    }

    fn push(&mut self, id: &[u8]) {
        if self.sink.is_none() {
            return;
        }
        self.batch.push(&String::from_utf8_lossy(id));
        if self.batch.len() >= RECORD_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let (Some(sink), Some(key)) = (&self.sink, &self.key) else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let recorded = sink.record(key, &self.batch);
        let ids = self.batch.len();
        self.batch.clear();
        if let Err(error) = recorded {
            self.stats.store_error();
            tracing::warn!(%key, %error, ids, "could not record forwarded ids");
        }
    }

    fn key_for_logs(&self) -> String {
        self.key
            .as_ref()
            .map_or_else(|| "(unscoped)".to_owned(), StreamKey::to_string)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("key", &self.key)
            .field("batch", &self.batch.len())
            .finish()
    }
}

/// The one store method the body needs, object safe so that the body is not
/// generic over the store.
trait RecordSink: Send + Sync {
    fn record(&self, key: &StreamKey, ids: &IdBatch) -> Result<(), StoreError>;
}

impl<T: TrackerStore> RecordSink for T {
    fn record(&self, key: &StreamKey, ids: &IdBatch) -> Result<(), StoreError> {
        TrackerStore::record(self, key, ids)
    }
}
