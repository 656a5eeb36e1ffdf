//! Throughput of the [`Framer`] against a plain line-end scan (the
//! near-limit baseline) and against the `sse-stream` parser, on the same
//! chunks of the same event stream.
//!
//! Every group feeds one body, `id: N\ndata: <payload>\n\n` for N = 1, 2, ...,
//! cut into fixed-size chunks. The chunks are `Bytes` slices of one buffer,
//! built once outside the timing loop. Each contender is handed its own
//! chunks and drops them, as a body hands them over off the wire: the
//! reference counting of cloning them would be the harness's cost, not the
//! parser's, and weigh on 128-byte chunks only.

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::Stream;
use sse_stream::{Sse, SseByteStream};
use tower_sse_resume::framer::{EventId, Framer, Segment};

/// One benchmark input: a whole body and its chunks.
struct Input {
    /// The id of the group, e.g. `framer_100B_16KiB`.
    name: &'static str,
    events: usize,
    data_len: usize,
    total_len: usize,
    chunks: Vec<Bytes>,
}

impl Input {
    fn new(name: &'static str, events: usize, data_len: usize, chunk_len: usize) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let data: Vec<u8> = (0..data_len)
            .map(|i| ALPHABET[i % ALPHABET.len()])
            .collect();
        let mut body = Vec::with_capacity(events * (data_len + 24));
        for n in 1..=events {
            body.extend_from_slice(format!("id: {n}\ndata: ").as_bytes());
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\n\n");
        }
        let body = Bytes::from(body);
        let chunks = (0..body.len())
            .step_by(chunk_len)
            .map(|start| body.slice(start..(start + chunk_len).min(body.len())))
            .collect();
        Self {
            name,
            events,
            data_len,
            total_len: body.len(),
            chunks,
        }
    }
}

/// Counts the line ends in all chunks with `memchr2`, one call per line end.
fn memchr_scan(chunks: Vec<Bytes>) -> usize {
    let mut count = 0;
    for chunk in chunks {
        let mut rest: &[u8] = &chunk;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
            count += 1;
            rest = &rest[at + 1..];
        }
    }
    count
}

/// Runs the framer over all chunks and calls `on_segment` on every segment;
/// `fingerprints` folds each block's fingerprint in as it is parsed.
fn run_framer(chunks: Vec<Bytes>, fingerprints: bool, mut on_segment: impl FnMut(Segment)) {
    let mut framer = Framer::new().fingerprints(fingerprints);
    for chunk in chunks {
        framer.push(chunk);
        while let Some(segment) = framer.next_segment() {
            on_segment(segment);
        }
    }
    framer.finish();
    while let Some(segment) = framer.next_segment() {
        on_segment(segment);
    }
}

/// The framer, black-boxing every segment's length; returns the block count.
fn framer(chunks: Vec<Bytes>) -> usize {
    let mut blocks = 0;
    run_framer(chunks, false, |segment| {
        black_box(segment.raw().len());
        blocks += usize::from(matches!(segment, Segment::Block(_)));
    });
    blocks
}

/// The framer as the layer runs it, each block's fingerprint folded in and
/// black-boxed; returns the block count.
fn framer_fingerprints(chunks: Vec<Bytes>) -> usize {
    let mut blocks = 0;
    run_framer(chunks, true, |segment| {
        if let Segment::Block(block) = segment {
            black_box(block.fingerprint());
            blocks += 1;
        }
    });
    blocks
}

/// Runs `sse-stream` over all chunks and calls `on_event` on every event.
///
/// The input stream is always ready, so polling with a no-op waker drains it
/// without a runtime.
fn run_sse_stream(chunks: Vec<Bytes>, mut on_event: impl FnMut(Sse)) {
    let input = futures_util::stream::iter(chunks.into_iter().map(Ok::<Bytes, Infallible>));
    let mut stream = pin!(SseByteStream::new(input));
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(event))) => on_event(event),
            Poll::Ready(Some(Err(error))) => panic!("sse-stream failed: {error}"),
            Poll::Ready(None) => return,
            Poll::Pending => unreachable!("an iterator stream is always ready"),
        }
    }
}

/// `sse-stream`, black-boxing every event; returns the event count.
fn sse_stream(chunks: Vec<Bytes>) -> usize {
    let mut events = 0;
    run_sse_stream(chunks, |event| {
        black_box(event);
        events += 1;
    });
    events
}

/// Checks, outside any measurement, that every contender does the work it is
/// timed for, so that a broken bench cannot report a figure.
fn sanity_check(input: &Input) {
    let name = input.name;
    assert_eq!(
        memchr_scan(input.chunks.clone()),
        3 * input.events,
        "{name}: memchr_scan line ends"
    );

    let mut blocks = 0;
    let mut bytes = 0;
    run_framer(input.chunks.clone(), false, |segment| {
        let Segment::Block(block) = segment else {
            panic!("{name}: the framer handed out a pass-through segment");
        };
        blocks += 1;
        bytes += block.raw().len();
        let id = blocks.to_string();
        assert_eq!(block.id(), EventId::Value(id.as_str().into()), "{name}");
        assert!(
            block.dispatches(),
            "{name}: block {blocks} does not dispatch"
        );
    });
    assert_eq!(blocks, input.events, "{name}: framer blocks");
    assert_eq!(bytes, input.total_len, "{name}: framer bytes out");
    assert_eq!(
        framer(input.chunks.clone()),
        input.events,
        "{name}: framer blocks"
    );
    assert_eq!(
        framer_fingerprints(input.chunks.clone()),
        input.events,
        "{name}: framer_fingerprints blocks"
    );

    let mut events = 0;
    run_sse_stream(input.chunks.clone(), |event| {
        events += 1;
        assert_eq!(event.id, Some(events.to_string()), "{name}: sse-stream id");
        let data_len = event.data.as_ref().map(String::len);
        assert_eq!(data_len, Some(input.data_len), "{name}: sse-stream data");
    });
    assert_eq!(events, input.events, "{name}: sse-stream events");
    assert_eq!(
        sse_stream(input.chunks.clone()),
        input.events,
        "{name}: sse-stream events"
    );
}

fn bench_input(c: &mut Criterion, input: &Input) {
    sanity_check(input);
    let chunks = || input.chunks.clone();
    let mut group = c.benchmark_group(input.name);
    group.throughput(Throughput::Bytes(input.total_len as u64));
    group.bench_function("memchr_scan", |b| {
        b.iter_batched(
            chunks,
            |chunks| memchr_scan(black_box(chunks)),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("sse_stream", |b| {
        b.iter_batched(
            chunks,
            |chunks| sse_stream(black_box(chunks)),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("framer", |b| {
        b.iter_batched(
            chunks,
            |chunks| framer(black_box(chunks)),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("framer_fingerprints", |b| {
        b.iter_batched(
            chunks,
            |chunks| framer_fingerprints(black_box(chunks)),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    const KIB: usize = 1024;
    let inputs = [
        ("framer_100B_16KiB", 100_000, 100, 16 * KIB),
        ("framer_4KiB_16KiB", 5_000, 4 * KIB, 16 * KIB),
        ("framer_100B_128B", 100_000, 100, 128),
    ];
    for (name, events, data_len, chunk_len) in inputs {
        bench_input(c, &Input::new(name, events, data_len, chunk_len));
    }
}

criterion_group! {
    name = framer_benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(framer_benches);
