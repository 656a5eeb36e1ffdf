//! The tests' helpers around a Redis server: [`RedisServer`] and
//! [`RedisCluster`] from the support crate, and waits bounded for CI.

pub(crate) use tower_sse_resume_support::{RedisCluster, RedisServer};

use std::time::Duration;

/// How long a test waits for a store's writes to reach Redis.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// A replica of the conformance suite over `store`, which is set up as
/// `setup` asks: its time to live here, its window and history from the
/// replica's limits, as from a layer.
#[cfg(feature = "test-util")]
pub(crate) fn replica(
    store: tower_sse_resume::RedisStore,
    setup: tower_sse_resume::test_util::Setup,
) -> tower_sse_resume::test_util::Replica<tower_sse_resume::RedisStore> {
    tower_sse_resume::test_util::Replica::new(store.ttl(setup.idle_ttl), setup)
}

/// `store` keeping a history within `limits`, as a layer with that history
/// would set it: for the tests that use a store alone. A layer given it
/// afterwards sets its own.
pub(crate) fn with_history(
    store: tower_sse_resume::RedisStore,
    limits: tower_sse_resume::HistoryLimits,
) -> tower_sse_resume::RedisStore {
    use tower_sse_resume::{StoreLimits, TrackerStore};
    store.set_limits(StoreLimits::default().with_history(Some(limits)));
    store
}

/// Waits until what `store` was handed is written, or fails the test after
/// [`FLUSH_BOUND`]: a write that never ends must not stall CI.
pub(crate) async fn flushed(store: &tower_sse_resume::RedisStore) {
    tokio::time::timeout(FLUSH_BOUND, store.flush())
        .await
        .expect("the writes to Redis took too long");
}
