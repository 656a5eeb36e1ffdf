//! [`RedisStore`] against a real `redis-server` on loopback, started by the
//! tests themselves: the store conformance suite (feature `test-util`),
//! replicas sharing one Redis through the layer, and Redis misbehaving.
//!
//! Without `redis-server` on `PATH` every test prints a message and passes,
//! unless `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "test-util")]
use super::server::replica;
use super::server::{RedisServer, command_calls, flushed, with_history};
use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse_resume::store::{Snapshot, StoredStream, StreamKey};
#[cfg(feature = "test-util")]
use tower_sse_resume::test_util::{Harness, Replica, Setup};
use tower_sse_resume::{
    FailurePolicy, IdBatch, RedisStore, SseResumeLayer, StoreError, TrackerStore,
};

/// Keys of each test start with a prefix of their own.
fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("test{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn connect(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&server.url())
        .await
        .expect("connect to redis-server")
        .prefix(prefix)
}

/// A store of `prefix` with the layer's default history.
async fn history_store(server: &RedisServer, prefix: &str) -> RedisStore {
    with_history(
        connect(server, prefix).await,
        tower_sse_resume::HistoryLimits::new(),
    )
}

/// Two replicas' stores over one fresh prefix, with the layer's default
/// history, and the prefix.
async fn history_replicas(server: &RedisServer) -> (String, RedisStore, RedisStore) {
    let prefix = fresh_prefix();
    let a = history_store(server, &prefix).await;
    let b = history_store(server, &prefix).await;
    (prefix, a, b)
}

/// Event `n` as a response records it: its id and fingerprint, and its
/// block `id: n` for the history.
fn event_batch(n: u32) -> IdBatch {
    let mut batch = IdBatch::new();
    batch.push_event(&n.to_string(), event_print(n));
    batch.push_block(Some(&n.to_string()), event_block(n).as_bytes());
    batch
}

/// The block of event `n`, `id: n`.
fn event_block(n: u32) -> String {
    format!("id: {n}\n\n")
}

/// The fingerprint of event `n`'s block.
fn event_print(n: u32) -> u64 {
    fingerprint_of(&event_block(n))
}

/// The blocks `stored` replays, back to back.
fn replayed(stored: &StoredStream) -> String {
    match &stored.replay {
        tower_sse_resume::Replay::Blocks(blocks) => blocks
            .iter()
            .map(|block| String::from_utf8(block.to_vec()).unwrap())
            .collect(),
        other => panic!("a replay: {other:?}"),
    }
}

/// A plain client, to look at and tamper with what the store wrote.
fn client(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// The blocks the history `key` holds, oldest first, as forwarded.
fn history_blocks(redis: &mut redis::Connection, key: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(redis)
        .unwrap();
    (entries.into_iter())
        .map(|(_, fields)| fields[0].1.split_once('\n').unwrap().1.to_owned())
        .collect()
}

/// What `store` keeps of the stream of `key`, `cursor` applied.
async fn stored(
    store: &RedisStore,
    key: &StreamKey,
    cursor: Option<&str>,
) -> Result<StoredStream, StoreError> {
    match store.open(key, cursor).await? {
        Snapshot::Stored(stream) => Ok(stream),
        other => panic!("Redis keeps its streams: {other:?}"),
    }
}

/// Runs `check` until it holds, for 10 s at most.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + STEP;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// The conformance suite (feature `test-util`)
// ---------------------------------------------------------------------------

#[cfg(feature = "test-util")]
struct Redis {
    server: RedisServer,
}

/// Two replicas, each over a connection of its own, sharing one prefix.
#[cfg(feature = "test-util")]
async fn replicas(
    server: &RedisServer,
    setup: Setup,
) -> (Replica<RedisStore>, Replica<RedisStore>) {
    let prefix = fresh_prefix();
    let a = replica(connect(server, &prefix).await, setup);
    (a, replica(connect(server, &prefix).await, setup))
}

#[cfg(feature = "test-util")]
impl Harness for Redis {
    type Store = RedisStore;

    async fn pair(&self, setup: Setup) -> (Replica<RedisStore>, Replica<RedisStore>) {
        replicas(&self.server, setup).await
    }

    async fn settle(&self, replica: &Replica<RedisStore>) {
        flushed(replica.store()).await;
    }
}

#[cfg(feature = "test-util")]
fn redis() -> Option<Redis> {
    RedisServer::start().map(|server| Redis { server })
}

#[cfg(feature = "test-util")]
tower_sse_resume::store_conformance_tests!(redis());

// ---------------------------------------------------------------------------
// Replicas through the layer
// ---------------------------------------------------------------------------

/// Two layers, as on two replicas of a gateway, over one Redis.
struct Replicas {
    server: RedisServer,
    prefix: String,
    a: RedisStore,
    b: RedisStore,
}

impl Replicas {
    async fn start() -> Option<Self> {
        let server = RedisServer::start()?;
        let prefix = fresh_prefix();
        let a = connect(&server, &prefix).await;
        let b = connect(&server, &prefix).await;
        Some(Self {
            server,
            prefix,
            a,
            b,
        })
    }

    fn layer_a(&self) -> SseResumeLayer<RedisStore> {
        SseResumeLayer::new().store(self.a.clone())
    }

    fn layer_b(&self) -> SseResumeLayer<RedisStore> {
        SseResumeLayer::new().store(self.b.clone())
    }
}

#[tokio::test]
async fn a_client_reconnecting_to_another_replica_with_a_cursor_gets_what_it_missed() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    for (i, transport) in TRANSPORTS.into_iter().enumerate() {
        let session = format!("s{i}");
        let upstream = Upstream::new([Reply::sse([events(1..=5)]), Reply::sse([events(1..=8)])]);
        let on_a = exchange(
            transport,
            &replicas.layer_a(),
            &upstream,
            vec![get("/mcp", &session).body(()).unwrap()],
        )
        .await;
        assert_eq!(on_a[0].text(), events(1..=5), "{transport:?}");
        flushed(&replicas.a).await;

        let layer_b = replicas.layer_b();
        let on_b = exchange(
            transport,
            &layer_b,
            &upstream,
            vec![
                get("/mcp", &session)
                    .header("last-event-id", "3")
                    .body(())
                    .unwrap(),
            ],
        )
        .await;
        assert_eq!(
            on_b[0].text(),
            events(4..=8),
            "{transport:?}: 1-3 dropped, 4-5 forgotten after the cursor"
        );
        let seen = upstream.seen();
        assert_eq!(
            seen[1].last_event_id(),
            Some("3"),
            "the client's own cursor"
        );
        let stats = layer_b.stats().snapshot();
        assert_eq!(stats.duplicates_dropped, 3, "{transport:?}");
        assert_eq!(stats.cursors_injected, 0);
        assert_eq!(stats.store_errors, 0);
    }
}

#[tokio::test]
async fn a_client_reconnecting_to_another_replica_without_a_cursor_is_resumed() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    for (i, transport) in TRANSPORTS.into_iter().enumerate() {
        let session = format!("s{i}");
        let upstream = Upstream::new([
            Reply::sse([events(1..=5)]),
            Reply::sse([events(4..=7)]),
            Reply::sse([events(6..=9)]),
        ]);
        let first = exchange(
            transport,
            &replicas.layer_a(),
            &upstream,
            vec![get("/mcp", &session).body(()).unwrap()],
        )
        .await;
        assert_eq!(first[0].text(), events(1..=5));
        flushed(&replicas.a).await;

        // B asks the upstream to resume after 5, and drops what it replays
        // from earlier than that.
        let second = exchange(
            transport,
            &replicas.layer_b(),
            &upstream,
            vec![get("/mcp", &session).body(()).unwrap()],
        )
        .await;
        assert_eq!(second[0].text(), events(6..=7), "{transport:?}");
        flushed(&replicas.b).await;

        // And back to A, which has to see what B forwarded.
        let third = exchange(
            transport,
            &replicas.layer_a(),
            &upstream,
            vec![get("/mcp", &session).body(()).unwrap()],
        )
        .await;
        assert_eq!(third[0].text(), events(8..=9), "{transport:?}");
        let seen = upstream.seen();
        assert_eq!(seen[0].last_event_id(), None);
        assert_eq!(
            seen[1].last_event_id(),
            Some("5"),
            "{transport:?}: injected on B"
        );
        assert_eq!(
            seen[2].last_event_id(),
            Some("7"),
            "{transport:?}: injected on A"
        );
    }
}

#[tokio::test]
async fn a_late_write_from_a_stale_stream_never_hides_events() {
    // A stream on A forwarded 1-5 but the client got only 1-3; it reconnects
    // to B with cursor 3 before A has written 4 and 5. A's late write must
    // not put them back, or the next replica would drop their replay.
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let key = StreamKey::new("s", "GET /mcp");
    let stale = stored(&replicas.a, &key, None).await.unwrap();
    let mut early = IdBatch::new();
    for id in ["1", "2", "3"] {
        early.push_event(id, fingerprint_of(&events([id.parse().unwrap()])));
    }
    replicas.a.record(&key, stale.generation, &early).unwrap();
    flushed(&replicas.a).await;

    let resumed = stored(&replicas.b, &key, Some("3")).await.unwrap();
    assert_eq!(resumed.cursor_known, Some(true));
    assert!(
        resumed.generation > stale.generation,
        "the cursor moved the generation"
    );

    let mut late = IdBatch::new();
    for id in ["4", "5"] {
        late.push_event(id, fingerprint_of(&events([id.parse().unwrap()])));
    }
    replicas.a.record(&key, stale.generation, &late).unwrap();
    flushed(&replicas.a).await;
    assert_eq!(replicas.a.stats().fenced, 2, "{:?}", replicas.a.stats());

    let upstream = Upstream::new([Reply::sse([events(1..=6)])]);
    let got = exchange(
        Transport::Oneshot,
        &replicas.layer_b(),
        &upstream,
        vec![
            get("/mcp", "s")
                .header("last-event-id", "3")
                .body(())
                .unwrap(),
        ],
    )
    .await;
    assert_eq!(got[0].text(), events(4..=6));
}

#[tokio::test]
async fn scopes_never_mix_through_the_layer() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let upstream = Upstream::new([
        Reply::sse([events(1..=3)]),
        Reply::sse([events(1..=3)]),
        Reply::sse([events(1..=3)]),
        Reply::sse([events(4..=4)]),
    ]);
    let layer_a = replicas.layer_a();
    let layer_b = replicas.layer_b();
    let first = exchange(
        Transport::Oneshot,
        &layer_a,
        &upstream,
        vec![get("/mcp", "a}b").body(()).unwrap()],
    )
    .await;
    assert_eq!(first[0].text(), events(1..=3));
    flushed(&replicas.a).await;
    let requests = vec![
        // Same stream, another scope: nothing to inject, nothing dropped.
        get("/mcp", "a%7Db").body(()).unwrap(),
        // A cursor of the first scope means nothing in a third one.
        get("/mcp", "other")
            .header("last-event-id", "2")
            .body(())
            .unwrap(),
    ];
    let others = exchange(Transport::Oneshot, &layer_b, &upstream, requests).await;
    assert_eq!(others[0].text(), events(1..=3));
    assert_eq!(others[1].text(), events(1..=3));
    assert_eq!(layer_b.stats().snapshot().unknown_cursors, 1);
    flushed(&replicas.b).await;
    // The first scope's stream is as it was.
    let again = exchange(
        Transport::Oneshot,
        &layer_b,
        &upstream,
        vec![get("/mcp", "a}b").body(()).unwrap()],
    )
    .await;
    assert_eq!(again[0].text(), events(4..=4));
    let seen = upstream.seen();
    assert_eq!(seen[1].last_event_id(), None);
    assert_eq!(seen[2].last_event_id(), Some("2"), "the client's own");
    assert_eq!(
        seen[3].last_event_id(),
        Some("3"),
        "injected from its own scope"
    );
}

#[tokio::test]
async fn keys_expire_after_their_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let ttl = Duration::from_millis(500);
    let store = connect(&server, &prefix).await.ttl(ttl);
    let upstream = Upstream::new([Reply::sse([events(1..=3)]), Reply::sse([events(1..=3)])]);
    let layer = SseResumeLayer::new().store(store.clone());
    let request = || get("/mcp", "s").body(()).unwrap();
    exchange(Transport::Oneshot, &layer, &upstream, vec![request()]).await;
    flushed(&store).await;

    let mut redis = client(&server);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut redis)
        .unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        let ttl_left: i64 = redis::cmd("PTTL").arg(key).query(&mut redis).unwrap();
        assert!(
            ttl_left > 0 && ttl_left <= 500,
            "{key} has a TTL: {ttl_left}"
        );
    }
    eventually("the keys to expire", || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut redis)
            .unwrap();
        std::future::ready(keys.is_empty())
    })
    .await;
    let got = exchange(Transport::Oneshot, &layer, &upstream, vec![request()]).await;
    assert_eq!(got[0].text(), events(1..=3), "nothing left to drop");
    assert_eq!(
        upstream.seen()[1].last_event_id(),
        None,
        "nothing to inject"
    );
}

// ---------------------------------------------------------------------------
// Redis misbehaving
// ---------------------------------------------------------------------------

/// The response of an upstream whose event stream the test writes chunk
/// by chunk.
fn live_response(chunks: mpsc::UnboundedReceiver<String>) -> Response<UpstreamBody> {
    let chunks = stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(Bytes::from(chunk))), chunks))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// What a client reads of a body, polled all along as a server would.
struct Reader {
    frames: mpsc::UnboundedReceiver<Bytes>,
    received: String,
}

impl Reader {
    fn read<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Debug,
    {
        let (sender, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("the body failed").into_data() {
                    let _ = sender.send(data);
                }
            }
        });
        Self {
            frames,
            received: String::new(),
        }
    }

    /// Reads until what was received holds `text`.
    async fn until(&mut self, text: &str) {
        while !self.received.contains(text) {
            assert!(self.next().await, "the body ended before {text:?}");
        }
    }

    /// Reads to the end of the body and returns everything received.
    async fn read_to_end(mut self) -> String {
        while self.next().await {}
        self.received
    }

    /// Reads one frame; false at the end of the body.
    async fn next(&mut self) -> bool {
        let frame = tokio::time::timeout(STEP, self.frames.recv())
            .await
            .unwrap_or_else(|_| panic!("the body stalled after {:?}", self.received));
        let Some(frame) = frame else { return false };
        self.received.push_str(std::str::from_utf8(&frame).unwrap());
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream_loses_no_event() {
    let Some(mut replicas) = Replicas::start().await else {
        return;
    };
    let (upstream, chunks) = mpsc::unbounded_channel();
    let chunks = std::sync::Arc::new(std::sync::Mutex::new(Some(chunks)));
    let service = replicas.layer_a().layer(service_fn(move |_: Request<()>| {
        let chunks = chunks.lock().unwrap().take().expect("one request");
        std::future::ready(Ok::<_, Infallible>(live_response(chunks)))
    }));
    let response = service
        .oneshot(get("/mcp", "s").body(()).unwrap())
        .await
        .unwrap();
    let mut reader = Reader::read(response.into_body());

    upstream.send(events(1..=3)).unwrap();
    reader.until("event 3").await;
    let a = replicas.a.clone();
    eventually("1-3 written", || std::future::ready(a.stats().written == 3)).await;

    replicas.server.kill();
    // The stream goes on, still deduplicated in process.
    upstream.send(events(2..=2)).unwrap();
    upstream.send(events(4..=6)).unwrap();
    reader.until("event 6").await;
    // Let the writer fail on the dead server at least once.
    eventually("a failed write", || {
        let stats = a.stats();
        std::future::ready(stats.retries + stats.dropped > 0)
    })
    .await;

    replicas.server.restart();
    upstream.send(events(7..=9)).unwrap();
    upstream.send(events(8..=8)).unwrap();
    drop(upstream);
    let received = reader.read_to_end().await;
    assert_eq!(received, events(1..=9), "every event once, in order");

    // The store recovers on its own: what comes after the restart is
    // written, and another replica resumes from it.
    let mut redis = client(&replicas.server);
    eventually("the window to be written again", || {
        let a = replicas.a.clone();
        let window: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{}{{s}}:w0:GET /mcp", replicas.prefix))
            .arg(0)
            .arg(-1)
            .query(&mut redis)
            .unwrap_or_default();
        async move {
            flushed(&a).await;
            // The window's last id: each is followed by its event's
            // fingerprint, after a NUL.
            let mut ids = window.iter().filter(|entry| !entry.starts_with('\0'));
            ids.next_back().map(String::as_str) == Some("9")
        }
    })
    .await;
    let layer_b = replicas.layer_b();
    let mut got = None;
    // B's connection broke with the restart too: it may fail open once
    // while it reconnects.
    for _ in 0..20 {
        let before = layer_b.stats().snapshot().store_errors;
        let upstream = Upstream::new([Reply::sse([events(7..=10)])]);
        let reply = exchange(
            Transport::Oneshot,
            &layer_b,
            &upstream,
            vec![get("/mcp", "s").body(()).unwrap()],
        )
        .await;
        if layer_b.stats().snapshot().store_errors == before {
            got = Some((reply, upstream));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (reply, upstream) = got.expect("replica B recovered");
    assert_eq!(reply[0].text(), events(10..=10));
    assert_eq!(upstream.seen()[0].last_event_id(), Some("9"));
}

#[tokio::test]
async fn a_slow_redis_at_request_start_fails_open_or_closed_within_the_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = connect(&server, &fresh_prefix())
        .await
        .timeout(Duration::from_millis(100));
    let mut redis = client(&server);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query(&mut redis)
        .unwrap();

    let upstream = Upstream::new([
        Reply::sse(["id: 1\ndata: a\n\nid: 1\ndata: a\n\n"]),
        Reply::sse([events(1..=1)]),
    ]);
    let open = SseResumeLayer::new().store(store.clone());
    let started = Instant::now();
    let got = exchange(
        Transport::Oneshot,
        &open,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(got[0].status, StatusCode::OK);
    assert_eq!(
        got[0].text(),
        "id: 1\ndata: a\n\n",
        "deduplicated within itself"
    );
    assert_eq!(open.stats().snapshot().store_errors, 1);

    let closed = SseResumeLayer::new()
        .store(store.clone())
        .failure_policy(FailurePolicy::FailClosed);
    let got = exchange(
        Transport::Oneshot,
        &closed,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(got[0].status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.seen().len(), 1, "the upstream was not called");

    let error = stored(&store, &StreamKey::new("s", "GET /mcp"), None)
        .await
        .expect_err("still paused");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
}

#[tokio::test]
async fn redis_down_fails_open_and_the_write_queue_stays_bounded() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = connect(&server, &fresh_prefix()).await.queue_len(8);
    server.kill();

    let upstream = Upstream::new([Reply::sse([events(1..=3)])]);
    let layer = SseResumeLayer::new().store(store.clone());
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(got[0].text(), events(1..=3));
    assert_eq!(layer.stats().snapshot().store_errors, 1);

    let key = StreamKey::new("s", "GET /mcp");
    let mut batch = IdBatch::new();
    for id in ["1", "2", "3"] {
        batch.push(id);
    }
    let mut backlogged = 0_u64;
    for _ in 0..10 {
        match store.record(&key, 0, &batch) {
            Ok(()) => {}
            Err(StoreError::Backlogged) => backlogged += 1,
            Err(error) => panic!("{error}"),
        }
        assert!(store.stats().queued <= 8, "{:?}", store.stats());
    }
    assert!(backlogged >= 6, "{backlogged}");
    assert_eq!(store.stats().rejected, 3 * backlogged);
    tokio::time::timeout(STEP, store.flush())
        .await
        .expect("writes are dropped within a bound");
    let stats = store.stats();
    assert_eq!(stats.written, 0);
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.queued, 0);
}

/// A store of `prefix` with the layer's default history and a TTL of
/// 800 ms, and that TTL.
async fn short_ttl_store(server: &RedisServer, prefix: &str) -> (RedisStore, Duration) {
    let ttl = Duration::from_millis(800);
    let store = with_history(
        connect(server, prefix).await.ttl(ttl),
        tower_sse_resume::HistoryLimits::new(),
    );
    (store, ttl)
}

/// Every key of `prefix`, with its TTL in ms.
fn key_ttls(redis: &mut redis::Connection, prefix: &str) -> Vec<(String, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(redis)
        .unwrap();
    let ttls = keys.into_iter().map(|key| {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(redis).unwrap();
        (key, ttl)
    });
    ttls.collect()
}

/// A write refreshes the TTLs of a stream's keys only once a quarter of
/// the TTL has run, but a key it makes gets one at once: every key of a
/// stream being written has a TTL, and never less than three quarters of
/// it right after a write.
#[tokio::test]
async fn every_key_a_write_makes_or_keeps_has_a_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let (store, ttl) = short_ttl_store(&server, &prefix).await;
    let key = StreamKey::new("s", "GET /mcp");
    let opened = stored(&store, &key, None).await.unwrap();
    let mut redis = client(&server);
    // Ids first, then blocks: the second write makes the history's keys
    // while the window's TTL is still fresh. Twelve writes an eighth of
    // the TTL apart: the keys outlive it only if refreshed.
    for n in 1..=12 {
        let with_blocks = n > 1;
        let mut batch = IdBatch::new();
        batch.push_event(&n.to_string(), n);
        if with_blocks {
            batch.push_block(Some(&n.to_string()), format!("id: {n}\n\n").as_bytes());
        }
        store.record(&key, opened.generation, &batch).unwrap();
        flushed(&store).await;
        let ttls = key_ttls(&mut redis, &prefix);
        assert!(ttls.iter().any(|(key, _)| key.contains("}:w0:")));
        assert!(ttls.iter().any(|(key, _)| key.contains("}:h:")) || !with_blocks);
        for (key, left) in &ttls {
            // Made now, or refreshed within the last quarter of the TTL.
            let least = i64::try_from(ttl.as_millis() / 2).unwrap();
            assert!(*left > least, "{key} after write {n}: {ttls:?}");
        }
        tokio::time::sleep(ttl / 8).await;
    }
}

/// An open refreshes the TTLs of a stream's keys only once a quarter of
/// the TTL has run since they were (its window's TTL says so), as a
/// write does: opens in between only mark the stream used, and a stream
/// only read stays alive.
#[tokio::test]
async fn opens_refresh_ttls_once_a_quarter_of_the_ttl_has_run() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let (store, ttl) = short_ttl_store(&server, &prefix).await;
    let key = StreamKey::new("s", "GET /mcp");
    let opened = stored(&store, &key, None).await.unwrap();
    for n in 1..=3 {
        store
            .record(&key, opened.generation, &event_batch(n))
            .unwrap();
    }
    flushed(&store).await;
    let mut redis = client(&server);
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(ttl / 3).await;
        }
        let before = command_calls(&server, "pexpire").await;
        for _ in 0..10 {
            stored(&store, &key, None).await.unwrap();
        }
        let refreshes = command_calls(&server, "pexpire").await - before;
        if round == 0 {
            assert_eq!(refreshes, 0, "ten opens right after the write");
        } else {
            assert!(refreshes > 0, "round {round}: a third of the TTL on");
        }
        let ttls = key_ttls(&mut redis, &prefix);
        assert!(ttls.len() >= 4, "{ttls:?}");
        for (key, left) in ttls {
            assert!(left > 800 / 2, "{key} in round {round}: {left} ms left");
        }
    }
}

/// No script checks a key's type: a write that meets keys of the wrong
/// type removes them (counted) and writes again, and the stream goes on.
#[tokio::test]
async fn a_write_over_keys_of_the_wrong_type_removes_them_and_writes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let store = history_store(&server, &prefix).await;
    let key = StreamKey::new("s", "GET /mcp");
    let opened = stored(&store, &key, None).await.unwrap();
    let mut redis = client(&server);
    for junk in [
        format!("{prefix}{{s}}:h:GET /mcp"),
        format!("{prefix}{{s}}:hi:GET /mcp"),
    ] {
        let _: () = redis::cmd("SET")
            .arg(junk)
            .arg("junk")
            .query(&mut redis)
            .unwrap();
    }
    let mut batch = IdBatch::new();
    batch.push_event("1", 1);
    batch.push_block(Some("1"), b"id: 1\ndata: a\n\n");
    store.record(&key, opened.generation, &batch).unwrap();
    flushed(&store).await;
    let stats = store.stats();
    assert_eq!(stats.written, 1, "{stats:?}");
    assert!(stats.bad_values >= 2, "{stats:?}");
    let resumed = stored(&store, &key, Some("1")).await.unwrap();
    assert_eq!(resumed.cursor_known, Some(true));
}

#[tokio::test]
async fn bad_values_in_redis_are_errors_not_panics() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let store = connect(&server, &prefix).await;
    let key = StreamKey::new("s", "GET /mcp");
    let window = format!("{prefix}{{s}}:w0:GET /mcp");
    let streams = format!("{prefix}{{s}}:s");
    let generations = format!("{prefix}{{s}}:g");
    let mut redis = client(&server);

    // Ids that are not UTF-8 are skipped, the rest kept. Each id is
    // followed by its event's fingerprint, after a NUL.
    let _: () = redis::cmd("RPUSH")
        .arg(&window)
        .arg("1")
        .arg("\x001")
        .arg(&b"\xff\xfe"[..])
        .arg("\x002")
        .arg("3")
        .arg("\x003")
        .query(&mut redis)
        .unwrap();
    let loaded = stored(&store, &key, None).await.unwrap();
    let ids: Vec<&str> = loaded.ids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "3"]);
    assert!(store.stats().bad_values >= 1);

    // A stream whose name is not UTF-8 is never found, and a cursor in it
    // fails the request's open, which the layer survives.
    let _: () = redis::cmd("ZADD")
        .arg(&streams)
        .arg("+inf")
        .arg(&b"\xff"[..])
        .query(&mut redis)
        .unwrap();
    let mut bad_window = format!("{prefix}{{s}}:w0:").into_bytes();
    bad_window.push(0xff);
    let _: () = redis::cmd("RPUSH")
        .arg(&bad_window)
        .arg("q")
        .query(&mut redis)
        .unwrap();
    let before = store.stats().bad_values;
    let error = stored(&store, &key, Some("q"))
        .await
        .expect_err("a corrupt stream name");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    assert!(store.stats().bad_values > before);

    // Keys of the wrong type are removed and the stream starts afresh.
    for (k, command) in [(&window, "SET"), (&streams, "SET"), (&generations, "SET")] {
        let _: () = redis::cmd(command)
            .arg(k)
            .arg("junk")
            .query(&mut redis)
            .unwrap();
    }
    let before = store.stats().bad_values;
    let opened = stored(&store, &key, Some("1")).await.unwrap();
    assert_eq!(opened.cursor_known, Some(false));
    assert!(
        store.stats().bad_values >= before + 2,
        "{:?}",
        store.stats()
    );
    drop(opened);

    // A generation that is not a number, and the layer on top of it all.
    let _: () = redis::cmd("HSET")
        .arg(&generations)
        .arg("GET /mcp")
        .arg("x")
        .query(&mut redis)
        .unwrap();
    let upstream = Upstream::new([Reply::sse([events(1..=2)]), Reply::sse([events(1..=3)])]);
    let layer = SseResumeLayer::new().store(store.clone());
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(got[0].text(), events(1..=2));
    flushed(&store).await;
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(got[0].text(), events(3..=3));
    assert_eq!(layer.stats().snapshot().store_errors, 0);
}

/// The window keeps fewer ids than the history keeps blocks: a cursor the
/// window let go, or that a cursor cut from it, still finds its block in
/// the history, and the client gets what followed it.
#[tokio::test]
async fn a_cursor_the_window_let_go_is_still_replayed_from_the_history() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = connect(&server, &fresh_prefix()).await;
    store.set_limits(
        tower_sse_resume::StoreLimits::default()
            .with_window_len(3)
            .with_history(Some(tower_sse_resume::HistoryLimits::new())),
    );
    let key = StreamKey::new("s", "GET /mcp");
    let opened = stored(&store, &key, None).await.unwrap();
    let block = |n: u32| format!("id: {n}\ndata: {n}\n\n");
    for n in 1..=40 {
        let mut batch = IdBatch::new();
        batch.push_event(&n.to_string(), u64::from(n));
        batch.push_block(Some(&n.to_string()), block(n).as_bytes());
        store.record(&key, opened.generation, &batch).unwrap();
        flushed(&store).await;
    }
    let resumed = stored(&store, &key, Some("2")).await.unwrap();
    assert_eq!(replayed(&resumed), (3..=40).map(block).collect::<String>());
    let ids: Vec<&str> = resumed.ids.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.len() <= 8 && ids.ends_with(&["39", "40"]), "{ids:?}");
}

/// Most writes are appends, which never trim the window in their
/// pipeline: an append that finds it past its length and slack has it
/// trimmed after, natively (an `LTRIM`) when the history is no longer
/// than the window, else by the next write, a whole one, which first
/// moves the pointers of the ids that leave into the history's index.
/// Forty writes of one event keep the window within a write of its
/// bound, and every event resumable; the native trim runs no script.
#[tokio::test]
async fn appends_keep_the_window_within_its_bound() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The window's length, the history's, whether appends trim the window
    // natively, and the oldest cursor the history resumes.
    for (window_len, history_len, native, cursor) in [(3, 1024, false, 37), (3, 3, true, 38)] {
        let prefix = fresh_prefix();
        let store = connect(&server, &prefix).await;
        store.set_limits(
            tower_sse_resume::StoreLimits::default()
                .with_window_len(window_len)
                .with_history(Some(
                    tower_sse_resume::HistoryLimits::new().max_events(history_len),
                )),
        );
        let key = StreamKey::new("s", "GET /mcp");
        let opened = stored(&store, &key, None).await.unwrap();
        let mut longest = 0;
        let mut redis = client(&server);
        let window = format!("{prefix}{{s}}:w0:GET /mcp");
        let mut scripts = 0;
        for n in 1..=40u32 {
            let before = command_calls(&server, "evalsha").await;
            store
                .record(&key, opened.generation, &event_batch(n))
                .unwrap();
            flushed(&store).await;
            if n > 1 {
                // The first write is a whole one: the writer learns
                // where the history goes on.
                scripts += command_calls(&server, "evalsha").await - before;
            }
            let len: usize = redis::cmd("LLEN").arg(&window).query(&mut redis).unwrap();
            longest = longest.max(len);
        }
        // Two entries an id; the slack of a window of 3 is 1 id.
        assert!(longest > 2 * 3, "the window was never past its length");
        assert!(
            longest <= 2 * (3 + 1) + 2,
            "{longest} entries in a window of 3"
        );
        assert_eq!(scripts == 0, native, "{scripts} write scripts");
        let resumed = stored(&store, &key, Some(&cursor.to_string()))
            .await
            .unwrap();
        assert_eq!(
            replayed(&resumed),
            (cursor + 1..=40).map(event_block).collect::<String>()
        );
    }
}

/// The history's bytes bound decides every replay exactly, however
/// lazily Redis is trimmed to it: a cursor whose block lies past the
/// bound (counted from the newest block's end) is not replayed, one
/// within it is, with everything after it. Sixty blocks of 30 bytes
/// (ids 101 to 160) written one at a time, the bound 600 bytes: the
/// newest 20 are kept.
/// Cursors are tried newest first, so that no cut of an unknown one
/// changes what the next finds.
#[tokio::test]
async fn the_bytes_bound_decides_every_replay() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = connect(&server, &fresh_prefix()).await;
    store.set_limits(
        tower_sse_resume::StoreLimits::default().with_history(Some(
            tower_sse_resume::HistoryLimits::new()
                .max_events(1000)
                .max_bytes(600),
        )),
    );
    let key = StreamKey::new("s", "GET /mcp");
    let opened = stored(&store, &key, None).await.unwrap();
    let block = |n: u32| format!("id: {n}\ndata: {n:>14}\n\n");
    assert_eq!(block(101).len(), 30);
    for n in 101..=160 {
        let mut batch = IdBatch::new();
        batch.push_event(&n.to_string(), u64::from(n));
        batch.push_block(Some(&n.to_string()), block(n).as_bytes());
        store.record(&key, opened.generation, &batch).unwrap();
        flushed(&store).await;
    }
    for cursor in (101..=160u32).rev() {
        let resumed = stored(&store, &key, Some(&cursor.to_string()))
            .await
            .unwrap();
        let replayed = match &resumed.replay {
            tower_sse_resume::Replay::Blocks(blocks) => Some(
                (blocks.iter())
                    .map(|block| String::from_utf8(block.to_vec()).unwrap())
                    .collect::<String>(),
            ),
            tower_sse_resume::Replay::Gap => None,
            other => panic!("cursor {cursor}: {other:?}"),
        };
        if cursor > 140 {
            let expected = (cursor + 1..=160).map(block).collect::<String>();
            assert_eq!(replayed, Some(expected), "cursor {cursor}");
        } else {
            assert_eq!(
                replayed, None,
                "cursor {cursor}: its block is past the bound"
            );
        }
    }
}

/// The end of a session forgets its streams in Redis; a write that was
/// still on its way from the replica reading one of them is refused, not
/// written back: the end moves each stream's generation on. Before, a
/// write of a stream whose generation was never moved (a tool call's,
/// 0) made its window and history again.
#[tokio::test]
async fn a_write_after_its_session_ended_does_not_bring_the_stream_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (prefix, a, b) = history_replicas(&server).await;
    let key = StreamKey::new("s", "POST /mcp #1");
    let opened = stored(&a, &key, None).await.unwrap();
    let record = |n: u32| a.record(&key, opened.generation, &event_batch(n)).unwrap();
    let mut redis = client(&server);
    let mut kept = move || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut redis)
            .unwrap();
        (keys.iter()).any(|key| key.contains("}:h:") || key.contains("}:w"))
    };
    for n in 1..=3 {
        record(n);
        flushed(&a).await;
    }
    assert!(kept());
    assert!(
        b.broadcast_stop(&tower_sse_resume::store::follow::Stop::Scope(
            "s".to_owned()
        ))
    );
    let deadline = Instant::now() + STEP;
    while kept() {
        assert!(Instant::now() < deadline, "the session's streams are kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    record(4);
    flushed(&a).await;
    assert!(!kept(), "written back after the session ended");
}

/// The appends of many streams go to Redis together; what one of them
/// meets stays its own. Of seven streams, one has a window that something
/// else made a string, and one a generation a cursor moved since its ids
/// were forwarded: the others get each block once, the fenced one none,
/// and the broken one its block once its key is removed.
#[tokio::test]
async fn appends_of_many_streams_each_stand_alone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let store = history_store(&server, &prefix).await;
    let keys: Vec<StreamKey> = (0..7)
        .map(|n| StreamKey::new(&format!("s{n}"), "GET /events"))
        .collect();
    let mut generations = Vec::new();
    for key in &keys {
        generations.push(stored(&store, key, None).await.unwrap().generation);
    }
    let record = |n: u32| {
        for (key, generation) in keys.iter().zip(&generations) {
            store.record(key, *generation, &event_batch(n)).unwrap();
        }
    };
    // Whole writes first: then the writer knows where each history goes on.
    record(1);
    flushed(&store).await;
    let mut redis = client(&server);
    let key_of = |n: usize, kind: &str| format!("{prefix}{{s{n}}}:{kind}GET /events");
    let () = redis::cmd("SET")
        .arg(key_of(2, "w0:"))
        .arg("not a list")
        .query(&mut redis)
        .unwrap();
    // A client resumes stream 4 from a cursor it never had: the cut moves
    // the stream on to a generation of its own.
    stored(&store, &keys[4], Some("unknown")).await.unwrap();
    record(2);
    flushed(&store).await;
    let blocks = |redis: &mut redis::Connection, n: usize| history_blocks(redis, &key_of(n, "h:"));
    for n in [0, 1, 3, 5, 6] {
        assert_eq!(
            blocks(&mut redis, n),
            ["id: 1\n\n", "id: 2\n\n"],
            "stream {n}"
        );
    }
    assert_eq!(blocks(&mut redis, 4), ["id: 1\n\n"], "the fenced stream");
    let window: Vec<String> = redis::cmd("LRANGE")
        .arg(key_of(2, "w0:"))
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .unwrap();
    assert!(window.contains(&"2".to_owned()), "{window:?}");
}

/// A write on its way when a cursor moves the stream to a new generation
/// lands nowhere, though the writer appends natively, with nothing to
/// check first: the window moved to the new generation's key, and the
/// history's last id past where the old writer's blocks would go. The new
/// generation's blocks then follow on, and a replay across the cut has no
/// hole.
#[tokio::test]
async fn a_write_on_its_way_through_a_cut_lands_nowhere() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (prefix, a, b) = history_replicas(&server).await;
    let key = StreamKey::new("s", "GET /events");
    let old = stored(&a, &key, None).await.unwrap().generation;
    for n in 1..=3 {
        a.record(&key, old, &event_batch(n)).unwrap();
        flushed(&a).await;
    }
    // A client resumes on B from 2: B reads the stream from there now.
    let new = stored(&b, &key, Some("2")).await.unwrap().generation;
    assert!(new > old, "the cursor moved the generation");
    // A's writes of the old generation, one block and then two.
    a.record(&key, old, &event_batch(4)).unwrap();
    flushed(&a).await;
    let mut two = IdBatch::new();
    for n in [5u32, 6] {
        two.push_event(&n.to_string(), u64::from(n));
        two.push_block(Some(&n.to_string()), format!("id: {n}\n\n").as_bytes());
    }
    a.record(&key, old, &two).unwrap();
    flushed(&a).await;
    assert_eq!(a.stats().fenced, 3, "{:?}", a.stats());
    let mut redis = client(&server);
    let blocks = |redis: &mut redis::Connection| {
        history_blocks(redis, &format!("{prefix}{{s}}:h:GET /events"))
    };
    assert_eq!(blocks(&mut redis), ["id: 1\n\n", "id: 2\n\n", "id: 3\n\n"]);
    let old_window: i64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}{{s}}:w{old}:GET /events"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(old_window, 0, "the old generation's window moved on");

    // B's upstream sends 3 again, then 4 and 5 of its own.
    for n in 3..=5 {
        b.record(&key, new, &event_batch(n)).unwrap();
        flushed(&b).await;
    }
    let resumed = stored(&b, &key, Some("1")).await.unwrap();
    let tower_sse_resume::Replay::Blocks(replayed) = &resumed.replay else {
        panic!("a replay: {:?}", resumed.replay);
    };
    let replayed: Vec<_> = (replayed.iter())
        .map(|block| String::from_utf8(block.to_vec()).unwrap())
        .collect();
    assert_eq!(
        replayed,
        [
            "id: 2\n\n",
            "id: 3\n\n",
            "id: 3\n\n",
            "id: 4\n\n",
            "id: 5\n\n"
        ]
    );
}

/// An open never finds the window ahead of the history: an id the window
/// holds past the history's end would be taken for sent to a client that
/// resumes, and its block, read after, dropped as a duplicate. Redis
/// reads a large pipeline in pieces, and runs what it read: here a relay
/// holds the append's `XADD` back until another replica has opened the
/// stream. With the window's `RPUSHX` before the `XADD`, as the appends
/// first went, the open found id 2 in the window and not its block in the
/// history, and the soak at 1,000 streams lost an event here and there to
/// this.
#[tokio::test]
async fn an_open_never_finds_the_window_ahead_of_the_history() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let relay = super::server::HoldingRelay::to(&server).await;
    let prefix = fresh_prefix();
    let a = with_history(
        RedisStore::connect(&relay.url())
            .await
            .unwrap()
            .prefix(&prefix),
        tower_sse_resume::HistoryLimits::new(),
    );
    let b = history_store(&server, &prefix).await;
    let key = StreamKey::new("s", "GET /events");
    let _hold = a.hold(&key).expect("a store with a history holds");
    let generation = stored(&a, &key, None).await.unwrap().generation;
    a.record(&key, generation, &event_batch(1)).unwrap();
    flushed(&a).await;
    // The next write is an append, held from its `XADD` on.
    relay
        .hold_at("XADD", async {
            a.record(&key, generation, &event_batch(2)).unwrap();
        })
        .await;
    let resumed = stored(&b, &key, Some("1")).await.unwrap();
    let replayed = |stored: &StoredStream| -> Vec<String> {
        let tower_sse_resume::Replay::Blocks(blocks) = &stored.replay else {
            panic!("a replay: {:?}", stored.replay);
        };
        (blocks.iter())
            .map(|block| String::from_utf8(block.to_vec()).unwrap())
            .collect()
    };
    let window = |stored: &StoredStream| -> Vec<String> {
        stored.ids.iter().map(|(id, _)| id.clone()).collect()
    };
    assert!(
        !window(&resumed).contains(&"2".to_owned())
            || replayed(&resumed).contains(&"id: 2\n\n".to_owned()),
        "the window holds 2, the history not: {:?} against {:?}",
        window(&resumed),
        replayed(&resumed)
    );
    relay.release();
    flushed(&a).await;
    let resumed = stored(&b, &key, Some("1")).await.unwrap();
    assert_eq!(replayed(&resumed), ["id: 2\n\n"]);
    assert!(window(&resumed).contains(&"2".to_owned()));
}

/// An open reads the window natively whatever generation it is in: one
/// replica's cursors move it on twice, and the other, which saw neither
/// generation, finds every id in it (it once had the script build it
/// into the reply in Lua, ten times the cost). The copy it reads leaves
/// no key behind.
#[tokio::test]
async fn an_open_reads_the_window_of_a_generation_it_never_saw() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (prefix, a, b) = history_replicas(&server).await;
    let key = StreamKey::new("s", "GET /mcp");
    let opened = stored(&a, &key, None).await.unwrap();
    for n in 1..=10 {
        a.record(&key, opened.generation, &event_batch(n)).unwrap();
    }
    flushed(&a).await;
    let window: Vec<(String, u64)> = (1..=10).map(|n| (n.to_string(), event_print(n))).collect();
    for cursor in ["8", "9"] {
        let resumed = stored(&a, &key, Some(cursor)).await.unwrap();
        assert_eq!(resumed.ids, window, "on A, from {cursor}");
    }
    let resumed = stored(&b, &key, Some("10")).await.unwrap();
    assert_eq!(resumed.generation, 3, "two cuts on A, one on B");
    assert_eq!(resumed.ids, window, "on B");
    let resumed = stored(&b, &key, None).await.unwrap();
    assert_eq!(resumed.ids, window, "on B, without a cursor");
    let mut redis = client(&server);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut redis)
        .unwrap();
    assert!(keys.iter().all(|key| !key.contains("}:wo:")), "{keys:?}");
}

/// The lease can be set again on a running store (`lease` is shared with
/// every clone): a hold's lease stays in Redis throughout. Before, the
/// refresh after the change set the old lease, then waited a third of the
/// new one, and a lease made longer lapsed meanwhile: another replica
/// took the stream for let go.
#[tokio::test]
async fn a_lease_set_longer_on_a_running_store_never_lapses() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let store = history_store(&server, &prefix)
        .await
        .lease(Duration::from_millis(150));
    let key = StreamKey::new("s", "GET /events");
    let _hold = store.hold(&key).expect("a store with a history holds");
    flushed(&store).await;
    let lease_key = format!("{prefix}{{s}}:l:GET /events");
    let mut redis = client(&server);
    let ttl = |redis: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg(&lease_key).query(redis).unwrap()
    };
    assert!(ttl(&mut redis) > 0, "the hold's lease is in Redis");
    let _ = store.clone().lease(Duration::from_secs(3));
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        let left = ttl(&mut redis);
        assert!(
            left > 0,
            "the lease lapsed {:?} after the change",
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
