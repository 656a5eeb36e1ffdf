//! Replaying 1,000 events from the history against streaming them live, in
//! one run.
//!
//! - `plain`: the upstream sends 1,000 events of 100 bytes (16 KiB chunks)
//!   through the layer, without a session (so deduplicated within the
//!   response, with no store): the stream a client would get from an
//!   upstream that resumes by itself.
//! - `memory` and `redis`: the client reconnects with `Last-Event-ID: 0`
//!   and the same 1,000 events come from the history of a `MemoryStore` or
//!   a `RedisStore` (a `redis-server` on loopback that the benchmark starts
//!   itself; skipped with a message when it is not on `PATH`); the upstream
//!   sends nothing.
//!
//! - `redis_native_xrange`: the baseline for `redis`, the same kept
//!   blocks read by the client itself with one native range read of the
//!   history's stream (`XREVRANGE`, the newest 1,000), on a connection of
//!   its own.
//!
//! Group `replay_1000_first_byte` times a request up to the first byte of
//! the body, `replay_1000_total` up to its end. Everything runs on one
//! current-thread tokio runtime, Redis's I/O included.
//!
//! Last, the whole replay from Redis and the native read are timed in 300
//! pairs, one right after the other, and the ratio's median and spread
//! over the pairs printed: criterion's groups run apart, and the load of
//! a shared machine moves between them by more than the difference.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_sse_resume::{HistoryLimits, RedisStore, SseResumeLayer, TrackerStore};

const EVENTS: u32 = 1000;
const DATA_LEN: usize = 100;
const CHUNK_LEN: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Events `from..=to`, each `id: N\ndata: <100 bytes>\n\n`.
fn events(from: u32, to: u32) -> Bytes {
    let data = "x".repeat(DATA_LEN);
    let body: String = (from..=to)
        .map(|i| format!("id: {i}\ndata: {data}\n\n"))
        .collect();
    Bytes::from(body)
}

/// An upstream whose every response is `body`, in chunks.
fn upstream(
    body: Bytes,
) -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = BoxError>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let chunks: Arc<[Bytes]> = (0..body.len())
        .step_by(CHUNK_LEN)
        .map(|start| body.slice(start..(start + CHUNK_LEN).min(body.len())))
        .collect();
    tower::service_fn(move |_request: Request<()>| {
        let chunks = Arc::clone(&chunks);
        let frames = futures_util::stream::iter(
            (0..chunks.len()).map(move |i| Ok::<_, BoxError>(Frame::data(chunks[i].clone()))),
        );
        let mut response = Response::new(StreamBody::new(frames));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn request(session: &str, cursor: Option<&str>) -> Request<()> {
    let mut request = Request::get("/mcp").header("mcp-session-id", session);
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    request.body(()).expect("a valid request")
}

async fn first_byte<S, B>(service: &mut S, request: Request<()>) -> Bytes
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let mut body = std::pin::pin!(response.into_body());
    let frame = body.frame().await.expect("a frame").expect("no error");
    frame.into_data().expect("data")
}

async fn collect<S, B>(service: &mut S, request: Request<()>) -> Bytes
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Streams events 0 to 1000 on session `bench`, so that its history holds
/// them all, and checks that a reconnect with 0 replays exactly 1 to 1000.
fn prefill<T: TrackerStore>(rt: &Runtime, layer: &SseResumeLayer<T>, settle: impl Fn()) {
    let mut service = layer.layer(upstream(events(0, EVENTS)));
    rt.block_on(collect(&mut service, request("bench", None)));
    settle();
    let mut resumed = layer.layer(upstream(Bytes::new()));
    let replayed = rt.block_on(collect(&mut resumed, request("bench", Some("0"))));
    assert_eq!(replayed, events(1, EVENTS), "a replay of exactly 1..=1000");
}

/// The contenders, each timed by `run` on `service`.
struct Contenders<P, M, R> {
    plain: P,
    memory: M,
    redis: Option<R>,
    /// A connection of the benchmark's own to the same Redis.
    native: Option<redis::aio::MultiplexedConnection>,
}

/// The history of the stream that `prefill` kept in Redis.
const HISTORY_KEY: &str = "sse-resume:{bench}:h:GET /mcp";

/// The baseline: the newest 1,000 entries of the history in one native
/// read. Event 0 is kept too: the 1,000 after it, as a replay from 0.
fn native_read() -> redis::Cmd {
    redis::cmd("XREVRANGE")
        .arg(HISTORY_KEY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(EVENTS)
        .to_owned()
}

fn bench_group<P, M, R, PB, MB, RB>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    contenders: &mut Contenders<P, M, R>,
    whole: bool,
) where
    P: Service<Request<()>, Response = Response<PB>, Error = Infallible>,
    M: Service<Request<()>, Response = Response<MB>, Error = Infallible>,
    R: Service<Request<()>, Response = Response<RB>, Error = Infallible>,
    PB: Body<Data = Bytes>,
    MB: Body<Data = Bytes>,
    RB: Body<Data = Bytes>,
    PB::Error: std::fmt::Debug,
    MB::Error: std::fmt::Debug,
    RB::Error: std::fmt::Debug,
{
    group.bench_function("plain", |b| {
        b.iter(|| {
            // No session: deduplicated within the response, no store.
            let request = Request::get("/mcp").body(()).expect("a valid request");
            let plain = &mut contenders.plain;
            black_box(rt.block_on(async {
                if whole {
                    collect(plain, request).await
                } else {
                    first_byte(plain, request).await
                }
            }))
        });
    });
    group.bench_function("memory", |b| {
        b.iter(|| {
            let request = request("bench", Some("0"));
            let memory = &mut contenders.memory;
            black_box(rt.block_on(async {
                if whole {
                    collect(memory, request).await
                } else {
                    first_byte(memory, request).await
                }
            }))
        });
    });
    if let Some(native) = &mut contenders.native {
        group.bench_function("redis_native_xrange", |b| {
            b.iter(|| {
                let entries: redis::Value = rt.block_on(native_read().query_async(native)).unwrap();
                let redis::Value::Array(entries) = entries else {
                    panic!("a range read: {entries:?}");
                };
                assert_eq!(entries.len(), EVENTS as usize);
                black_box(entries)
            });
        });
    }
    if let Some(redis) = &mut contenders.redis {
        group.bench_function("redis", |b| {
            b.iter(|| {
                let request = request("bench", Some("0"));
                black_box(rt.block_on(async {
                    if whole {
                        collect(redis, request).await
                    } else {
                        first_byte(redis, request).await
                    }
                }))
            });
        });
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let limits = HistoryLimits::new().max_events(2 * EVENTS as usize);

    let memory = SseResumeLayer::new().history(limits);
    prefill(&rt, &memory, || {});
    let server = tower_sse_resume_support::RedisServer::start();
    let redis = server.as_ref().map(|server| {
        let store = rt
            .block_on(RedisStore::connect(&server.url()))
            .expect("connect to redis-server");
        let layer = SseResumeLayer::new().store(store.clone()).history(limits);
        prefill(&rt, &layer, || rt.block_on(store.flush()));
        layer
    });

    let native = server.as_ref().map(|server| {
        let client = redis::Client::open(server.url()).expect("a Redis URL");
        rt.block_on(client.get_multiplexed_async_connection())
            .expect("connect to redis-server")
    });
    let mut contenders = Contenders {
        native,
        plain: SseResumeLayer::new().layer(upstream(events(1, EVENTS))),
        memory: memory.layer(upstream(Bytes::new())),
        redis: redis
            .as_ref()
            .map(|layer| layer.layer(upstream(Bytes::new()))),
    };
    for (name, whole) in [
        ("replay_1000_first_byte", false),
        ("replay_1000_total", true),
    ] {
        let mut group = c.benchmark_group(name);
        bench_group(&mut group, &rt, &mut contenders, whole);
        group.finish();
    }
    if let (Some(redis), Some(native)) = (&mut contenders.redis, &mut contenders.native) {
        paired_ratio(&rt, redis, native);
    }
    drop(server);
}

/// How many pairs [`paired_ratio`] times.
const PAIRS: usize = 300;

/// The whole replay from Redis against the native read, timed in pairs,
/// one right after the other (which goes first alternates): this machine
/// is shared, and its load moves between criterion's groups of samples
/// by more than the difference measured. Prints the medians and the
/// ratio's median and spread over the pairs.
fn paired_ratio<R, RB>(rt: &Runtime, redis: &mut R, native: &mut redis::aio::MultiplexedConnection)
where
    R: Service<Request<()>, Response = Response<RB>, Error = Infallible>,
    RB: Body<Data = Bytes>,
    RB::Error: std::fmt::Debug,
{
    let replayed_len = events(1, EVENTS).len();
    let mut replay = || {
        let started = std::time::Instant::now();
        let bytes = rt.block_on(collect(redis, request("bench", Some("0"))));
        let took = started.elapsed();
        // Checked untimed: the native read's side checks nothing either.
        assert_eq!(bytes.len(), replayed_len);
        took
    };
    let read = native_read();
    let mut native_read = || {
        let started = std::time::Instant::now();
        let entries: redis::Value = rt.block_on(read.query_async(native)).unwrap();
        black_box(entries);
        started.elapsed()
    };
    let (mut replays, mut reads, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        let (replayed, native) = if pair % 2 == 0 {
            let replayed = replay();
            (replayed, native_read())
        } else {
            let native = native_read();
            (replay(), native)
        };
        ratios.push(replayed.as_secs_f64() / native.as_secs_f64());
        replays.push(replayed);
        reads.push(native);
    }
    replays.sort();
    reads.sort();
    ratios.sort_by(f64::total_cmp);
    let at = |share: usize| share * (PAIRS - 1) / 100;
    println!(
        "replay_1000 in {PAIRS} pairs: redis {:?}, native {:?} (medians); ratio {:.2} (p10 {:.2}, p90 {:.2})",
        replays[at(50)],
        reads[at(50)],
        ratios[at(50)],
        ratios[at(10)],
        ratios[at(90)],
    );
}

criterion_group! {
    name = replay_benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(replay_benches);
