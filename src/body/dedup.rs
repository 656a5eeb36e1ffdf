//! The deduplicating state of an event-stream body.

use bytes::Bytes;
use http::HeaderMap;

use super::extras::{Extras, Stream, gap_event};
use super::output::Output;
use super::recorder::Recorder;
use crate::framer::{Framer, Segment};
use crate::stamp::Stamper;
use crate::stats::Stats;
use crate::tracker::{Replay, Tracker};

/// The deduplicating state of an event-stream body.
#[derive(Debug)]
pub(crate) struct Dedup {
    framer: Framer,
    tracker: Tracker,
    /// The tracker's generation when this stream opened: while the tracker
    /// is still at it, this stream records its ids.
    generation: u64,
    pub(super) recorder: Recorder,
    pub(super) output: Output,
    max_id_len: usize,
    /// What only some streams do, kept off the common path.
    extras: Option<Box<Extras>>,
    stats: Stats,
    forwarded: u64,
    dropped: u64,
    pub(super) trailers: Option<HeaderMap>,
    ending: bool,
    pub(super) ended: bool,
    /// Carries the stream's key to every event logged for it.
    span: tracing::Span,
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
                output.replay(blocks);
                stats.add_replayed(events);
                span.in_scope(|| tracing::debug!(events, "replaying from the history"));
                events > 0
            }
            Replay::Gap => {
                let cursor = start.cursor.unwrap_or_default();
                output.send(gap_event(&cursor));
                stats.gap();
                span.in_scope(|| tracing::debug!(%cursor, "cursor not in the history: gap"));
                true
            }
        };
        let local_history = tracker.lock().has_history();
        let stamper = start.stamp_epoch.map(Stamper::new);
        let extras = (local_history || recorder.wants_blocks() || stamper.is_some() || prefixed)
            .then(|| Box::new(Extras::new(local_history, stamper, prefixed)));
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

    pub(super) fn push(&mut self, chunk: Bytes) {
        self.output.push_input(chunk.clone());
        self.framer.push(chunk);
        self.drain();
    }

    pub(super) fn end(&mut self) {
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
                    let mut stream =
                        Stream::new(&mut window, &mut self.output, &mut self.recorder, current);
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
                        extras.passed_start();
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
                    let mut stream =
                        Stream::new(&mut window, &mut self.output, &mut self.recorder, current);
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
