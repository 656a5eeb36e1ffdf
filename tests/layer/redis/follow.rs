//! Following across replicas: a client that reconnects to another replica
//! than the one that holds its stream follows the stream there, through
//! Redis, with no upstream request, exactly once and in order. Against a
//! live-only upstream and a real `redis-server` on loopback; each replica
//! is its own `RedisStore` and layer, through `oneshot` or its own hyper
//! server.
//!
//! Without `redis-server` on `PATH` every test prints a message and passes,
//! unless `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::server::{RedisServer, command_calls, flushed};
use crate::linger::{LiveUpstream, last_id, read_events};
use crate::support::*;
use tower_sse_resume::{GAP_EVENT, HistoryLimits, RedisStore, SseResumeLayer};

/// How long a replica's hold on a stream lasts unrenewed, in these tests.
const LEASE: Duration = Duration::from_millis(600);

/// How soon a follower notices that the holder died, as `RedisStore::lease`
/// and the README promise: within twice the lease. The margin is for the
/// scheduler and a round trip to Redis on a loaded machine, not for a
/// third lease.
const NOTICED_WITHIN: Duration = Duration::from_millis(2 * 600 + 300);

type AnyBody = UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One replica of the gateway: its store and its layer, with a history
/// and linger, over a prefix that no other test uses.
struct Replica {
    store: RedisStore,
    layer: SseResumeLayer<RedisStore>,
}

impl Replica {
    async fn connect(server: &RedisServer, prefix: &str) -> Self {
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect to redis-server")
            .prefix(prefix)
            .lease(LEASE);
        let layer = SseResumeLayer::new()
            .store(store.clone())
            .history(HistoryLimits::new())
            .linger(Duration::from_secs(5));
        Self { store, layer }
    }
}

fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("follow{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The replicas of one test, each reached through `transport`.
struct Gateway {
    services: Vec<Box<dyn Fn(Request<()>) -> ResponseFuture + Send + Sync>>,
}

type ResponseFuture = std::pin::Pin<Box<dyn Future<Output = Response<AnyBody>> + Send>>;

impl Gateway {
    async fn start(replicas: &[&Replica], upstream: &LiveUpstream, transport: Transport) -> Self {
        let mut services: Vec<Box<dyn Fn(Request<()>) -> ResponseFuture + Send + Sync>> =
            Vec::new();
        for replica in replicas {
            let service = replica.layer.layer(upstream.clone());
            match transport {
                Transport::Oneshot => services.push(Box::new(move |request| {
                    let service = service.clone();
                    Box::pin(async move {
                        let response = service.oneshot(request).await.unwrap();
                        response.map(|body| body.map_err(|e: Infallible| match e {}).boxed_unsync())
                    })
                })),
                Transport::Http | Transport::Http2 => {
                    // Stopped when the last of its closures goes.
                    let server = std::sync::Arc::new(Server::start(service).await.over(transport));
                    services.push(Box::new(move |request| {
                        let server = std::sync::Arc::clone(&server);
                        Box::pin(async move {
                            let response = server.open(request).await;
                            response.map(|body| body.map_err(Into::into).boxed_unsync())
                        })
                    }));
                }
            }
        }
        Self { services }
    }

    async fn open(&self, replica: usize, request: Request<()>) -> Response<AnyBody> {
        (self.services[replica])(request).await
    }
}

fn feed(cursor: Option<u32>) -> Request<()> {
    let mut request = get("/feed", "s1");
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor.to_string());
    }
    request.body(()).unwrap()
}

/// Two replicas over a fresh prefix, an upstream of `last` events, and the
/// gateway that reaches them through `transport`.
struct Scene {
    a: Replica,
    b: Replica,
    upstream: LiveUpstream,
    gateway: Gateway,
    /// What every key of this scene starts with.
    prefix: String,
}

impl Scene {
    async fn start(server: &RedisServer, last: u32, transport: Transport) -> Self {
        Self::over(server, LiveUpstream::new(last), transport).await
    }

    /// The same, in front of `upstream`.
    async fn over(server: &RedisServer, upstream: LiveUpstream, transport: Transport) -> Self {
        let prefix = fresh_prefix();
        let (a, b) = (
            Replica::connect(server, &prefix).await,
            Replica::connect(server, &prefix).await,
        );
        let gateway = Gateway::start(&[&a, &b], &upstream, transport).await;
        Self {
            a,
            b,
            upstream,
            gateway,
            prefix,
        }
    }

    /// Over an upstream of `last` events released by the test, a client
    /// of replica A reads the first five and comes back through B, which
    /// follows the stream from there: returns the scene, the cursor and
    /// B's response.
    async fn followed_on_b_after_five(
        server: &RedisServer,
        last: u32,
    ) -> (Self, u32, Response<AnyBody>) {
        let scene = Self::over(server, LiveUpstream::released(last), Transport::Oneshot).await;
        let first = scene.gateway.open(0, feed(None)).await;
        scene.upstream.release(5);
        let cursor = last_id(&read_events(first.into_body(), 5).await);
        flushed(&scene.a.store).await;
        let resumed = scene.gateway.open(1, feed(Some(cursor))).await;
        (scene, cursor, resumed)
    }

    /// A client of replica A reads `count` events of `request` and goes
    /// away; returns its cursor, once A's writes are in Redis.
    async fn client_leaves_a(&self, request: Request<()>, count: usize) -> u32 {
        let first = self.gateway.open(0, request).await;
        let cursor = last_id(&read_events(first.into_body(), count).await);
        flushed(&self.a.store).await;
        cursor
    }
}

/// Reads `body` to its end, failing past `limit`; returns the text and
/// how long it took.
async fn read_to_end<B>(body: B, limit: Duration) -> (String, Duration)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let started = Instant::now();
    let collected = tokio::time::timeout(limit, body.collect())
        .await
        .expect("the body did not end in time")
        .expect("no error");
    let text = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    (text, started.elapsed())
}

#[tokio::test]
async fn a_client_that_reconnects_to_another_replica_follows_the_stream_there() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    for transport in TRANSPORTS {
        let scene = Scene::start(&server, 60, transport).await;
        // The client's connection to A is cut; it comes back through B.
        let cursor = scene.client_leaves_a(feed(None), 10).await;
        let resumed = scene.gateway.open(1, feed(Some(cursor))).await;
        assert_eq!(resumed.status(), 200);
        let (got, _) = read_to_end(resumed.into_body(), STEP).await;

        assert_eq!(got, events(cursor + 1..=60), "over {transport:?}");
        assert_eq!(scene.upstream.requests(), 1, "B asked the upstream nothing");
        let b = scene.b.layer.stats().snapshot();
        assert_eq!(b.follows, 1);
        assert_eq!(b.follows_lost, 0);
    }
}

#[tokio::test]
async fn a_get_without_a_cursor_follows_a_stream_another_replica_holds() {
    // A client that got nothing with an id yet, or a second tab, opens the
    // stream on B while A holds it. B follows A, rather than reading the
    // upstream too:
    // two replicas recording one stream into Redis would each hold its
    // window, and a replay of one could lack an id the other put there,
    // which the replay's reader then drops as one its client has.
    let Some(server) = RedisServer::start() else {
        return;
    };
    for transport in TRANSPORTS {
        // The test says when each event happens, so the newest one is
        // known when the second client opens.
        let upstream = LiveUpstream::released(60);
        let scene = Scene::over(&server, upstream.clone(), transport).await;
        let first = scene.gateway.open(0, feed(None)).await;
        upstream.release(5);
        assert_eq!(read_events(first.into_body(), 5).await, events(1..=5));
        // A reads on, with no client attached, up to event 8.
        upstream.release(8);
        // (Over HTTP, A may still forward some into the dead connection.)
        crate::linger::eventually("A to read up to event 8", || {
            let a = scene.a.layer.stats().snapshot();
            a.events_forwarded + a.events_held == 8
        })
        .await;
        flushed(&scene.a.store).await;

        let second = scene.gateway.open(1, feed(None)).await;
        assert_eq!(second.status(), 200);
        upstream.release(60);
        let (got, _) = read_to_end(second.into_body(), STEP).await;

        // As a `GET` without a cursor taking the stream over on A would:
        // what A read since its client went away (from 6, or later over
        // HTTP where A forwarded some into the dead connection), up to 8,
        // then the rest. From the newest event alone, a client that got
        // nothing with an id before its connection was cut lost those
        // without a word. A's client had been sent ids, which this request
        // names none of: it may be that client, lacking them, and hears of
        // the gap first.
        let forwarded = scene.a.layer.stats().snapshot().events_forwarded;
        let away = u32::try_from(forwarded).unwrap();
        assert!(away <= 8, "over {transport:?}");
        let gap = gap_event("");
        assert_eq!(
            got,
            format!("{gap}{}", events(away + 1..=60)),
            "over {transport:?}"
        );
        assert_eq!(scene.upstream.requests(), 1, "B asked the upstream nothing");
        assert_eq!(scene.b.layer.stats().snapshot().follows, 1);
    }
}

#[tokio::test]
async fn a_follower_keeps_the_holders_linger_from_running_out() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let mut a = Replica::connect(&server, &prefix).await;
    // A lingers far shorter than the stream lasts: only the follower on B
    // keeps its hold.
    a.layer = a.layer.clone().linger(Duration::from_millis(300));
    let b = Replica::connect(&server, &prefix).await;
    let upstream = LiveUpstream::new(150);
    let gateway = Gateway::start(&[&a, &b], &upstream, Transport::Oneshot).await;

    let first = gateway.open(0, feed(None)).await;
    let cursor = last_id(&read_events(first.into_body(), 5).await);
    flushed(&a.store).await;
    let resumed = gateway.open(1, feed(Some(cursor))).await;
    let (got, _) = read_to_end(resumed.into_body(), STEP).await;

    assert_eq!(got, events(cursor + 1..=150));
    assert_eq!(a.layer.stats().snapshot().linger_expiries, 0);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn a_tool_call_held_on_one_replica_ends_with_its_result_on_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Event 30 is the tool call's result; then its stream ends.
    let scene = Scene::start(&server, 30, Transport::Http).await;
    let call = Request::post("/mcp").header("mcp-session-id", "s1");
    let cursor = scene.client_leaves_a(call.body(()).unwrap(), 10).await;
    let resume = || {
        let request = get("/mcp", "s1").header("last-event-id", cursor.to_string());
        request.body(()).unwrap()
    };
    let resumed = scene.gateway.open(1, resume()).await;
    let (got, _) = read_to_end(resumed.into_body(), STEP).await;
    assert_eq!(
        got,
        events(cursor + 1..=30),
        "up to the result, then the end"
    );

    // Complete now: resumed again on B from the history alone.
    flushed(&scene.a.store).await;
    let again = scene.gateway.open(1, resume()).await;
    let (replayed, _) = read_to_end(again.into_body(), STEP).await;
    assert_eq!(replayed, events(cursor + 1..=30));
    // A client that has all of it is told it is over on B too: `204`,
    // which stops an `EventSource`; an empty `200` has it come back for
    // ever.
    let last = get("/mcp", "s1").header("last-event-id", "30");
    let over = scene.gateway.open(1, last.body(()).unwrap()).await;
    assert_eq!(over.status(), http::StatusCode::NO_CONTENT);
    assert_eq!(
        scene.upstream.requests(),
        1,
        "the tool call was never sent again"
    );
    let stats = scene.b.layer.stats().snapshot();
    assert_eq!(
        (stats.follows, stats.completes_replayed),
        (1, 2),
        "followed while held on A, then complete: {stats:?}"
    );
}

#[tokio::test]
async fn a_thousand_followers_share_the_replicas_three_connections() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The upstream's events happen only as the test releases them: however
    // long the 1,000 followers take to open on a loaded machine, none of
    // the stream is over before the last one follows.
    const LAST: u32 = 100;
    let upstream = LiveUpstream::released(LAST);
    let scene = Scene::over(&server, upstream.clone(), Transport::Oneshot).await;
    // Not what this test is about: the default lease. 1,000 opens on one
    // thread of a loaded machine can outlast the tests' short one, and B
    // then takes the stream for let go.
    for replica in [&scene.a, &scene.b] {
        let _ = replica.store.clone().lease(Duration::from_secs(3));
    }
    let (b, gateway) = (&scene.b, &scene.gateway);
    let first = gateway.open(0, feed(None)).await;
    upstream.release(3);
    let cursor = last_id(&read_events(first.into_body(), 3).await);
    assert_eq!(cursor, 3);
    flushed(&scene.a.store).await;

    let mut followers = Vec::new();
    for _ in 0..1000 {
        followers.push(gateway.open(1, feed(Some(cursor))).await.into_body());
    }
    assert_eq!(b.store.followers(), 1000);
    let clients = client_count(&server).await;
    eprintln!("1,000 followers: {clients} connections to Redis");
    // A's three, B's three (writes, the rest, the subscription), and the
    // one counting.
    assert!(clients <= 7, "{clients} connections to Redis");

    // Each follower gets the whole rest of the stream, once, in order,
    // and then its end.
    upstream.release(LAST);
    for (n, body) in followers.into_iter().enumerate() {
        let (got, _) = read_to_end(body, STEP).await;
        assert_eq!(got, events(cursor + 1..=LAST), "follower {n}");
    }
    crate::linger::eventually("followers to stop", || b.store.followers() == 0).await;
    assert_eq!(scene.upstream.requests(), 1);
    assert_eq!(b.layer.stats().snapshot().follows, 1000);
}

/// The number of clients connected to `server`.
async fn client_count(server: &RedisServer) -> usize {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    list.lines().count()
}

#[tokio::test]
async fn a_follower_goes_on_after_redis_pauses_and_gives_up_when_it_stays_away() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let scene = Scene::start(&server, 80, Transport::Oneshot).await;
    let cursor = scene.client_leaves_a(feed(None), 5).await;

    // A short pause, shorter than the lease: the follower goes on.
    let resumed = scene.gateway.open(1, feed(Some(cursor))).await;
    let reading = tokio::spawn(read_to_end(resumed.into_body(), STEP));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.pause();
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.resume();
    let (got, _) = reading.await.unwrap();
    assert_eq!(got, events(cursor + 1..=80));

    // A long one, while B follows a tool call (which no replica may send
    // again): B ends it with the gap signal, in bounded time.
    let scene = Scene::start(&server, 1000, Transport::Oneshot).await;
    let call = Request::post("/mcp").header("mcp-session-id", "s1");
    let cursor = scene.client_leaves_a(call.body(()).unwrap(), 5).await;
    let resume = get("/mcp", "s1").header("last-event-id", cursor.to_string());
    let resumed = scene.gateway.open(1, resume.body(()).unwrap()).await;
    let reading = tokio::spawn(read_to_end(resumed.into_body(), Duration::from_secs(15)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.pause();
    let outcome = reading.await;
    server.resume();
    let (got, took) = outcome.unwrap();
    let gap = format!("event: {GAP_EVENT}\n");
    assert!(got.ends_with("\n\n") && got.contains(&gap), "{got}");
    let (before, _) = got.split_at(got.find(&gap).unwrap());
    let newest = last_id(before);
    assert_eq!(
        before,
        events(cursor + 1..=newest),
        "in order, once, then the gap"
    );
    assert!(took < Duration::from_secs(8), "gave up after {took:?}");
    assert_eq!(scene.b.layer.stats().snapshot().follows_lost, 1);
    assert_eq!(scene.upstream.requests(), 1);
}

/// What a follower on B got when replica A, holding the stream that
/// `request` opened, was killed while B followed it, and when; with B's
/// stats and the upstream.
struct Killed {
    cursor: u32,
    got: String,
    /// When A was killed.
    killed: Instant,
    /// When B's response ended.
    ended: Instant,
    stats: tower_sse_resume::StatsSnapshot,
    upstream: LiveUpstream,
}

/// Replica A on a runtime of its own, whose client read five events of
/// `request` from a live upstream of `last` events, its writes in Redis;
/// and a runtime for replica B.
struct AOnItsOwn {
    prefix: String,
    runtime_a: tokio::runtime::Runtime,
    runtime_b: tokio::runtime::Runtime,
    upstream: LiveUpstream,
    /// The last id A's client got.
    cursor: u32,
    /// Replica A, kept until its runtime is killed.
    a: Replica,
}

fn a_on_its_own(server: &RedisServer, last: u32, request: fn() -> Request<()>) -> AOnItsOwn {
    let prefix = fresh_prefix();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let (runtime_a, runtime_b) = (runtime(), runtime());
    let upstream = runtime_a.block_on(async { LiveUpstream::new(last) });
    let a = runtime_a.block_on(Replica::connect(server, &prefix));
    let cursor = runtime_a.block_on(async {
        let service = a.layer.layer(upstream.clone());
        let first = service.oneshot(request()).await.unwrap();
        let cursor = last_id(&read_events(first.into_body(), 5).await);
        flushed(&a.store).await;
        cursor
    });
    AOnItsOwn {
        prefix,
        runtime_a,
        runtime_b,
        upstream,
        cursor,
        a,
    }
}

/// Runs replica A on a runtime of its own, which is killed at once while
/// B follows: no task of A says goodbye to Redis, as with SIGKILL.
fn kill_the_holder(
    last: u32,
    request: fn() -> Request<()>,
    resume: fn(u32) -> Request<()>,
    upstream_resumes: bool,
) -> Option<Killed> {
    let server = RedisServer::start()?;
    let AOnItsOwn {
        prefix,
        runtime_a,
        runtime_b,
        upstream,
        cursor,
        a: _a,
    } = a_on_its_own(&server, last, request);
    runtime_b.block_on(async move {
        let b = Replica::connect(&server, &prefix).await;
        let layer = b.layer.clone().upstream_resumes(upstream_resumes);
        let service = layer.layer(upstream.clone());
        let resumed = service.oneshot(resume(cursor)).await.unwrap();
        let reading = tokio::spawn(read_to_end(resumed.into_body(), STEP));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let killed = Instant::now();
        runtime_a.shutdown_background();
        let (got, _) = reading.await.unwrap();
        Some(Killed {
            cursor,
            got,
            killed,
            ended: Instant::now(),
            stats: b.layer.stats().snapshot(),
            upstream,
        })
    })
}

#[test]
fn when_the_holder_of_a_tool_call_dies_its_follower_ends_with_the_gap_signal() {
    let call = || {
        let request = Request::post("/mcp").header("mcp-session-id", "s1");
        request.body(()).unwrap()
    };
    let resume = |cursor: u32| {
        let request = get("/mcp", "s1").header("last-event-id", cursor.to_string());
        request.body(()).unwrap()
    };
    let Some(killed) = kill_the_holder(1000, call, resume, false) else {
        return;
    };
    let gap = format!("event: {GAP_EVENT}\n");
    let got = &killed.got;
    let at = got.find(&gap);
    let (before, after) = got.split_at(at.unwrap_or_else(|| panic!("no gap signal: {got:?}")));
    let newest = last_id(before);
    assert_eq!(before, events(killed.cursor + 1..=newest), "in order, once");
    assert_eq!(after, format!("{gap}data: {newest}\n\n"), "then the end");
    // The lease lapses, then half of it unheld, seen by polls a third of
    // it apart: within twice the lease.
    let noticed = killed.ended - killed.killed;
    assert!(noticed < NOTICED_WITHIN, "noticed after {noticed:?}");
    assert_eq!(killed.stats.follows_lost, 1);
    assert_eq!(
        killed.upstream.requests(),
        1,
        "a tool call is never sent again"
    );
}

/// A standing stream whose holder died goes on from the upstream, asked
/// from the last id B has. This upstream cannot resume: what it sent while
/// nobody read it is lost, and the layer cannot know how much, so the
/// client hears of it: the gap signal, right where the hole is.
#[test]
fn when_the_holder_of_a_standing_stream_dies_its_follower_signals_the_gap_and_asks_the_upstream() {
    let Some(killed) = kill_the_holder(150, || feed(None), |cursor| feed(Some(cursor)), false)
    else {
        return;
    };
    let gap = format!("event: {GAP_EVENT}\n");
    let got = &killed.got;
    let at = got
        .find(&gap)
        .unwrap_or_else(|| panic!("no gap signal: {got}"));
    let (followed, resumed) = got.split_at(at);
    let newest = if followed.is_empty() {
        killed.cursor
    } else {
        last_id(followed)
    };
    assert_eq!(
        followed,
        events(killed.cursor + 1..=newest),
        "followed, once"
    );
    let signal = format!("{gap}data: {newest}\n\n");
    let resumed = resumed
        .strip_prefix(&signal)
        .unwrap_or_else(|| panic!("{resumed}"));
    let ids: Vec<u32> = (resumed.lines())
        .filter_map(|line| line.strip_prefix("id: ")?.parse().ok())
        .collect();
    let first = *ids.first().expect("events from the upstream");
    assert!(first > newest, "after the gap: {ids:?}");
    assert_eq!(
        ids,
        (first..=150).collect::<Vec<_>>(),
        "then every one, once"
    );
    assert_eq!(killed.stats.follows_resumed, 1);
    assert_eq!(killed.stats.gaps, 1);
    let requested = killed.upstream.requested_at();
    assert_eq!(requested.len(), 2, "A's, then B's own");
    // B noticed, and asked the upstream itself, within twice the lease.
    let noticed = requested[1] - killed.killed;
    assert!(noticed < NOTICED_WITHIN, "noticed after {noticed:?}");
}

/// A follower that went on from the upstream after its holder died reads
/// that upstream for the stream from then on, as a holder does: when its
/// client goes away it lingers, so that the client, back on B, gets what
/// came meanwhile, with no second gap and no new upstream request. It did
/// not linger: the soak's clients lost (and heard of) a quarter second of
/// events at their next reconnect after a replica died.
#[test]
fn a_follower_that_went_on_from_the_upstream_lingers_as_its_holder_did() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let scene = a_on_its_own(&server, 400, || feed(None));
    let (cursor, upstream, prefix) = (scene.cursor, scene.upstream, scene.prefix);
    let runtime_a = scene.runtime_a;
    scene.runtime_b.block_on(async move {
        let b = Replica::connect(&server, &prefix).await;
        let service = b.layer.layer(upstream.clone());
        let resumed = service.clone().oneshot(feed(Some(cursor))).await.unwrap();
        let mut body = Box::pin(resumed.into_body());
        tokio::time::sleep(Duration::from_millis(100)).await;
        runtime_a.shutdown_background();
        // Read until B goes on from the upstream, and a few events more.
        let mut got = String::new();
        while !got.contains(GAP_EVENT)
            || got.split(GAP_EVENT).nth(1).unwrap().matches("id: ").count() < 5
        {
            let frame = tokio::time::timeout(STEP, body.frame()).await;
            let frame = frame.expect("body stalled").expect("more events").unwrap();
            got.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
        assert_eq!(b.layer.stats().snapshot().follows_resumed, 1);
        let away_at = last_id(&got);
        drop(body);
        // Away while about 20 events happen.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let back = service.oneshot(feed(Some(away_at))).await.unwrap();
        let got = read_events(back.into_body(), 30).await;
        let ids: Vec<u32> = (got.lines())
            .filter_map(|line| line.strip_prefix("id: ")?.parse().ok())
            .collect();
        assert!(
            !got.contains(GAP_EVENT),
            "no second gap after {away_at}: {got} {:?}",
            b.layer.stats().snapshot()
        );
        assert_eq!(
            ids,
            (away_at + 1..away_at + 31).collect::<Vec<_>>(),
            "what came while away, then live, once"
        );
        assert_eq!(
            upstream.requests(),
            2,
            "A's, then B's: taken over, not asked again"
        );
        assert_eq!(b.layer.stats().snapshot().takeovers, 1);
    });
}

/// When Redis restarts empty, a follower loses what it followed, and its
/// holder's lease: it goes on following the holder, which writes on from
/// where it left the history, or from the upstream itself. Whatever that
/// costs, its client hears of it; no event comes twice or out of order.
#[test]
fn a_follower_whose_redis_restarted_empty_loses_nothing_unsaid() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let scene = a_on_its_own(&server, 300, || feed(None));
    let (cursor, upstream, prefix) = (scene.cursor, scene.upstream, scene.prefix);
    // A reads on for its stream throughout, on its own runtime.
    let (_runtime_a, _a) = (scene.runtime_a, scene.a);
    let got = scene.runtime_b.block_on(async move {
        let b = Replica::connect(&server, &prefix).await;
        let service = b.layer.layer(upstream.clone());
        let resumed = service.oneshot(feed(Some(cursor))).await.unwrap();
        let reading = tokio::spawn(read_to_end(resumed.into_body(), 4 * STEP));
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart();
        let got = reading.await.unwrap().0;
        (got, b.layer.stats().snapshot())
    });
    let (got, stats) = got;
    // The holder writes its stream's history on from where it left it,
    // into the empty Redis too: when none of its writes was dropped
    // meanwhile, the follower goes on following it, with nothing lost;
    // otherwise it finds the hole, and goes on from the upstream.
    assert!(
        stats.follows_resumed <= 1,
        "went on from the upstream at most once: {stats:?}"
    );
    let mut last = cursor;
    let mut told = false;
    for block in got.split_terminator("\n\n") {
        if block.starts_with(&format!("event: {GAP_EVENT}")) {
            told = true;
            continue;
        }
        let id: u32 = (block
            .strip_prefix("id: ")
            .and_then(|rest| rest.split('\n').next()))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an event with an id: {block:?}"));
        assert!(id > last, "{id} after {last}: twice, or out of order");
        assert!(
            id == last + 1 || told,
            "{}..{id} lost without a word",
            last + 1
        );
        (last, told) = (id, false);
    }
    assert!(last == 300 || told, "the end, or the gap signal: {last}");
}

/// A client that comes back only once its holder died and the lease
/// lapsed is not followed: it gets the history, then its own upstream
/// request. That live upstream goes on from now, not from where the dead
/// holder's history ends: the client hears of the hole.
#[test]
fn a_client_back_after_its_holder_died_and_its_lease_lapsed_hears_of_the_gap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let scene = a_on_its_own(&server, 400, || feed(None));
    let (cursor, upstream, prefix) = (scene.cursor, scene.upstream, scene.prefix);
    scene.runtime_a.shutdown_background();
    let got = scene.runtime_b.block_on(async move {
        tokio::time::sleep(LEASE * 3).await;
        let b = Replica::connect(&server, &prefix).await;
        let service = b.layer.layer(upstream.clone());
        let resumed = service.oneshot(feed(Some(cursor))).await.unwrap();
        read_events(resumed.into_body(), 10).await
    });
    let ids: Vec<u32> = (got.lines())
        .filter_map(|line| line.strip_prefix("id: ")?.parse().ok())
        .collect();
    let whole = ids.first() == Some(&(cursor + 1)) && ids.windows(2).all(|p| p[1] == p[0] + 1);
    assert!(
        whole || got.contains(GAP_EVENT),
        "events lost without the gap signal after {cursor}: {ids:?}"
    );
}

/// The same, with an upstream the operator declared resumes: then the
/// stream goes on exactly where the client stopped, with no gap signal.
#[test]
fn when_the_upstream_resumes_a_dead_holders_follower_goes_on_without_a_gap_signal() {
    let Some(killed) = kill_the_holder(150, || feed(None), |cursor| feed(Some(cursor)), true)
    else {
        return;
    };
    assert!(!killed.got.contains(GAP_EVENT), "{}", killed.got);
    assert_eq!(killed.stats.follows_resumed, 1);
    assert_eq!(killed.stats.gaps, 0);
}

/// A stream that replica A opened and holds, and replica B beside it.
struct HeldOnA {
    a: Replica,
    b: Replica,
    key: tower_sse_resume::StreamKey,
    /// The generation A opened the stream at.
    generation: u64,
    lease: tower_sse_resume::store::follow::Lease,
}

impl HeldOnA {
    async fn start(server: &RedisServer) -> Self {
        use tower_sse_resume::{Snapshot, StreamKey, TrackerStore};

        let prefix = fresh_prefix();
        let (a, b) = (
            Replica::connect(server, &prefix).await,
            Replica::connect(server, &prefix).await,
        );
        let key = StreamKey::new("s1", "GET /feed");
        let Ok(Snapshot::Stored(opened)) = a.store.open(&key, None).await else {
            panic!("a stored stream");
        };
        let lease = a.store.hold(&key).expect("a lease");
        Self {
            a,
            b,
            key,
            generation: opened.generation,
            lease,
        }
    }
}

/// Records into `store` that event `id` went out as `block`.
fn record_one(
    store: &RedisStore,
    key: &tower_sse_resume::StreamKey,
    generation: u64,
    id: &str,
    block: &'static [u8],
) {
    use tower_sse_resume::{IdBatch, TrackerStore};

    let mut batch = IdBatch::new();
    batch.push(id);
    batch.push_block(Some(id), block);
    store.record(key, generation, &batch).unwrap();
}

#[tokio::test]
async fn a_cursor_still_on_its_way_from_the_holder_is_waited_for() {
    use tower_sse_resume::{Snapshot, TrackerStore};

    let Some(server) = RedisServer::start() else {
        return;
    };
    let HeldOnA {
        a,
        b,
        key,
        generation,
        lease,
    } = HeldOnA::start(&server).await;
    flushed(&a.store).await;
    // B waits for a cursor on its way for half its open timeout: here
    // 10 s, which no machine needs.
    let b_store = b.store.clone().timeout(Duration::from_secs(20));
    // Every command goes to the slow log, where the test sees B ask.
    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    // A forwarded event 7, and B asks for it before A's write lands.
    let open = b_store.open(&key, Some("7"));
    let late = async {
        loop {
            // Each entry: id, time, duration, arguments, client, name.
            type Entry = (i64, i64, i64, Vec<String>, String, String);
            let entries: Vec<Entry> = redis::cmd("SLOWLOG")
                .arg("GET")
                .arg(-1)
                .query_async(&mut redis)
                .await
                .unwrap();
            // The open script's arguments: the stream, the cursor, ...
            let asked = entries.iter().any(|(_, _, _, arguments, _, _)| {
                (arguments.windows(2)).any(|pair| pair[0] == "GET /feed" && pair[1] == "7")
            });
            if asked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // B asks again when A's write is told, not on a timer (it asked
        // every 20 ms): while nothing is written, it does not. The open
        // script alone reads the clock without writing.
        let before = command_calls(&server, "time").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let asked_again = command_calls(&server, "time").await - before;
        record_one(&a.store, &key, generation, "7", b"id: 7\ndata: seven\n\n");
        flushed(&a.store).await;
        asked_again
    };
    let (resumed, asked_again) = tokio::time::timeout(STEP, async { tokio::join!(open, late) })
        .await
        .expect("B never asked for 7, or its open never ended");
    assert!(
        asked_again <= 1,
        "asked {asked_again} times while nothing was written"
    );
    let Ok(Snapshot::Stored(resumed)) = resumed else {
        panic!("a stored stream");
    };
    assert_eq!(resumed.cursor_known, Some(true), "waited for, not cut");
    assert_eq!(resumed.follow_from, Some(1), "and followed from after it");
    drop(lease);
}

/// A client that comes back to the replica that holds its stream takes it
/// over there: its cursor must not generation what the hold recorded and has
/// not written yet, which another replica replays later. (Found by the
/// soak: reconnects to the other replica met cursors Redis never kept.)
#[tokio::test(flavor = "current_thread")]
async fn a_takeover_on_the_holder_does_not_fence_the_holds_last_writes() {
    use tower_sse_resume::{Replay, Snapshot, TrackerStore};

    let Some(server) = RedisServer::start() else {
        return;
    };
    // The lease is kept to the end: A holds the stream throughout.
    let HeldOnA {
        a,
        b,
        key,
        generation,
        lease: _held,
    } = HeldOnA::start(&server).await;
    let record = |id: &str, block: &'static [u8]| record_one(&a.store, &key, generation, id, block);
    record("1", b"id: 1\ndata: one\n\n");
    flushed(&a.store).await;
    // The hold reads event 2; before its write goes, the client is back
    // on A with cursor 1.
    record("2", b"id: 2\ndata: two\n\n");
    let Ok(Snapshot::Stored(_)) = a.store.open(&key, Some("1")).await else {
        panic!("a stored stream");
    };
    flushed(&a.store).await;
    let Ok(Snapshot::Stored(on_b)) = b.store.open(&key, Some("1")).await else {
        panic!("a stored stream");
    };
    let Replay::Blocks(blocks) = on_b.replay else {
        panic!("a replay: {:?}", on_b.replay);
    };
    assert_eq!(
        blocks,
        vec![bytes::Bytes::from_static(b"id: 2\ndata: two\n\n")]
    );
    assert_eq!(a.store.stats().fenced, 0);
}

#[tokio::test]
async fn a_follow_holds_no_permit_of_the_inner_service_while_it_lasts() {
    // A follow never calls the inner service unless its holder goes away.
    // The service it was given ready holds what its `poll_ready` took, a
    // concurrency limit's permit for one: kept for the whole follow, it
    // would shut every other request of the replica out.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let scene = Scene::start(&server, 100_000, Transport::Oneshot).await;
    let cursor = scene.client_leaves_a(feed(None), 5).await;
    let b = tower::ServiceBuilder::new()
        .layer(scene.b.layer.clone())
        .concurrency_limit(1)
        .service(scene.upstream.clone());

    let follow = b.clone().oneshot(feed(Some(cursor))).await.unwrap();
    assert_eq!(scene.b.layer.stats().snapshot().follows, 1);
    let mut follow = Box::pin(follow.into_body());
    let got = read_events(follow.as_mut(), 3).await;
    assert!(got.starts_with(&events([cursor + 1])), "{got}");

    // The follow is still open, and another client's request goes through.
    let other = get("/feed", "s2").body(()).unwrap();
    let answered = tokio::time::timeout(STEP, b.oneshot(other)).await;
    let other = answered.expect("another request waited for the follow's permit");
    assert_eq!(other.unwrap().status(), 200);
    let more = read_events(follow.as_mut(), 1).await;
    assert!(!more.is_empty(), "the follow goes on");
}

/// How many `LLEN` calls Redis has served: only a follower's read and a
/// write's or an open's prune of a history make them.
async fn llen_calls(server: &RedisServer) -> u64 {
    command_calls(server, "llen").await
}

#[tokio::test]
async fn a_follower_of_a_quiet_stream_reads_nothing_until_the_holder_writes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (scene, cursor, resumed) = Scene::followed_on_b_after_five(&server, 10).await;
    let reading = tokio::spawn(read_to_end(resumed.into_body(), STEP));
    // Following, and nothing happens for five leases: the follower is
    // not to read on a timer (it once did, a third of the lease apart).
    tokio::time::sleep(LEASE).await;
    let before = llen_calls(&server).await;
    tokio::time::sleep(LEASE * 5).await;
    let quiet = llen_calls(&server).await - before;
    assert_eq!(quiet, 0, "reads while nothing was written");
    // The holder writes again: the follower hears it, and goes on to the
    // end.
    scene.upstream.release(10);
    let (got, _) = reading.await.unwrap();
    assert_eq!(got, events(cursor + 1..=10));
    let b = scene.b.layer.stats().snapshot();
    assert_eq!((b.follows, b.follows_lost), (1, 0));
}

/// A follower takes what the holder appends from the notice that tells
/// of it, reading nothing from Redis: the followers' reads once cost
/// Redis more than the appends they read.
#[tokio::test]
async fn a_follower_takes_the_holders_appends_from_their_notice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (scene, _, resumed) = Scene::followed_on_b_after_five(&server, 45).await;
    let mut body = resumed.into_body();
    scene.upstream.release(6);
    assert_eq!(read_events(&mut body, 1).await, events(6..=6));
    let before = command_calls(&server, "xrange").await;
    for n in 7..=45 {
        scene.upstream.release(n);
        assert_eq!(read_events(&mut body, 1).await, events(n..=n));
    }
    let reads = command_calls(&server, "xrange").await - before;
    assert!(reads <= 3, "{reads} reads of the history for 39 appends");
    let b = scene.b.layer.stats().snapshot();
    assert_eq!((b.follows, b.follows_lost), (1, 0));
}

/// A replica whose lease lapsed (Redis was slow to answer it) while
/// another went on from the upstream and took the stream lets it go once
/// it learns so: it reads the upstream no longer, writes nothing more
/// into the shared history, and leaves the other's lease alone. Two
/// replicas that both believed they held the stream wrote every event
/// into its history twice.
#[tokio::test]
async fn a_holder_whose_lease_another_replica_took_lets_the_stream_go() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let scene = Scene::start(&server, 100_000, Transport::Oneshot).await;
    scene.client_leaves_a(feed(None), 5).await;
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!("{}*", scene.prefix);
    let keys: Vec<String> = query(&mut redis, redis::cmd("KEYS").arg(&pattern)).await;
    let lease = keys
        .iter()
        .find(|key| key.contains("}:l:"))
        .expect("A's lease");
    let history = keys
        .iter()
        .find(|key| key.contains("}:h:"))
        .expect("the history");
    // What a replica that went on from the upstream writes, and renews.
    let () = redis::cmd("SET")
        .arg(lease)
        .arg("another replica")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();

    // Sooner than A's linger of 5 s would run out.
    let set = Instant::now();
    while scene.upstream.closed() == 0 {
        assert!(set.elapsed() < NOTICED_WITHIN, "A still reads the upstream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    flushed(&scene.a.store).await;
    let holder: String = query(&mut redis, redis::cmd("GET").arg(lease)).await;
    assert_eq!(
        holder, "another replica",
        "A let go of no lease but its own"
    );
    // The other renews its lease; A, having learned, no longer does.
    let () = query(&mut redis, redis::cmd("PEXPIRE").arg(lease).arg(60_000)).await;
    let written: usize = query(&mut redis, redis::cmd("XLEN").arg(history)).await;
    tokio::time::sleep(LEASE).await;
    flushed(&scene.a.store).await;
    let later: usize = query(&mut redis, redis::cmd("XLEN").arg(history)).await;
    assert_eq!(later, written, "A writes nothing more");
    let ttl: i64 = query(&mut redis, redis::cmd("PTTL").arg(lease)).await;
    assert!(
        ttl > 50_000,
        "A renews the other's lease no more: {ttl} ms left"
    );
}

async fn query<T: redis::FromRedisValue>(
    redis: &mut redis::aio::MultiplexedConnection,
    command: &redis::Cmd,
) -> T {
    command.query_async(redis).await.unwrap()
}
