//! Streams and responses across two replicas sharing one real
//! `redis-server` on loopback: the cases of `stream_cases`, each request
//! going to the other replica than the one before.
//!
//! Without `redis-server` on `PATH` every test prints a message and passes,
//! unless `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::server::RedisServer;
use crate::stream_cases::*;
use crate::support::*;
use tower_sse_resume::{HistoryLimits, RedisStore, SseResumeLayer};

/// Two replicas over a fresh prefix of `server`, with a history, and the
/// server, which must outlive them.
async fn replicas() -> Option<(Replicas<RedisStore>, RedisServer)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = RedisServer::start()?;
    let prefix = format!("streams{}:", NEXT.fetch_add(1, Ordering::Relaxed));
    let replica = || async {
        RedisStore::connect(&server.url())
            .await
            .expect("connect to redis-server")
            .prefix(&prefix)
    };
    let stores = [replica().await, replica().await];
    let layers = stores
        .iter()
        .map(|store| {
            SseResumeLayer::new()
                .store(store.clone())
                .history(HistoryLimits::new())
        })
        .collect();
    let settle = move || {
        let stores = stores.clone();
        Box::pin(async move {
            for store in &stores {
                tokio::time::timeout(STEP, store.flush())
                    .await
                    .expect("the writes took too long");
            }
        }) as _
    };
    let replicas = Replicas {
        layers,
        settle: Box::new(settle),
    };
    Some((replicas, server))
}

#[tokio::test]
async fn two_topics_are_two_streams_across_replicas() {
    for transport in TRANSPORTS {
        let Some((replicas, _server)) = replicas().await else {
            return;
        };
        two_topics(&replicas, transport).await;
    }
}

#[tokio::test]
async fn two_post_responses_are_two_streams_across_replicas() {
    for transport in TRANSPORTS {
        let Some((replicas, _server)) = replicas().await else {
            return;
        };
        two_post_responses(&replicas, transport).await;
    }
}

#[tokio::test]
async fn a_renumbered_upstream_loses_nothing_across_replicas() {
    for transport in TRANSPORTS {
        let Some((replicas, _server)) = replicas().await else {
            return;
        };
        renumbered_upstream(&replicas, transport).await;
    }
}

#[tokio::test]
async fn a_replay_holds_only_its_own_stream_across_replicas() {
    for transport in TRANSPORTS {
        let Some((replicas, _server)) = replicas().await else {
            return;
        };
        another_streams_replay(&replicas, transport).await;
    }
}

#[tokio::test]
async fn two_tabs_on_two_replicas_each_get_every_event() {
    let Some((replicas, _server)) = replicas().await else {
        return;
    };
    two_tabs(&replicas).await;
}

#[tokio::test]
async fn concurrent_responses_on_two_replicas_one_with_a_cursor() {
    let Some((replicas, _server)) = replicas().await else {
        return;
    };
    concurrent_responses_one_with_a_cursor(&replicas).await;
}
