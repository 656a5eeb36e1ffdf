//! Conformance of the framer with shared event-stream vectors.
//!
//! `tests/fixtures/vectors.json` holds byte streams (WHATWG and browser test
//! suites, the spec's examples, other clients' suites, and our own edge
//! cases); `tests/fixtures/expected.json` holds, per stream, the events a
//! browser dispatches for it. Each stream is framed whole, one byte at a
//! time, and cut in two at every offset (for long streams, at every offset
//! that can matter: see [`split_offsets`]). Every chunking must:
//!
//! - give back the input when the segments' raw bytes are concatenated,
//! - dispatch the expected events (through the browser model in
//!   `common`),
//! - produce the same blocks, field for field, as feeding the stream whole.
//!
//! The end of the file pins the rule for a CR at the end of a chunk.

use bytes::Bytes;
use serde_json::Value;
use tower_sse_resume::framer::{EventId, Framer};

use crate::common::{
    self, Block, BlockView, Dispatched, Segment, block_views, browser_events, concat_raw, frame,
    show,
};

/// One vector and the events it must dispatch.
struct Case {
    name: String,
    input: Bytes,
    expected: Vec<Dispatched>,
}

fn read_json(file: &str) -> Value {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn load_cases() -> Vec<Case> {
    let vectors = read_json("vectors.json");
    let expected = read_json("expected.json");
    let cases: Vec<Case> = vectors
        .as_array()
        .expect("vectors.json is a list")
        .iter()
        .map(|vector| {
            let name = vector["name"]
                .as_str()
                .expect("a vector has a name")
                .to_owned();
            let input = decode_hex(vector["hex"].as_str().expect("a vector has hex"));
            let events = expected[&name]
                .as_array()
                .unwrap_or_else(|| panic!("expected.json has no entry for {name}"));
            let expected = events.iter().map(dispatched_from_json).collect();
            Case {
                name,
                input: Bytes::from(input),
                expected,
            }
        })
        .collect();
    assert!(!cases.is_empty(), "no vectors loaded");
    assert_eq!(
        cases.len(),
        expected.as_object().expect("expected.json is a map").len(),
        "every expectation has its vector"
    );
    cases
}

fn dispatched_from_json(event: &Value) -> Dispatched {
    let optional = |key: &str| event[key].as_str().map(str::to_owned);
    Dispatched {
        data: optional("data").expect("an event has data"),
        event: optional("event"),
        id: optional("id"),
        last_id: optional("last_id").expect("an event has last_id"),
    }
}

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd-length hex");
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("valid hex"))
        .collect()
}

/// What one chunking of a case produced, to compare against the reference
/// (the stream fed whole).
struct Outcome {
    events: Vec<Dispatched>,
    blocks: Vec<BlockView>,
}

impl Outcome {
    /// Frames the reference chunking and runs it through the browser model.
    fn reference(case: &Case) -> Self {
        let segments = frame(std::slice::from_ref(&case.input));
        Self {
            events: browser_events(&segments),
            blocks: block_views(&segments),
        }
    }
}

/// Frames `chunks` and checks them against the case and the reference.
/// Returns a failure message naming the case and the chunking.
fn check(case: &Case, chunking: &str, chunks: &[Bytes], reference: &Outcome) -> Result<(), String> {
    let fail = |what: String| Err(format!("{} [{chunking}]: {what}", case.name));
    let segments = frame(chunks);

    let raw = concat_raw(&segments);
    if raw != case.input {
        return fail(format!(
            "raw bytes {} != input {}",
            show(&raw),
            show(&case.input)
        ));
    }

    let blocks = block_views(&segments);
    // The events are a function of the blocks alone, so a chunking with the
    // reference's blocks has the reference's events: only re-derive them
    // when the blocks differ (the 70 KB vector is cut thousands of ways).
    let events = if blocks == reference.blocks {
        reference.events.clone()
    } else {
        browser_events(&segments)
    };
    if events != case.expected {
        return fail(format!("events {events:?}\n  expected {:?}", case.expected));
    }
    if blocks != reference.blocks {
        return fail(format!(
            "blocks differ from the whole feed\n  got      {}\n  expected {}",
            describe(&blocks),
            describe(&reference.blocks),
        ));
    }
    Ok(())
}

fn describe(blocks: &[BlockView]) -> String {
    let parts: Vec<String> = blocks
        .iter()
        .map(|block| {
            format!(
                "{{raw: {}, id: {:?}, dispatches: {}, event: {:?}, retry: {:?}, comment: {}}}",
                show(&block.raw),
                block.id,
                block.dispatches,
                block.event_type,
                block.retry,
                block.is_comment_only,
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Runs `chunkings(case)` over every case and reports every failure at once.
fn for_every_case(chunkings: impl Fn(&Case) -> Vec<(String, Vec<Bytes>)>) {
    let mut failures = Vec::new();
    for case in load_cases() {
        let reference = Outcome::reference(&case);
        for (chunking, chunks) in chunkings(&case) {
            if let Err(failure) = check(&case, &chunking, &chunks, &reference) {
                failures.push(failure);
                break; // one failure per case is enough to go on
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn whole_stream_dispatches_the_expected_events() {
    for_every_case(|case| vec![("whole".to_owned(), vec![case.input.clone()])]);
}

#[test]
fn one_byte_at_a_time_dispatches_the_expected_events() {
    for_every_case(|case| {
        vec![(
            "one byte at a time".to_owned(),
            common::chunks_of(&case.input, 1),
        )]
    });
}

/// Vectors up to this long are cut in two at every offset.
const SPLIT_EVERYWHERE_MAX: usize = 4 * 1024;
/// How much of each end of a longer vector is still cut at every offset.
const SPLIT_EDGE: usize = 2 * 1024;
/// The stride of the cuts in the middle of a longer vector: prime, so the
/// cuts fall at every phase of any repeating pattern.
const SPLIT_STRIDE: usize = 61;
/// How close to a CR or LF in the middle of a longer vector every offset
/// is still cut at.
const SPLIT_NEAR_LINE_END: usize = 16;

/// Where to cut `input` in two. Cutting the 70 KB vector at all of its
/// offsets took about 13 s in a debug build, so a vector longer than
/// [`SPLIT_EVERYWHERE_MAX`] is cut at every offset within [`SPLIT_EDGE`]
/// bytes of either end and within [`SPLIT_NEAR_LINE_END`] bytes of every CR
/// or LF (so every cut inside or next to a line end, a field name, a colon
/// and the space after it is still tried), and at a stride of
/// [`SPLIT_STRIDE`] in between, where a cut only falls inside a long run of
/// field value or comment bytes. Shorter vectors are cut everywhere.
fn split_offsets(input: &[u8]) -> Vec<usize> {
    let len = input.len();
    if len <= SPLIT_EVERYWHERE_MAX {
        return (0..=len).collect();
    }
    let near_line_end = |at: usize| {
        let window = at.saturating_sub(SPLIT_NEAR_LINE_END)..(at + SPLIT_NEAR_LINE_END).min(len);
        input[window]
            .iter()
            .any(|&byte| byte == b'\r' || byte == b'\n')
    };
    (0..=len)
        .filter(|&at| {
            at <= SPLIT_EDGE
                || at >= len - SPLIT_EDGE
                || at % SPLIT_STRIDE == 0
                || near_line_end(at)
        })
        .collect()
}

#[test]
fn every_two_way_split_dispatches_the_expected_events() {
    for_every_case(|case| {
        split_offsets(&case.input)
            .into_iter()
            .map(|at| {
                (
                    format!("split at {at}"),
                    common::split_at(&case.input, &[at]),
                )
            })
            .collect()
    });
}

// ---------------------------------------------------------------------------
// A CR at the end of a chunk
//
// A CR ends a line, but an LF right after it belongs to the same line end,
// and that LF may arrive in the next chunk. The framer waits for the next
// byte (or the end of the stream) before it lets go of a block whose blank
// line is such a CR, so the block's raw bytes never depend on the chunking.
// ---------------------------------------------------------------------------

/// Pushes one chunk and takes every segment it completes.
fn push(framer: &mut Framer, chunk: &'static [u8]) -> Vec<Segment> {
    framer.push(Bytes::from_static(chunk));
    std::iter::from_fn(|| common::next_segment(framer)).collect()
}

fn finish(framer: &mut Framer) -> Vec<Segment> {
    framer.finish();
    std::iter::from_fn(|| common::next_segment(framer)).collect()
}

fn only_block(segments: &[Segment]) -> &Block {
    match segments {
        [Segment::Block(block)] => block,
        other => panic!(
            "expected exactly one block, got {}",
            common::show_segments(other)
        ),
    }
}

#[test]
fn crlf_split_across_chunks_stays_in_one_block() {
    let mut framer = Framer::new();
    assert!(push(&mut framer, b"data: a\r").is_empty());
    // The blank line is a CR at the end of the chunk: the block is held.
    assert!(push(&mut framer, b"\ndata: b\r\n\r").is_empty());
    let segments = push(&mut framer, b"\n");
    let block = only_block(&segments);
    assert_eq!(block.raw().as_ref(), b"data: a\r\ndata: b\r\n\r\n");
    assert!(block.dispatches());
    assert_eq!(
        common::block_data(block.raw(), true).as_deref(),
        Some("a\nb")
    );
    assert!(finish(&mut framer).is_empty());
}

#[test]
fn block_ending_in_cr_at_end_of_input_is_held_until_finish() {
    let mut framer = Framer::new();
    assert!(
        push(&mut framer, b"id: 1\ndata: x\r\r").is_empty(),
        "an LF may still follow"
    );
    assert_eq!(
        framer.buffered_len(),
        0,
        "a held block inside one chunk is not copied"
    );
    let segments = finish(&mut framer);
    let block = only_block(&segments);
    assert_eq!(block.raw().as_ref(), b"id: 1\ndata: x\r\r");
    assert_eq!(block.id(), EventId::Value("1".into()));
    assert!(block.dispatches());
}

#[test]
fn block_ending_in_cr_is_released_by_a_byte_other_than_lf() {
    let mut framer = Framer::new();
    assert!(push(&mut framer, b"data: x\n\r").is_empty());
    let segments = push(&mut framer, b"data: y\n\n");
    let [Segment::Block(first), Segment::Block(second)] = &segments[..] else {
        panic!(
            "expected two blocks, got {}",
            common::show_segments(&segments)
        );
    };
    assert_eq!(first.raw().as_ref(), b"data: x\n\r");
    assert_eq!(second.raw().as_ref(), b"data: y\n\n");
}

#[test]
fn block_ending_in_cr_takes_the_lf_of_the_next_chunk() {
    let mut framer = Framer::new();
    assert!(push(&mut framer, b"data: x\n\r").is_empty());
    let segments = push(&mut framer, b"\ndata: y\n\n");
    let [Segment::Block(first), Segment::Block(second)] = &segments[..] else {
        panic!(
            "expected two blocks, got {}",
            common::show_segments(&segments)
        );
    };
    assert_eq!(first.raw().as_ref(), b"data: x\n\r\n");
    assert_eq!(second.raw().as_ref(), b"data: y\n\n");
}

#[test]
fn cr_ending_a_field_line_at_chunk_end_does_not_hold_anything_out() {
    // Only a blank line completes a block; a field line's CR at the end of a
    // chunk just makes the framer swallow a following LF into that line.
    let mut framer = Framer::new();
    assert!(push(&mut framer, b"data: x\r").is_empty());
    assert!(push(&mut framer, b"\n").is_empty());
    let segments = push(&mut framer, b"\n");
    assert_eq!(only_block(&segments).raw().as_ref(), b"data: x\r\n\n");
}
