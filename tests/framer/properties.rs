//! Properties of the framer on generated streams.
//!
//! The streams are mostly SSE-like (known and unknown fields, comments, blank
//! lines, every kind of line end, the odd BOM, NUL and invalid UTF-8) with
//! some fully random bytes mixed in. Each is fed whole and in a random
//! chunking, and must:
//!
//! - frame the same however it is chunked,
//! - give back its input when the segments' raw bytes are concatenated,
//! - dispatch the same events as an independent parser, `sse-parse`,
//! - with a small block length limit, keep blocks and the buffer within the
//!   limit and pick framing up again after an oversized block.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use tower_sse_resume::framer::{EventId, Framer};

use crate::common::{
    BOM, Segment, blocks, browser_events, chunks_of, coalesce, concat_raw, frame, frame_observed,
    show, show_segments, split_at,
};

/// The block length limit of the limit properties: small, so generated
/// streams often go over it.
const LIMIT: usize = 64;

/// Cases per property. Fewer cases rarely hit the exact lengths the limit
/// bugs need.
///
/// In a debug build nearly all the time goes into generating the streams
/// (about 3.5 s of CPU per 4096 cases), not into framing them. So the six
/// properties of a stream and a chunking are checked together, on the same
/// generated cases, by [`properties_of_a_stream_and_a_chunking`]: each still
/// sees 4096 cases, and the binary takes about 7 s of CPU instead of 27.
const CASES: u32 = 4096;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// A byte of a field value or comment: mostly printable ASCII (colons and
/// spaces included, to exercise the name/value split), sometimes NUL, a BOM
/// byte, invalid UTF-8 or a piece of a multi-byte character. Never CR or LF:
/// line ends are chosen separately.
fn value_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        12 => prop::sample::select(b"abcxyz0179 :-_".to_vec()),
        1 => Just(0x00),
        1 => prop::sample::select(vec![0xEF, 0xBB, 0xBF]),
        1 => prop::sample::select(vec![0xFF, 0xFE, 0x80]),
        1 => prop::sample::select(vec![0xC3, 0xA9]), // "é", whole or in halves
    ]
}

/// A field value: usually short, sometimes long enough to push a block over
/// [`LIMIT`] in the limit properties.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(value_byte(), 0..12),
        1 => prop::collection::vec(value_byte(), 30..100),
    ]
}

fn prefixed(prefix: &'static str) -> impl Strategy<Value = Vec<u8>> {
    value().prop_map(move |value| [prefix.as_bytes(), &value].concat())
}

fn one_of(lines: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(lines).prop_map(|line| line.as_bytes().to_vec())
}

/// One line, without its line end.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => Just(Vec::new()), // blank: ends the block
        4 => prefixed("data: "),
        1 => prefixed("data:"),
        1 => Just(b"data".to_vec()),
        2 => prefixed("id: "),
        1 => one_of(&["id:", "id", "id: 7", "id:  8"]),
        1 => one_of(&["event: t", "event: update", "event:", "event", "event:  spaced"]),
        1 => one_of(&[
            "retry: 123",
            "retry:0",
            "retry: +5",
            "retry: 1x",
            "retry:  5",
            "retry: 99999999999999999999",
            "retry",
        ]),
        1 => prefixed(":"),
        1 => one_of(&["foo: bar", "Data: x", "dat: x", "datas: x", "ids: 1", "idx", "data-x: y", ": data: x"]),
        1 => prefixed("x"), // unknown field, random name and value
    ]
}

fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop::sample::select(vec![&b"\n"[..], b"\r", b"\r\n"])
}

/// An SSE-like stream: lines with their own line ends, maybe a leading BOM,
/// maybe an unterminated last line.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::bool::weighted(0.15),
        prop::collection::vec((line(), line_end()), 0..40),
        prop::option::weighted(0.2, line()),
    )
        .prop_map(|(bom, lines, tail)| {
            let mut stream = Vec::new();
            if bom {
                stream.extend_from_slice(BOM);
            }
            for (line, end) in lines {
                stream.extend_from_slice(&line);
                stream.extend_from_slice(end);
            }
            stream.extend(tail.unwrap_or_default());
            stream
        })
}

/// SSE-like streams, plus fully random bytes and random bytes from the
/// alphabet that matters to the framer.
fn stream() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => sse_stream(),
        1 => prop::collection::vec(any::<u8>(), 0..300),
        1 => prop::collection::vec(prop::sample::select(b"\r\n\r\n:: datidevnry\x00\xff\xef\xbb\xbf".to_vec()), 0..300),
    ]
    .prop_map(Bytes::from)
}

/// How to cut a stream into chunks.
#[derive(Debug, Clone)]
enum Chunking {
    /// At random offsets (empty chunks included).
    At(Vec<Index>),
    /// Into chunks of this many bytes: 1 is one byte at a time.
    Every(usize),
}

impl Chunking {
    fn apply(&self, input: &Bytes) -> Vec<Bytes> {
        match self {
            Chunking::At(cuts) => {
                let offsets: Vec<usize> =
                    cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
                split_at(input, &offsets)
            }
            Chunking::Every(size) => chunks_of(input, *size),
        }
    }
}

fn chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        3 => prop::collection::vec(any::<Index>(), 0..12).prop_map(Chunking::At),
        1 => (1usize..=5).prop_map(Chunking::Every),
    ]
}

// ---------------------------------------------------------------------------
// The independent parser
// ---------------------------------------------------------------------------

/// An event reduced to what both parsers report: data, type and the last
/// event id at dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    data: String,
    event: String,
    last_id: String,
}

/// The events `sse-parse` dispatches for these chunks.
///
/// Read from its source (`src/parser.rs`), its semantics match the browser
/// model on everything generated here, so neither the generator nor the
/// comparison is restricted:
/// - a leading BOM is stripped once, at stream offset 0, and later ones are
///   content (the model strips it only from the block that starts the
///   stream);
/// - an unterminated block is dropped at `finish`, as our pass-through tail
///   dispatches nothing; its `id` never reaches a dispatched event;
/// - its pinned choice "a CR at end of stream terminates its line" means a
///   final blank line that is a lone CR dispatches, as our held block does
///   at `finish`;
/// - the last event id is committed at every blank line, an `id` containing
///   NUL is ignored, values are decoded lossily, and an empty `event` means
///   `message`, as in the model.
///
/// Its one deliberate departure, the opt-in `max_buffer` cap that drops
/// oversized blocks, is off: `SseParser::new()` holds any block, and the
/// framer keeps its default 1 MiB limit, which generated streams never reach.
fn sse_parse_events(chunks: &[Bytes]) -> Vec<Seen> {
    let mut parser = sse_parse::SseParser::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        seen.extend(
            std::iter::from_fn(|| parser.next_event()).map(|event| Seen {
                data: event.data,
                event: event.event,
                last_id: event.id,
            }),
        );
    }
    parser.finish();
    seen.extend(
        std::iter::from_fn(|| parser.next_event()).map(|event| Seen {
            data: event.data,
            event: event.event,
            last_id: event.id,
        }),
    );
    seen
}

/// The events our framer plus the browser model dispatch, in the same terms.
fn our_events(segments: &[Segment]) -> Vec<Seen> {
    browser_events(segments)
        .into_iter()
        .map(|event| Seen {
            data: event.data,
            event: event.event.unwrap_or_else(|| "message".to_owned()),
            last_id: event.last_id,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Properties with the default limit
// ---------------------------------------------------------------------------

// Each property takes a stream and its chunks (the stream cut by a
// generated `Chunking`); `properties_of_a_stream_and_a_chunking` checks them
// all on every generated case.

/// Chunk boundaries are invisible: the same segments, compared with
/// `==` (raw bytes and parsed fields), as feeding the stream whole.
fn chunking_never_changes_the_segments(
    input: &Bytes,
    chunks: &[Bytes],
) -> Result<(), TestCaseError> {
    let whole = frame(std::slice::from_ref(input));
    let chunked = frame(chunks);
    prop_assert_eq!(
        &chunked,
        &whole,
        "\n  chunked {}\n  whole   {}",
        show_segments(&chunked),
        show_segments(&whole)
    );
    Ok(())
}

/// Every byte comes out exactly once, in order.
fn segments_give_back_the_input(input: &Bytes, chunks: &[Bytes]) -> Result<(), TestCaseError> {
    let segments = frame(chunks);
    prop_assert_eq!(concat_raw(&segments), input.to_vec());
    Ok(())
}

/// Our framing plus the browser model dispatch what `sse-parse` does.
fn dispatches_what_sse_parse_does(input: &Bytes, chunks: &[Bytes]) -> Result<(), TestCaseError> {
    let ours = our_events(&frame(chunks));
    let theirs = sse_parse_events(chunks);
    prop_assert_eq!(ours, theirs, "input {}", show(input));
    Ok(())
}

/// Only a blank line closes a block: every block's raw bytes end with a
/// line end, and the only pass-through with the default limit is the
/// unterminated tail of the stream.
fn blocks_end_with_a_line_end_and_only_the_tail_passes_through(
    chunks: &[Bytes],
) -> Result<(), TestCaseError> {
    let segments = frame(chunks);
    for block in blocks(&segments) {
        prop_assert!(
            matches!(block.raw().last(), Some(b'\n' | b'\r')),
            "{}",
            show(block.raw())
        );
    }
    let passthroughs = segments
        .iter()
        .filter(|s| matches!(s, Segment::Passthrough(_)))
        .count();
    prop_assert!(passthroughs <= 1, "{}", show_segments(&segments));
    if passthroughs == 1 {
        prop_assert!(matches!(segments.last(), Some(Segment::Passthrough(_))));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Properties with a small limit
// ---------------------------------------------------------------------------

/// Frames with [`LIMIT`], checking the buffer after every step.
fn frame_limited(chunks: &[Bytes]) -> Result<Vec<Segment>, TestCaseError> {
    let mut worst = 0;
    let segments = frame_observed(Framer::with_max_block_len(LIMIT), chunks, |framer| {
        worst = worst.max(framer.buffered_len());
    });
    prop_assert!(worst <= LIMIT, "buffered_len() reached {worst} > {LIMIT}");
    Ok(segments)
}

/// A block that goes over [`LIMIT`]: data lines with random line ends, the
/// last one padded so that the block is `len` bytes before its blank line.
/// The shortest ones only go over with their blank line.
fn oversized_block() -> impl Strategy<Value = Vec<u8>> {
    (
        (LIMIT - 1)..=(3 * LIMIT),
        prop::collection::vec(line_end(), 1..4),
        line_end(),
    )
        // A CR ending the last data line and an LF as the "blank line" are
        // one CRLF line end: the block would not end there at all.
        .prop_filter(
            "CR then LF is one line end, not a blank line",
            |(_, ends, blank)| !(ends.last() == Some(&&b"\r"[..]) && *blank == b"\n"),
        )
        .prop_map(|(len, ends, blank)| {
            let len = len.max(LIMIT + 1 - blank.len());
            let mut block = Vec::new();
            for (i, end) in ends.iter().enumerate() {
                block.extend_from_slice(b"data: ");
                if i + 1 == ends.len() {
                    let pad = len.saturating_sub(block.len() + end.len());
                    block.extend(std::iter::repeat_n(b'x', pad));
                }
                block.extend_from_slice(end);
            }
            block.extend_from_slice(blank); // the blank line: over the limit now
            block
        })
}

/// No block is longer than the limit, the buffer never holds more than
/// the limit, and no byte is lost or repeated.
fn small_limit_bounds_blocks_and_buffer(
    input: &Bytes,
    chunks: &[Bytes],
) -> Result<(), TestCaseError> {
    let segments = frame_limited(chunks)?;
    for block in blocks(&segments) {
        prop_assert!(
            block.raw().len() <= LIMIT,
            "block of {} bytes: {}",
            block.raw().len(),
            show(block.raw())
        );
    }
    prop_assert_eq!(concat_raw(&segments), input.to_vec());
    Ok(())
}

/// With a limit, how an oversized block is cut into pass-through pieces
/// may follow the chunks, but the blocks, and the bytes passed through
/// between them, may not.
fn small_limit_frames_the_same_however_chunked(
    input: &Bytes,
    chunks: &[Bytes],
) -> Result<(), TestCaseError> {
    let whole = coalesce(&frame_limited(std::slice::from_ref(input))?);
    let chunked = coalesce(&frame_limited(chunks)?);
    prop_assert_eq!(
        &chunked,
        &whole,
        "\n  chunked {}\n  whole   {}",
        show_segments(&chunked),
        show_segments(&whole)
    );
    Ok(())
}

/// The fingerprint of every block of `chunks`, folded in while parsing or
/// read again when asked for.
fn fingerprints(chunks: &[Bytes], folded: bool) -> Vec<u64> {
    let mut framer = Framer::new().fingerprints(folded);
    for chunk in chunks {
        framer.push(chunk.clone());
    }
    framer.finish();
    let mut prints = Vec::new();
    while let Some(segment) = framer.next_segment() {
        if let tower_sse_resume::framer::Segment::Block(block) = segment {
            prints.push(block.fingerprint());
        }
    }
    prints
}

/// Folded in as the lines are parsed, however chunked, or read again from
/// the whole block: the same fingerprints.
fn fingerprints_do_not_depend_on_how_they_are_taken(
    input: &Bytes,
    chunks: &[Bytes],
) -> Result<(), TestCaseError> {
    let read_again = fingerprints(std::slice::from_ref(input), false);
    prop_assert_eq!(fingerprints(chunks, true), read_again);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// The six properties above, each on every generated stream and
    /// chunking (see [`CASES`] for why they share cases). A failure gives
    /// the line of the failing assertion, and shrinks to a case it fails on.
    #[test]
    fn properties_of_a_stream_and_a_chunking(input in stream(), chunking in chunking()) {
        let chunks = chunking.apply(&input);
        chunking_never_changes_the_segments(&input, &chunks)?;
        segments_give_back_the_input(&input, &chunks)?;
        dispatches_what_sse_parse_does(&input, &chunks)?;
        blocks_end_with_a_line_end_and_only_the_tail_passes_through(&chunks)?;
        small_limit_bounds_blocks_and_buffer(&input, &chunks)?;
        small_limit_frames_the_same_however_chunked(&input, &chunks)?;
        fingerprints_do_not_depend_on_how_they_are_taken(&input, &chunks)?;
    }

    /// Resynchronisation: after a block over the limit, the next block is
    /// framed again and keeps its id.
    #[test]
    fn small_limit_frames_the_block_after_an_oversized_one(
        prefix in stream(),
        oversized in oversized_block(),
        // A CR ending the data line and an LF as the "blank line" are one
        // CRLF line end: the block after the oversized one would then have
        // no blank line, be the unterminated tail, and rightly pass through.
        ends in (line_end(), line_end(), line_end()).prop_filter(
            "CR then LF is one line end, not a blank line",
            |&(_, data_end, blank)| !(data_end == b"\r" && blank == b"\n"),
        ),
        chunking in chunking(),
    ) {
        // Whatever state the prefix leaves, two LFs end it: the first closes
        // any line (or completes a CRLF), the second is a blank line.
        let (id_end, data_end, blank) = ends;
        let mut input = prefix.to_vec();
        input.extend_from_slice(b"\n\n");
        let oversized_at = input.len();
        input.extend_from_slice(&oversized);
        input.extend_from_slice(&[b"id: 42", id_end, b"data: ok", data_end, blank].concat());
        let input = Bytes::from(input);

        let segments = frame_limited(&chunking.apply(&input))?;
        let mut offset = 0;
        let mut found = false;
        for segment in &segments {
            if offset >= oversized_at {
                if let Segment::Block(block) = segment {
                    prop_assert_eq!(
                        (block.id(), block.dispatches()),
                        (EventId::Value("42".into()), true),
                        "first block after the oversized one: {}\n  all: {}",
                        show(block.raw()), show_segments(&segments)
                    );
                    found = true;
                    break;
                }
            }
            offset += segment.raw().len();
        }
        prop_assert!(found, "no block after the oversized one: {}", show_segments(&segments));
    }
}
