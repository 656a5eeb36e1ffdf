//! Sans-IO framing of an event stream into blocks.
//!
//! A [`Framer`] is fed the chunks of a `text/event-stream` body as they
//! arrive and hands out [`Segment`]s: mostly [`Block`]s, the lines of one
//! event up to and including the blank line that dispatches it. It knows
//! nothing of HTTP, stores or trackers, so a proxy can use it on its own.
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

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, Range};

use bytes::Bytes;

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
    line_ends: LineEnds,
}

/// What a [`Framer`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A complete block: its lines up to and including the blank line.
    Block(Block<'a>),
    /// Bytes to forward as they are, outside any block the framer could
    /// parse: pieces of a block over the length limit, or the unterminated
    /// tail of the stream. They never dispatch an event here.
    Passthrough(Raw<'a>),
}

/// One block of an event stream: its raw bytes and its parsed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<'a> {
    raw: Raw<'a>,
    fields: &'a Fields,
}

/// The raw bytes of a segment, exactly as received.
///
/// They are a slice of the chunk they came in, or, for a segment that
/// spanned chunks, of the framer's copy. [`to_bytes`](Self::to_bytes) is
/// zero-copy for the former.
#[derive(Clone)]
pub struct Raw<'a> {
    slice: &'a [u8],
    chunk: Option<(&'a Bytes, usize)>,
}

/// The explicit `id` of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventId<'a> {
    /// The block has no `id` field (or only ones containing U+0000, which
    /// are ignored).
    Absent,
    /// An empty `id` field: it resets the client's last event id.
    Reset,
    /// A non-empty id, decoded lossily from UTF-8.
    Value(Cow<'a, str>),
}

/// The fields of a block, as offsets into its raw bytes. Kept small: a
/// block is moved around once per event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fields {
    id: Span,
    event: Span,
    retry: Span,
    data: bool,
    comment: bool,
    field: bool,
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

/// A range of a block's bytes, or nothing. Blocks are shorter than
/// `u32::MAX` bytes, so `u32` offsets do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };

    fn new(range: Range<usize>) -> Self {
        // The framer's limit keeps block offsets below `u32::MAX`.
        Self {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    fn get(self) -> Option<Range<usize>> {
        (self != Self::NONE).then_some(self.start as usize..self.end as usize)
    }
}

impl Default for Span {
    fn default() -> Self {
        Self::NONE
    }
}

impl<'a> Segment<'a> {
    /// The raw bytes of this segment, exactly as received.
    #[inline]
    pub fn raw(&self) -> &Raw<'a> {
        match self {
            Segment::Block(block) => block.raw(),
            Segment::Passthrough(raw) => raw,
        }
    }
}

impl<'a> Block<'a> {
    /// The block's bytes exactly as received, line ends and all.
    #[inline]
    pub fn raw(&self) -> &Raw<'a> {
        &self.raw
    }

    /// The block's explicit id: the value of its last valid `id` line.
    #[inline]
    pub fn id(&self) -> EventId<'_> {
        match self.fields.id.get() {
            None => EventId::Absent,
            Some(range) if range.is_empty() => EventId::Reset,
            Some(range) => EventId::Value(lossy(&self.raw[range])),
        }
    }

    /// The bytes of the block's explicit id when it is a value: non-empty,
    /// without U+0000, before any UTF-8 decoding.
    #[inline]
    pub fn id_bytes(&self) -> Option<&[u8]> {
        let range = self.fields.id.get().filter(|range| !range.is_empty())?;
        Some(&self.raw[range])
    }

    /// Whether a client dispatches an event for this block: it has a `data`
    /// line.
    #[inline]
    pub fn dispatches(&self) -> bool {
        self.fields.data
    }

    /// The event type, when an `event` line set a non-empty one; `None`
    /// means the default type, `message`.
    pub fn event_type(&self) -> Option<Cow<'_, str>> {
        let range = self.fields.event.get().filter(|range| !range.is_empty())?;
        Some(lossy(&self.raw[range]))
    }

    /// The reconnection time in milliseconds, from the last `retry` line
    /// made of ASCII digits only (and small enough for a `u64`).
    pub fn retry(&self) -> Option<u64> {
        parse_retry(&self.raw[self.fields.retry.get()?])
    }

    /// Whether the block holds comments and nothing else, like a keep-alive.
    pub fn is_comment_only(&self) -> bool {
        self.fields.comment && !self.fields.field
    }
}

impl<'a> Raw<'a> {
    /// The bytes as a [`Bytes`]: a zero-copy slice of their chunk, or a copy
    /// when the segment spanned chunks.
    #[inline]
    pub fn to_bytes(&self) -> Bytes {
        match self.chunk {
            Some((chunk, start)) => chunk.slice(start..start + self.slice.len()),
            None => Bytes::copy_from_slice(self.slice),
        }
    }

    /// The chunk these bytes are a slice of, and where they lie in it; `None`
    /// for a segment that spanned chunks. Lets a caller send on consecutive
    /// segments as one slice.
    #[inline]
    pub fn chunk_range(&self) -> Option<(&'a Bytes, Range<usize>)> {
        self.chunk
            .map(|(chunk, start)| (chunk, start..start + self.slice.len()))
    }
}

impl Deref for Raw<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.slice
    }
}

impl PartialEq for Raw<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Raw<'_> {}

impl fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self.slice), f)
    }
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
            fields: Fields::default(),
            fields_emitted: false,
            emitted: Emitted::default(),
            after_cr: false,
            held: false,
            at_stream_start: true,
            discarding: Discarding::No,
            ended: false,
            line_ends: LineEnds::new(),
        }
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
        if !self.ended && !chunk.is_empty() {
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
            self.fields = Fields::default();
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
        match scan_lines(&mut self.fields, &self.line_ends, rest, base, budget) {
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
        let scanned = scan_lines(&mut self.fields, &self.line_ends, rest, copied, budget);
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
        self.fields = Fields::default();
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

/// Finds line ends, CR or LF, with a search picked once per framer: most
/// lines are short, so picking one per line would cost about as much as
/// the search itself.
#[derive(Debug, Clone, Copy)]
struct LineEnds {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::Two>,
}

impl LineEnds {
    fn new() -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            avx2: memchr::arch::x86_64::avx2::memchr::Two::new(b'\n', b'\r'),
        }
    }

    /// Where the first line end in `bytes` is.
    #[inline]
    fn find(&self, bytes: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = &self.avx2 {
            return avx2.find(bytes);
        }
        memchr::memchr2(b'\n', b'\r', bytes)
    }
}

/// How far [`scan_lines`] got.
#[derive(Clone, Copy)]
enum Scanned {
    /// A blank line completes the block: its first `len` bytes, the blank
    /// line included.
    Block { len: usize },
    /// The bytes ran out: the complete lines end at `line_start`, and an
    /// unterminated line, maybe empty, runs from there to the end.
    Open { line_start: usize },
    /// The complete lines end at `len`, and the next line is for
    /// [`Framer::parse_line`]: it ends in a CR at the end of the bytes, or
    /// it would take the block over its limit.
    Stuck { len: usize },
}

/// Parses the lines of a block in `bytes`, one line-end search per line,
/// into `fields`, up to a blank line, the end of the bytes, or `budget`
/// bytes. The bytes are found at `base` in the block.
#[inline(always)]
fn scan_lines(
    fields: &mut Fields,
    line_ends: &LineEnds,
    bytes: &[u8],
    base: usize,
    budget: usize,
) -> Scanned {
    let mut at = 0;
    // Always `&bytes[at..]`.
    let mut rest = bytes;
    while let Some(&first) = rest.first() {
        if first == b'\n' || first == b'\r' {
            return match line_end_len(rest) {
                Some(n) if at + n <= budget => Scanned::Block { len: at + n },
                _ => Scanned::Stuck { len: at },
            };
        }
        let Some(len) = line_ends.find(rest) else {
            return match bytes.len() <= budget {
                true => Scanned::Open { line_start: at },
                false => Scanned::Stuck { len: at },
            };
        };
        let (line, after) = rest.split_at(len);
        match line_end_len(after) {
            Some(n) if at + len + n <= budget => {
                parse_field(fields, line, base + at);
                at += len + n;
                rest = &after[n..];
            }
            _ => return Scanned::Stuck { len: at },
        }
    }
    Scanned::Open { line_start: at }
}

/// Decodes UTF-8 as a browser would, quickly when it is valid.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The length of the line end found at `at` in `bytes` (1 for CR or LF, 2
/// for CRLF), and whether it is a CR at the very end, which an LF in the next
/// chunk may complete.
fn line_end(bytes: &[u8], at: usize) -> (usize, bool) {
    match (bytes[at], bytes.get(at + 1)) {
        (b'\r', Some(b'\n')) => (2, false),
        (b'\r', None) => (1, true),
        _ => (1, false),
    }
}

/// The length of the line end that `bytes` start with: 1 for LF or CR, 2
/// for CRLF. `None` when they start with none, or with a CR at their very
/// end, which an LF in the next chunk may complete.
#[inline(always)]
fn line_end_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [b'\n', ..] => Some(1),
        [b'\r', b'\n', ..] => Some(2),
        [b'\r', _, ..] => Some(1),
        _ => None,
    }
}

/// Interprets one non-empty line of a block: `text`, found at `start` in
/// the block.
#[inline(always)]
fn parse_field(fields: &mut Fields, text: &[u8], start: usize) {
    let (name, name_len) = match text {
        [b':', ..] => {
            fields.comment = true;
            return;
        }
        [b'd', b'a', b't', b'a', ..] => (Name::Data, 4),
        [b'i', b'd', ..] => (Name::Id, 2),
        [b'e', b'v', b'e', b'n', b't', ..] => (Name::Event, 5),
        [b'r', b'e', b't', b'r', b'y', ..] => (Name::Retry, 5),
        // Another name, whatever follows it.
        _ => {
            fields.field = true;
            return;
        }
    };
    fields.field = true;
    // The value starts after the colon and one optional space; a line that
    // is just the name has an empty value; anything else is another name.
    let value_start = match text.get(name_len) {
        None => text.len(),
        Some(b':') => name_len + 1 + usize::from(text.get(name_len + 1) == Some(&b' ')),
        Some(_) => return,
    };
    let value = &text[value_start..];
    let span = || Span::new(start + value_start..start + text.len());
    match name {
        Name::Data => fields.data = true,
        Name::Id if !has_nul(value) => fields.id = span(),
        Name::Event => fields.event = span(),
        Name::Retry if parse_retry(value).is_some() => fields.retry = span(),
        _ => {}
    }
}

/// Whether `bytes` hold a U+0000. Ids are short: a plain loop beats a
/// search that first works out how to search.
// `contains` goes through `memchr`, whose set-up costs more than the loop.
#[allow(clippy::manual_contains)]
fn has_nul(bytes: &[u8]) -> bool {
    bytes.iter().any(|&byte| byte == 0)
}

/// The field names that mean something to a client.
#[derive(Clone, Copy)]
enum Name {
    Data,
    Id,
    Event,
    Retry,
}

/// Parses a `retry` value: one or more ASCII digits, nothing else.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |millis, &digit| {
        millis.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}
