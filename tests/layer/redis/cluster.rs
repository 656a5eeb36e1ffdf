//! [`RedisStore`] over a Redis Cluster of three nodes on loopback, started
//! by the tests and shared by those that run at once (each has a key prefix
//! of its own): the store conformance suite, and replicas through the
//! layer. Skipped like `tests/redis.rs` when `redis-server` is missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::server::{RedisCluster, flushed, replica};
use crate::support::*;
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

struct Cluster {
    cluster: Arc<RedisCluster>,
}

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

fn cluster() -> Option<Cluster> {
    RedisCluster::shared().map(|cluster| Cluster { cluster })
}

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
