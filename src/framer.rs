//! Sans-IO framing of an event stream into blocks.
//!
//! A [`Framer`] is fed the chunks of a `text/event-stream` body as they
//! arrive and hands out [`Segment`]s: mostly [`Block`]s, the lines of one
//! event up to and including the blank line that dispatches it. It knows
//! nothing of HTTP, stores or trackers, so a proxy can use it on its own.
//!
//! Every byte fed in comes out exactly once, in order: concatenating the raw
//! bytes of every segment gives back the input. A block that lies inside one
//! chunk is a zero-copy slice of it; a block that spans chunks is copied once
//! into a reused buffer.
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
//! assert_eq!(block.raw().as_ref(), b"id: 1\ndata: hello\n\n");
//! assert_eq!(block.id(), EventId::Value("1".into()));
//! assert!(block.dispatches());
//!
//! let Some(Segment::Block(block)) = framer.next_segment() else { panic!() };
//! assert!(block.is_comment_only());
//!
//! framer.push(Bytes::from_static(b"data: cut short"));
//! framer.finish();
//! let Some(Segment::Passthrough(tail)) = framer.next_segment() else { panic!() };
//! assert_eq!(tail.as_ref(), b"data: cut short");
//! assert!(framer.next_segment().is_none());
//! ```

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

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
/// and holds on to the chunks it was given until they are handed back out.
#[derive(Debug)]
pub struct Framer {
    max_block_len: usize,
    /// Chunks pushed but not yet reached by parsing.
    queue: VecDeque<Bytes>,
    /// The chunk being parsed. While `carry` is empty the current block
    /// starts at `chunk[0]` and `chunk[..scan]` holds its parsed lines.
    chunk: Bytes,
    scan: usize,
    /// The current block when it spans chunks: its parsed lines, then the
    /// start of an unterminated line at `carry[line_start..]`. Lines move
    /// here from `chunk` as they are parsed, so `scan` stays 0 meanwhile.
    carry: BytesMut,
    line_start: usize,
    fields: Fields,
    /// The last line end seen was a CR: an LF right after it is part of it.
    after_cr: bool,
    /// The current block is complete, but its last line end is a CR at the
    /// end of the input so far; it waits for the next byte (or the end) to
    /// know whether an LF belongs to it. This keeps blocks the same however
    /// the stream is chunked.
    held: bool,
    /// No line has been parsed yet, so a leading BOM is still to be ignored.
    at_stream_start: bool,
    /// Inside a block over the limit: bytes go out as pass-through until the
    /// blank line that ends it. The flag says whether the bytes handed out so
    /// far end with a line end, so that a line end right away is blank.
    discarding: Option<bool>,
    ended: bool,
}

/// What a [`Framer`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A complete block: its lines up to and including the blank line.
    Block(Block),
    /// Bytes to forward as they are, outside any block the framer could
    /// parse: pieces of a block over the length limit, or the unterminated
    /// tail of the stream. They never dispatch an event here.
    Passthrough(Bytes),
}

impl Segment {
    /// The raw bytes of this segment, exactly as received.
    pub fn raw(&self) -> &Bytes {
        match self {
            Segment::Block(block) => block.raw(),
            Segment::Passthrough(bytes) => bytes,
        }
    }
}

/// One block of an event stream: its raw bytes and its parsed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    raw: Bytes,
    fields: Fields,
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

/// The fields of a block, as offsets into its raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields {
    id: Option<Range<usize>>,
    event: Option<Range<usize>>,
    retry: Option<u64>,
    data: bool,
    comment: bool,
    field: bool,
}

impl Block {
    /// The block's bytes exactly as received, line ends and all.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Gives up the block's bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The block's explicit id: the value of its last valid `id` line.
    pub fn id(&self) -> EventId<'_> {
        match &self.fields.id {
            None => EventId::Absent,
            Some(range) if range.is_empty() => EventId::Reset,
            Some(range) => EventId::Value(String::from_utf8_lossy(&self.raw[range.clone()])),
        }
    }

    /// Whether a client dispatches an event for this block: it has a `data`
    /// line.
    pub fn dispatches(&self) -> bool {
        self.fields.data
    }

    /// The event type, when an `event` line set a non-empty one; `None`
    /// means the default type, `message`.
    pub fn event_type(&self) -> Option<Cow<'_, str>> {
        let range = self
            .fields
            .event
            .clone()
            .filter(|range| !range.is_empty())?;
        Some(String::from_utf8_lossy(&self.raw[range]))
    }

    /// The reconnection time in milliseconds, from a `retry` line made of
    /// ASCII digits only.
    pub fn retry(&self) -> Option<u64> {
        self.fields.retry
    }

    /// Whether the block holds comments and nothing else, like a keep-alive.
    pub fn is_comment_only(&self) -> bool {
        self.fields.comment && !self.fields.field
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
    /// again at the next block.
    pub fn with_max_block_len(max: usize) -> Self {
        Self {
            max_block_len: max.max(1),
            queue: VecDeque::new(),
            chunk: Bytes::new(),
            scan: 0,
            carry: BytesMut::new(),
            line_start: 0,
            fields: Fields::default(),
            after_cr: false,
            held: false,
            at_stream_start: true,
            discarding: None,
            ended: false,
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
    pub fn next_segment(&mut self) -> Option<Segment> {
        loop {
            if self.scan == self.chunk.len() && !self.next_chunk() {
                return self.at_end_of_input();
            }
            if self.after_cr {
                self.after_cr = false;
                if self.chunk[self.scan] == b'\n' {
                    self.take_line_bytes(1);
                    self.line_start = self.block_len();
                }
                if self.held {
                    return Some(self.emit_block());
                }
            }
            if let Some(at_line_start) = self.discarding {
                if let Some(piece) = self.discard(at_line_start) {
                    return Some(piece);
                }
                continue;
            }
            if let Some(segment) = self.parse_line() {
                return Some(segment);
            }
        }
    }

    /// Moves on to the next queued chunk, first copying what is left of the
    /// current one (the start of a block) into `carry`.
    fn next_chunk(&mut self) -> bool {
        let Some(next) = self.queue.pop_front() else {
            return false;
        };
        if !self.chunk.is_empty() {
            debug_assert!(self.carry.is_empty());
            self.carry.extend_from_slice(&self.chunk);
        }
        self.chunk = next;
        self.scan = 0;
        true
    }

    /// Parses one line, or stops at the end of the chunk. Returns a segment
    /// when the line completes a block or the block grows over the limit.
    fn parse_line(&mut self) -> Option<Segment> {
        let rest = &self.chunk[self.scan..];
        let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
            // An unterminated line: wait for more, unless it is already too long.
            let rest = rest.len();
            if self.block_len() + rest > self.max_block_len {
                return Some(self.start_discarding(rest, false));
            }
            self.take_line_bytes(rest);
            return None;
        };
        let (line_end_len, cr_at_end) = line_end(rest, end);
        if self.block_len() + end + line_end_len > self.max_block_len {
            self.after_cr = cr_at_end;
            return Some(self.start_discarding(end + line_end_len, true));
        }
        self.take_line_bytes(end + line_end_len);
        self.after_cr = cr_at_end;
        let mut line = self.line_start..self.block_len() - line_end_len;
        self.line_start = self.block_len();
        let block: &[u8] = if self.carry.is_empty() {
            &self.chunk
        } else {
            &self.carry
        };
        if std::mem::take(&mut self.at_stream_start) && block[line.clone()].starts_with(BOM) {
            line.start += BOM.len();
        }
        if !line.is_empty() {
            parse_field(&mut self.fields, block, line);
            return None;
        }
        if self.after_cr {
            self.held = true;
            return None;
        }
        Some(self.emit_block())
    }

    /// Moves `n` parsed bytes of the chunk into the current block.
    fn take_line_bytes(&mut self, n: usize) {
        if self.carry.is_empty() {
            self.scan += n;
        } else {
            self.carry
                .extend_from_slice(&self.chunk[self.scan..self.scan + n]);
            self.chunk.advance(n);
        }
    }

    /// The length of the current block so far, unterminated line included.
    fn block_len(&self) -> usize {
        if self.carry.is_empty() {
            self.scan
        } else {
            self.carry.len()
        }
    }

    fn emit_block(&mut self) -> Segment {
        self.held = false;
        self.line_start = 0;
        let raw = if self.carry.is_empty() {
            let raw = self.chunk.split_to(self.scan);
            self.scan = 0;
            raw
        } else {
            self.carry.split().freeze()
        };
        let fields = std::mem::take(&mut self.fields);
        Segment::Block(Block { raw, fields })
    }

    /// Gives up on the current block: hands out what it has so far plus the
    /// next `n` bytes of the chunk as pass-through, and passes the rest of
    /// the block through too, up to its blank line.
    fn start_discarding(&mut self, n: usize, ends_line: bool) -> Segment {
        self.fields = Fields::default();
        self.at_stream_start = false;
        self.discarding = Some(ends_line);
        self.line_start = 0;
        let bytes = if self.carry.is_empty() {
            self.scan += n;
            self.take_scanned()
        } else {
            let mut bytes = self.carry.split();
            bytes.extend_from_slice(&self.chunk[self.scan..self.scan + n]);
            self.chunk.advance(n);
            bytes.freeze()
        };
        Segment::Passthrough(bytes)
    }

    /// Scans the chunk for the blank line that ends an oversized block.
    /// Returns the piece up to it, or the whole chunk when it has none.
    fn discard(&mut self, mut at_line_start: bool) -> Option<Segment> {
        while let Some(end) = memchr::memchr2(b'\n', b'\r', &self.chunk[self.scan..]) {
            let at = self.scan + end;
            let (line_end_len, cr_at_end) = line_end(&self.chunk[self.scan..], end);
            self.after_cr = cr_at_end;
            self.scan = at + line_end_len;
            if at_line_start && end == 0 {
                self.discarding = None;
                return Some(Segment::Passthrough(self.take_scanned()));
            }
            at_line_start = true;
        }
        let rest = self.chunk.len() - self.scan;
        self.discarding = Some(at_line_start && rest == 0);
        self.scan = self.chunk.len();
        Some(Segment::Passthrough(self.take_scanned()))
    }

    fn take_scanned(&mut self) -> Bytes {
        let bytes = self.chunk.split_to(self.scan);
        self.scan = 0;
        bytes
    }

    /// All queued input is parsed: hand out what the end of the stream
    /// completes, or ask for more.
    fn at_end_of_input(&mut self) -> Option<Segment> {
        if !self.ended {
            return None;
        }
        if self.held {
            self.after_cr = false;
            return Some(self.emit_block());
        }
        self.fields = Fields::default();
        self.line_start = 0;
        let tail = if self.carry.is_empty() {
            self.scan = self.chunk.len();
            self.take_scanned()
        } else {
            self.carry.split().freeze()
        };
        (!tail.is_empty()).then_some(Segment::Passthrough(tail))
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

/// Interprets one non-empty line of a block, found at `line` in `block`.
fn parse_field(fields: &mut Fields, block: &[u8], line: Range<usize>) {
    let text = &block[line.clone()];
    if text[0] == b':' {
        fields.comment = true;
        return;
    }
    fields.field = true;
    // The names this parser cares about are at most five bytes long, so a
    // colon further in cannot end a known name: no need to scan for it.
    let colon = text.iter().take(6).position(|&byte| byte == b':');
    let (name, value) = match colon {
        Some(colon) => {
            let space = usize::from(text.get(colon + 1) == Some(&b' '));
            (&text[..colon], line.start + colon + 1 + space..line.end)
        }
        None => (text, line.end..line.end),
    };
    match name {
        b"data" => fields.data = true,
        b"id" if !block[value.clone()].contains(&0) => fields.id = Some(value),
        b"event" => fields.event = Some(value),
        b"retry" => {
            if let Some(millis) = parse_retry(&block[value]) {
                fields.retry = Some(millis);
            }
        }
        _ => {}
    }
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
