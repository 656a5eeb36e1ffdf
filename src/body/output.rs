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
/// into one buffer rather than sent as frames of their own, unless one is
/// all there is to send.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// Input not handed out yet: `input[0][offset..]` comes next. Bounded
    /// by the framer, which hands out at least every block under its limit.
    input: Queue<Bytes>,
    offset: usize,
    /// Bytes of `input[0]` forwarded but not yet queued.
    run: Option<Range<usize>>,
    /// A tiny run, not copied yet: it goes out as it is when no other joins
    /// it (one small event, as a quiet stream sends them), else it is the
    /// start of `gathered`.
    lone: Option<Bytes>,
    gathered: BytesMut,
    ready: Queue<Bytes>,
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

    /// Forwards `chunk` whole, as it came: a chunk that never went into the
    /// input, forwarded alone between two closes of the output, so that
    /// no tiny run comes before or after it to be gathered with it.
    pub(super) fn forward_chunk(&mut self, chunk: Bytes) {
        debug_assert!(self.input.is_empty() && self.run.is_none());
        debug_assert!(self.lone.is_none() && self.gathered.is_empty());
        if !chunk.is_empty() {
            self.ready.push_back(chunk);
        }
    }

    /// Forwards the next `len` bytes of input.
    pub(super) fn forward(&mut self, len: usize) {
        self.consume(len, true);
    }

    /// Sends `bytes` that are not in the input, after what went before.
    pub(super) fn insert(&mut self, bytes: &[u8]) {
        self.close_run();
        self.gather(bytes);
    }

    /// Copies `bytes` into the frame being gathered.
    fn gather(&mut self, bytes: &[u8]) {
        if let Some(lone) = self.lone.take() {
            self.gathered.extend_from_slice(&lone);
        }
        self.gathered.extend_from_slice(bytes);
    }

    /// Drops the next `len` bytes of input.
    pub(super) fn skip(&mut self, len: usize) {
        self.close_run();
        self.consume(len, false);
    }

    // Inlined so that `forward` and `skip` each get a copy without the
    // other's branch: forwarding is the per-event path.
    #[inline(always)]
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
                // Done with the chunk: forwarded whole, it goes out as it
                // came, with no slice to count a reference for.
                let chunk = self.input.pop_front().unwrap_or_default();
                self.offset = 0;
                if let Some(run) = self.run.take() {
                    let whole = run.len() == chunk.len();
                    self.queue(if whole { chunk } else { chunk.slice(run) });
                }
            }
        }
    }

    /// Queues everything forwarded so far.
    // Inlined: after a chunk forwarded whole, as most are, nothing is
    // left open.
    #[inline]
    pub(super) fn close(&mut self) {
        if self.run.is_some() || self.lone.is_some() || !self.gathered.is_empty() {
            self.close_open();
        }
    }

    fn close_open(&mut self) {
        self.close_run();
        if let Some(lone) = self.lone.take() {
            // Nothing was gathered after it.
            self.ready.push_back(lone);
        } else if !self.gathered.is_empty() {
            // A buffer of its own each time: splitting one would share it,
            // and every later copy would then need a new one anyway.
            self.ready
                .push_back(std::mem::take(&mut self.gathered).freeze());
        }
    }

    fn close_run(&mut self) {
        if let (Some(run), Some(chunk)) = (self.run.take(), self.input.front()) {
            let run = chunk.slice(run);
            self.queue(run);
        }
    }

    /// Queues `run`, bytes forwarded in one piece: as they are when large
    /// or alone, else copied together with the tiny runs around them.
    fn queue(&mut self, run: Bytes) {
        if run.len() >= GATHER_BELOW {
            self.close();
            self.ready.push_back(run);
        } else if self.lone.is_none() && self.gathered.is_empty() {
            self.lone = Some(run);
        } else {
            if let Some(lone) = self.lone.take() {
                self.gathered.extend_from_slice(&lone);
            }
            self.gathered.extend_from_slice(&run);
        }
    }

    // Inlined: a body asks several times per event, mostly for nothing.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<Bytes> {
        if self.replay.is_empty() {
            return self.ready.pop_front();
        }
        self.pop_replay()
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
        let mut pending: Vec<Bytes> = self.input.drain().collect();
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
            && self.lone.is_none()
            && self.gathered.is_empty()
    }
}

/// A first-in, first-out queue that keeps its oldest item inline.
///
/// A body mostly has one chunk in and one frame out at a time: a
/// `VecDeque` would allocate for that one, and keep the allocation for as
/// long as the stream lives, however quiet. This allocates only for a
/// second item.
#[derive(Debug)]
struct Queue<T> {
    /// The oldest item, unless it was taken while `rest` held more.
    front: Option<T>,
    rest: VecDeque<T>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            front: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> Queue<T> {
    fn push_back(&mut self, item: T) {
        if self.front.is_none() && self.rest.is_empty() {
            self.front = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    fn pop_front(&mut self) -> Option<T> {
        self.front.take().or_else(|| self.rest.pop_front())
    }

    fn front(&self) -> Option<&T> {
        self.front.as_ref().or_else(|| self.rest.front())
    }

    fn is_empty(&self) -> bool {
        self.front.is_none() && self.rest.is_empty()
    }

    fn clear(&mut self) {
        self.front = None;
        self.rest.clear();
    }

    /// Takes every item, oldest first.
    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.front.take().into_iter().chain(self.rest.drain(..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_keeps_its_order_whichever_end_its_items_are_kept_at() {
        let mut queue = Queue::default();
        queue.push_back(1);
        queue.push_back(2);
        assert_eq!(queue.front(), Some(&1));
        assert_eq!(queue.pop_front(), Some(1));
        // The oldest is in `rest` now, and what comes after goes behind it.
        queue.push_back(3);
        assert_eq!(queue.front(), Some(&2));
        assert_eq!(queue.pop_front(), Some(2));
        queue.push_back(4);
        assert_eq!(queue.drain().collect::<Vec<_>>(), [3, 4]);
        assert!(queue.is_empty());
        queue.clear();
        assert_eq!(queue.pop_front(), None);
        let mut one = Queue::default();
        one.push_back(5);
        assert_eq!(one.rest.capacity(), 0, "one item allocates nothing");
    }

    #[test]
    fn one_short_run_goes_out_as_a_slice_of_its_chunk_and_more_are_gathered() {
        let chunk = Bytes::from_static(b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
        let mut output = Output::default();
        output.push_input(chunk.clone());
        output.forward(15);
        output.close();
        let sent = output.pop().expect("the first event");
        assert_eq!(sent, chunk.slice(..15));
        assert_eq!(sent.as_ptr(), chunk.as_ptr(), "not copied");
        output.skip(15);
        output.close();
        assert!(output.is_empty());

        let mut output = Output::default();
        output.push_input(chunk.clone());
        output.insert(b": before\n\n");
        output.forward(15);
        output.skip(15);
        output.close();
        assert_eq!(
            output.pop().expect("one frame"),
            ": before\n\nid: 1\ndata: a\n\n"
        );
        assert_eq!(output.pop(), None);

        let mut output = Output::default();
        output.push_input(Bytes::from_static(b"ab"));
        output.push_input(Bytes::from_static(b"cd"));
        output.forward(4);
        output.close();
        assert_eq!(output.pop().expect("gathered"), "abcd");
        assert!(output.is_empty());
    }
}
