//! The tests' helpers around a Redis server: [`RedisServer`] and
//! [`RedisCluster`] from the support crate, and waits bounded for CI.

pub(crate) use tower_sse_resume_support::{RedisCluster, RedisServer};

use std::time::Duration;

/// How long a test waits for a store's writes to reach Redis.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// A replica of the conformance suite over `store`, which is set up as
/// `setup` asks: its window, its time to live, its history.
#[cfg(feature = "test-util")]
pub(crate) fn replica(
    store: tower_sse_resume::RedisStore,
    setup: tower_sse_resume::test_util::Setup,
) -> tower_sse_resume::test_util::Replica<tower_sse_resume::RedisStore> {
    let mut store = store.window_len(setup.window_len).ttl(setup.idle_ttl);
    if let Some(limits) = setup.history {
        store = store.history(limits);
    }
    tower_sse_resume::test_util::Replica::new(store, setup)
}

/// Waits until what `store` was handed is written, or fails the test after
/// [`FLUSH_BOUND`]: a write that never ends must not stall CI.
pub(crate) async fn flushed(store: &tower_sse_resume::RedisStore) {
    tokio::time::timeout(FLUSH_BOUND, store.flush())
        .await
        .expect("the writes to Redis took too long");
}
