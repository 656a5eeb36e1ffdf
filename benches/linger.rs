//! From a reconnect to its first byte: taking a held stream over
//! (`SseResumeLayer::linger`), against a fresh upstream request resumed
//! from the history, measured in the same run.
//!
//! Each iteration, untimed, opens a `GET /mcp` of a new session whose
//! upstream sends two events and then stays open, reads the first event,
//! and goes away. With linger the layer reads the second event on, into
//! the history. Then, timed, the client reconnects with `Last-Event-ID: 1`
//! and reads its first byte, event 2: from the history of the held stream,
//! or from a new request to the upstream, which sends both events again
//! (the first one dropped as a duplicate). The upstream is in process and
//! answers at once: a real one adds its round trip to the fresh request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

const FIRST: &[u8] = b"id: 1\ndata: event 1\n\n";
const SECOND: &[u8] = b"id: 2\ndata: event 2\n\n";

/// Two events, then open and quiet.
fn upstream() -> impl Service<
    Request<()>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|_: Request<()>| {
        let frames = futures_util::stream::iter([FIRST, SECOND])
            .map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from_static(event))))
            .chain(futures_util::stream::pending());
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(frames))
            .expect("a response");
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn request(session: &str, cursor: Option<&str>) -> Request<()> {
    let mut request = Request::get("/mcp").header("mcp-session-id", session);
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    request.body(()).expect("a request")
}

/// A session no iteration used before.
fn fresh_session() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The time from each reconnect to its first byte, over `iters` new
/// sessions on `layer`.
fn reconnects(rt: &Runtime, layer: &SseResumeLayer, iters: u64) -> Duration {
    let service = layer.layer(upstream());
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let session = fresh_session();
        rt.block_on(async {
            let first = service.clone().oneshot(request(&session, None));
            let first = within(first).await.unwrap();
            let mut body = Box::pin(first.into_body());
            let frame = within(body.frame()).await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), FIRST);
            drop(body);
            // The held stream's task reads the second event.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let began = Instant::now();
            let again = service.clone().oneshot(request(&session, Some("1")));
            let again = within(again).await.unwrap();
            let mut body = Box::pin(again.into_body());
            let frame = within(body.frame()).await.unwrap().unwrap();
            total += began.elapsed();
            assert_eq!(frame.into_data().unwrap(), SECOND, "session {session}");
        });
    }
    total
}

/// `future`'s output, or a panic when it takes longer than a second: a
/// broken bench must not hang.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(1), future).await {
        Ok(output) => output,
        Err(_) => panic!("a step of the bench took over a second"),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let history = || SseResumeLayer::new().history(HistoryLimits::new());
    // Each taken-over response lingers again when its iteration drops it:
    // a small bound lets the older ones go.
    let lingering = history()
        .linger(Duration::from_secs(60))
        .max_held_streams(16);
    let fresh = history();
    let mut group = c.benchmark_group("reconnect_to_first_byte");
    let mut sessions = 0;
    group.bench_function("takeover", |b| {
        b.iter_custom(|iters| {
            sessions += iters;
            reconnects(&rt, &lingering, iters)
        });
    });
    let takeovers = lingering.stats().snapshot().takeovers;
    assert_eq!(takeovers, sessions, "every reconnect took over");
    group.bench_function("fresh_request", |b| {
        b.iter_custom(|iters| reconnects(&rt, &fresh, iters));
    });
    group.finish();
}

criterion_group! {
    name = linger_benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(linger_benches);
