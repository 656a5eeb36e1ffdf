//! The `metrics` feature: every counter and gauge of `Stats` goes to the
//! recorder the application installed, under its Prometheus name, moved
//! by exactly what the layer counted.
//!
//! A test binary of its own, with one test: the recorder is global to the
//! process, and here it sees this test's traffic and nothing else, so each
//! value can be asserted exactly. The table [`EXPORTED`] names every field
//! of `StatsSnapshot`; a field without a line fails the test.
//!
//! The followers need a real `redis-server` on loopback: without one on
//! `PATH` the test prints a message and passes, unless
//! `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

#[path = "layer/support.rs"]
mod support;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_sse_resume::{
    GAP_EVENT, HistoryLimits, IdBatch, RedisStore, Snapshot, SseResumeLayer, StatsSnapshot,
    StoreError, StoreLimits, StreamKey, TrackerStore,
};
use tower_sse_resume_support::RedisServer;

use support::*;

/// Whether a line of [`EXPORTED`] is a counter (it only goes up) or a
/// gauge (a level now).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

/// Every field of `StatsSnapshot`, the name it is exported under, and
/// what the scenario of [`every_counter_and_gauge_moves_by_exactly_what_the_layer_counted`]
/// leaves in it, summed over its layers. The order is the struct's.
const EXPORTED: [(&str, &str, Kind, u64); 20] = [
    // A: 1 and 2, then 3 after the injected cursor; B: the tool call's 4;
    // C: 1 and 2 before the client went away, 5 after the takeover (3 and
    // 4 are held, then replayed); D: 1; E: 1 of each stream; G: 2, passed
    // through; H: 2 followed on each stream, then 3 from the upstream. The
    // gap events are not the upstream's.
    (
        "events_forwarded",
        "sse_resume_events_forwarded_total",
        Kind::Counter,
        3 + 4 + 3 + 1 + 2 + 2 + 3,
    ),
    // A: 2 again in the first response, 1 and 2 in the second; H: 2, which
    // the follower had, when the upstream resumed from it.
    (
        "duplicates_dropped",
        "sse_resume_duplicates_dropped_total",
        Kind::Counter,
        3 + 1,
    ),
    // A: the second `GET`, without a cursor.
    (
        "cursors_injected",
        "sse_resume_cursors_injected_total",
        Kind::Counter,
        1,
    ),
    // A: `zz`.
    (
        "unknown_cursors",
        "sse_resume_unknown_cursors_total",
        Kind::Counter,
        1,
    ),
    // G: the one `open` of a store that fails.
    (
        "store_errors",
        "sse_resume_store_errors_total",
        Kind::Counter,
        1,
    ),
    // B: 3 and 4 of the complete tool call; C: 3 and 4, held.
    (
        "events_replayed",
        "sse_resume_events_replayed_total",
        Kind::Counter,
        2 + 2,
    ),
    // A: `zz`; H: the tool call whose holder let go (the standing stream
    // that went on from the upstream shows it resumes: none).
    ("gaps", "sse_resume_gaps_total", Kind::Counter, 1 + 1),
    // One per stream of each layer: A, B, C, D, E (two), F, G (none: its
    // store failed), H (two), I (one per token).
    (
        "streams",
        "sse_resume_streams",
        Kind::Gauge,
        1 + 1 + 1 + 1 + 2 + 1 + 2 + 2,
    ),
    // Every block a stream kept in process stays in its history, none
    // expired: A's 3, B's 4, C's 5, D's 1, E's 2, H's 3 (G's store failed:
    // nothing kept), each `id: n\ndata: event n\n\n`, 21 bytes.
    (
        "history_bytes",
        "sse_resume_history_bytes",
        Kind::Gauge,
        (3 + 4 + 5 + 1 + 2 + 3) * 21,
    ),
    // E: the second hold, kept to the end.
    ("held", "sse_resume_held_streams", Kind::Gauge, 1),
    // C.
    ("takeovers", "sse_resume_takeovers_total", Kind::Counter, 1),
    // D.
    (
        "linger_expiries",
        "sse_resume_linger_expiries_total",
        Kind::Counter,
        1,
    ),
    // E: the first hold, past `max_held_streams(1)`.
    (
        "held_evicted",
        "sse_resume_held_evicted_total",
        Kind::Counter,
        1,
    ),
    // C: 3 and 4.
    (
        "events_held",
        "sse_resume_events_held_total",
        Kind::Counter,
        2,
    ),
    // B: the resume from 2.
    (
        "completes_replayed",
        "sse_resume_completes_replayed_total",
        Kind::Counter,
        1,
    ),
    // F.
    (
        "keep_alives",
        "sse_resume_keep_alives_total",
        Kind::Counter,
        1,
    ),
    // H: the standing stream and the tool call.
    ("follows", "sse_resume_follows_total", Kind::Counter, 2),
    // H: the tool call.
    (
        "follows_lost",
        "sse_resume_follows_lost_total",
        Kind::Counter,
        1,
    ),
    // H: the standing stream.
    (
        "follows_resumed",
        "sse_resume_follows_resumed_total",
        Kind::Counter,
        1,
    ),
    // I: the second token on the scope.
    (
        "credentials_changed",
        "sse_resume_credentials_changed_total",
        Kind::Counter,
        1,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_and_gauge_moves_by_exactly_what_the_layer_counted() {
    let kept = kept();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The table names every field, in order, under its Prometheus name.
    let fields: Vec<String> = snapshot_fields(&StatsSnapshot::default())
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    let named: Vec<&str> = EXPORTED.iter().map(|(field, ..)| *field).collect();
    assert_eq!(named, fields, "a field of StatsSnapshot has no line here");
    for (field, metric, kind, _) in EXPORTED {
        let expected = match (field, kind) {
            ("held", Kind::Gauge) => "sse_resume_held_streams".to_owned(),
            (_, Kind::Gauge) => format!("sse_resume_{field}"),
            (_, Kind::Counter) => format!("sse_resume_{field}_total"),
        };
        assert_eq!(metric, expected, "the documented name of {field}");
    }
    // Nothing moved before this test.
    for (_, metric, ..) in EXPORTED {
        assert_eq!(kept.bits(metric), 0, "{metric} before the test");
    }

    // Each part of the scenario has a layer of its own, kept to the end:
    // the gauges are levels of the layers that live.
    let a = dedup_injection_and_an_unknown_cursor().await;
    let b = a_complete_tool_call_resumed().await;
    let c = a_held_stream_taken_over().await;
    let d = a_linger_that_runs_out().await;
    let e = a_hold_evicted().await;
    let f = a_keep_alive().await;
    let g = a_failing_store().await;
    let h = followers_that_lose_their_holder(&redis).await;
    let i = two_tokens_on_one_scope().await;

    // Every line moved by exactly what the layers counted, and by what the
    // scenario says.
    let stats = [
        a.stats(),
        b.stats(),
        c.stats(),
        d.stats(),
        e.stats(),
        f.stats(),
        g.stats(),
        h.stats(),
        i.stats(),
    ];
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for stats in &stats {
        for (field, value) in snapshot_fields(&stats.snapshot()) {
            *counted.entry(field).or_default() += value;
        }
    }
    for (field, metric, kind, expected) in EXPORTED {
        let recorded = match kind {
            Kind::Counter => kept.bits(metric),
            Kind::Gauge => {
                let level = f64::from_bits(kept.bits(metric));
                assert!(level >= 0.0 && level.fract() == 0.0, "{metric}: {level}");
                level as u64
            }
        };
        assert_eq!(
            recorded, counted[field],
            "{metric} against the layers' {field}"
        );
        assert_eq!(recorded, expected, "{metric}: {counted:?}");
    }
    // And nothing else was exported.
    let names: Vec<&str> = EXPORTED.iter().map(|(_, metric, ..)| *metric).collect();
    for name in kept.names() {
        assert!(names.contains(&name.as_str()), "{name} is not in the table");
    }
}

/// A: a duplicate within one response, a cursor injected into a `GET`
/// without one (whose response then drops what was forwarded before it
/// opened), and an unknown cursor, told with the gap signal.
async fn dedup_injection_and_an_unknown_cursor() -> SseResumeLayer {
    let layer = SseResumeLayer::new().history(HistoryLimits::new());
    let upstream = Upstream::new([
        Reply::sse([events([1, 2, 2])]),
        Reply::sse([events(1..=3)]),
        Reply::sse([""]),
    ]);
    let requests = vec![
        get("/mcp", "a").body(()).unwrap(),
        get("/mcp", "a").body(()).unwrap(),
        get("/mcp", "a")
            .header("last-event-id", "zz")
            .body(())
            .unwrap(),
    ];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!(got[0].text(), events(1..=2));
    assert_eq!(got[1].text(), events([3]));
    assert!(got[2].text().contains(GAP_EVENT), "{}", got[2].text());
    layer
}

/// I: one session id with two tokens, one after the other: two streams,
/// and a change of credentials.
async fn two_tokens_on_one_scope() -> SseResumeLayer {
    let layer = SseResumeLayer::new();
    let upstream = Upstream::new([Reply::sse([""]), Reply::sse([""])]);
    let as_token = |token: &str| {
        let request = get("/mcp", "i").header("authorization", token);
        request.body(()).unwrap()
    };
    let requests = vec![as_token("Bearer one"), as_token("Bearer two")];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!((got[0].text(), got[1].text()), ("", ""));
    layer
}

/// B: a tool call that ended, resumed from its history with no upstream
/// request.
async fn a_complete_tool_call_resumed() -> SseResumeLayer {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30));
    // One reply: a second upstream request would panic.
    let upstream = Upstream::new([Reply::sse([events(1..=4)])]);
    let resume = |cursor: &str| {
        let request = get("/mcp", "b").header("last-event-id", cursor);
        request.body(()).unwrap()
    };
    let requests = vec![
        Request::post("/mcp")
            .header("mcp-session-id", "b")
            .body(())
            .unwrap(),
        resume("2"),
    ];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!(got[0].text(), events(1..=4));
    assert_eq!(got[1].text(), events(3..=4));
    layer
}

/// C: a client goes away after 2 events, the layer holds its stream while
/// 3 and 4 come, and the client takes it over from 2; then 5, and the end.
async fn a_held_stream_taken_over() -> SseResumeLayer {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30));
    let upstream = Fed::default();
    let service = layer.layer(upstream.clone());
    let feed = upstream.next_body();
    let first = service.clone().oneshot(feed_request("c", None)).await;
    feed.send(events(1..=2)).await.unwrap();
    assert_eq!(
        read_events(first.unwrap().into_body(), 2).await,
        events(1..=2)
    );
    eventually("the hold", || layer.stats().snapshot().held == 1).await;
    feed.send(events(3..=4)).await.unwrap();
    eventually("3 and 4 held", || layer.stats().snapshot().events_held == 2).await;

    let again = service.oneshot(feed_request("c", Some("2"))).await;
    feed.send(events([5])).await.unwrap();
    drop(feed);
    let got = again.unwrap().into_body().collect().await.unwrap();
    assert_eq!(got.to_bytes(), events(3..=5));
    assert_eq!(upstream.requests(), 1);
    layer
}

/// D: a client goes away and nobody comes back in time.
async fn a_linger_that_runs_out() -> SseResumeLayer {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_millis(100));
    let upstream = Fed::default();
    let feed = upstream.next_body();
    let first = layer.layer(upstream).oneshot(feed_request("d", None)).await;
    feed.send(events([1])).await.unwrap();
    read_events(first.unwrap().into_body(), 1).await;
    eventually("the linger to run out", || {
        layer.stats().snapshot().linger_expiries == 1
    })
    .await;
    layer
}

/// E: two clients go away, and the layer may hold one stream only: the
/// first hold ends, the second stays to the end of the test.
async fn a_hold_evicted() -> SseResumeLayer {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30))
        .max_held_streams(1);
    let upstream = Fed::default();
    let service = layer.layer(upstream.clone());
    let mut feeds = Vec::new();
    for session in ["e1", "e2"] {
        let feed = upstream.next_body();
        let response = service.clone().oneshot(feed_request(session, None)).await;
        feed.send(events([1])).await.unwrap();
        read_events(response.unwrap().into_body(), 1).await;
        eventually("the hold", || layer.stats().snapshot().held == 1).await;
        feeds.push(feed);
    }
    eventually("the eviction", || {
        layer.stats().snapshot().held_evicted == 1
    })
    .await;
    // The second upstream stays open: its hold with it.
    std::mem::forget(feeds);
    layer
}

/// F: a quiet stream gets a keep-alive, and its client goes.
async fn a_keep_alive() -> SseResumeLayer {
    let layer = SseResumeLayer::new().keep_alive(Duration::from_millis(50));
    let upstream = Fed::default();
    let _feed = upstream.next_body();
    let response = layer.layer(upstream).oneshot(feed_request("f", None)).await;
    let mut body = pin!(response.unwrap().into_body());
    let frame = tokio::time::timeout(STEP, body.frame()).await.unwrap();
    let data = frame.unwrap().unwrap().into_data().unwrap();
    assert!(data.starts_with(b":"), "a comment: {data:?}");
    layer
}

/// G: the store fails, and the layer passes the stream through.
async fn a_failing_store() -> SseResumeLayer<Failing> {
    let layer = SseResumeLayer::new().store(Failing);
    let upstream = Upstream::new([Reply::sse([events(1..=2)])]);
    let requests = vec![get("/mcp", "g").body(()).unwrap()];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!(got[0].text(), events(1..=2));
    layer
}

/// A store whose every `open` fails.
struct Failing;

impl TrackerStore for Failing {
    async fn open(&self, _: &StreamKey, _: Option<&str>) -> Result<Snapshot, StoreError> {
        Err(StoreError::Unavailable("this store always fails".into()))
    }

    fn record(&self, _: &StreamKey, _: u64, _: &IdBatch) -> Result<(), StoreError> {
        Ok(())
    }
}

/// H: through Redis, a layer follows two streams that another replica
/// holds (here the other replica's store alone): a standing stream and a
/// tool call. The holder lets both go without ending them: the standing
/// stream goes on from the upstream (which shows it resumes where the
/// follower stopped: no gap), the tool call ends with the gap signal.
async fn followers_that_lose_their_holder(redis: &RedisServer) -> SseResumeLayer<RedisStore> {
    const LEASE: Duration = Duration::from_millis(300);
    let connect = || async {
        RedisStore::connect(&redis.url())
            .await
            .expect("connect to redis-server")
            .prefix("metrics:")
            .lease(LEASE)
    };
    let (holder, store) = (connect().await, connect().await);
    // The holder is driven by hand, as the layer would with a history.
    holder.set_limits(StoreLimits::default().with_history(Some(HistoryLimits::new())));
    let layer = SseResumeLayer::new()
        .store(store.clone())
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30));
    // The standing stream's upstream resumes from 2, which the follower has.
    let upstream = Upstream::new([Reply::sse([events(2..=3)])]);
    let service = layer.layer(upstream.clone());
    let mut texts = Vec::new();
    for (key, request) in [
        (
            StreamKey::new("h1", "GET /feed"),
            feed_request("h1", Some("1")),
        ),
        (
            StreamKey::new("h2", "POST /mcp #metrics"),
            get("/mcp", "h2")
                .header("last-event-id", "1")
                .body(())
                .unwrap(),
        ),
    ] {
        let Ok(Snapshot::Stored(opened)) = holder.open(&key, None).await else {
            panic!("a stored stream");
        };
        let lease = holder.hold(&key).expect("a lease");
        let record = |id: u32| {
            let mut batch = IdBatch::new();
            batch.push(&id.to_string());
            let block = Bytes::from(events([id]));
            batch.push_block(Some(&id.to_string()), &block);
            holder.record(&key, opened.generation, &batch).unwrap();
        };
        record(1);
        tokio::time::timeout(STEP, holder.flush()).await.unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        record(2);
        tokio::time::timeout(STEP, holder.flush()).await.unwrap();
        let mut body = Box::pin(response.into_body());
        let mut text = read_events(body.as_mut(), 1).await;
        // The holder goes without ending the stream.
        drop(lease);
        let rest = tokio::time::timeout(STEP, body.collect()).await.unwrap();
        text.push_str(std::str::from_utf8(&rest.unwrap().to_bytes()).unwrap());
        texts.push(text);
    }
    assert_eq!(
        texts[0],
        events(2..=3),
        "followed, then the upstream, which repeats 2: it goes on from there, no gap"
    );
    assert_eq!(
        texts[1],
        format!("{}event: {GAP_EVENT}\ndata: 2\n\n", events([2])),
        "followed, then the gap signal"
    );
    assert_eq!(upstream.seen().len(), 1, "the standing stream's only");
    layer
}

fn feed_request(session: &str, cursor: Option<&str>) -> Request<()> {
    let mut request = get("/feed", session);
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    request.body(()).unwrap()
}

/// The fields of `snapshot`, by name, in order, read from its `Debug`: a
/// field added to `StatsSnapshot` shows up here without this test knowing
/// of it.
fn snapshot_fields(snapshot: &StatsSnapshot) -> Vec<(String, u64)> {
    let debug = format!("{snapshot:?}");
    let inner = debug
        .strip_prefix("StatsSnapshot { ")
        .and_then(|rest| rest.strip_suffix(" }"))
        .unwrap_or_else(|| panic!("a struct's Debug: {debug}"));
    inner
        .split(", ")
        .map(|field| {
            let (name, value) = field.split_once(": ").unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Reads `body` until `count` events came, and returns them.
async fn read_events<B>(body: B, count: usize) -> String
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut text = String::new();
    while text.matches("\n\n").count() < count {
        let frame = tokio::time::timeout(STEP, body.frame()).await;
        let frame = frame.expect("body stalled").expect("more events").unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    text
}

/// Waits until `check` holds, for a few seconds at most.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An upstream whose bodies the test writes: each request gets the body
/// of the next [`next_body`](Fed::next_body), which ends when its sender
/// goes.
#[derive(Clone, Default)]
struct Fed {
    bodies: Arc<Mutex<VecDeque<mpsc::Receiver<String>>>>,
    requests: Arc<AtomicU64>,
}

impl Fed {
    fn next_body(&self) -> mpsc::Sender<String> {
        let (sender, receiver) = mpsc::channel(16);
        self.bodies.lock().unwrap().push_back(receiver);
        sender
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl<B> Service<Request<B>> for Fed {
    type Response = Response<UnsyncBoxBody<Bytes, Infallible>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let receiver = self.bodies.lock().unwrap().pop_front();
        let receiver = receiver.expect("no body fed for this request");
        let frames = stream::unfold(receiver, |mut receiver| async move {
            let text = receiver.recv().await?;
            Some((Ok(Frame::data(Bytes::from(text))), receiver))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// Keeps every counter and gauge by name.
#[derive(Default)]
struct Kept {
    values: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Kept {
    fn value(&self, name: &str) -> Arc<AtomicU64> {
        let mut values = self.values.lock().unwrap();
        Arc::clone(values.entry(name.to_owned()).or_default())
    }

    /// A counter's value, or a gauge's `f64` bits.
    fn bits(&self, name: &str) -> u64 {
        let values = self.values.lock().unwrap();
        values
            .get(name)
            .map_or(0, |value| value.load(Ordering::SeqCst))
    }

    fn names(&self) -> Vec<String> {
        self.values.lock().unwrap().keys().cloned().collect()
    }
}

impl Recorder for &'static Kept {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.value(key.name()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.value(key.name()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The recorder of this test binary, installed once.
fn kept() -> &'static Kept {
    static KEPT: OnceLock<&'static Kept> = OnceLock::new();
    KEPT.get_or_init(|| {
        let kept: &'static Kept = Box::leak(Box::default());
        metrics::set_global_recorder(kept).expect("no other recorder");
        kept
    })
}
