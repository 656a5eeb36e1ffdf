//! Throughput of a whole event-stream response through [`SseResumeLayer`],
//! against the same body collected with no layer (the near-limit baseline)
//! and against the `sse-stream` parser merely parsing it. The layer runs
//! with events compared by content (`memory_dedup`, the default) and with
//! ids trusted alone (`memory_dedup_trust_ids`), and with a replay history
//! without and with linger (`memory_dedup_history`,
//! `memory_dedup_history_linger`: what linger costs while the client is
//! attached); for 100-byte events also
//! as two responses of one stream at once (`two_responses`: two bodies an
//! iteration, to compare with twice `memory_dedup`).
//!
//! Every group feeds one body, `id: N\ndata: <payload>\n\n` for N = 1, 2, ...,
//! in which every 10th event repeats the id of the event before it, so that
//! the layer drops 10% of the blocks. The chunks are `Bytes` slices of one
//! buffer, built once outside the timing loop, as a body arrives off the
//! wire; every contender gets them through the same lazy stream, polled on
//! the same current-thread tokio runtime.

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{Stream, StreamExt};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use sse_stream::SseByteStream;
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

/// Every this many events, one repeats the id of the event before it.
const DUPLICATE_EVERY: usize = 10;

/// One benchmark input: a whole body, its chunks, and what the layer must
/// make of it.
struct Input {
    /// The id of the group, e.g. `layer_100B_16KiB`.
    name: &'static str,
    events: usize,
    duplicates: usize,
    total_len: usize,
    chunks: Arc<[Bytes]>,
    /// The body without the blocks whose id repeats an earlier one.
    deduplicated: Bytes,
    /// Whether to time two concurrent responses of one stream too.
    two_responses: bool,
}

impl Input {
    fn new(name: &'static str, events: usize, data_len: usize, chunk_len: usize) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let data: Vec<u8> = (0..data_len)
            .map(|i| ALPHABET[i % ALPHABET.len()])
            .collect();
        let mut body = Vec::with_capacity(events * (data_len + 24));
        let mut deduplicated = Vec::with_capacity(body.capacity());
        let mut duplicates = 0;
        for n in 1..=events {
            let start = body.len();
            body.extend_from_slice(format!("id: {}\ndata: ", event_id(n)).as_bytes());
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\n\n");
            if is_duplicate(n) {
                duplicates += 1;
            } else {
                deduplicated.extend_from_slice(&body[start..]);
            }
        }
        let body = Bytes::from(body);
        let chunks = (0..body.len())
            .step_by(chunk_len)
            .map(|start| body.slice(start..(start + chunk_len).min(body.len())))
            .collect();
        Self {
            name,
            events,
            duplicates,
            total_len: body.len(),
            chunks,
            deduplicated: Bytes::from(deduplicated),
            two_responses: data_len < 1024,
        }
    }
}

fn is_duplicate(n: usize) -> bool {
    n % DUPLICATE_EVERY == 0
}

/// The id of the `n`th event (from 1): `n`, or the id before it for every
/// 10th event.
fn event_id(n: usize) -> usize {
    if is_duplicate(n) { n - 1 } else { n }
}

/// The chunks, handed out one at a time, as a body's frames.
fn frames(chunks: Arc<[Bytes]>) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::iter((0..chunks.len()).map(move |i| Ok(Frame::data(chunks[i].clone()))))
}

/// The upstream response body: a stream body over the chunks.
fn upstream_body(
    chunks: Arc<[Bytes]>,
) -> StreamBody<impl Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    StreamBody::new(frames(chunks))
}

/// Collects a body into one buffer, as a copying consumer would.
async fn collect<B>(body: B) -> Bytes
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    BodyExt::collect(body)
        .await
        .expect("the upstream body cannot fail")
        .to_bytes()
}

/// The body with no layer, collected.
async fn passthrough(chunks: Arc<[Bytes]>) -> Bytes {
    collect(upstream_body(chunks)).await
}

/// Runs `sse-stream` over the chunks and calls `on_event` on every event;
/// returns the event count.
async fn sse_stream_parse(
    chunks: Arc<[Bytes]>,
    mut on_event: impl FnMut(sse_stream::Sse),
) -> usize {
    let input = futures_util::stream::iter(
        (0..chunks.len()).map(move |i| Ok::<Bytes, Infallible>(chunks[i].clone())),
    );
    let mut stream = pin!(SseByteStream::new(input));
    let mut events = 0;
    while let Some(event) = stream.next().await {
        on_event(event.expect("sse-stream failed"));
        events += 1;
    }
    events
}

/// A service answering every request with the event stream of `chunks`,
/// behind `layer`.
fn layered_service(
    chunks: Arc<[Bytes]>,
    layer: SseResumeLayer,
) -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = Infallible>>,
    Error = Infallible,
> {
    let inner = tower::service_fn(move |_request: Request<()>| {
        let mut response = Response::new(upstream_body(Arc::clone(&chunks)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        std::future::ready(Ok::<_, Infallible>(response))
    });
    ServiceBuilder::new().layer(layer).service(inner)
}

/// Two `GET /mcp` responses of session `session` at once, through
/// `service`: both open, then both collected, the first first.
async fn two_responses<S, B>(service: &mut S, session: &str) -> (Bytes, Bytes)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes, Error = Infallible>,
{
    let request = || {
        Request::get("/mcp")
            .header("mcp-session-id", session)
            .body(())
            .expect("a valid request")
    };
    let first = service.ready().await.expect("infallible").call(request());
    let first = first.await.expect("infallible");
    let second = service.ready().await.expect("infallible").call(request());
    let second = second.await.expect("infallible");
    (
        collect(first.into_body()).await,
        collect(second.into_body()).await,
    )
}

/// `GET /mcp` of session `session` through `service`, its body collected.
async fn memory_dedup<S, B>(service: &mut S, session: &str) -> Bytes
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes, Error = Infallible>,
{
    let request = Request::get("/mcp")
        .header("mcp-session-id", session)
        .body(())
        .expect("a valid request");
    let response = service
        .ready()
        .await
        .expect("infallible")
        .call(request)
        .await
        .expect("infallible");
    collect(response.into_body()).await
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Checks, outside any measurement, that every contender does the work it is
/// timed for, so that a broken bench cannot report a figure.
fn sanity_check<S, B>(rt: &Runtime, input: &Input, service: &mut S)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes, Error = Infallible>,
{
    let name = input.name;
    let whole = rt.block_on(passthrough(Arc::clone(&input.chunks)));
    assert_eq!(whole.len(), input.total_len, "{name}: passthrough bytes");
    assert!(
        input
            .chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .eq(whole.iter()),
        "{name}: passthrough bytes differ from the input"
    );

    let mut n = 0;
    let events = rt.block_on(sse_stream_parse(Arc::clone(&input.chunks), |event| {
        n += 1;
        assert_eq!(
            event.id,
            Some(event_id(n).to_string()),
            "{name}: sse-stream id"
        );
        assert!(event.data.is_some(), "{name}: sse-stream data");
    }));
    assert_eq!(events, input.events, "{name}: sse-stream events");

    let out = rt.block_on(memory_dedup(service, "sanity-check"));
    assert_eq!(
        out.len(),
        input.deduplicated.len(),
        "{name}: memory_dedup bytes out"
    );
    assert!(
        out == input.deduplicated,
        "{name}: memory_dedup output differs from the input minus its duplicates"
    );
    let blocks_out = out.windows(2).filter(|pair| *pair == b"\n\n").count();
    assert_eq!(
        blocks_out,
        input.events - input.duplicates,
        "{name}: memory_dedup blocks out"
    );
}

fn bench_input(c: &mut Criterion, input: &Input) {
    let rt = runtime();
    let layered = |layer| layered_service(Arc::clone(&input.chunks), layer);
    let mut service = layered(SseResumeLayer::new());
    sanity_check(&rt, input, &mut service);
    let mut trusting = layered(SseResumeLayer::new().trust_ids(true));
    sanity_check(&rt, input, &mut trusting);
    // Linger needs a history: its baseline keeps one too.
    let history = || SseResumeLayer::new().history(HistoryLimits::new());
    let mut with_history = layered(history());
    sanity_check(&rt, input, &mut with_history);
    let mut lingering = layered(history().linger(Duration::from_secs(30)));
    sanity_check(&rt, input, &mut lingering);
    let chunks = &input.chunks;
    let mut group = c.benchmark_group(input.name);
    group.throughput(Throughput::Bytes(input.total_len as u64));
    group.bench_function("passthrough", |b| {
        b.iter(|| black_box(rt.block_on(passthrough(Arc::clone(black_box(chunks))))));
    });
    group.bench_function("sse_stream_parse", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(sse_stream_parse(Arc::clone(black_box(chunks)), |event| {
                    black_box(event);
                })),
            )
        });
    });
    // A fresh session each time, over warm-up and measurement alike: its
    // window starts empty, so only the 10% repeated ids are duplicates.
    let mut session = 0_u64;
    group.bench_function("memory_dedup", |b| {
        b.iter(|| {
            session += 1;
            let session = format!("bench-session-{session}");
            black_box(rt.block_on(memory_dedup(&mut service, black_box(&session))))
        });
    });
    group.bench_function("memory_dedup_trust_ids", |b| {
        b.iter(|| {
            session += 1;
            let session = format!("bench-session-{session}");
            black_box(rt.block_on(memory_dedup(&mut trusting, black_box(&session))))
        });
    });
    for (name, service) in [
        ("memory_dedup_history", &mut with_history),
        ("memory_dedup_history_linger", &mut lingering),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                session += 1;
                let session = format!("bench-session-{session}");
                black_box(rt.block_on(memory_dedup(service, black_box(&session))))
            });
        });
    }
    if input.two_responses {
        let (first, second) = rt.block_on(two_responses(&mut service, "sanity-two"));
        assert!(
            first == input.deduplicated && second == input.deduplicated,
            "{}: each of two responses gets every event",
            input.name
        );
        group.bench_function("two_responses", |b| {
            b.iter(|| {
                session += 1;
                let session = format!("bench-session-{session}");
                black_box(rt.block_on(two_responses(&mut service, black_box(&session))))
            });
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    const KIB: usize = 1024;
    let inputs = [
        ("layer_100B_16KiB", 100_000, 100, 16 * KIB),
        ("layer_4KiB_16KiB", 5_000, 4 * KIB, 16 * KIB),
    ];
    for (name, events, data_len, chunk_len) in inputs {
        bench_input(c, &Input::new(name, events, data_len, chunk_len));
    }
}

criterion_group! {
    name = layer_benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(layer_benches);
