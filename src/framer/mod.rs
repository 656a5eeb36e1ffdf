//! Sans-IO framing of an event stream into blocks.
//!
//! A [`Framer`] is fed the chunks of a `text/event-stream` body as they
//! arrive and hands out [`Segment`]s: mostly [`Block`]s, the lines of one
//! event up to and including the blank line that dispatches it. It knows
//! nothing of HTTP, streams or stores, so a proxy can use it on its own.
//!
//! Every byte fed in comes out exactly once, in order: concatenating the raw
//! bytes of every segment gives back the input. A segment borrows its bytes
//! from the framer: a block that lies inside one chunk is a view of that
//! chunk, which [`Raw::to_bytes`] turns into a zero-copy slice; a block that
//! spans chunks is copied once into a reused buffer.
//!
//! Lines are interpreted by the WHATWG rules for event streams: CR, LF and
//! CRLF line ends (also split across chunks), a leading BOM ignored, one
//! space stripped after the colon, an `id` containing U+0000 ignored, `retry`
//! only when it is all ASCII digits. Invalid UTF-8 never panics.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use tower_sse_resume::framer::{EventId, Framer, Segment};
//!
//! let mut framer = Framer::new();
//! framer.push(Bytes::from_static(b"id: 1\ndata: hel"));
//! assert!(framer.next_segment().is_none()); // the block is not complete yet
//!
//! framer.push(Bytes::from_static(b"lo\n\n: keep-alive\n\n"));
//! let Some(Segment::Block(block)) = framer.next_segment() else { panic!() };
//! assert_eq!(&block.raw()[..], b"id: 1\ndata: hello\n\n");
//! assert_eq!(block.id(), EventId::Value("1".into()));
//! assert!(block.dispatches());
//! let kept: Bytes = block.raw().to_bytes(); // a block to keep past the next call
//!
//! let Some(Segment::Block(block)) = framer.next_segment() else { panic!() };
//! assert!(block.is_comment_only());
//!
//! framer.push(Bytes::from_static(b"data: cut short"));
//! framer.finish();
//! let Some(Segment::Passthrough(tail)) = framer.next_segment() else { panic!() };
//! assert_eq!(&tail[..], b"data: cut short");
//! assert!(framer.next_segment().is_none());
//! # assert_eq!(kept, "id: 1\ndata: hello\n\n");
//! ```

mod fingerprint;
mod lines;
mod segment;

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use lines::{
    Fields, LineEnds, Scanned, common_block, line_end, line_end_len, parse_field, scan_lines,
};
pub use segment::{Block, EventId, Raw, Segment};

/// The default [`Framer::with_max_block_len`] limit: 1 MiB.
pub const DEFAULT_MAX_BLOCK_LEN: usize = 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits an event stream into blocks, chunk by chunk.
///
/// Feed it with [`push`](Self::push), take segments with
/// [`next_segment`](Self::next_segment) until it returns `None`, and call
/// [`finish`](Self::finish) when the stream ends to take the rest.
///
/// Memory is bounded: the framer copies at most one block (up to the limit)
/// and holds on to the chunks it was given until it has parsed them.
#[derive(Debug)]
pub struct Framer {
    max_block_len: usize,
    /// Chunks pushed but not yet reached by parsing.
    queue: VecDeque<Bytes>,
    /// The chunk being parsed: `chunk[..pos]` is handed out (or copied into
    /// `carry`), `chunk[pos..scan]` holds the parsed lines of the current
    /// block, and parsing goes on at `scan`.
    chunk: Bytes,
    pos: usize,
    scan: usize,
    /// The current block when it spans chunks: its parsed lines, then the
    /// start of an unterminated line. Lines move here from `chunk` as they
    /// are parsed, so `pos` stays equal to `scan` meanwhile.
    carry: Vec<u8>,
    /// Where the unterminated line starts, counted from the block's start.
    line_start: usize,
    /// The fields of the current block, as parsed so far.
    fields: Fields,
    /// The block handed out last lends `fields`, so they are cleared only
    /// when parsing goes on.
    fields_emitted: bool,
    /// What the segment handed out last is.
    emitted: Emitted,
    /// The last line end seen was a CR: an LF right after it is part of it.
    after_cr: bool,
    /// The current block is complete, but its last line end is a CR at the
    /// end of the input so far; it waits for the next byte (or the end) to
    /// know whether an LF belongs to it. This keeps blocks the same however
    /// the stream is chunked.
    held: bool,
    /// No line has been parsed yet, so a leading BOM is still to be ignored.
    at_stream_start: bool,
    /// Whether a block over the limit is going out as pass-through.
    discarding: Discarding,
    ended: bool,
    line_ends: &'static LineEnds,
}

/// Whether the framer is handing out a block over the limit as pass-through
/// bytes, up to the blank line that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discarding {
    No,
    /// Inside the block. `at_line_start` says whether the bytes handed out
    /// so far end with a line end, so that a line end right away is blank.
    Yes {
        at_line_start: bool,
    },
    /// The blank line ended with a CR at the end of the input so far: an LF
    /// right after it still belongs to the block.
    Ending,
    /// The block's blank line is still to go out, after its copied start.
    LineEnd {
        cr_at_end: bool,
    },
}

/// What the segment handed out last is: a block or pass-through bytes, in
/// `chunk` or in `carry`. Kept apart from the range of its bytes so that
/// the hot path passes a range around in registers.
#[derive(Debug, Clone, Copy, Default)]
struct Emitted {
    block: bool,
    copied: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer with the default block length limit of 1 MiB.
    pub fn new() -> Self {
        Self::with_max_block_len(DEFAULT_MAX_BLOCK_LEN)
    }

    /// A framer that hands out blocks longer than `max` bytes as
    /// [`Segment::Passthrough`] pieces instead of parsing them, and picks up
    /// again at the next block. The limit is at least 1 byte and less than
    /// 4 GiB.
    pub fn with_max_block_len(max: usize) -> Self {
        Self {
            max_block_len: max.clamp(1, u32::MAX as usize - 1),
            queue: VecDeque::new(),
            chunk: Bytes::new(),
            pos: 0,
            scan: 0,
            carry: Vec::new(),
            line_start: 0,
            fields: Fields::new(false),
            fields_emitted: false,
            emitted: Emitted::default(),
            after_cr: false,
            held: false,
            at_stream_start: true,
            discarding: Discarding::No,
            ended: false,
            line_ends: LineEnds::get(),
        }
    }

    /// Whether each block's [`fingerprint`](Block::fingerprint) is folded
    /// in while its lines are parsed, which makes asking for it free. Off by
    /// default: the data is then read again when it is asked for.
    pub fn fingerprints(mut self, on: bool) -> Self {
        self.fields.fingerprinting = on;
        self
    }

    /// The block length limit.
    pub fn max_block_len(&self) -> usize {
        self.max_block_len
    }

    /// Feeds the next chunk of the stream.
    ///
    /// Chunks queue up until [`next_segment`](Self::next_segment) reaches
    /// them. Pushing after [`finish`](Self::finish) is ignored.
    pub fn push(&mut self, chunk: Bytes) {
        if self.ended || chunk.is_empty() {
            return;
        }
        if self.chunk.is_empty() && self.queue.is_empty() {
            // Nothing of the last chunk is left (see `let_go`): the common
            // case of one chunk at a time needs no queue.
            self.chunk = chunk;
        } else {
            self.queue.push_back(chunk);
        }
    }

    /// Marks the end of the stream. The segments still to come end with the
    /// unterminated tail, if there is one.
    pub fn finish(&mut self) {
        self.ended = true;
    }

    /// The number of bytes copied into the framer's own buffer: never more
    /// than the block length limit.
    pub fn buffered_len(&self) -> usize {
        self.carry.len()
    }

    /// Takes the next segment, or `None` when more input is needed (or,
    /// after [`finish`](Self::finish), when everything has been handed out).
    #[inline]
    pub fn next_segment(&mut self) -> Option<Segment<'_>> {
        let range = self.next_piece();
        if range.is_empty() {
            return None;
        }
        let raw = if self.emitted.copied {
            Raw {
                slice: &self.carry[range],
                chunk: None,
            }
        } else {
            Raw {
                slice: &self.chunk[range.clone()],
                chunk: Some((&self.chunk, range.start)),
            }
        };
        Some(match self.emitted.block {
            true => Segment::Block(Block {
                raw,
                fields: &self.fields,
            }),
            false => Segment::Passthrough(raw),
        })
    }

    /// Whether the framer stands between two blocks with nothing of its
    /// input left: the next byte pushed starts a block, and would be the
    /// first of its chunk to parse. Then the blocks a chunk holds whole
    /// can be taken from it where it is, with
    /// [`whole_block`](Self::whole_block), before the rest is pushed.
    #[inline]
    pub(crate) fn is_between_blocks(&self) -> bool {
        // A chunk is let go once all of it is handed out.
        self.chunk.is_empty()
            && self.queue.is_empty()
            && self.carry.is_empty()
            && !self.after_cr
            && !self.held
            && !self.at_stream_start
            && self.discarding == Discarding::No
            && !self.ended
    }

    /// The rest of the chunk being parsed, when the framer stands between
    /// two blocks in the middle of it with nothing else to parse: given
    /// back, the framer then stands [between blocks](Self::is_between_blocks),
    /// and the blocks the rest holds whole can be taken from it where they
    /// are, with [`whole_block`](Self::whole_block), as from a chunk just
    /// come: once the block an earlier chunk began is done, the blocks of
    /// a large chunk skip the framer's bookkeeping for each.
    pub(crate) fn take_rest(&mut self) -> Option<Bytes> {
        if std::mem::take(&mut self.emitted.copied) {
            self.release_carry();
        }
        let mid_chunk = self.pos == self.scan && self.pos < self.chunk.len();
        let between_blocks = self.queue.is_empty()
            && self.carry.is_empty()
            && !self.after_cr
            && !self.held
            && !self.at_stream_start
            && self.discarding == Discarding::No
            && !self.ended;
        if !(mid_chunk && between_blocks) {
            return None;
        }
        let rest = self.chunk.slice(self.pos..);
        self.chunk = Bytes::new();
        self.pos = 0;
        self.scan = 0;
        debug_assert!(self.is_between_blocks());
        Some(rest)
    }

    /// The block at `chunk[at..]`, when the chunk holds the whole of it:
    /// for a framer [between blocks](Self::is_between_blocks), `at` being
    /// where its input starts or the end of the block taken before. It is
    /// the block that [`push`](Self::push) and
    /// [`next_segment`](Self::next_segment) would hand out, parsed the
    /// same way, but the chunk is not taken: a body decides the common
    /// chunk of one event, or a few, with none of the framer's
    /// bookkeeping. `None` leaves the block to `push`: one that the chunk
    /// cuts short, one over the limit, or one whose last line ends in a CR
    /// at the chunk's very end, which an LF in the next chunk may complete.
    // Inlined into the body's one caller, which asks once per event: the
    // block then stays in registers.
    #[inline(always)]
    pub(crate) fn whole_block<'a>(&'a mut self, chunk: &'a Bytes, at: usize) -> Option<Block<'a>> {
        debug_assert!(self.is_between_blocks());
        let fingerprinting = self.fields.fingerprinting;
        // Lent out, or partly parsed: cleared before parsing goes on.
        self.fields_emitted = true;
        let rest = &chunk[at..];
        let common = common_block(fingerprinting, self.line_ends, rest, self.max_block_len);
        let len = match common {
            Some((len, fields)) => {
                self.fields = fields;
                len
            }
            None => {
                self.fields = Fields::new(fingerprinting);
                let scanned = scan_lines(
                    &mut self.fields,
                    self.line_ends,
                    rest,
                    0,
                    self.max_block_len,
                );
                let Scanned::Block { len } = scanned else {
                    return None;
                };
                len
            }
        };
        let raw = Raw {
            slice: &rest[..len],
            chunk: Some((chunk, at)),
        };
        Some(Block {
            raw,
            fields: &self.fields,
        })
    }

    /// Empties `carry` once the block copied there has been handed out. A
    /// buffer grown for a rare long block is given back.
    fn release_carry(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.carry.capacity() > KEEP {
            self.carry = Vec::new();
        } else {
            self.carry.clear();
        }
    }

    /// Finds the next segment and returns the range of its bytes, empty
    /// when there is none yet.
    fn next_piece(&mut self) -> Range<usize> {
        if std::mem::take(&mut self.fields_emitted) {
            self.fields = Fields::new(self.fields.fingerprinting);
        }
        if std::mem::take(&mut self.emitted.copied) {
            self.release_carry();
        }
        loop {
            if let Discarding::LineEnd { cr_at_end } = self.discarding {
                self.discarding = if cr_at_end {
                    Discarding::Ending
                } else {
                    Discarding::No
                };
                return self.emit_passthrough();
            }
            if self.scan == self.chunk.len() {
                // Pass-through bytes are never copied to wait for the next chunk.
                if self.discarding != Discarding::No && self.pos < self.scan {
                    return self.emit_passthrough();
                }
                if !self.next_chunk() {
                    return self.at_end_of_input();
                }
            }
            if std::mem::take(&mut self.after_cr) {
                let lf = self.chunk[self.scan] == b'\n';
                match self.discarding {
                    Discarding::No => {
                        if lf && self.block_len() + 1 > self.max_block_len {
                            return self.start_discarding(1, true, false, self.held);
                        }
                        if lf {
                            self.take_line_bytes(1);
                            self.line_start = self.block_len();
                        }
                        if self.held {
                            return self.emit_block();
                        }
                    }
                    Discarding::Yes { .. } | Discarding::LineEnd { .. } => {
                        self.scan += usize::from(lf);
                    }
                    Discarding::Ending => {
                        self.discarding = Discarding::No;
                        if lf {
                            self.scan += 1;
                            return self.emit_passthrough();
                        }
                    }
                }
                if self.scan == self.chunk.len() {
                    continue;
                }
            }
            if let Discarding::Yes { at_line_start } = self.discarding {
                return self.discard(at_line_start);
            }
            let segment = match (self.carry.is_empty(), self.at_stream_start) {
                (true, false) => self.parse_in_chunk(),
                (false, false) => self.parse_spanning(),
                (_, true) => self.parse_line(),
            };
            if !segment.is_empty() {
                return segment;
            }
        }
    }

    /// Moves on to the next queued chunk, first copying what is left of the
    /// current one (the start of a block) into `carry`.
    fn next_chunk(&mut self) -> bool {
        let Some(next) = self.queue.pop_front() else {
            return false;
        };
        if self.pos < self.chunk.len() {
            debug_assert!(self.carry.is_empty());
            self.carry.extend_from_slice(&self.chunk[self.pos..]);
        }
        self.chunk = next;
        self.pos = 0;
        self.scan = 0;
        true
    }

    /// Lets go of the chunk once every byte of it is handed out.
    ///
    /// Done as soon as the input runs dry, not when the next chunk comes: a
    /// chunk is most often a slice of the connection's read buffer, and one
    /// held on to while the stream is quiet keeps that whole buffer (8 KiB
    /// in hyper) from being reused, so that the connection allocates another
    /// for its next read. A chunk that ends with the start of a block is
    /// kept: the body's output holds it too, for the block's bytes.
    fn let_go(&mut self) {
        if self.pos == self.chunk.len() {
            self.chunk = Bytes::new();
            self.pos = 0;
            self.scan = 0;
        }
    }

    /// Parses the lines of a block that starts in the chunk, up to the end
    /// of the block or of the chunk. Returns the block when it is complete,
    /// or an empty range. A line that ends in a CR at the end of the chunk,
    /// or that would take the block over the limit, is left to
    /// [`parse_line`](Self::parse_line).
    fn parse_in_chunk(&mut self) -> Range<usize> {
        let from = self.scan;
        let base = from - self.pos;
        let budget = self.max_block_len.saturating_sub(base);
        let rest = &self.chunk[from..];
        if base == 0 {
            debug_assert_eq!(self.fields, Fields::new(self.fields.fingerprinting));
            let fingerprinting = self.fields.fingerprinting;
            if let Some((len, fields)) = common_block(fingerprinting, self.line_ends, rest, budget)
            {
                self.fields = fields;
                self.scan = from + len;
                return self.emit_block();
            }
        }
        match scan_lines(&mut self.fields, self.line_ends, rest, base, budget) {
            Scanned::Block { len } => {
                self.scan = from + len;
                self.emit_block()
            }
            Scanned::Open { line_start } => {
                // The unterminated line waits for the next chunk.
                self.scan = self.chunk.len();
                self.line_start = base + line_start;
                0..0
            }
            Scanned::Stuck { len } => {
                self.scan = from + len;
                self.line_start = base + len;
                self.parse_line()
            }
        }
    }

    /// Parses the lines of a block begun in an earlier chunk, so copied
    /// into `carry`, up to the end of the block or of the chunk, like
    /// [`parse_in_chunk`](Self::parse_in_chunk). The lines are parsed where
    /// they are and copied once: first the line begun in `carry` and, when
    /// one follows it right away, the blank line; then the lines after it.
    fn parse_spanning(&mut self) -> Range<usize> {
        let max_len = self.max_block_len;
        if self.line_start < self.carry.len() {
            // The line begun in `carry` ends here, or the chunk is all of it.
            let carry = &mut self.carry;
            let rest = &self.chunk[self.scan..];
            let Some(len) = self.line_ends.find(rest) else {
                if carry.len() + rest.len() > max_len {
                    return self.parse_line();
                }
                carry.extend_from_slice(rest);
                self.scan += rest.len();
                self.pos = self.scan;
                return 0..0;
            };
            let Some(n) = line_end_len(&rest[len..]) else {
                return self.parse_line();
            };
            if carry.len() + len + n > max_len {
                return self.parse_line();
            }
            let blank = line_end_len(&rest[len + n..])
                .filter(|&blank| carry.len() + len + n + blank <= max_len);
            let taken = len + n + blank.unwrap_or(0);
            let line_end = carry.len() + len;
            carry.extend_from_slice(&rest[..taken]);
            let start = self.line_start;
            parse_field(&mut self.fields, &carry[start..line_end], start);
            self.scan += taken;
            self.pos = self.scan;
            if blank.is_some() {
                return self.emit_block();
            }
            self.line_start = self.carry.len();
        }
        let from = self.scan;
        let copied = self.carry.len();
        let budget = max_len.saturating_sub(copied);
        let rest = &self.chunk[from..];
        let scanned = scan_lines(&mut self.fields, self.line_ends, rest, copied, budget);
        let end = match scanned {
            Scanned::Block { len } | Scanned::Stuck { len } => from + len,
            Scanned::Open { .. } => self.chunk.len(),
        };
        self.carry.extend_from_slice(&self.chunk[from..end]);
        self.scan = end;
        self.pos = end;
        match scanned {
            Scanned::Block { .. } => self.emit_block(),
            Scanned::Open { line_start } => {
                self.line_start = copied + line_start;
                0..0
            }
            Scanned::Stuck { .. } => {
                self.line_start = self.carry.len();
                self.parse_line()
            }
        }
    }

    /// Parses one line, or stops at the end of the chunk. Returns a segment
    /// when the line completes a block or the block grows over the limit,
    /// or an empty range.
    #[inline(never)]
    fn parse_line(&mut self) -> Range<usize> {
        let rest = &self.chunk[self.scan..];
        // Most blank lines come right after a line end: no need to search.
        let found = match rest[0] {
            b'\n' | b'\r' => Some(0),
            _ => self.line_ends.find(rest),
        };
        let Some(end) = found else {
            // An unterminated line: wait for more, unless it is already too long.
            let rest = rest.len();
            if self.block_len() + rest > self.max_block_len {
                return self.start_discarding(rest, false, false, false);
            }
            self.take_line_bytes(rest);
            return 0..0;
        };
        let (line_end_len, cr_at_end) = line_end(rest, end);
        if self.block_len() + end + line_end_len > self.max_block_len {
            let blank = end == 0 && self.line_start == self.block_len();
            return self.start_discarding(end + line_end_len, true, cr_at_end, blank);
        }
        self.take_line_bytes(end + line_end_len);
        self.after_cr = cr_at_end;
        let mut line = self.line_start..self.block_len() - line_end_len;
        self.line_start = self.block_len();
        if std::mem::take(&mut self.at_stream_start) && self.block()[line.clone()].starts_with(BOM)
        {
            line.start += BOM.len();
            self.fields.bom = true;
        }
        if !line.is_empty() {
            let block = if self.carry.is_empty() {
                &self.chunk[self.pos..]
            } else {
                &self.carry
            };
            parse_field(&mut self.fields, &block[line.clone()], line.start);
            return 0..0;
        }
        if self.after_cr {
            self.held = true;
            return 0..0;
        }
        self.emit_block()
    }

    /// The current block so far.
    fn block(&self) -> &[u8] {
        if self.carry.is_empty() {
            &self.chunk[self.pos..self.scan]
        } else {
            &self.carry
        }
    }

    /// Moves `n` parsed bytes of the chunk into the current block.
    #[inline]
    fn take_line_bytes(&mut self, n: usize) {
        if !self.carry.is_empty() {
            self.carry
                .extend_from_slice(&self.chunk[self.scan..self.scan + n]);
            self.pos += n;
        }
        self.scan += n;
    }

    /// The length of the current block so far, unterminated line included.
    #[inline]
    fn block_len(&self) -> usize {
        if self.carry.is_empty() {
            self.scan - self.pos
        } else {
            self.carry.len()
        }
    }

    fn emit_block(&mut self) -> Range<usize> {
        self.held = false;
        self.line_start = 0;
        self.fields_emitted = true;
        self.emitted.block = true;
        self.take_block()
    }

    /// Hands out the current bytes as pass-through, and starts a block.
    fn emit_passthrough(&mut self) -> Range<usize> {
        self.fields = Fields::new(self.fields.fingerprinting);
        self.line_start = 0;
        self.emitted.block = false;
        self.take_block()
    }

    /// Hands out the current block's bytes and starts the next block.
    #[inline]
    fn take_block(&mut self) -> Range<usize> {
        self.emitted.copied = !self.carry.is_empty();
        if self.emitted.copied {
            // Lent out until the next call, which empties `carry`.
            0..self.carry.len()
        } else {
            let range = self.pos..self.scan;
            self.pos = self.scan;
            range
        }
    }

    /// Gives up on the current block, `n` more bytes of the chunk making it
    /// too long: hands out what it has so far as pass-through, then the rest
    /// of the block, up to its blank line. The `n` bytes end a line when
    /// `ends_line`, and the block when `ends_block`. They are never copied:
    /// a block that was copied goes out first, the `n` bytes after it.
    #[inline(never)]
    fn start_discarding(
        &mut self,
        n: usize,
        ends_line: bool,
        cr_at_end: bool,
        ends_block: bool,
    ) -> Range<usize> {
        self.at_stream_start = false;
        self.held = false;
        // Never copied: the bytes go out as a view of the chunk.
        self.scan += n;
        self.after_cr = cr_at_end;
        let ended = if cr_at_end {
            Discarding::Ending
        } else {
            Discarding::No
        };
        self.discarding = match (ends_block, self.carry.is_empty()) {
            (false, _) => Discarding::Yes {
                at_line_start: ends_line,
            },
            (true, true) => ended,
            // The copied start goes out first, the line end after it.
            (true, false) => Discarding::LineEnd { cr_at_end },
        };
        self.emit_passthrough()
    }

    /// Scans the chunk for the blank line that ends an oversized block.
    /// Returns the piece up to it, or the rest of the chunk when it has none.
    #[inline(never)]
    fn discard(&mut self, mut at_line_start: bool) -> Range<usize> {
        while let Some(end) = memchr::memchr2(b'\n', b'\r', &self.chunk[self.scan..]) {
            let (line_end_len, cr_at_end) = line_end(&self.chunk[self.scan..], end);
            self.after_cr = cr_at_end;
            self.scan += end + line_end_len;
            if at_line_start && end == 0 {
                self.discarding = if cr_at_end {
                    Discarding::Ending
                } else {
                    Discarding::No
                };
                return self.emit_passthrough();
            }
            at_line_start = true;
        }
        let unterminated = self.scan < self.chunk.len();
        self.discarding = Discarding::Yes {
            at_line_start: at_line_start && !unterminated,
        };
        self.scan = self.chunk.len();
        self.emit_passthrough()
    }

    /// All queued input is parsed: hand out what the end of the stream
    /// completes, or ask for more.
    fn at_end_of_input(&mut self) -> Range<usize> {
        if !self.ended {
            self.let_go();
            return 0..0;
        }
        self.discarding = Discarding::No;
        if self.held {
            self.after_cr = false;
            return self.emit_block();
        }
        if self.block_len() == 0 {
            return 0..0;
        }
        self.emit_passthrough()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a segment is, as far as anyone can tell: its kind, its raw
    /// bytes, and what every accessor of a block says.
    fn described(segment: &Segment<'_>) -> String {
        match segment {
            Segment::Block(block) => format!(
                "block {:?} id {:?} dispatches {} type {:?} retry {:?} comment {} print {}",
                Bytes::copy_from_slice(block.raw()),
                block.id(),
                block.dispatches(),
                block.event_type(),
                block.retry(),
                block.is_comment_only(),
                block.fingerprint(),
            ),
            Segment::Passthrough(raw) => format!("pass {:?}", Bytes::copy_from_slice(raw)),
        }
    }

    /// The segments of `chunks` through `push` and `next_segment`; with
    /// `whole_first`, as a body takes them: the blocks a chunk holds whole
    /// from its start with `whole_block` whenever the framer is between
    /// blocks, and so those of the rest of a chunk the framer gives back
    /// after a segment, the rest through `push` and `next_segment`.
    fn framed(framer: Framer, chunks: &[Bytes], whole_first: bool) -> Vec<String> {
        let mut framer = framer;
        let mut segments = Vec::new();
        for chunk in chunks {
            let mut rest = chunk.clone();
            if whole_first && framer.is_between_blocks() {
                rest = whole_blocks(&mut framer, rest, &mut segments);
            }
            framer.push(rest);
            while let Some(segment) = framer.next_segment() {
                segments.push(described(&segment));
                if whole_first && let Some(rest) = framer.take_rest() {
                    let rest = whole_blocks(&mut framer, rest, &mut segments);
                    framer.push(rest);
                }
            }
        }
        framer.finish();
        while let Some(segment) = framer.next_segment() {
            segments.push(described(&segment));
        }
        segments
    }

    /// Takes the blocks `chunk` holds whole with `whole_block`, for a
    /// framer between blocks, and returns the rest.
    fn whole_blocks(framer: &mut Framer, chunk: Bytes, segments: &mut Vec<String>) -> Bytes {
        let mut at = 0;
        while let Some(block) = framer.whole_block(&chunk, at) {
            let len = block.raw().len();
            assert_eq!(block.raw().to_bytes(), chunk.slice(at..at + len));
            at += len;
            segments.push(described(&Segment::Block(block)));
        }
        chunk.slice(at..)
    }

    /// A line of an event stream, line end included: the fields the
    /// framer reads, comments, blank lines, every line end, ids with NUL
    /// and values long enough for a small limit.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let text = prop::sample::select(vec![
            "",
            "",
            "",
            "data: x",
            "data:",
            "data",
            "id: 1",
            "id: 22",
            "id:",
            "id: a\0b",
            "event: t",
            "event:",
            "retry: 300",
            "retry: 3x",
            ": keep-alive",
            "other: y",
            "data: a value long enough to go over a small limit on its own",
            "\u{feff}data: bom",
        ]);
        let end = prop::sample::select(vec!["\n", "\r", "\r\n"]);
        (text, end).prop_map(|(text, end)| format!("{text}{end}").into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Taking whole blocks where they are, from a chunk as it comes or
        /// from the rest the framer gives back, frames a stream exactly as
        /// pushing every chunk does, however it is cut, within the
        /// default limit and a small one, fingerprinting or not. Chunks are
        /// mostly whole lines, so that many start a block.
        #[test]
        fn whole_blocks_taken_where_they_are_are_the_blocks_push_gives(
            chunks in prop::collection::vec(
                (prop::collection::vec(line(), 0..6), any::<prop::sample::Index>(), any::<bool>()),
                0..12,
            ),
            tail in prop::collection::vec(any::<u8>(), 0..4),
            limit in prop::sample::select(vec![DEFAULT_MAX_BLOCK_LEN, 24]),
            fingerprints in any::<bool>(),
        ) {
            // Each chunk's lines, cut short or not, the rest going on into
            // the next one.
            let mut cut = Vec::new();
            let mut rest = Vec::new();
            for (lines, at, whole) in chunks {
                let mut bytes = [std::mem::take(&mut rest), lines.concat()].concat();
                if !whole {
                    rest = bytes.split_off(at.index(bytes.len() + 1));
                }
                cut.push(Bytes::from(bytes));
            }
            cut.push(Bytes::from([rest, tail].concat()));
            let framer = || Framer::with_max_block_len(limit).fingerprints(fingerprints);
            prop_assert_eq!(framed(framer(), &cut, true), framed(framer(), &cut, false));
        }
    }

    #[test]
    fn whole_blocks_are_taken_up_to_the_first_the_chunk_does_not_hold() {
        let mut framer = Framer::new();
        framer.push(Bytes::from_static(b"data: first\n\n"));
        while framer.next_segment().is_some() {}
        assert!(framer.is_between_blocks());
        let chunk = Bytes::from_static(b"id: 1\r\ndata: a\r\n\r\n: c\n\nid: 2\ndata: b\r");
        let block = framer.whole_block(&chunk, 0).expect("the first block");
        assert_eq!(block.id(), EventId::Value("1".into()));
        assert_eq!(
            block.raw().to_bytes().as_ptr(),
            chunk.as_ptr(),
            "not copied"
        );
        let at = block.raw().len();
        let block = framer.whole_block(&chunk, at).expect("the comment");
        assert!(block.is_comment_only());
        let at = at + block.raw().len();
        // A CR at the very end may be the start of a CRLF.
        assert!(framer.whole_block(&chunk, at).is_none());
        framer.push(chunk.slice(at..));
        assert!(framer.next_segment().is_none());
        assert!(!framer.is_between_blocks(), "a block is begun");
    }

    #[test]
    fn a_framer_that_ran_dry_holds_on_to_no_chunk() {
        // A chunk is often a slice of a connection's read buffer, which
        // cannot be reused while anything holds a piece of it.
        let chunk = Bytes::from(b"id: 1\ndata: a\n\n".to_vec());
        let mut framer = Framer::new();
        framer.push(chunk.clone());
        while framer.next_segment().is_some() {}
        assert!(chunk.is_unique(), "let go once parsed");

        // The start of a block stays where it is until more comes.
        let chunk = Bytes::from(b"id: 2\nda".to_vec());
        framer.push(chunk.clone());
        assert!(framer.next_segment().is_none());
        assert!(!chunk.is_unique());
        assert_eq!(framer.buffered_len(), 0, "not copied");
        framer.push(Bytes::from_static(b"ta: b\r"));
        assert!(
            framer.next_segment().is_none(),
            "a CR may be followed by LF"
        );
        framer.push(Bytes::from_static(b"\n\r\n"));
        let Some(Segment::Block(block)) = framer.next_segment() else {
            panic!("a block");
        };
        assert_eq!(&block.raw()[..], b"id: 2\ndata: b\r\n\r\n");
        assert_eq!(block.id(), EventId::Value("2".into()));
        assert!(framer.next_segment().is_none());
        assert!(chunk.is_unique(), "let go once its block is");
    }
}
