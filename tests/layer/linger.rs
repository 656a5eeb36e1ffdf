//! Linger and takeover: a client goes away while its upstream goes on, and
//! comes back. Against a live-only upstream, which ignores `Last-Event-ID`
//! and numbers its events by the clock, through `oneshot` and a real hyper
//! server and client on loopback.

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::support::*;
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

/// The upstream's pace: one event every this long.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// An upstream that can neither resume nor replay: event `n` happens at
/// `n` ticks after it starts, and a request gets the events that happen
/// while it is connected, up to event `last`, then the end.
#[derive(Clone)]
pub(crate) struct LiveUpstream {
    start: Instant,
    last: u32,
    /// With [`released`](Self::released): event `n` happens when the test
    /// releases it, not at a time.
    gate: Option<Arc<watch::Sender<u32>>>,
    /// When each request came, in order.
    requests: Arc<Mutex<Vec<Instant>>>,
    /// Responses whose body the proxy dropped before it ended.
    closed: Arc<AtomicUsize>,
}

impl LiveUpstream {
    pub(crate) fn new(last: u32) -> Self {
        Self {
            start: Instant::now(),
            last,
            gate: None,
            requests: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// The same upstream, whose events happen only as the test
    /// [`release`](Self::release)s them, however slow the machine: none
    /// yet.
    pub(crate) fn released(last: u32) -> Self {
        Self {
            gate: Some(Arc::new(watch::Sender::new(0))),
            ..Self::new(last)
        }
    }

    /// Makes every event up to `n` happen, on a [`released`](Self::released)
    /// upstream.
    pub(crate) fn release(&self, n: u32) {
        let gate = self.gate.as_ref().expect("a released upstream");
        gate.send_modify(|released| *released = (*released).max(n));
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// When each request came, in order.
    #[cfg(feature = "redis")]
    pub(crate) fn requested_at(&self) -> Vec<Instant> {
        self.requests.lock().unwrap().clone()
    }

    pub(crate) fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

pub(crate) type LiveBody = UnsyncBoxBody<Bytes, Infallible>;

impl<B> Service<Request<B>> for LiveUpstream {
    type Response = Response<LiveBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<LiveBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() == http::Method::DELETE {
            // The end of an MCP session: answered at once, and no stream.
            let body = http_body_util::Empty::new().map_err(|never| match never {});
            return std::future::ready(Ok(Response::new(body.boxed_unsync())));
        }
        self.requests.lock().unwrap().push(Instant::now());
        let (sender, receiver) = mpsc::channel::<Frame<Bytes>>(1);
        let (start, last, closed) = (self.start, self.last, Arc::clone(&self.closed));
        let mut gate = self.gate.as_ref().map(|gate| gate.subscribe());
        // The first event that has not happened yet.
        let mut next = match &gate {
            Some(gate) => *gate.borrow() + 1,
            None => (start.elapsed().as_nanos() / TICK.as_nanos()) as u32 + 1,
        };
        tokio::spawn(async move {
            while next <= last {
                match &mut gate {
                    Some(gate) => {
                        if gate.wait_for(|&released| released >= next).await.is_err() {
                            return;
                        }
                    }
                    None => tokio::time::sleep_until(start + TICK * next).await,
                }
                if sender
                    .send(Frame::data(Bytes::from(events([next]))))
                    .await
                    .is_err()
                {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                next += 1;
            }
        });
        let frames = stream::unfold(receiver, |mut receiver| async move {
            let frame = receiver.recv().await?;
            Some((Ok::<_, Infallible>(frame), receiver))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .header("x-upstream", "live")
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap();
        std::future::ready(Ok(response))
    }
}

fn lingering(linger: Duration) -> SseResumeLayer {
    SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(linger)
}

/// The newest id in `text`.
pub(crate) fn last_id(text: &str) -> u32 {
    let line = text.lines().rfind(|line| line.starts_with("id: ")).unwrap();
    line["id: ".len()..].parse().unwrap()
}

/// Reads `body` until it has event `until` or has ended, and returns what
/// came.
pub(crate) async fn read_until<B>(body: B, until: u32) -> (String, bool)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut text = String::new();
    let end = format!("id: {until}\n");
    while !text.contains(&end) {
        let frame = tokio::time::timeout(STEP, body.frame()).await;
        match frame.expect("body stalled") {
            Some(frame) => {
                let frame = frame.unwrap();
                if let Some(data) = frame.data_ref() {
                    text.push_str(std::str::from_utf8(data).unwrap());
                }
            }
            None => return (text, true),
        }
    }
    (text, false)
}

/// Reads `body` until `count` events came, and returns them.
pub(crate) async fn read_events<B>(body: B, count: usize) -> String
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
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With the client of a lingering layer gone, and `upstream` released up
/// to `from`: makes its events happen one at a time until the layer holds
/// the stream (a server notices a client gone only when it writes to it),
/// then up to `to`, and waits until the layer has read them all. Returns
/// how many of them the layer read while it held the stream.
async fn away_while(
    stats: &tower_sse_resume::Stats,
    upstream: &LiveUpstream,
    from: u32,
    to: u32,
) -> u64 {
    let read = || {
        let stats = stats.snapshot();
        stats.events_forwarded + stats.events_held
    };
    let mut released = from;
    while stats.snapshot().held == 0 {
        assert!(released < to, "no hold after events {from}..{released}");
        released += 1;
        upstream.release(released);
        eventually("the layer to read the event", || {
            read() == u64::from(released)
        })
        .await;
    }
    let held_before = stats.snapshot().events_held;
    upstream.release(to);
    eventually("the layer to read every event", || read() == u64::from(to)).await;
    stats.snapshot().events_held - held_before
}

#[tokio::test]
async fn a_client_away_for_a_while_loses_nothing_and_the_upstream_sees_one_request() {
    for transport in TRANSPORTS {
        // The test says when each event happens, however slow the machine.
        let upstream = LiveUpstream::released(60);
        let layer = lingering(Duration::from_secs(5));
        let service = layer.layer(upstream.clone());
        let server = Server::start(service.clone()).await.over(transport);
        let open = |request: Request<()>| {
            let (service, server) = (service.clone(), &server);
            async move {
                match transport {
                    Transport::Oneshot => service
                        .oneshot(request)
                        .await
                        .unwrap()
                        .map(BodyExt::boxed_unsync),
                    Transport::Http | Transport::Http2 => server
                        .open(request)
                        .await
                        .map(|body| body.map_err(|_| unreachable!()).boxed_unsync()),
                }
            }
        };
        let first = open(get("/feed", "s1").body(()).unwrap()).await;
        upstream.release(20);
        let got = read_events(first.into_body(), 20).await;
        assert_eq!(got, events(1..=20), "{transport:?}");
        let cursor = 20;

        // Away while events 21..50 happen, most of them once the layer
        // holds the stream.
        let held = away_while(&layer.stats(), &upstream, 20, 50).await;
        assert_eq!(layer.stats().snapshot().held, 1);
        let resumed = open(
            get("/feed", "s1")
                .header("last-event-id", cursor.to_string())
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(
            resumed.headers()["x-upstream"],
            "live",
            "the upstream's headers"
        );
        upstream.release(60);
        let (got, ended) = read_until(resumed.into_body(), 60).await;
        assert!(ended || got.ends_with(&events([60])));
        assert_eq!(
            got,
            events(cursor + 1..=60),
            "{transport:?}: every event once"
        );
        assert_eq!(
            upstream.requests(),
            1,
            "{transport:?}: the upstream saw one request"
        );
        let stats = layer.stats().snapshot();
        assert_eq!(stats.takeovers, 1, "{transport:?}: {stats:?}");
        assert!(held >= 20, "{transport:?}: {held} events held");
        assert!(stats.events_held >= held, "{transport:?}: {stats:?}");
    }
}

#[tokio::test]
async fn without_linger_the_same_client_loses_what_came_while_it_was_away_and_hears_of_it() {
    let upstream = LiveUpstream::released(60);
    let layer = SseResumeLayer::new().history(HistoryLimits::new());
    let service = layer.layer(upstream.clone());
    let first = service
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    upstream.release(20);
    let got = read_events(first.into_body(), 20).await;
    assert_eq!(got, events(1..=20));
    // Away while events 21..30 happen: nobody reads them.
    upstream.release(30);
    eventually("the first upstream request to be let go", || {
        upstream.closed() == 1
    })
    .await;
    let request = get("/feed", "s1").header("last-event-id", "20");
    let resumed = service.oneshot(request.body(()).unwrap()).await.unwrap();
    upstream.release(60);
    let (got, _) = read_until(resumed.into_body(), 60).await;
    // Nobody read the upstream since event 20: the client hears of the
    // hole right where it is.
    let gap = gap_event("20");
    assert_eq!(
        got,
        format!("{gap}{}", events(31..=60)),
        "21..30 are lost, and said so; the rest comes once"
    );
    assert_eq!(upstream.requests(), 2);
    assert_eq!(
        upstream.closed(),
        1,
        "the first upstream request was let go"
    );
}

/// The hole the gap signal told of stays in the history: a client that
/// resumes from before it, its first resume cut before the signal came,
/// hears of it there too, rather than getting the events after the hole as
/// if they came next.
#[tokio::test]
async fn a_replay_across_the_hole_a_gap_signal_told_of_says_so_again() {
    let upstream = LiveUpstream::released(60);
    let layer = SseResumeLayer::new().history(HistoryLimits::new());
    let service = layer.layer(upstream.clone());
    let first = service
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    upstream.release(20);
    assert_eq!(read_events(first.into_body(), 20).await, events(1..=20));
    upstream.release(30);
    eventually("the first upstream request to be let go", || {
        upstream.closed() == 1
    })
    .await;
    // Back from 20: the gap signal, then 31..=40; the client goes away.
    let request = || get("/feed", "s1").header("last-event-id", "20");
    let resumed = service
        .clone()
        .oneshot(request().body(()).unwrap())
        .await
        .unwrap();
    upstream.release(40);
    let gap = gap_event("20");
    let (got, _) = read_until(resumed.into_body(), 40).await;
    assert_eq!(got, format!("{gap}{}", events(31..=40)));
    // Back from 20 once more, as a client whose last resume was cut before
    // anything came: the history holds 31..=40 after 20, and the hole.
    let again = service.oneshot(request().body(()).unwrap()).await.unwrap();
    upstream.release(60);
    let (got, _) = read_until(again.into_body(), 60).await;
    assert!(
        got.starts_with(&format!("{gap}{}", events(31..=40))),
        "the hole between 20 and 31 is told of again: {got}"
    );
}

#[tokio::test]
async fn a_get_without_a_cursor_takes_a_held_stream_over() {
    let upstream = LiveUpstream::new(40);
    let layer = lingering(Duration::from_secs(5));
    let service = layer.layer(upstream.clone());
    let first = service
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    let cursor = last_id(&read_events(first.into_body(), 10).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = service
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    let (got, _) = read_until(again.into_body(), 40).await;
    // Its client named none of the ids it was sent: they may never have
    // arrived, and the client hears of that first.
    let gap = gap_event("");
    assert_eq!(
        got,
        format!("{gap}{}", events(cursor + 1..=40)),
        "the gap signal, what came while away, then live"
    );
    assert_eq!(upstream.requests(), 1);
}

/// A client whose first connection was cut before the first event reached
/// it comes back without a cursor, as an `EventSource` does: that event
/// went into the dead connection, and the client is told it may lack it,
/// never left to go on as if it had it.
#[tokio::test]
async fn a_client_cut_before_its_first_event_came_hears_of_it() {
    let upstream = LiveUpstream::released(20);
    let layer = lingering(Duration::from_secs(5));
    let service = layer.layer(upstream.clone());
    let first = service
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    upstream.release(1);
    // Forwarded, and lost with the connection.
    let lost = read_events(first.into_body(), 1).await;
    assert_eq!(lost, events(1..=1));
    upstream.release(3);
    eventually("the layer to hold the stream", || {
        layer.stats().snapshot().held == 1
    })
    .await;
    let again = service
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    upstream.release(20);
    let (got, _) = read_until(again.into_body(), 20).await;
    let gap = gap_event("");
    assert_eq!(
        got,
        format!("{gap}{}", events(2..=20)),
        "the client hears that it may lack event 1, then gets the rest once"
    );
    assert_eq!(upstream.requests(), 1, "taken over");
}

#[tokio::test]
async fn a_second_client_while_one_is_attached_gets_its_own_upstream_request() {
    let upstream = LiveUpstream::new(30);
    let layer = lingering(Duration::from_secs(5));
    let service = layer.layer(upstream.clone());
    let first = service
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    let mut first_body = pin!(first.into_body());
    let frame = tokio::time::timeout(STEP, first_body.frame())
        .await
        .unwrap();
    assert!(frame.is_some());
    let second = service
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    let (got, _) = read_until(second.into_body(), 30).await;
    assert_eq!(last_id(&got), 30);
    assert_eq!(upstream.requests(), 2, "nothing was held: no takeover");
    assert_eq!(layer.stats().snapshot().takeovers, 0);
}

#[tokio::test]
async fn the_upstream_is_let_go_when_the_linger_runs_out() {
    let upstream = LiveUpstream::new(1_000);
    let layer = lingering(Duration::from_millis(200));
    let service = layer.layer(upstream.clone());
    let first = service
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    read_events(first.into_body(), 3).await;
    let gone = Instant::now();
    eventually("the upstream to close", || upstream.closed() == 1).await;
    let held_for = gone.elapsed();
    assert!(held_for >= Duration::from_millis(200), "held {held_for:?}");
    assert!(held_for < Duration::from_secs(2), "held {held_for:?}");
    let stats = layer.stats().snapshot();
    assert_eq!((stats.linger_expiries, stats.held), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn past_the_bound_the_oldest_hold_lets_its_upstream_go() {
    let upstream = LiveUpstream::new(1_000);
    let layer = lingering(Duration::from_secs(30)).max_held_streams(2);
    let service = layer.layer(upstream.clone());
    for (held, session) in [1, 2, 2].into_iter().zip(["s1", "s2", "s3"]) {
        let response = service
            .clone()
            .oneshot(get("/feed", session).body(()).unwrap())
            .await;
        read_events(response.unwrap().into_body(), 2).await;
        eventually("the hold", || layer.stats().snapshot().held == held).await;
    }
    eventually("the oldest upstream to close", || upstream.closed() == 1).await;
    let stats = layer.stats().snapshot();
    assert_eq!((stats.held, stats.held_evicted), (2, 1), "{stats:?}");
    // The evicted session's reconnect gets a request of its own.
    let again = service
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    drop(again);
    assert_eq!(upstream.requests(), 4);
}

#[tokio::test]
async fn no_linger_for_unscoped_streams_or_mcp_2026_07_28() {
    let upstream = LiveUpstream::new(1_000);
    let layer = lingering(Duration::from_secs(30));
    let service = layer.layer(upstream.clone());
    let unscoped = Request::get("/feed").body(()).unwrap();
    let mcp_2026 = get("/feed", "s1")
        .header("mcp-protocol-version", "2026-07-28")
        .body(())
        .unwrap();
    for (closed, request) in [unscoped, mcp_2026].into_iter().enumerate() {
        let response = service.clone().oneshot(request).await.unwrap();
        read_events(response.into_body(), 2).await;
        eventually("the upstream to close", || upstream.closed() == closed + 1).await;
    }
    assert_eq!(layer.stats().snapshot().held, 0);
}

#[tokio::test]
async fn a_tool_call_cut_midway_resumes_by_get_and_then_from_its_history() {
    // A tool call's POST stream: 30 notifications, then its result.
    let upstream = LiveUpstream::new(31);
    let layer = lingering(Duration::from_secs(5));
    let service = layer.layer(upstream.clone());
    let call = Request::post("/mcp").header("mcp-session-id", "s1");
    let response = service
        .clone()
        .oneshot(call.body(()).unwrap())
        .await
        .unwrap();
    let cursor = last_id(&read_events(response.into_body(), 10).await);

    let resume = || {
        let request = get("/mcp", "s1").header("last-event-id", cursor.to_string());
        service.clone().oneshot(request.body(()).unwrap())
    };
    let resumed = resume().await.unwrap();
    let (got, ended) = read_until(resumed.into_body(), u32::MAX).await;
    assert!(ended, "the call's stream ends with its upstream");
    assert_eq!(
        got,
        events(cursor + 1..=31),
        "the rest of the call, result and all"
    );
    assert_eq!(upstream.requests(), 1, "taken over, not sent again");

    // Later, the same resume on the complete stream: from the history.
    let again = resume().await.unwrap();
    let (got, ended) = read_until(again.into_body(), u32::MAX).await;
    assert!(ended, "a complete stream ends");
    assert_eq!(got, events(cursor + 1..=31));
    assert_eq!(
        upstream.requests(),
        1,
        "no upstream request for a complete stream"
    );
    assert_eq!(layer.stats().snapshot().completes_replayed, 1);
}

#[tokio::test]
async fn a_client_that_has_all_of_a_complete_stream_gets_204_and_stops() {
    // An empty `200` is how a stream says "reconnect": an `EventSource`, or
    // an MCP client, would come back every `retry` forever. `204` stops it.
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([events(1..=5)])]);
        let layer = lingering(Duration::from_secs(5));
        let call = Request::post("/mcp").header("mcp-session-id", "s1");
        let resume = |cursor: u32| {
            let request = get("/mcp", "s1").header("last-event-id", cursor.to_string());
            request.body(()).unwrap()
        };
        let got = exchange(
            transport,
            &layer,
            &upstream,
            vec![call.body(()).unwrap(), resume(5), resume(4)],
        )
        .await;
        assert_eq!(got[0].text(), events(1..=5));
        assert_eq!(got[1].status, StatusCode::NO_CONTENT, "over {transport:?}");
        assert_eq!(got[1].text(), "");
        // From earlier: the rest, and the end, as before.
        assert_eq!(got[2].status, StatusCode::OK);
        assert_eq!(got[2].text(), events([5]));
        assert_eq!(upstream.seen().len(), 1, "no upstream request for either");
        assert_eq!(layer.stats().snapshot().completes_replayed, 2);
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn with_redis_the_holder_records_into_redis_for_every_replica() {
    use crate::redis::server::{RedisServer, flushed};
    use tower_sse_resume::RedisStore;

    let Some(server) = RedisServer::start() else {
        return;
    };
    let connect = || async {
        RedisStore::connect(&server.url())
            .await
            .unwrap()
            .prefix("linger:")
    };
    let (a, b) = (connect().await, connect().await);
    let upstream = LiveUpstream::released(60);
    let layer_a = SseResumeLayer::new()
        .store(a.clone())
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(5));
    let service_a = layer_a.layer(upstream.clone());
    let first = service_a
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await;
    upstream.release(10);
    let got = read_events(first.unwrap().into_body(), 10).await;
    assert_eq!(got, events(1..=10));
    let cursor = 10;
    // Away while events 11..40 happen, which A holds.
    let held = away_while(&layer_a.stats(), &upstream, 10, 40).await;
    assert!(held >= 20, "{held} events held");
    flushed(&a).await;

    // Replica B resumes the same client from Redis: what A recorded while
    // it held the stream is there.
    let resume = || {
        let request = get("/feed", "s1").header("last-event-id", cursor.to_string());
        request.body(()).unwrap()
    };
    let quiet = Upstream::new([Reply::sse([""])]);
    let layer_b = SseResumeLayer::new().store(b).history(HistoryLimits::new());
    let on_b = exchange(Transport::Oneshot, &layer_b, &quiet, vec![resume()]).await;
    assert_eq!(on_b[0].text(), events(11..=40), "recorded while held");

    // The client back on A takes the stream over: every event once.
    let resumed = service_a.oneshot(resume()).await.unwrap();
    upstream.release(60);
    let (got, _) = read_until(resumed.into_body(), 60).await;
    assert_eq!(got, events(cursor + 1..=60));
    assert_eq!(upstream.requests(), 1);
    assert_eq!(layer_a.stats().snapshot().takeovers, 1);
}

/// The data of the next frame of `body`.
async fn next_text<B>(mut body: Pin<&mut B>) -> String
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let frame = tokio::time::timeout(STEP, body.frame()).await.unwrap();
    let frame = frame.expect("a frame").unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

/// Opens a `GET /feed` of session `s1` on `service`, resuming from `cursor`.
async fn open_feed<S>(service: &S, cursor: Option<u32>) -> S::Response
where
    S: Service<Request<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut request = get("/feed", "s1");
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor.to_string());
    }
    service
        .clone()
        .oneshot(request.body(()).unwrap())
        .await
        .unwrap()
}

/// Reads `body` to its end into nothing, as a connection whose client is
/// gone still takes what the server writes; returns how many events went.
fn drain_into_the_void<B>(body: B) -> tokio::task::JoinHandle<usize>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    tokio::spawn(async move {
        let collected = body.collect().await.unwrap().to_bytes();
        std::str::from_utf8(&collected)
            .unwrap()
            .matches("\n\n")
            .count()
    })
}

#[tokio::test]
async fn one_client_per_scope_a_reconnect_ends_the_old_response_and_takes_its_upstream() {
    let upstream = LiveUpstream::new(50);
    let layer = lingering(Duration::from_secs(5));
    let service = layer.layer(upstream.clone());
    let mut old = Box::pin(open_feed(&service, None).await.into_body());
    let mut got = String::new();
    while got.matches("\n\n").count() < 10 {
        got.push_str(&next_text(old.as_mut()).await);
    }
    let cursor = last_id(&got);
    // The client's connection dies without a word: the server goes on
    // writing into it for a while.
    let void = drain_into_the_void(old);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let new = open_feed(&service, Some(cursor)).await;
    let (got, _) = read_until(new.into_body(), 50).await;
    assert_eq!(got, events(cursor + 1..=50), "every event once");
    assert_eq!(
        upstream.requests(),
        1,
        "the old response's upstream, taken over"
    );
    let lost_in_the_void = tokio::time::timeout(STEP, void).await.unwrap().unwrap();
    assert!(
        lost_in_the_void >= 5,
        "the old response ended, after {lost_in_the_void}"
    );
    assert_eq!(layer.stats().snapshot().takeovers, 1);
}

#[tokio::test]
async fn without_one_client_per_scope_a_reconnect_gets_its_own_upstream_request() {
    let upstream = LiveUpstream::new(50);
    let layer = lingering(Duration::from_secs(5)).one_client_per_scope(false);
    let service = layer.layer(upstream.clone());
    let old = open_feed(&service, None).await;
    let mut old = pin!(old.into_body());
    let cursor = last_id(&next_text(old.as_mut()).await);
    let new = open_feed(&service, Some(cursor)).await;
    let (got, _) = read_until(new.into_body(), 50).await;
    assert_eq!(last_id(&got), 50);
    assert_eq!(upstream.requests(), 2);
    assert_eq!(layer.stats().snapshot().takeovers, 0);
    let next = tokio::time::timeout(STEP, old.frame()).await.unwrap();
    assert!(next.is_some(), "the old response goes on");
}

#[tokio::test]
async fn two_clients_of_one_scope_reconnecting_over_and_over_never_end_each_other_in_a_loop() {
    let upstream = LiveUpstream::new(10_000);
    let layer = lingering(Duration::from_secs(5));
    let service = layer.layer(upstream.clone());
    // Each client holds one response and reconnects from the last id it
    // got, in turn; its old response goes with its old connection.
    let mut cursors = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..2 {
        let mut body = Box::pin(open_feed(&service, None).await.into_body());
        cursors.push(last_id(&next_text(body.as_mut()).await));
        responses.push(body);
    }
    for round in 0..10 {
        let (me, other) = (round % 2, 1 - round % 2);
        let mut new = Box::pin(open_feed(&service, Some(cursors[me])).await.into_body());
        // (Its cursor may be one the stream never recorded, once the other
        // client's reconnect superseded the response that forwarded it:
        // then the gap signal comes first.)
        let got = events_after(new.as_mut(), 0).await;
        cursors[me] = last_id(&got.expect("the new response's first event"));
        responses[me] = new;
        // The other client's response is still open: it goes on to events
        // that happened after this reconnect.
        let went_on = events_after(responses[other].as_mut(), cursors[me]).await;
        let went_on = went_on.unwrap_or_else(|| {
            panic!("round {round}: client {me}'s reconnect ended client {other}'s response")
        });
        cursors[other] = last_id(&went_on);
    }
    let takeovers = layer.stats().snapshot().takeovers;
    assert!(takeovers <= 1, "{takeovers} takeovers");
    assert!(
        upstream.requests() >= 11,
        "{} requests",
        upstream.requests()
    );
}

/// Reads `body` until it has an event after `id`, and returns what came;
/// `None` if it ended first.
async fn events_after<B>(mut body: Pin<&mut B>, id: u32) -> Option<String>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut text = String::new();
    while !text.contains("\nid: ") && !text.starts_with("id: ") || last_id(&text) <= id {
        let frame = tokio::time::timeout(STEP, body.frame()).await;
        let frame = frame.expect("body stalled")?.unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    Some(text)
}

#[tokio::test]
async fn memory_stays_flat_under_churn_of_held_streams() {
    let upstream = LiveUpstream::new(u32::MAX);
    let layer = lingering(Duration::from_millis(50))
        .max_held_streams(32)
        .max_streams(256);
    let service = layer.layer(upstream.clone());
    let mut most_held = 0;
    for round in 0..3 {
        for session in 0..100 {
            let session = format!("s{round}-{session}");
            let response = service
                .clone()
                .oneshot(get("/feed", &session).body(()).unwrap());
            read_events(response.await.unwrap().into_body(), 1).await;
            most_held = most_held.max(layer.stats().snapshot().held);
        }
    }
    assert!(most_held <= 32, "{most_held} held at once");
    eventually("every hold to end", || layer.stats().snapshot().held == 0).await;
    let stats = layer.stats().snapshot();
    assert!(stats.streams <= 256, "{stats:?}");
    assert!(stats.history_bytes <= 256 * 4096, "{stats:?}");
    eventually("every upstream to close", || upstream.closed() == 300).await;
}
