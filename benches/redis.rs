//! [`RedisStore`] against [`MemoryStore`] through the layer, in one run,
//! with a `redis-server` on loopback that the benchmark starts itself (it
//! skips with a message when `redis-server` is not on `PATH`).
//!
//! - `stream_start`: a `GET` of a stream whose window holds 64 ids, without
//!   `Last-Event-ID` (so the layer loads the window and injects its last
//!   id), then with one (so it also cuts the window, to 32 ids), up to the
//!   first byte of the response body. For `RedisStore` that is one script
//!   round trip.
//! - `events`: a response of 10,000 events of 100 bytes in 16 KiB chunks,
//!   each on a fresh session, collected: the dedup runs in process either
//!   way, and `RedisStore` queues the ids for its background writer.
//!   `redis_flushed` also waits until the writer has written them all.
//!
//! Everything runs on one current-thread tokio runtime, Redis's I/O and the
//! background writer included. The ratios are in the group reports:
//! `redis` time over `memory` time.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_sse_resume::{MemoryStore, RedisStore, SseResumeLayer, TrackerStore};

/// Ids in the window of the stream that `stream_start` opens.
const WINDOW_IDS: u64 = 64;
const EVENTS: usize = 10_000;
const DATA_LEN: usize = 100;
const CHUNK_LEN: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An upstream whose every response is a comment, which always goes
/// through, then an event of the window, which is always dropped: the
/// window stays as it is from one request to the next.
fn small_upstream() -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = Infallible>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_request: Request<()>| {
        let body =
            http_body_util::Full::new(Bytes::from_static(b": resumed\n\nid: 1\ndata: x\n\n"));
        std::future::ready(Ok::<_, Infallible>(event_stream(body)))
    })
}

/// An upstream whose every response is `chunks`.
fn bulk_upstream(
    chunks: Arc<[Bytes]>,
) -> impl Service<
    Request<()>,
    Response = Response<impl Body<Data = Bytes, Error = BoxError>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_request: Request<()>| {
        let chunks = Arc::clone(&chunks);
        let frames = futures_util::stream::iter(
            (0..chunks.len()).map(move |i| Ok::<_, BoxError>(Frame::data(chunks[i].clone()))),
        );
        std::future::ready(Ok::<_, Infallible>(event_stream(StreamBody::new(frames))))
    })
}

fn event_stream<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

/// `EVENTS` events of `DATA_LEN` bytes, every id new, cut in chunks.
fn bulk_chunks() -> Arc<[Bytes]> {
    let data = "x".repeat(DATA_LEN);
    let body: String = (1..=EVENTS)
        .map(|i| format!("id: {i}\ndata: {data}\n\n"))
        .collect();
    let body = Bytes::from(body);
    (0..body.len())
        .step_by(CHUNK_LEN)
        .map(|start| body.slice(start..(start + CHUNK_LEN).min(body.len())))
        .collect()
}

fn request(session: &str, cursor: Option<&str>) -> Request<()> {
    let mut request = Request::get("/mcp").header("mcp-session-id", session);
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    request.body(()).expect("a valid request")
}

/// Sends a request and waits for the first byte of the response body.
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

/// Sends a request and collects the whole response body.
async fn collect<S, B>(service: &mut S, request: Request<()>) -> Bytes
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Fills the window of session `bench`'s stream with ids 1 to 64.
async fn prefill<T: TrackerStore>(layer: &SseResumeLayer<T>) {
    let body: String = (1..=WINDOW_IDS)
        .map(|i| format!("id: {i}\ndata: x\n\n"))
        .collect();
    let upstream = tower::service_fn(move |_request: Request<()>| {
        let body = http_body_util::Full::new(Bytes::from(body.clone()));
        std::future::ready(Ok::<_, Infallible>(event_stream(body)))
    });
    let mut service = layer.layer(upstream);
    collect(&mut service, request("bench", None)).await;
}

fn bench_stream_start(
    c: &mut Criterion,
    rt: &Runtime,
    memory: &SseResumeLayer<MemoryStore>,
    redis: &SseResumeLayer<RedisStore>,
) {
    let mut group = c.benchmark_group("stream_start");
    group.throughput(Throughput::Elements(1));
    for (name, cursor) in [("no_cursor", None), ("cursor", Some("32"))] {
        let mut service = memory.layer(small_upstream());
        group.bench_function(format!("memory_{name}"), |b| {
            b.iter(|| black_box(rt.block_on(first_byte(&mut service, request("bench", cursor)))));
        });
        let mut service = redis.layer(small_upstream());
        group.bench_function(format!("redis_{name}"), |b| {
            b.iter(|| black_box(rt.block_on(first_byte(&mut service, request("bench", cursor)))));
        });
    }
    group.finish();
}

fn bench_events(
    c: &mut Criterion,
    rt: &Runtime,
    memory: &SseResumeLayer<MemoryStore>,
    redis: &SseResumeLayer<RedisStore>,
    redis_store: &RedisStore,
) {
    let chunks = bulk_chunks();
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let session = AtomicU64::new(0);
    let fresh = || format!("events-{}", session.fetch_add(1, Ordering::Relaxed));

    let mut service = memory.layer(bulk_upstream(Arc::clone(&chunks)));
    group.bench_function("memory", |b| {
        b.iter(|| black_box(rt.block_on(collect(&mut service, request(&fresh(), None)))));
    });
    let mut service = redis.layer(bulk_upstream(Arc::clone(&chunks)));
    group.bench_function("redis", |b| {
        b.iter(|| black_box(rt.block_on(collect(&mut service, request(&fresh(), None)))));
    });
    group.bench_function("redis_flushed", |b| {
        b.iter(|| {
            black_box(rt.block_on(async {
                let body = collect(&mut service, request(&fresh(), None)).await;
                redis_store.flush().await;
                body
            }))
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let Some(server) = tower_sse_resume_support::RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let redis_store = rt
        .block_on(RedisStore::connect(&server.url()))
        .expect("connect to redis-server");
    let memory = SseResumeLayer::new();
    let redis = SseResumeLayer::new().store(redis_store.clone());

    rt.block_on(async {
        prefill(&memory).await;
        prefill(&redis).await;
        redis_store.flush().await;
    });
    // Sanity: both layers resume the prefilled stream and deduplicate.
    for (name, body) in [
        (
            "memory",
            rt.block_on(collect(
                &mut memory.layer(bulk_upstream(bulk_chunks())),
                request("sanity", None),
            )),
        ),
        (
            "redis",
            rt.block_on(collect(
                &mut redis.layer(bulk_upstream(bulk_chunks())),
                request("sanity", None),
            )),
        ),
    ] {
        let events = body.windows(2).filter(|pair| *pair == b"\n\n").count();
        assert_eq!(events, EVENTS, "{name}: every event once");
    }

    bench_stream_start(c, &rt, &memory, &redis);
    bench_events(c, &rt, &memory, &redis, &redis_store);

    rt.block_on(redis_store.flush());
    let stats = redis_store.stats();
    println!("RedisStore after the run: {stats:?}");
    assert_eq!(stats.rejected + stats.dropped, 0, "the writer kept up");
    drop(server);
}

criterion_group! {
    name = redis_benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(redis_benches);
