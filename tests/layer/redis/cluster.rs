//! [`RedisStore`] over a Redis Cluster of three nodes on loopback, started
//! by the tests and shared by those that run at once (each has a key prefix
//! of its own): the store conformance suite (feature `test-util`), and
//! replicas through the layer. Skipped like the rest of `redis` when
//! `redis-server` is missing.

use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(feature = "test-util")]
use super::server::replica;
use super::server::{RedisCluster, flushed, with_history};
use crate::support::*;
#[cfg(feature = "test-util")]
use tower_sse_resume::test_util::{Harness, Replica, Setup};
use tower_sse_resume::{RedisStore, SseResumeLayer};

fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("cluster{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn connect(cluster: &RedisCluster, prefix: &str) -> RedisStore {
    RedisStore::connect_cluster(cluster.urls())
        .await
        .expect("connect to the cluster")
        .prefix(prefix)
}

#[cfg(feature = "test-util")]
struct Cluster {
    cluster: std::sync::Arc<RedisCluster>,
}

#[cfg(feature = "test-util")]
impl Harness for Cluster {
    type Store = RedisStore;

    async fn pair(&self, setup: Setup) -> (Replica<RedisStore>, Replica<RedisStore>) {
        let prefix = fresh_prefix();
        let a = replica(connect(&self.cluster, &prefix).await, setup);
        (a, replica(connect(&self.cluster, &prefix).await, setup))
    }

    async fn settle(&self, replica: &Replica<RedisStore>) {
        flushed(replica.store()).await;
    }
}

#[cfg(feature = "test-util")]
fn cluster() -> Option<Cluster> {
    RedisCluster::shared().map(|cluster| Cluster { cluster })
}

#[cfg(feature = "test-util")]
tower_sse_resume::store_conformance_tests!(cluster());

#[tokio::test]
async fn replicas_share_streams_of_many_scopes_across_the_slots() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let store_a = connect(&cluster, &prefix).await;
    let a = SseResumeLayer::new().store(store_a.clone());
    let store_b = connect(&cluster, &prefix).await;
    let b = SseResumeLayer::new().store(store_b.clone());
    // Enough scopes to land on every node.
    let sessions: Vec<String> = (0..24).map(|i| format!("session-{i}")).collect();
    let upstream = Upstream::new(
        std::iter::repeat_n(Reply::sse([events(1..=5)]), sessions.len()).chain(
            std::iter::repeat_n(Reply::sse([events(1..=8)]), sessions.len()),
        ),
    );
    let first: Vec<_> = sessions
        .iter()
        .map(|s| get("/mcp", s).body(()).unwrap())
        .collect();
    for got in exchange(Transport::Oneshot, &a, &upstream, first).await {
        assert_eq!(got.text(), events(1..=5));
    }
    flushed(&store_a).await;
    assert_eq!(store_a.stats().written, 5 * sessions.len() as u64);
    let again: Vec<_> = sessions
        .iter()
        .map(|s| {
            get("/mcp", s)
                .header("last-event-id", "3")
                .body(())
                .unwrap()
        })
        .collect();
    for got in exchange(Transport::Oneshot, &b, &upstream, again).await {
        assert_eq!(got.text(), events(4..=8));
    }
    let stats = b.stats().snapshot();
    assert_eq!(stats.store_errors, 0);
    assert_eq!(stats.duplicates_dropped, 3 * sessions.len() as u64);
    flushed(&store_b).await;
    assert_eq!(store_b.stats().dropped, 0);
}

/// Kills the primary of a stream's slot mid-stream, on a Cluster of three
/// primaries with a replica each: the replica takes over, the store
/// recovers without a restart, the client's stream goes on untouched
/// (the store is off its path), and a request opened meanwhile fails
/// open. What the history lost is counted, and a replay across it is told
/// the gap rather than skipping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_when_the_primary_of_a_streams_slot_fails_over() {
    use crate::linger::LiveUpstream;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::{Layer, ServiceExt};
    use tower_sse_resume::{GAP_EVENT, HistoryLimits};

    let Some(mut cluster) = RedisCluster::start_with_replicas() else {
        return;
    };
    let prefix = fresh_prefix();
    let history = HistoryLimits::new().max_events(1000);
    let store_a = connect(&cluster, &prefix).await;
    let store_b = connect(&cluster, &prefix).await;
    let (a, b) = (
        SseResumeLayer::new()
            .store(store_a.clone())
            .history(history),
        SseResumeLayer::new()
            .store(store_b.clone())
            .history(history),
    );
    // 300 events, one every 10 ms.
    let upstream = LiveUpstream::new(300);
    let response = a
        .layer(upstream.clone())
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    let reading = tokio::spawn(async move {
        let body = tokio::time::timeout(STEP, response.into_body().collect());
        String::from_utf8(body.await.unwrap().unwrap().to_bytes().to_vec()).unwrap()
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let primary = cluster.primary_of("s1");
    cluster.kill(primary);
    // A request while the slot has no primary: it fails open, at once,
    // that is within the store's timeout, not after the failover (which
    // cannot even begin before the nodes' timeout, 1 s). The margin is for
    // a loaded machine.
    let quiet = Upstream::new((0..3).map(|_| Reply::sse([""])));
    let errors_before = b.stats().snapshot().store_errors;
    let started = tokio::time::Instant::now();
    let during = exchange(
        Transport::Oneshot,
        &b,
        &quiet,
        vec![get("/other", "s1").body(()).unwrap()],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(during[0].status, 200);
    assert_eq!(quiet.seen().len(), 1, "sent upstream, the store aside");
    let store_errors = b.stats().snapshot().store_errors - errors_before;
    assert!(store_errors >= 1, "the store's failure was not counted");
    let at_once = Duration::from_millis(250 + 750);
    assert!(took < at_once, "failed open after {took:?}");
    eprintln!("failed open after {took:?}, {store_errors} store errors");
    // The surviving nodes, kept up to the end of the test.
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_until_ok();
        cluster
    })
    .await
    .unwrap();

    assert_eq!(
        reading.await.unwrap(),
        events(1..=300),
        "the client lost nothing"
    );
    flushed(&store_a).await;
    // B replays from event 1: what reached Redis before and after.
    let resume = get("/feed", "s1").header("last-event-id", "1");
    let replayed = exchange(
        Transport::Oneshot,
        &b,
        &quiet,
        vec![resume.body(()).unwrap()],
    )
    .await;
    let text = replayed[0].text();
    let kept = text.matches("\ndata: ").count();
    let stats = store_a.stats();
    eprintln!(
        "failover: {} of 299 events after 1 replayed, gap {}; store: {stats:?}",
        kept,
        text.contains(GAP_EVENT)
    );
    // The store recovered: a resume from an event after the failover gets
    // the rest, from Redis.
    let late = get("/feed", "s1").header("last-event-id", "290");
    let late = exchange(Transport::Oneshot, &b, &quiet, vec![late.body(()).unwrap()]).await;
    assert_eq!(
        late[0].text(),
        events(291..=300),
        "written after the failover"
    );
    // Nothing between 1 and 300 was skipped silently: either all of it is
    // there, or the replay says it is not.
    if kept < 299 {
        assert!(text.contains(GAP_EVENT), "a silent hole: {text}");
    } else {
        assert_eq!(text, events(2..=300));
    }
}

/// Following across replicas on a Cluster: the lease, the history and the
/// channel of a stream all carry its scope's hash tag, and the
/// subscription of each replica, made through one node, hears the
/// channel whichever node serves the slot.
#[tokio::test]
async fn a_replay_over_a_cluster_opens_with_the_ids_of_its_own_blocks() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let history = |store| with_history(store, tower_sse_resume::HistoryLimits::new());
    let a = history(connect(&cluster, &prefix).await);
    let b = history(connect(&cluster, &prefix).await);
    super::replay::replays_open_with_their_own_ids(&a, &b).await;
}

#[tokio::test]
async fn a_client_follows_its_stream_on_another_replica_over_a_cluster() {
    use crate::linger::{LiveUpstream, last_id, read_events};
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::{Layer, ServiceExt};
    use tower_sse_resume::HistoryLimits;

    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let replica = || async {
        let store = connect(&cluster, &prefix).await;
        let layer = SseResumeLayer::new()
            .store(store.clone())
            .history(HistoryLimits::new())
            .linger(Duration::from_secs(5));
        (store, layer)
    };
    let ((store_a, a), (_, b)) = (replica().await, replica().await);
    // Sessions spread over the slots.
    for session in ["c1", "c2", "c3"] {
        let upstream = LiveUpstream::new(60);
        let request = || get("/feed", session);
        let first = a
            .layer(upstream.clone())
            .oneshot(request().body(()).unwrap());
        let cursor = last_id(&read_events(first.await.unwrap().into_body(), 5).await);
        flushed(&store_a).await;
        let resume = request().header("last-event-id", cursor.to_string());
        let resumed = b.layer(upstream.clone()).oneshot(resume.body(()).unwrap());
        let body = resumed.await.unwrap().into_body();
        let got = tokio::time::timeout(STEP, body.collect())
            .await
            .unwrap()
            .unwrap();
        let got = String::from_utf8(got.to_bytes().to_vec()).unwrap();
        assert_eq!(got, events(cursor + 1..=60), "session {session}");
        assert_eq!(upstream.requests(), 1, "none from B");
    }
    assert_eq!(b.stats().snapshot().follows, 3);
}
