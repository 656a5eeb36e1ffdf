//! What the framer hands out: segments, blocks and their bytes.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use super::lines::{Fields, parse_retry};

/// What a [`Framer`](super::Framer) hands out.
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
    pub(super) raw: Raw<'a>,
    pub(super) fields: &'a Fields,
}

/// The raw bytes of a segment, exactly as received.
///
/// They are a slice of the chunk they came in, or, for a segment that
/// spanned chunks, of the framer's copy. [`to_bytes`](Self::to_bytes) is
/// zero-copy for the former.
#[derive(Clone)]
pub struct Raw<'a> {
    pub(super) slice: &'a [u8],
    pub(super) chunk: Option<(&'a Bytes, usize)>,
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

    /// A fingerprint of the event this block dispatches: its data and its
    /// type. Two blocks that a client would read as the same event (line
    /// ends, comments, `id` and `retry` lines aside) have the same one.
    #[inline]
    pub fn fingerprint(&self) -> u64 {
        let reparsed;
        let fields = if self.fields.fingerprinting {
            self.fields
        } else {
            reparsed = super::lines::reparse_fingerprinting(&self.raw, self.fields);
            &reparsed
        };
        let event = match fields.event.get() {
            Some(range) => &self.raw[range],
            None => &[],
        };
        super::fingerprint::finish(fields.data_state, event, fields.data)
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

/// Decodes UTF-8 as a browser would, quickly when it is valid.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
