//! Follow latency across replicas: from replica A reading an event from
//! its upstream to replica B's follower handing it to its client, through
//! a real `redis-server` on loopback that the benchmark starts (skipped
//! with a message when it is not on `PATH`).
//!
//! Replica A serves `GET /feed` of session `bench` from an upstream fed by
//! the benchmark, its client reading everything; replica B follows the
//! stream for a client that resumed from event 1 there. Each iteration
//! sends one event into A's upstream and times until B's client has it:
//! A's write behind the stream (a queue, then one script), the stream's
//! channel, and B's read of the history. After criterion's figures, the
//! p50 and p99 of 2,000 more events are printed. Both replicas run on one
//! multi-thread tokio runtime of two workers.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt};
use tower_sse_resume::{HistoryLimits, RedisStore, SseResumeLayer};

type Feed = mpsc::UnboundedSender<Bytes>;

/// An upstream whose one response streams what the benchmark sends.
fn upstream(
    frames: std::sync::Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: Request<()>| {
        let receiver = frames.lock().unwrap().take().expect("one upstream request");
        let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let event = receiver.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(event)), receiver))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(frames))
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn event(id: u64) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: event {id}\n\n"))
}

fn feed_request(cursor: Option<u64>) -> Request<()> {
    let mut request = Request::get("/feed").header("mcp-session-id", "bench");
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor.to_string());
    }
    request.body(()).unwrap()
}

struct Setup {
    feed: Feed,
    /// B's client's body: the follower's.
    follower: std::pin::Pin<Box<dyn http_body::Body<Data = Bytes, Error = Infallible> + Send>>,
    next: u64,
}

async fn setup(url: &str) -> Setup {
    let connect = || async {
        RedisStore::connect(url)
            .await
            .expect("connect to redis-server")
            .prefix("follow-bench:")
    };
    let (a, b) = (connect().await, connect().await);
    let (feed, frames) = mpsc::unbounded_channel();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Some(frames)));
    let layer_a = SseResumeLayer::new()
        .store(a.clone())
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(60));
    let layer_b = SseResumeLayer::new()
        .store(b)
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(60));
    let on_a = layer_a.layer(upstream(frames.clone()));
    let response = on_a.oneshot(feed_request(None)).await.unwrap();
    // A's own client reads everything.
    let mut body = Box::pin(response.into_body());
    feed.send(event(1)).unwrap();
    body.frame().await.unwrap().unwrap();
    tokio::spawn(async move { while body.frame().await.is_some() {} });
    a.flush().await;
    let on_b = layer_b.layer(upstream(frames));
    let response = on_b.oneshot(feed_request(Some(1))).await.unwrap();
    Setup {
        feed,
        follower: Box::pin(response.into_body()),
        next: 2,
    }
}

/// Sends the next event into A's upstream and waits until B's client has
/// it; returns how long that took.
async fn one_event(setup: &mut Setup) -> Duration {
    let id = setup.next;
    setup.next += 1;
    let wanted = event(id);
    let started = Instant::now();
    setup.feed.send(wanted.clone()).unwrap();
    let frame = setup.follower.frame().await.expect("followed").unwrap();
    let elapsed = started.elapsed();
    assert_eq!(frame.into_data().unwrap(), wanted, "exactly the next event");
    elapsed
}

fn benches(c: &mut Criterion) {
    let Some(server) = tower_sse_resume_support::RedisServer::start() else {
        eprintln!("follow: redis-server not on PATH, skipped");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut setup = rt.block_on(setup(&server.url()));
    c.bench_function("follow_latency/one_event", |b| {
        b.iter_custom(|iterations| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += one_event(&mut setup).await;
                }
                total
            })
        });
    });
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut samples = Vec::with_capacity(2000);
        for _ in 0..2000 {
            samples.push(one_event(&mut setup).await);
        }
        samples
    });
    samples.sort();
    let at = |share: f64| samples[((samples.len() as f64 * share) as usize).min(samples.len() - 1)];
    println!(
        "follow_latency over 2000 events: p50 {:?}, p99 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    );
    drop(setup);
    drop(server);
}

criterion_group! {
    name = follow_benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(follow_benches);
