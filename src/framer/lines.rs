//! The lines of a block: finding their ends and reading their fields.

use std::ops::Range;

use super::fingerprint;

/// The fields of a block, as offsets into its raw bytes. Kept small: a
/// block is moved around once per event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Fields {
    pub(super) id: Span,
    pub(super) event: Span,
    pub(super) retry: Span,
    pub(super) data: bool,
    /// Whether the data lines' values are folded into `data_state` as
    /// they are parsed: see [`super::fingerprint`].
    pub(super) fingerprinting: bool,
    pub(super) data_state: u64,
    pub(super) comment: bool,
    pub(super) field: bool,
    /// The block starts with the byte order mark the stream starts with,
    /// which is no part of its first line.
    pub(super) bom: bool,
}

/// A range of a block's bytes, or nothing. Blocks are shorter than
/// `u32::MAX` bytes, so `u32` offsets do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    start: u32,
    end: u32,
}

impl Fields {
    /// No field yet, fingerprinting the data when `fingerprinting`.
    pub(super) fn new(fingerprinting: bool) -> Self {
        Self {
            fingerprinting,
            ..Self::default()
        }
    }
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };

    pub(super) fn new(range: Range<usize>) -> Self {
        // The framer's limit keeps block offsets below `u32::MAX`.
        Self {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub(super) fn get(self) -> Option<Range<usize>> {
        (self != Self::NONE).then_some(self.start as usize..self.end as usize)
    }
}

impl Default for Span {
    fn default() -> Self {
        Self::NONE
    }
}

/// Finds line ends, CR or LF, with a search picked once per process: most
/// lines are short, so picking one per line would cost about as much as
/// the search itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct LineEnds {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::Two>,
}

impl LineEnds {
    /// The search for this machine. Shared: it holds vectors of 96 bytes
    /// aligned to 32, which in each framer would make every stream's state
    /// larger by more than that.
    pub(super) fn get() -> &'static Self {
        static LINE_ENDS: std::sync::OnceLock<LineEnds> = std::sync::OnceLock::new();
        LINE_ENDS.get_or_init(|| Self {
            #[cfg(target_arch = "x86_64")]
            avx2: memchr::arch::x86_64::avx2::memchr::Two::new(b'\n', b'\r'),
        })
    }

    /// Where the first line end in `bytes` is.
    #[inline]
    pub(super) fn find(&self, bytes: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = &self.avx2 {
            return avx2.find(bytes);
        }
        memchr::memchr2(b'\n', b'\r', bytes)
    }
}

/// How far [`scan_lines`] got.
#[derive(Clone, Copy)]
pub(super) enum Scanned {
    /// A blank line completes the block: its first `len` bytes, the blank
    /// line included.
    Block { len: usize },
    /// The bytes ran out: the complete lines end at `line_start`, and an
    /// unterminated line, maybe empty, runs from there to the end.
    Open { line_start: usize },
    /// The complete lines end at `len`, and the next line is left to
    /// [`Framer::parse_line`](super::Framer::parse_line): it ends in a CR
    /// at the end of the bytes, or it would take the block over its limit.
    Stuck { len: usize },
}

/// Parses the lines of a block in `bytes`, one line-end search per line,
/// into `fields`, up to a blank line, the end of the bytes, or `budget`
/// bytes. The bytes are found at `base` in the block.
#[inline(always)]
pub(super) fn scan_lines(
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

/// The longest value the common shape's parse reads: a longer one, or one
/// the chunk cuts short, is left to [`scan_lines`], which reads those bytes
/// again. Most events of the common shape are short; past this, reading
/// each line's end is what a block costs anyway.
const COMMON_VALUE_MAX: usize = 512;

/// Parses a block of the commonest shape, `id: <digits>\ndata: <value>\n\n`,
/// at the start of `bytes`: its length, and its fields, which are what
/// [`scan_lines`] would make of it. `None` for any other shape, or a block
/// over `budget` bytes, or a value over [`COMMON_VALUE_MAX`] bytes, which
/// [`scan_lines`] then parses.
///
/// Most events a server sends look like this, one per chunk: checking the
/// shape byte by byte where it is fixed costs less than searching for
/// every line's end and telling its field by name.
#[inline(always)]
pub(super) fn common_block(
    fingerprinting: bool,
    line_ends: &LineEnds,
    bytes: &[u8],
    budget: usize,
) -> Option<(usize, Fields)> {
    const ID: &[u8] = b"id: ";
    const DATA: &[u8] = b"\ndata: ";
    let after_name = bytes.strip_prefix(ID)?;
    // Digits only: no line end and no U+0000 to look for.
    let digits = after_name.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let id = ID.len()..ID.len() + digits;
    let value_start = id.end + DATA.len();
    let value = bytes.get(id.end..)?.strip_prefix(DATA)?;
    let value_len = line_ends.find(&value[..value.len().min(COMMON_VALUE_MAX + 1)])?;
    let value = &value[..value_len];
    let value_end = value_start + value_len;
    let len = value_end + 2;
    if bytes.get(value_end..len)? != b"\n\n" || len > budget {
        return None;
    }
    let data_state = match fingerprinting {
        true => fingerprint::add_data_line(0, value),
        false => 0,
    };
    let fields = Fields {
        id: Span::new(id),
        data: true,
        fingerprinting,
        data_state,
        field: true,
        ..Fields::default()
    };
    Some((len, fields))
}

/// The fields of a whole block, as `parsed` found them, parsed again with
/// its data fingerprinted, for a framer that did not as it went.
#[cold]
pub(super) fn reparse_fingerprinting(block: &[u8], parsed: &Fields) -> Fields {
    let mut fields = Fields::new(true);
    // The stream's byte order mark is no part of the first line's name.
    let start = if parsed.bom { 3 } else { 0 };
    scan_lines(
        &mut fields,
        LineEnds::get(),
        &block[start..],
        start,
        block.len(),
    );
    fields
}

/// The length of the line end found at `at` in `bytes` (1 for CR or LF, 2
/// for CRLF), and whether it is a CR at the very end, which an LF in the next
/// chunk may complete.
pub(super) fn line_end(bytes: &[u8], at: usize) -> (usize, bool) {
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
pub(super) fn line_end_len(bytes: &[u8]) -> Option<usize> {
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
pub(super) fn parse_field(fields: &mut Fields, text: &[u8], start: usize) {
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
        Name::Data => {
            fields.data = true;
            if fields.fingerprinting {
                fields.data_state = fingerprint::add_data_line(fields.data_state, value);
            }
        }
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
pub(super) fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |millis, &digit| {
        millis.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Mostly `common`, sometimes one of `others`.
    fn usually(
        common: &'static str,
        others: Vec<&'static str>,
    ) -> impl Strategy<Value = &'static str> + Clone {
        prop_oneof![4 => Just(common), 1 => prop::sample::select(others)]
    }

    /// A block of the common shape, or one a piece or two away from it:
    /// another id, separator, field name, line end or value, a short
    /// block, and what comes after it.
    fn near_common() -> impl Strategy<Value = Vec<u8>> {
        (
            usually("id: ", vec!["id:", "id:  ", "Id: ", ""]),
            usually(
                "42",
                vec!["1", "0", "042", "", "1a", "1\0", "12345678901234567890"],
            ),
            usually("\n", vec!["\r\n", "\r", ""]),
            usually(
                "data: ",
                vec!["data:", "data:  ", "dat: ", "event: t\ndata: ", ": c\n"],
            ),
            usually(
                "{\"jsonrpc\":\"2.0\"}",
                vec![
                    "",
                    "x",
                    "a\rb",
                    "a value of more than 64 bytes, which the fingerprint reads in lanes of 16",
                ],
            ),
            usually(
                "\n\n",
                vec!["\n", "\r\n\r\n", "\n\r", "\n\r\n", "\ndata: z\n\n", ""],
            ),
            prop::sample::select(vec!["", "id: 2\ndata: next\n\n", "\n", "\r"]),
        )
            .prop_map(|(id, value, sep, data, payload, end, after)| {
                [id, value, sep, data, payload, end, after]
                    .concat()
                    .into_bytes()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Whatever the common shape's parser takes, it takes as the
        /// general one does: the same length and the same fields.
        #[test]
        fn the_common_shape_is_parsed_as_any_block_is(
            bytes in near_common(),
            budget in prop_oneof![3 => Just(usize::MAX), 1 => 0..64usize],
            fingerprinting in any::<bool>(),
        ) {
            let line_ends = LineEnds::get();
            if let Some((len, fields)) = common_block(fingerprinting, line_ends, &bytes, budget) {
                let mut general = Fields::new(fingerprinting);
                let scanned = scan_lines(&mut general, line_ends, &bytes, 0, budget);
                let Scanned::Block { len: general_len } = scanned else {
                    return Err(TestCaseError::fail("the general parser takes no block"));
                };
                prop_assert_eq!((len, fields), (general_len, general));
            }
        }
    }

    #[test]
    fn the_common_shape_is_taken_and_others_are_left() {
        let line_ends = LineEnds::get();
        let common = |bytes: &[u8]| common_block(true, line_ends, bytes, usize::MAX);
        let (len, fields) = common(b"id: 12\ndata: x\n\nid: 13\n").expect("the common shape");
        assert_eq!(len, 16);
        assert_eq!(fields.id.get(), Some(4..6));
        assert!(fields.data && fields.field && !fields.comment);
        assert_ne!(fields.data_state, 0, "fingerprinted");
        for other in [
            &b"id: 12\r\ndata: x\n\n"[..],
            b"id:12\ndata: x\n\n",
            b"id: \ndata: x\n\n",
            b"id: 1a\ndata: x\n\n",
            b"id: 12\ndata:x\n\n",
            b"id: 12\ndata: x\r\n\r\n",
            b"id: 12\ndata: x\n",
            b"id: 12\ndata: x\ndata: y\n\n",
        ] {
            assert!(common(other).is_none(), "{other:?}");
        }
        assert!(common_block(true, line_ends, b"id: 1\ndata: x\n\n", 12).is_none());
        let at_most = |len: usize| format!("id: 1\ndata: {}\n\n", "x".repeat(len)).into_bytes();
        assert!(common(&at_most(COMMON_VALUE_MAX)).is_some());
        assert!(
            common(&at_most(COMMON_VALUE_MAX + 1)).is_none(),
            "left to the general parse"
        );
    }
}
