//! Helpers shared by the framer test suites: feeding a [`Framer`] chunk by
//! chunk, and a small model of what a browser's `EventSource` makes of the
//! blocks the framer hands out.
//!
//! The model reads each block's raw bytes with its own line interpreter, so
//! the data it reports does not depend on the framer's field parsing.
//!
//! The framer lends each segment until its next call, so the helpers turn
//! every lent segment right away into an owned [`Segment`] snapshot: its raw
//! bytes (a zero-copy [`Bytes`]) and what each public accessor says.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use tower_sse_resume::framer::{self, EventId, Framer};

/// The UTF-8 byte order mark, ignored once at the start of a stream.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

// ---------------------------------------------------------------------------
// Owned snapshots of lent segments
// ---------------------------------------------------------------------------

/// An owned snapshot of a [`framer::Segment`], to keep past the framer's
/// next call and to compare with `==`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A complete block.
    Block(Block),
    /// Bytes passed through as they are.
    Passthrough(Bytes),
}

/// An owned snapshot of a [`framer::Block`]: its raw bytes and what each of
/// its public accessors returns, under the same method names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    raw: Bytes,
    id: EventId<'static>,
    dispatches: bool,
    event_type: Option<String>,
    retry: Option<u64>,
    comment_only: bool,
}

impl Segment {
    /// The raw bytes of this segment, exactly as received.
    pub(crate) fn raw(&self) -> &Bytes {
        match self {
            Segment::Block(block) => block.raw(),
            Segment::Passthrough(bytes) => bytes,
        }
    }
}

impl From<framer::Segment<'_>> for Segment {
    fn from(segment: framer::Segment<'_>) -> Self {
        match segment {
            framer::Segment::Block(block) => Segment::Block(Block::from(&block)),
            framer::Segment::Passthrough(raw) => Segment::Passthrough(raw.to_bytes()),
        }
    }
}

impl From<&framer::Block<'_>> for Block {
    fn from(block: &framer::Block<'_>) -> Self {
        Self {
            raw: block.raw().to_bytes(),
            id: owned_id(block.id()),
            dispatches: block.dispatches(),
            event_type: block.event_type().map(Cow::into_owned),
            retry: block.retry(),
            comment_only: block.is_comment_only(),
        }
    }
}

impl Block {
    pub(crate) fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub(crate) fn id(&self) -> EventId<'_> {
        match &self.id {
            EventId::Absent => EventId::Absent,
            EventId::Reset => EventId::Reset,
            EventId::Value(value) => EventId::Value(Cow::Borrowed(value)),
        }
    }

    pub(crate) fn dispatches(&self) -> bool {
        self.dispatches
    }

    pub(crate) fn event_type(&self) -> Option<Cow<'_, str>> {
        self.event_type.as_deref().map(Cow::Borrowed)
    }

    pub(crate) fn retry(&self) -> Option<u64> {
        self.retry
    }

    pub(crate) fn is_comment_only(&self) -> bool {
        self.comment_only
    }
}

/// Takes the framer's next segment as an owned snapshot, ending the loan.
pub(crate) fn next_segment(framer: &mut Framer) -> Option<Segment> {
    framer.next_segment().map(Segment::from)
}

// ---------------------------------------------------------------------------
// Feeding
// ---------------------------------------------------------------------------

/// Feeds `chunks` in order, taking every segment after each push, then
/// finishes the stream and takes the rest. `observe` sees the framer after
/// every push and every `next_segment` call, to check bounds along the way.
pub(crate) fn frame_observed(
    mut framer: Framer,
    chunks: &[Bytes],
    mut observe: impl FnMut(&Framer),
) -> Vec<Segment> {
    let mut segments = Vec::new();
    for chunk in chunks {
        framer.push(chunk.clone());
        observe(&framer);
        while let Some(segment) = next_segment(&mut framer) {
            observe(&framer);
            segments.push(segment);
        }
        observe(&framer);
    }
    framer.finish();
    while let Some(segment) = next_segment(&mut framer) {
        observe(&framer);
        segments.push(segment);
    }
    // Once drained after `finish`, the framer stays drained.
    assert!(framer.next_segment().is_none());
    segments
}

/// [`frame_observed`] without an observer, with the default limit.
pub(crate) fn frame(chunks: &[Bytes]) -> Vec<Segment> {
    frame_observed(Framer::new(), chunks, |_| {})
}

/// Cuts `input` at the given offsets (sorted or not, duplicates allowed) into
/// zero-copy chunks. Empty chunks are kept: pushing one must be harmless.
pub(crate) fn split_at(input: &Bytes, offsets: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = offsets.iter().map(|&at| at.min(input.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        chunks.push(input.slice(start..cut));
        start = cut;
    }
    chunks.push(input.slice(start..));
    chunks
}

/// Cuts `input` into chunks of `size` bytes (the last one may be shorter).
pub(crate) fn chunks_of(input: &Bytes, size: usize) -> Vec<Bytes> {
    (0..input.len())
        .step_by(size.max(1))
        .map(|start| input.slice(start..(start + size).min(input.len())))
        .collect()
}

/// Every segment's raw bytes, concatenated: must give back the input.
pub(crate) fn concat_raw(segments: &[Segment]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(segments.iter().map(|segment| segment.raw().len()).sum());
    for segment in segments {
        raw.extend_from_slice(segment.raw());
    }
    raw
}

/// Merges adjacent pass-through segments. How an oversized block is cut into
/// pass-through pieces depends on the chunking; the bytes do not.
pub(crate) fn coalesce(segments: &[Segment]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for segment in segments {
        match (out.last_mut(), segment) {
            (Some(Segment::Passthrough(prev)), Segment::Passthrough(next)) => {
                let mut joined = BytesMut::from(prev.as_ref());
                joined.extend_from_slice(next);
                *prev = joined.freeze();
            }
            _ => out.push(segment.clone()),
        }
    }
    out
}

/// The blocks among `segments`, in order.
pub(crate) fn blocks(segments: &[Segment]) -> impl Iterator<Item = &Block> {
    segments.iter().filter_map(|segment| match segment {
        Segment::Block(block) => Some(block),
        Segment::Passthrough(_) => None,
    })
}

// ---------------------------------------------------------------------------
// What a block says, through the public accessors only
// ---------------------------------------------------------------------------

/// A block as its public accessors describe it, owned, for comparing the
/// blocks of one stream framed with different chunkings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockView {
    pub(crate) raw: Bytes,
    pub(crate) id: EventId<'static>,
    pub(crate) dispatches: bool,
    pub(crate) event_type: Option<String>,
    pub(crate) retry: Option<u64>,
    pub(crate) is_comment_only: bool,
}

impl BlockView {
    pub(crate) fn of(block: &Block) -> Self {
        Self {
            raw: block.raw().clone(),
            id: owned_id(block.id()),
            dispatches: block.dispatches(),
            event_type: block.event_type().map(Cow::into_owned),
            retry: block.retry(),
            is_comment_only: block.is_comment_only(),
        }
    }
}

/// The views of the blocks among `segments`.
pub(crate) fn block_views(segments: &[Segment]) -> Vec<BlockView> {
    blocks(segments).map(BlockView::of).collect()
}

pub(crate) fn owned_id(id: EventId<'_>) -> EventId<'static> {
    match id {
        EventId::Absent => EventId::Absent,
        EventId::Reset => EventId::Reset,
        EventId::Value(value) => EventId::Value(Cow::Owned(value.into_owned())),
    }
}

// ---------------------------------------------------------------------------
// The browser model
// ---------------------------------------------------------------------------

/// One event as a browser dispatches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dispatched {
    /// The data lines' values joined with `\n`.
    pub(crate) data: String,
    /// The event type; `None` for the default, `message`.
    pub(crate) event: Option<String>,
    /// The block's own explicit id: `Some("")` for a reset, `None` when the
    /// block has no (valid) `id` line.
    pub(crate) id: Option<String>,
    /// The browser's last event id once the event is dispatched.
    pub(crate) last_id: String,
}

/// Runs the segments of one whole stream through the browser model.
///
/// A block's id updates the last event id even when the block dispatches
/// nothing (the WHATWG algorithm commits it at every blank line); a reset
/// sets it to the empty string. Pass-through segments are never parsed by a
/// client of the framer, so they dispatch nothing.
pub(crate) fn browser_events(segments: &[Segment]) -> Vec<Dispatched> {
    let mut events = Vec::new();
    let mut last_id = String::new();
    let mut offset = 0;
    for segment in segments {
        if let Segment::Block(block) = segment {
            match block.id() {
                EventId::Absent => {}
                EventId::Reset => last_id.clear(),
                EventId::Value(value) => last_id = value.into_owned(),
            }
            let data = block_data(block.raw(), offset == 0);
            assert_eq!(
                data.is_some(),
                block.dispatches(),
                "the interpreter and the framer disagree on whether {:?} has a data line",
                show(block.raw()),
            );
            if let Some(data) = data {
                events.push(Dispatched {
                    data,
                    event: block.event_type().map(Cow::into_owned),
                    id: id_string(block.id()),
                    last_id: last_id.clone(),
                });
            }
        }
        offset += segment.raw().len();
    }
    events
}

/// `Value` as its string, `Reset` as `""`, `Absent` as `None`.
pub(crate) fn id_string(id: EventId<'_>) -> Option<String> {
    match id {
        EventId::Absent => None,
        EventId::Reset => Some(String::new()),
        EventId::Value(value) => Some(value.into_owned()),
    }
}

/// The data of a block, read straight from its raw bytes: the values of its
/// `data` lines joined with `\n`, or `None` when it has no `data` line.
///
/// A leading BOM is skipped only when the block starts the stream.
pub(crate) fn block_data(raw: &[u8], at_stream_start: bool) -> Option<String> {
    let raw = match raw.strip_prefix(BOM) {
        Some(rest) if at_stream_start => rest,
        _ => raw,
    };
    let mut values: Option<Vec<String>> = None;
    for line in lines(raw) {
        let (name, value) = field(line);
        if name == b"data" {
            values
                .get_or_insert_with(Vec::new)
                .push(String::from_utf8_lossy(value).into_owned());
        }
    }
    values.map(|values| values.join("\n"))
}

/// Splits bytes into lines at CR, LF or CRLF, the line ends left out. A
/// trailing unterminated line (which a block never has) is kept.
pub(crate) fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
        lines.push(&rest[..end]);
        let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
        rest = &rest[end + if crlf { 2 } else { 1 }..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

/// A line's field name and value: split at the first colon, one space after
/// it stripped. A line without a colon is all name, with an empty value.
/// A comment comes out with an empty name.
pub(crate) fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&byte| byte == b':') {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}

/// Bytes for a failure message: escaped, and cut short when long.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let text = bytes.escape_ascii().to_string();
    if text.len() <= MAX {
        text
    } else {
        format!("{}... ({} bytes)", &text[..MAX], bytes.len())
    }
}

/// A short description of segments for failure messages.
pub(crate) fn show_segments(segments: &[Segment]) -> String {
    let parts: Vec<String> = segments
        .iter()
        .map(|segment| match segment {
            Segment::Block(block) => format!("Block({:?}, {})", block.id(), show(block.raw())),
            Segment::Passthrough(bytes) => format!("Passthrough({})", show(bytes)),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
