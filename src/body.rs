//! [`SseResumeBody`]: the response body, deduplicated as it streams.

use std::borrow::Cow;
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

use crate::framer::{Block, EventId, Framer, Segment};
use crate::stamp::Stamper;
use crate::stats::Stats;
use crate::store::{IdBatch, StoreError, StreamKey, TrackerStore};
use crate::tracker::{Replay, Tracker, Window};

/// The type of the event that tells a client its `Last-Event-ID` is not in
/// the replay history: `event: sse-resume-gap`, with the cursor as data.
pub const GAP_EVENT: &str = "sse-resume-gap";

/// Ids recorded since the last hand-over to the store, at most this many.
const RECORD_BATCH: usize = 64;
/// Bytes of ids and blocks recorded since the last hand-over, at most about
/// this many.
const RECORD_BATCH_BYTES: usize = 64 * 1024;

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
    /// The tracker's generation when this stream opened: while the tracker
    /// is still at it, this stream records its ids.
    generation: u64,
    recorder: Recorder,
    output: Output,
    max_id_len: usize,
    /// What only some streams do, kept off the common path.
    extras: Option<Box<Extras>>,
    stats: Stats,
    forwarded: u64,
    dropped: u64,
    trailers: Option<HeaderMap>,
    ending: bool,
    ended: bool,
    /// Carries the stream's key to every event logged for it.
    span: tracing::Span,
}

/// The stream's work beyond deduplication: a replay history, stamped ids,
/// and a stream that does not start with the upstream's first byte.
#[derive(Debug)]
struct Extras {
    /// Whether the tracker keeps a history in process.
    local_history: bool,
    stamper: Option<Stamper>,
    /// Whether something went out before the upstream's first byte, so
    /// that a byte order mark there is no longer at the start.
    prefixed: bool,
    /// Whether the upstream's first segment is still to come.
    at_start: bool,
    /// A stamped block for the history, its line and the block.
    scratch: Vec<u8>,
}

/// How a stream starts, decided when its request opened.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) generation: u64,
    pub(crate) replay: Replay,
    /// The client's cursor, for the gap event.
    pub(crate) cursor: Option<String>,
    /// Where stamped ids start, when the layer stamps them.
    pub(crate) stamp_epoch: Option<u64>,
}

/// The byte order mark an event stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Dedup {
    pub(crate) fn new(
        tracker: Tracker,
        recorder: Recorder,
        max_block_len: usize,
        max_id_len: usize,
        stats: Stats,
        start: Start,
    ) -> Self {
        let span = tracing::debug_span!("sse_resume", key = %recorder.key_for_logs());
        let mut output = Output::default();
        let prefixed = match start.replay {
            Replay::Off => false,
            Replay::Blocks(blocks) => {
                let events = blocks.len() as u64;
                output.replay.extend(blocks);
                stats.add_replayed(events);
                span.in_scope(|| tracing::debug!(events, "replaying from the history"));
                events > 0
            }
            Replay::Gap => {
                let cursor = start.cursor.unwrap_or_default();
                output.ready.push_back(gap_event(&cursor));
                stats.gap();
                span.in_scope(|| tracing::debug!(%cursor, "cursor not in the history: gap"));
                true
            }
        };
        let local_history = tracker.lock().has_history();
        let stamper = start.stamp_epoch.map(Stamper::new);
        let extras = (local_history || recorder.wants_blocks() || stamper.is_some() || prefixed)
            .then(|| {
                Box::new(Extras {
                    local_history,
                    stamper,
                    prefixed,
                    at_start: true,
                    scratch: Vec::new(),
                })
            });
        Self {
            framer: Framer::with_max_block_len(max_block_len),
            tracker,
            generation: start.generation,
            output,
            max_id_len,
            extras,
            stats,
            forwarded: 0,
            dropped: 0,
            trailers: None,
            ending: false,
            ended: false,
            span,
            recorder,
        }
    }

    fn push(&mut self, chunk: Bytes) {
        self.output.push_input(chunk.clone());
        self.framer.push(chunk);
        self.drain();
    }

    fn end(&mut self) {
        self.ending = true;
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
        // A client cursor applied since this stream opened means its client
        // may have reconnected: what this stream forwards now may never
        // arrive, so it checks ids but records none.
        let current = window.generation() == self.generation;
        while let Some(segment) = self.framer.next_segment() {
            let len = segment.raw().len();
            let block = match &segment {
                Segment::Block(block) => block,
                Segment::Passthrough(_) if self.extras.is_none() => {
                    self.output.forward(len);
                    continue;
                }
                Segment::Passthrough(_) => {
                    let mut stream = Stream {
                        window: &mut window,
                        output: &mut self.output,
                        recorder: &mut self.recorder,
                        current,
                    };
                    stream.pass_through(&segment, self.ending, self.extras.as_deref_mut());
                    continue;
                }
            };
            let trackable = block.id_bytes().filter(|id| id.len() <= self.max_id_len);
            if let Some(id) = trackable {
                let new = if current {
                    window.check_and_record(id)
                } else {
                    !window.contains(id)
                };
                if !new {
                    dropped += 1;
                    self.output.skip(len);
                    if let Some(extras) = self.extras.as_deref_mut() {
                        extras.at_start = false;
                    }
                    continue;
                }
                if current {
                    self.recorder.push(id);
                }
            }
            forwarded += u64::from(block.dispatches());
            match self.extras.as_deref_mut() {
                None => self.output.forward(len),
                Some(extras) => {
                    let mut stream = Stream {
                        window: &mut window,
                        output: &mut self.output,
                        recorder: &mut self.recorder,
                        current,
                    };
                    stream.forward_block(block, trackable.is_some(), extras);
                }
            }
        }
        drop(window);
        self.output.close();
        self.forwarded += forwarded;
        self.dropped += dropped;
        self.stats.add_body_counts(forwarded, dropped);
    }
}

/// What forwarding a segment with [`Extras`] touches, borrowed apart from
/// the framer that lends the segment.
struct Stream<'a> {
    window: &'a mut Window,
    output: &'a mut Output,
    recorder: &'a mut Recorder,
    current: bool,
}

impl Stream<'_> {
    /// Forwards a segment outside any block: a piece of a block over the
    /// length limit, or the unterminated tail.
    fn pass_through(&mut self, segment: &Segment<'_>, ending: bool, extras: Option<&mut Extras>) {
        let len = segment.raw().len();
        let bom = extras.map_or(0, |extras| self.forward_bom(segment.raw(), extras));
        self.output.forward(len - bom);
        // A piece of a block too long to keep: no replay may skip it. The
        // tail at the end never dispatched, so it is no event to keep.
        if !ending && self.current {
            self.window.forget_history();
            self.recorder.forget_history();
        }
    }

    /// Forwards a block that is not a duplicate: its bytes, with a stamped
    /// id when it needs one, and keeps it in the history.
    fn forward_block(&mut self, block: &Block<'_>, trackable: bool, extras: &mut Extras) {
        let raw = block.raw();
        let bom = self.forward_bom(raw, extras);
        let body = &raw[bom..];
        let stamped = match &mut extras.stamper {
            Some(stamper) if block.dispatches() && block.id() == EventId::Absent => {
                let line = stamper.next_line();
                self.output.insert(line.as_bytes());
                Some(stamper.last_id())
            }
            _ => None,
        };
        self.output.forward(body.len());
        let keeps_history = extras.local_history || self.recorder.wants_blocks();
        if !keeps_history || !self.current {
            return;
        }
        let id = match (block.id(), stamped) {
            (_, Some(stamped)) => Some(Cow::Borrowed(stamped)),
            (EventId::Value(id), None) if trackable => Some(id),
            (EventId::Value(_), None) => {
                // An id too long to keep: a cursor could not find it.
                self.window.forget_history();
                self.recorder.forget_history();
                return;
            }
            (EventId::Absent | EventId::Reset, None) if !block.dispatches() => return,
            (EventId::Absent | EventId::Reset, None) => None,
        };
        let kept: &[u8] = match stamped {
            Some(id) => {
                // The block as it went out: the stamped line, then its own.
                let scratch = &mut extras.scratch;
                scratch.clear();
                scratch.extend_from_slice(b"id: ");
                scratch.extend_from_slice(id.as_bytes());
                scratch.push(b'\n');
                scratch.extend_from_slice(body);
                scratch
            }
            None => body,
        };
        if extras.local_history {
            self.window.record_block(id.as_deref(), kept);
        }
        self.recorder.push_block(id.as_deref(), kept);
    }

    /// Forwards the byte order mark the stream starts with, if any, or
    /// drops it when something went out before it. Returns its length.
    fn forward_bom(&mut self, raw: &[u8], extras: &mut Extras) -> usize {
        if !std::mem::take(&mut extras.at_start) || !raw.starts_with(BOM) {
            return 0;
        }
        if extras.prefixed {
            self.output.skip(BOM.len());
        } else {
            self.output.forward(BOM.len());
        }
        BOM.len()
    }
}

/// The event that tells a client its cursor is not in the history: the
/// events after it may be missing. It has no id, so the client keeps its
/// cursor.
fn gap_event(cursor: &str) -> Bytes {
    Bytes::from(format!("event: {GAP_EVENT}\ndata: {cursor}\n\n"))
}

/// Runs of output shorter than this are copied together rather than sent
/// as slices of their own.
const GATHER_BELOW: usize = 256;
/// Replayed blocks are gathered into frames of at most this many bytes
/// (or one block, when larger).
const REPLAY_FRAME: usize = 16 * 1024;

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
    /// Blocks from the replay history, to go out before anything else.
    replay: VecDeque<Bytes>,
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

    /// Sends `bytes` that are not in the input, after what went before.
    fn insert(&mut self, bytes: &[u8]) {
        self.close_run();
        self.gathered.extend_from_slice(bytes);
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
        self.pop_replay().or_else(|| self.ready.pop_front())
    }

    /// The next replayed blocks, gathered into one frame as they are asked
    /// for: a frame costs a consumer a write, and the first one should not
    /// wait for the whole replay.
    fn pop_replay(&mut self) -> Option<Bytes> {
        let first = self.replay.pop_front()?;
        let next_len = self.replay.front().map_or(0, Bytes::len);
        if first.len() + next_len > REPLAY_FRAME {
            return Some(first);
        }
        let mut frame = BytesMut::with_capacity(REPLAY_FRAME);
        frame.extend_from_slice(&first);
        while let Some(block) = self.replay.front() {
            if frame.len() + block.len() > REPLAY_FRAME {
                break;
            }
            frame.extend_from_slice(block);
            self.replay.pop_front();
        }
        Some(frame.freeze())
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty()
            && self.replay.is_empty()
            && self.run.is_none()
            && self.gathered.is_empty()
    }
}

/// Hands recorded ids to the store in batches, and the last batch when the
/// stream ends or the client goes away.
pub(crate) struct Recorder {
    key: Option<StreamKey>,
    /// Where batches go; `None` when nothing keeps them.
    sink: Option<Arc<dyn RecordSink>>,
    /// Whether batches carry the blocks, for the store's replay history.
    wants_blocks: bool,
    batch: IdBatch,
    stats: Stats,
}

impl Recorder {
    /// A recorder for a stream of `store`.
    pub(crate) fn to_store<T: TrackerStore>(store: Arc<T>, key: StreamKey, stats: Stats) -> Self {
        // A store that keeps no ids gets no batches to build.
        let wants_blocks = store.persists_blocks();
        let sink = store.persists_ids().then_some(store as Arc<dyn RecordSink>);
        Self {
            key: Some(key),
            wants_blocks: wants_blocks && sink.is_some(),
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
            wants_blocks: false,
            batch: IdBatch::new(),
            stats,
        }
    }

    fn push(&mut self, id: &[u8]) {
        if self.sink.is_none() {
            return;
        }
        self.batch.push(&String::from_utf8_lossy(id));
        self.flush_if_full();
    }

    /// Whether the store keeps the blocks of a replay history itself.
    fn wants_blocks(&self) -> bool {
        self.wants_blocks
    }

    fn push_block(&mut self, id: Option<&str>, block: &[u8]) {
        if self.wants_blocks {
            self.batch.push_block(id, block);
            self.flush_if_full();
        }
    }

    fn forget_history(&mut self) {
        if self.wants_blocks {
            self.batch.forget_history();
        }
    }

    fn flush_if_full(&mut self) {
        let batch = &self.batch;
        if batch.len() >= RECORD_BATCH
            || batch.blocks().len() >= RECORD_BATCH
            || batch.byte_len() >= RECORD_BATCH_BYTES
        {
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
