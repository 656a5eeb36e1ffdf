//! The framer on hostile or broken input: it must never panic, must keep
//! its own buffer within the block length limit, must hand every byte back
//! exactly once, and must frame the next well-formed block again.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use tower_sse_resume::framer::{DEFAULT_MAX_BLOCK_LEN, EventId, Framer};

use crate::common::{
    Block, Segment, blocks, browser_events, chunks_of, concat_raw, frame, frame_observed, show,
    show_segments, split_at,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A well-formed block to put after bad input: it must come out as a block.
const GOOD_BLOCK: &[u8] = b"id: 7\ndata: x\n\n";

/// Frames `chunks` with `framer`, asserting after every step that the
/// framer's buffer stays within its limit; returns the segments.
fn frame_bounded(framer: Framer, chunks: &[Bytes]) -> Vec<Segment> {
    let limit = framer.max_block_len();
    let mut worst = 0;
    let segments = frame_observed(framer, chunks, |framer| {
        worst = worst.max(framer.buffered_len())
    });
    assert!(
        worst <= limit,
        "buffered_len() reached {worst}, over the limit of {limit}"
    );
    segments
}

/// Frames one whole input with the default limit and returns its blocks.
fn blocks_of(input: &'static [u8]) -> Vec<Block> {
    blocks(&frame(&[Bytes::from_static(input)]))
        .cloned()
        .collect()
}

/// Asserts that the last segment is a block framed from [`GOOD_BLOCK`].
fn assert_ends_with_good_block(segments: &[Segment]) {
    match segments.last() {
        Some(Segment::Block(block)) => {
            assert_eq!(block.raw().as_ref(), GOOD_BLOCK);
            assert_eq!(block.id(), EventId::Value("7".into()));
            assert!(block.dispatches());
        }
        _ => panic!("the good block was not framed: {}", show_segments(segments)),
    }
}

// ---------------------------------------------------------------------------
// Random bytes
// ---------------------------------------------------------------------------

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(DEFAULT_MAX_BLOCK_LEN), 3 => 1usize..=80]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Any bytes, any chunking, any limit: no panic, the buffer and every
    /// block within the limit, every byte handed back once.
    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        input in prop::collection::vec(any::<u8>(), 0..400).prop_map(Bytes::from),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        limit in limit(),
    ) {
        let offsets: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
        let segments = frame_bounded(Framer::with_max_block_len(limit), &split_at(&input, &offsets));
        for block in blocks(&segments) {
            prop_assert!(block.raw().len() <= limit, "{}-byte block: {}", block.raw().len(), show(block.raw()));
        }
        prop_assert_eq!(concat_raw(&segments), input.to_vec());
    }
}

// ---------------------------------------------------------------------------
// NUL bytes
// ---------------------------------------------------------------------------

#[test]
fn a_long_run_of_nuls_passes_through_then_framing_resumes() {
    let mut input = vec![0u8; 3 * MIB];
    input.extend_from_slice(b"\n\n");
    input.extend_from_slice(GOOD_BLOCK);
    let input = Bytes::from(input);

    let segments = frame_bounded(Framer::new(), &chunks_of(&input, 64 * KIB));
    assert_eq!(concat_raw(&segments), input.as_ref());
    let (good, before) = segments.split_last().expect("segments");
    assert!(before.iter().all(|s| matches!(s, Segment::Passthrough(_))));
    assert_ends_with_good_block(std::slice::from_ref(good));
}

#[test]
fn nul_lines_are_unknown_fields_and_an_id_with_nul_is_ignored() {
    let blocks = blocks_of(b"\0\0\0\n\0:\0\n\nid: 1\n\nid: a\0b\ndata: x\n\n");
    assert_eq!(blocks.len(), 3);
    // A line of NULs is a field with an odd name: not a comment, no event.
    assert!(!blocks[0].dispatches());
    assert!(!blocks[0].is_comment_only());
    assert_eq!(blocks[0].id(), EventId::Absent);
    // An id containing NUL is ignored, so the last event id stays "1".
    assert_eq!(blocks[2].id(), EventId::Absent);
    let segments: Vec<Segment> = blocks.into_iter().map(Segment::Block).collect();
    assert_eq!(browser_events(&segments)[0].last_id, "1");
}

// ---------------------------------------------------------------------------
// Lone CRs
//
// Every CR is a line end, so a run of CRs is a run of blank lines, each a
// block of its own; a CR followed by an LF is one line end. Cutting the
// stream at every phase puts CRs at the ends and LFs at the starts of
// chunks.
// ---------------------------------------------------------------------------

/// Frames `input` in chunks of 1 to 7 bytes and at random offsets, and
/// checks that every chunking gives exactly the `expected` block raws.
fn assert_blocks_for_every_chunking(input: &Bytes, expected: &[&[u8]]) {
    let mut chunkings: Vec<(String, Vec<Bytes>)> = (1..=7)
        .map(|size| (format!("chunks of {size}"), chunks_of(input, size)))
        .collect();
    chunkings.push(("whole".into(), vec![input.clone()]));
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 0..20 {
        // A small xorshift generator: reproducible offsets without a crate.
        let offsets: Vec<usize> = (0..10)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % (input.len() as u64 + 1)) as usize
            })
            .collect();
        chunkings.push((
            format!("random cuts #{round}: {offsets:?}"),
            split_at(input, &offsets),
        ));
    }
    for (name, chunks) in chunkings {
        let segments = frame_bounded(Framer::new(), &chunks);
        assert_eq!(concat_raw(&segments), input.as_ref(), "{name}");
        let raws: Vec<&[u8]> = segments
            .iter()
            .map(|segment| match segment {
                Segment::Block(block) => block.raw().as_ref(),
                Segment::Passthrough(bytes) => {
                    panic!("{name}: unexpected pass-through {}", show(bytes))
                }
            })
            .collect();
        assert_eq!(raws, expected, "{name}");
    }
}

#[test]
fn a_run_of_crs_is_a_run_of_blank_blocks() {
    let input = Bytes::from(vec![b'\r'; 1000]);
    assert_blocks_for_every_chunking(&input, &[&b"\r"[..]; 1000]);
}

#[test]
fn cr_cr_lf_is_two_blank_blocks() {
    let input = Bytes::from(b"\r\r\n".repeat(300));
    let expected: Vec<&[u8]> = [&b"\r"[..], b"\r\n"].repeat(300);
    assert_blocks_for_every_chunking(&input, &expected);
}

#[test]
fn data_line_ended_by_cr_then_blank_crlf() {
    let input = Bytes::from(b"data: x\r\r\n".repeat(200));
    assert_blocks_for_every_chunking(&input, &[&b"data: x\r\r\n"[..]; 200]);
    let segments = frame(&chunks_of(&input, 3));
    let events = browser_events(&segments);
    assert_eq!(events.len(), 200);
    assert!(events.iter().all(|event| event.data == "x"));
}

// ---------------------------------------------------------------------------
// A 10 MB line with no line end
// ---------------------------------------------------------------------------

/// A 10 MB `data` line with no line end, then the end of that line, a blank
/// line and a good block.
fn ten_megabyte_line() -> (Bytes, Bytes) {
    let mut line = b"data: ".to_vec();
    line.resize(10 * 1000 * 1000, b'y');
    let mut after = b"\n\n".to_vec();
    after.extend_from_slice(GOOD_BLOCK);
    (Bytes::from(line), Bytes::from(after))
}

/// Frames the 10 MB line in `chunks`, then the block after it. With the
/// default limit the line only ever passes through, the buffer stays within
/// 1 MiB, and the block after it is framed.
fn assert_ten_megabyte_line_passes_through(chunks: Vec<Bytes>, after: Bytes) {
    let mut input = Vec::new();
    for chunk in chunks.iter().chain([&after]) {
        input.extend_from_slice(chunk);
    }
    let mut all = chunks;
    all.push(after);

    let segments = frame_bounded(Framer::new(), &all);
    assert_eq!(concat_raw(&segments), input, "bytes lost or repeated");
    let (good, line) = segments.split_last().expect("segments");
    for segment in line {
        assert!(
            matches!(segment, Segment::Passthrough(_)),
            "the long line was framed as a block"
        );
    }
    assert_ends_with_good_block(std::slice::from_ref(good));
}

#[test]
fn ten_megabyte_line_in_64_kib_chunks() {
    let (line, after) = ten_megabyte_line();
    assert_ten_megabyte_line_passes_through(chunks_of(&line, 64 * KIB), after);
}

#[test]
fn ten_megabyte_line_in_one_chunk() {
    let (line, after) = ten_megabyte_line();
    assert_ten_megabyte_line_passes_through(vec![line], after);
}

// ---------------------------------------------------------------------------
// Odd field values
// ---------------------------------------------------------------------------

#[test]
fn invalid_utf8_in_an_id_is_decoded_lossily() {
    let blocks = blocks_of(b"id: a\xffb\ndata: x\n\nid: \xc3\n\n");
    assert_eq!(blocks[0].id(), EventId::Value("a\u{FFFD}b".into()));
    assert_eq!(
        blocks[1].id(),
        EventId::Value("\u{FFFD}".into()),
        "a truncated character"
    );
}

#[test]
fn a_character_split_across_chunks_in_an_id_is_whole() {
    let segments = frame(&[
        Bytes::from_static(b"id: \xc3"),
        Bytes::from_static(b"\xa9\ndata: x\n\n"),
    ]);
    let block = blocks(&segments).next().expect("a block");
    assert_eq!(block.id(), EventId::Value("é".into()));
}

#[test]
fn retry_that_overflows_u64_is_ignored() {
    let blocks = blocks_of(
        b"retry: 18446744073709551615\n\n\
          retry: 18446744073709551616\n\n\
          retry: 99999999999999999999999999999999\n\n\
          retry: 5\nretry: 99999999999999999999\n\n",
    );
    assert_eq!(
        blocks[0].retry(),
        Some(u64::MAX),
        "the largest value that fits"
    );
    assert_eq!(blocks[1].retry(), None);
    assert_eq!(blocks[2].retry(), None);
    assert_eq!(
        blocks[3].retry(),
        Some(5),
        "an ignored line leaves the earlier value"
    );
}

#[test]
fn retry_with_a_plus_sign_is_ignored() {
    let blocks = blocks_of(b"retry: +5\n\nretry: 5\nretry: +6\n\nretry: -5\n\n");
    assert_eq!(blocks[0].retry(), None);
    assert_eq!(blocks[1].retry(), Some(5));
    assert_eq!(blocks[2].retry(), None);
}

// ---------------------------------------------------------------------------
// Blocks over the limit: reproducers of framer bugs
//
// Each test is the smallest input found for a bug the framer had, and
// keeps it from coming back.
// ---------------------------------------------------------------------------

/// Frames `chunks` with the given block length limit.
fn frame_limited(limit: usize, chunks: &[&[u8]]) -> Vec<Segment> {
    let chunks: Vec<Bytes> = chunks
        .iter()
        .map(|chunk| Bytes::copy_from_slice(chunk))
        .collect();
    frame_observed(Framer::with_max_block_len(limit), &chunks, |_| {})
}

/// A block that fills the limit exactly goes over it with its blank line.
/// That blank line ends the block, so the next block must be framed; the
/// framer instead keeps passing through up to the next blank line, and
/// loses the block after.
#[test]
fn block_over_the_limit_by_its_blank_line_does_not_swallow_the_next_block() {
    // "data: 123456789\n" is 16 bytes, the limit; the blank line makes 17.
    let segments = frame_limited(16, &[b"data: 123456789\n\nid: 7\ndata: x\n\n"]);
    assert_ends_with_good_block(&segments);
}

/// The same with the default limit: a block of exactly 1 MiB before its
/// blank line swallows the next one.
#[test]
fn block_of_exactly_one_mib_does_not_swallow_the_next_block() {
    let mut input = b"data: ".to_vec();
    input.resize(MIB - 1, b'y');
    input.push(b'\n');
    input.push(b'\n');
    input.extend_from_slice(GOOD_BLOCK);
    let segments = frame(&[Bytes::from(input)]);
    assert_ends_with_good_block(&segments);
}

/// While passing an oversized block through, a CRLF split across chunks
/// (CR at the end of one, LF at the start of the next) leaves the framer's
/// line start one byte in. The first line of the next block is then read
/// without its first byte: `id: 7` becomes `d: 7`.
#[test]
fn crlf_split_inside_an_oversized_block_does_not_corrupt_the_next_block() {
    let segments = frame_limited(
        16,
        &[
            b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r",
            b"\n\nid: 7\ndata: x\n\n",
        ],
    );
    assert_ends_with_good_block(&segments);
}

/// The same with the default limit, and a block whose first line is its
/// data line, which then no longer dispatches.
#[test]
fn crlf_split_inside_a_two_mib_line_does_not_corrupt_the_next_block() {
    let mut line = b"data: ".to_vec();
    line.resize(2 * MIB, b'y');
    line.push(b'\r');
    let segments = frame(&[
        Bytes::from(line),
        Bytes::from_static(b"\n\r\ndata: x\r\n\r\n"),
    ]);
    let Some(Segment::Block(block)) = segments.last() else {
        panic!("no block after the long line: {}", show_segments(&segments));
    };
    assert_eq!(block.raw().as_ref(), b"data: x\r\n\r\n");
    assert!(
        block.dispatches(),
        "the block after the long line lost its data line"
    );
}

/// When the blank line that ends an oversized block is a CR at the end of a
/// chunk and the LF comes in the next chunk, that LF must stay with the
/// pass-through (as when the stream comes whole); the framer puts it at the
/// start of the next block instead.
#[test]
fn lf_completing_the_blank_line_of_an_oversized_block_is_not_in_the_next_block() {
    let input: &[&[u8]] = &[
        b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n\r",
        b"\nid: 7\ndata: x\n\n",
    ];
    let split = frame_limited(16, input);
    let whole = frame_limited(16, &[&input.concat()]);
    assert_eq!(
        blocks(&split).collect::<Vec<_>>(),
        blocks(&whole).collect::<Vec<_>>()
    );
    assert_ends_with_good_block(&split);
}

/// A line ending in a CR at the end of a chunk is checked against the limit
/// with a one-byte line end; the LF that completes it in the next chunk is
/// then added without a check. When the blank line of a block is such a CR,
/// the block comes out one byte over the limit (fed whole, the same stream
/// passes it through).
#[test]
fn lf_completing_a_held_blank_line_does_not_grow_a_block_past_the_limit() {
    // "data: 123456789\r\r" is 17 bytes, the limit; the LF makes 18.
    let segments = frame_limited(17, &[b"data: 123456789\r\r", b"\nid: 7\ndata: x\n\n"]);
    let mut checked = 0;
    for block in blocks(&segments) {
        assert!(
            block.raw().len() <= 17,
            "{}-byte block: {}",
            block.raw().len(),
            show(block.raw())
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no block was framed: {}",
        show_segments(&segments)
    );
    assert_ends_with_good_block(&segments);
}

/// The same unchecked LF after a field line: the framer notices the block
/// is too long only with nothing left to parse, and starts passing through
/// as if in the middle of a line. The blank line that follows then ends
/// that "line" instead of the block, and the block after it is lost. Fed
/// whole, the same stream frames it.
#[test]
fn lf_completing_a_line_at_the_limit_does_not_swallow_the_next_block() {
    // "data: 1234567890\r" is 17 bytes, the limit; the LF makes 18.
    let chunks: &[&[u8]] = &[b"data: 1234567890\r", b"\n", b"\nid: 7\ndata: x\n\n"];
    assert_ends_with_good_block(&frame_limited(17, &[&chunks.concat()]));
    assert_ends_with_good_block(&frame_limited(17, chunks));
}
