//! Credentials across replicas: a stream one replica holds or recorded in
//! Redis belongs to the credentials of the request that opened it, on
//! every replica. Mallory knows Alice's session id but not her token: no
//! replica follows Alice's stream for him or replays her history to him;
//! his request goes to the upstream, which refuses it. And nothing of the
//! credentials themselves reaches Redis.
//!
//! Against a real `redis-server` on loopback (and the tests' Cluster);
//! each replica is its own `RedisStore` and layer. Without `redis-server`
//! on `PATH` every test prints a message and passes, unless
//! `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};

use super::server::{RedisCluster, RedisServer, Relay, flushed};
use crate::credentials::{ALICE, Authorizing, Client, MALLORY, as_user, assert_refused};
use crate::linger::{LiveUpstream, last_id, read_events};
use crate::support::*;
use tower_sse_resume::{HistoryLimits, RedisStore, SseResumeLayer, StatsSnapshot};

/// The key every replica of these gateways is given: replicas sharing a
/// store must share it to follow and resume each other's bound streams.
pub(crate) const SHARED_KEY: &[u8] = b"the replicas' shared secret, 32+";

/// Alice's token without its scheme: what must never reach Redis.
const ALICE_SECRET: &str = "alice-token-7f3a";

/// How long a replica's hold on a stream lasts unrenewed.
const LEASE: Duration = Duration::from_millis(600);

/// Where the replicas of a test keep their streams.
#[derive(Clone, Copy)]
pub(crate) enum Redis<'a> {
    Server(&'a RedisServer),
    Cluster(&'a RedisCluster),
    /// A server, through a relay the test may cut.
    Relayed(&'a Relay),
}

impl Redis<'_> {
    async fn store(self, prefix: &str) -> RedisStore {
        let store = match self {
            Redis::Server(server) => RedisStore::connect(&server.url()).await,
            Redis::Cluster(cluster) => RedisStore::connect_cluster(cluster.urls()).await,
            Redis::Relayed(relay) => RedisStore::connect(&relay.url()).await,
        };
        (store.expect("connect to Redis"))
            .prefix(prefix)
            .lease(LEASE)
    }
}

/// One replica: its store and its layer, with a history and a linger far
/// longer than any test.
pub(crate) struct Replica {
    pub(crate) store: RedisStore,
    pub(crate) layer: SseResumeLayer<RedisStore>,
}

/// Two replicas over one fresh prefix, each given `key` when there is one
/// (else each makes its own at random).
pub(crate) async fn replicas(redis: Redis<'_>, key: Option<&[u8]>) -> (Replica, Replica) {
    replicas_over((redis, redis), key).await
}

/// Two replicas as [`replicas`], each reaching Redis its own way.
pub(crate) async fn replicas_over(
    (redis_a, redis_b): (Redis<'_>, Redis<'_>),
    key: Option<&[u8]>,
) -> (Replica, Replica) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!("credentials{}:", NEXT.fetch_add(1, Ordering::Relaxed));
    let replica = |store: RedisStore| {
        let mut layer = SseResumeLayer::new()
            .store(store.clone())
            .history(HistoryLimits::new())
            .linger(Duration::from_secs(30));
        if let Some(key) = key {
            layer = layer.credential_key(key);
        }
        Replica { store, layer }
    };
    (
        replica(redis_a.store(&prefix).await),
        replica(redis_b.store(&prefix).await),
    )
}

/// Opens `request` and requires the upstream's refusal, untouched. The
/// status is checked before the body is read: a follow would never end.
async fn refused(client: &Client, request: Request<()>, what: &str) {
    let response = client.open(request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_refused(&read(response).await, what);
}

/// Reads `body` to its end within a bound.
async fn to_end(body: AnyBody) -> String {
    let collected = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("the body did not end in time")
        .expect("no error");
    String::from_utf8(collected.to_bytes().to_vec()).unwrap()
}

type AnyBody = crate::credentials::AnyBody;

/// Alice's live GET, opened on replica A (which holds it) and read to
/// event 5; then she goes away, and A lingers on it.
struct HeldOnA {
    a: Replica,
    b: Replica,
    upstream: LiveUpstream,
    asked: Authorizing<LiveUpstream>,
    on_b: Client,
    cursor: u32,
}

/// The last event of the upstream in these tests.
const LAST: u32 = 40;

impl HeldOnA {
    async fn start(redis: Redis<'_>, key: Option<&[u8]>, transport: Transport) -> Self {
        let (a, b) = replicas(redis, key).await;
        let upstream = LiveUpstream::released(LAST);
        let asked = Authorizing::new(upstream.clone());
        let on_a = Client::over(transport, &a.layer, asked.clone()).await;
        let on_b = Client::over(transport, &b.layer, asked.clone()).await;
        let first = on_a.open(as_user(Request::get("/mcp"), ALICE, None)).await;
        assert_eq!(first.status(), StatusCode::OK);
        upstream.release(5);
        let cursor = last_id(&read_events(first.into_body(), 5).await);
        assert_eq!(cursor, 5);
        flushed(&a.store).await;
        Self {
            a,
            b,
            upstream,
            asked,
            on_b,
            cursor,
        }
    }

    fn b_stats(&self) -> StatsSnapshot {
        self.b.layer.stats().snapshot()
    }

    /// Alice resumes on B; returns what she got to the upstream's end.
    async fn alice_resumes_on_b(&self) -> String {
        let resumed = (self.on_b)
            .open(as_user(Request::get("/mcp"), ALICE, Some(self.cursor)))
            .await;
        assert_eq!(resumed.status(), StatusCode::OK);
        self.upstream.release(LAST);
        to_end(resumed.into_body()).await
    }
}

/// Mallory, on B, asks for the stream Alice's is held on A: with no
/// cursor and with hers. Neither follows it.
async fn mallory_cannot_follow_alice(redis: Redis<'_>, transport: Transport) {
    let what = |cursor: Option<u32>| format!("Mallory with {cursor:?} over {transport:?}");
    let held = HeldOnA::start(redis, Some(SHARED_KEY), transport).await;
    for cursor in [None, Some(held.cursor)] {
        let request = as_user(Request::get("/mcp"), MALLORY, cursor);
        refused(&held.on_b, request, &what(cursor)).await;
    }
    let stats = held.b_stats();
    assert_eq!((stats.follows, stats.events_replayed), (0, 0));
    assert_eq!(held.b.store.followers(), 0);

    // The control: Alice herself follows her stream on B, with no
    // upstream request, from where she was.
    let got = held.alice_resumes_on_b().await;
    assert_eq!(got, events(held.cursor + 1..=LAST), "over {transport:?}");
    assert_eq!(held.b_stats().follows, 1);
    assert_eq!(held.upstream.requests(), 1, "Alice's one request, on A");
    let asked = held.asked.asked();
    let tokens: Vec<&str> = asked.iter().map(|(token, _)| token.as_str()).collect();
    assert_eq!(tokens, [ALICE, MALLORY, MALLORY], "over {transport:?}");
    assert_eq!(held.a.layer.stats().snapshot().follows, 0);
}

#[tokio::test]
async fn a_follow_on_another_replica_by_another_token_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    for transport in TRANSPORTS {
        mallory_cannot_follow_alice(Redis::Server(&server), transport).await;
    }
}

#[tokio::test]
async fn a_follow_across_a_cluster_by_another_token_is_refused() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    mallory_cannot_follow_alice(Redis::Cluster(&cluster), Transport::Oneshot).await;
}

#[tokio::test]
async fn without_a_shared_credential_key_a_replica_follows_nobodys_bound_stream() {
    // The documented cost of each replica's own random key: Alice's own
    // fingerprint differs on B, so B goes to the upstream for her rather
    // than following A.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let held = HeldOnA::start(Redis::Server(&server), None, Transport::Oneshot).await;
    let got = held.alice_resumes_on_b().await;
    assert!(got.ends_with(&events([LAST])), "{got}");
    assert_eq!(held.b_stats().follows, 0);
    assert_eq!(held.upstream.requests(), 2, "B asked the upstream itself");
}

/// Two replicas with the shared key, each reached through `transport`,
/// in front of `upstream`; Alice's `request` was answered on A with
/// `answer`, which is in Redis. Returns replica B and its client.
async fn recorded_on_a(
    server: &RedisServer,
    upstream: &Authorizing<Upstream>,
    transport: Transport,
    request: http::request::Builder,
    answer: String,
) -> (Replica, Client) {
    let (a, b) = replicas(Redis::Server(server), Some(SHARED_KEY)).await;
    let on_a = Client::over(transport, &a.layer, upstream.clone()).await;
    let on_b = Client::over(transport, &b.layer, upstream.clone()).await;
    let first = on_a.send(as_user(request, ALICE, None)).await;
    assert_eq!(first.text(), answer, "over {transport:?}");
    flushed(&a.store).await;
    (b, on_b)
}

#[tokio::test]
async fn a_replay_from_redis_to_another_token_on_another_replica_is_the_upstreams_401() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    for transport in TRANSPORTS {
        let upstream = Authorizing::new(Upstream::new([
            Reply::sse([events(1..=8)]),
            Reply::sse([events(9..=10)]),
        ]));
        let feed = Request::get("/feed");
        let (b, on_b) = recorded_on_a(&server, &upstream, transport, feed, events(1..=8)).await;

        let stranger = (on_b.send(as_user(Request::get("/feed"), MALLORY, Some(2)))).await;
        assert_refused(&stranger, &format!("over {transport:?}"));
        let stats = b.layer.stats().snapshot();
        assert_eq!((stats.events_replayed, stats.gaps), (0, 0));

        // The control: Alice's own resume on B is replayed from Redis.
        let resumed = (on_b.send(as_user(Request::get("/feed"), ALICE, Some(5)))).await;
        assert_eq!(resumed.text(), events(6..=10), "over {transport:?}");
        assert_eq!(b.layer.stats().snapshot().events_replayed, 3);
    }
}

#[tokio::test]
async fn a_complete_tool_call_recorded_on_one_replica_is_not_replayed_to_another_token() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    for transport in TRANSPORTS {
        let upstream = Authorizing::new(Upstream::new([Reply::sse([events(1..=5)])]));
        let call = Request::post("/mcp");
        let (b, on_b) = recorded_on_a(&server, &upstream, transport, call, events(1..=5)).await;

        let stranger = (on_b.send(as_user(Request::get("/mcp"), MALLORY, Some(1)))).await;
        assert_refused(&stranger, &format!("over {transport:?}"));
        let stats = b.layer.stats().snapshot();
        let answered = stats.completes_replayed + stats.events_replayed + stats.follows;
        assert_eq!(answered, 0, "over {transport:?}: {stats:?}");

        // The control: Alice's own resume on B gets the rest of her call
        // from Redis, and the call is never sent again.
        let resumed = (on_b.send(as_user(Request::get("/mcp"), ALICE, Some(1)))).await;
        assert_eq!(resumed.text(), events(2..=5), "over {transport:?}");
        let stats = b.layer.stats().snapshot();
        let answered = stats.completes_replayed + stats.events_replayed + stats.follows;
        assert!(answered > 0, "over {transport:?}: {stats:?}");
        assert_eq!(upstream.asked().len(), 2, "Alice's call and Mallory's GET");
    }
}

/// What Redis holds, every key's name and every value in it as text.
async fn everything_in(server: &RedisServer) -> (Vec<String>, Vec<String>) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let mut names = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await
            .unwrap();
        names.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut values = Vec::new();
    for name in &names {
        let kind: String = (redis::cmd("TYPE").arg(name))
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut read = match kind.as_str() {
            "string" => redis::cmd("GET"),
            "list" => redis::cmd("LRANGE"),
            "hash" => redis::cmd("HGETALL"),
            "zset" => redis::cmd("ZRANGE"),
            "set" => redis::cmd("SMEMBERS"),
            "stream" => redis::cmd("XRANGE"),
            // Gone since the scan: it expired.
            "none" => continue,
            other => panic!("a key of type {other}: read it too"),
        };
        read.arg(name);
        match kind.as_str() {
            "list" => read.arg(0).arg(-1),
            "zset" => read.arg(0).arg(-1).arg("WITHSCORES"),
            "stream" => read.arg("-").arg("+"),
            _ => &mut read,
        };
        let value: redis::Value = read.query_async(&mut redis).await.unwrap();
        values.push(text_of(&value));
    }
    (names, values)
}

/// Every string in `value`, whatever its shape, as text.
fn text_of(value: &redis::Value) -> String {
    use redis::Value;
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        Value::Array(items) | Value::Set(items) => items.iter().map(text_of).collect(),
        Value::Map(pairs) => (pairs.iter())
            .map(|(key, value)| text_of(key) + &text_of(value))
            .collect(),
        other => format!("{other:?}"),
    }
}

/// Alice's requests, her token in the header or, as a browser's
/// `EventSource` must, in the URL: a session of each.
#[derive(Clone, Copy, Debug)]
enum Token {
    Header,
    Query,
}

impl Token {
    fn request(self, method: &str, cursor: Option<u32>) -> Request<()> {
        let (path, authorization, session) = match self {
            Token::Header => ("/mcp?v=1".to_owned(), Some(ALICE), "s-alice-h"),
            Token::Query => {
                let path = format!("/mcp?v=1&access_token={ALICE_SECRET}");
                (path, None, "s-alice-q")
            }
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("mcp-session-id", session);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(cursor) = cursor {
            request = request.header("last-event-id", cursor.to_string());
        }
        request.body(()).unwrap()
    }
}

#[tokio::test]
async fn no_credential_reaches_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = replicas(Redis::Server(&server), Some(SHARED_KEY)).await;
    for token in [Token::Header, Token::Query] {
        // A live GET held on A and followed on B, ...
        let upstream = LiveUpstream::released(20);
        let (on_a, on_b) = (
            a.layer.layer(upstream.clone()),
            b.layer.layer(upstream.clone()),
        );
        let first = on_a.oneshot(token.request("GET", None)).await.unwrap();
        upstream.release(5);
        let cursor = last_id(&read_events(first.into_body(), 5).await);
        flushed(&a.store).await;
        let followed = on_b
            .oneshot(token.request("GET", Some(cursor)))
            .await
            .unwrap();
        upstream.release(20);
        let (got, _) = crate::linger::read_until(followed.into_body(), 20).await;
        assert_eq!(got, events(cursor + 1..=20), "{token:?}: followed");
        // ... and a tool call recorded on A and resumed on B (its ids
        // none of the GET's).
        let call = Upstream::new([Reply::sse([events(101..=105)])]);
        let recorded = exchange(
            Transport::Oneshot,
            &a.layer,
            &call,
            vec![token.request("POST", None)],
        )
        .await;
        assert_eq!(recorded[0].text(), events(101..=105));
        flushed(&a.store).await;
        let resumed = exchange(
            Transport::Oneshot,
            &b.layer,
            &call,
            vec![token.request("GET", Some(102))],
        )
        .await;
        assert_eq!(resumed[0].text(), events(103..=105), "{token:?}");
        // ... and a stop of the call, which the stops' log keeps.
        let stop = token.request("POST", Some(103)).into_parts().0;
        assert!(b.layer.stop(&stop), "{token:?}: the replicas told");
    }
    flushed(&a.store).await;
    flushed(&b.store).await;
    // Both stops are in the stops' log before the scan.
    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // The test's own server: one prefix, one log.
        let logs: Vec<String> = (redis::cmd("KEYS").arg("*stops:log"))
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut logged = 0u64;
        for log in logs {
            logged += redis::cmd("XLEN")
                .arg(log)
                .query_async::<u64>(&mut redis)
                .await
                .unwrap();
        }
        if logged == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{logged} stops logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (names, values) = everything_in(&server).await;
    // The control: the scan reads the streams' keys and what they hold.
    assert!(
        names.iter().any(|name| name.contains("s-alice")),
        "{names:?}"
    );
    assert!(values.iter().any(|value| value.contains("data: event 3")));
    for secret in [ALICE_SECRET, "alice-token"] {
        for name in &names {
            assert!(!name.contains(secret), "a key holds {secret}: {name}");
        }
        for value in &values {
            assert!(!value.contains(secret), "a value holds {secret}: {value}");
        }
    }
}
