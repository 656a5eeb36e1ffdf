//! The bytes a body sends, cut from the input chunks themselves.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

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
pub(super) struct Output {
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
    /// Sends `blocks`, replayed from the history, before anything else.
    pub(super) fn replay(&mut self, blocks: Vec<Bytes>) {
        self.replay.extend(blocks);
    }

    /// Sends `bytes` before anything still to come from the input.
    pub(super) fn send(&mut self, bytes: Bytes) {
        self.close();
        self.ready.push_back(bytes);
    }

    pub(super) fn push_input(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.input.push_back(chunk);
        }
    }

    /// Forwards the next `len` bytes of input.
    pub(super) fn forward(&mut self, len: usize) {
        self.consume(len, true);
    }

    /// Sends `bytes` that are not in the input, after what went before.
    pub(super) fn insert(&mut self, bytes: &[u8]) {
        self.close_run();
        self.gathered.extend_from_slice(bytes);
    }

    /// Drops the next `len` bytes of input.
    pub(super) fn skip(&mut self, len: usize) {
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
    pub(super) fn close(&mut self) {
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

    pub(super) fn pop(&mut self) -> Option<Bytes> {
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

    /// Drops everything ready to send: nobody reads it.
    pub(super) fn discard(&mut self) {
        self.close();
        self.ready.clear();
        self.replay.clear();
    }

    /// Takes the input not handed out yet, oldest first.
    pub(super) fn take_pending(&mut self) -> Vec<Bytes> {
        self.close_run();
        let mut pending: Vec<Bytes> = self.input.drain(..).collect();
        if let Some(first) = pending.first_mut() {
            *first = first.slice(self.offset..);
        }
        self.offset = 0;
        pending
    }

    /// Whether input is waiting for the rest of its block.
    pub(super) fn has_undecided(&self) -> bool {
        !self.input.is_empty()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ready.is_empty()
            && self.replay.is_empty()
            && self.run.is_none()
            && self.gathered.is_empty()
    }
}
