//! Stop is not disconnect, across replicas: a stop, or the end of an MCP
//! session, asked on one replica ends the stream that another replica
//! holds, for the stream's own credentials only; and what the stop leaves
//! complete is resumed from the shared history on any replica, never sent
//! upstream again.
//!
//! Against a real `redis-server` on loopback. Without `redis-server` on
//! `PATH` every test prints a message and passes, unless
//! `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

use std::time::Duration;

use http::{Request, StatusCode};
use tokio::time::Instant;

use super::credentials::{Redis, SHARED_KEY, replicas, replicas_over};
use super::server::{RedisCluster, RedisServer, Relay, flushed};
use crate::credentials::{ALICE, Authorizing, Client, MALLORY, as_user};
use crate::linger::{LiveUpstream, eventually, last_id, read_events};
use crate::stop::{closed_soon_after, stop_request, the_rest_after};
use crate::support::*;

/// Alice's long call, held on the first replica: her client read three
/// events and went away. With the replicas, a client of each, the live
/// upstream, and the client's cursor.
async fn held_on_a(
    redis: Redis<'_>,
) -> (
    super::credentials::Replica,
    super::credentials::Replica,
    Client,
    LiveUpstream,
    u32,
) {
    let (a, b) = replicas(redis, Some(SHARED_KEY)).await;
    let live = LiveUpstream::new(100_000);
    let upstream = Authorizing::new(live.clone());
    let on_a = Client::over(Transport::Http, &a.layer, upstream.clone()).await;
    let on_b = Client::over(Transport::Http, &b.layer, upstream).await;
    let call = on_a.open(as_user(Request::post("/mcp"), ALICE, None)).await;
    let cursor = last_id(&read_events(call.into_body(), 3).await);
    eventually("the hold on A", || a.layer.stats().snapshot().held == 1).await;
    (a, b, on_b, live, cursor)
}

#[tokio::test]
async fn a_stop_on_one_replica_ends_the_call_the_other_holds_and_any_replica_resumes_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b, on_b, live, cursor) = held_on_a(Redis::Server(&server)).await;
    let stop = |user: &str| stop_request(user, cursor);

    // Mallory's stop reaches A, and finds no stream of his there.
    b.layer.stop(&stop(MALLORY));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live.closed(), 0, "another token stops nothing");
    assert_eq!(a.layer.stats().snapshot().held, 1);

    assert!(b.layer.stop(&stop(ALICE)), "the other replicas were told");
    closed_soon_after(&live, Instant::now()).await;
    assert_eq!(a.layer.stats().snapshot().held, 0);

    // Her resume on B gets what A read before the stop, and the end; the
    // call is never sent again.
    flushed(&a.store).await;
    let resumed = on_b
        .send(as_user(Request::get("/mcp"), ALICE, Some(cursor)))
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    let last = the_rest_after(cursor, resumed.text());
    assert_eq!(live.requests(), 1, "never sent again");
    // And once she has it all, `204`: the call is over.
    let over = on_b
        .send(as_user(Request::get("/mcp"), ALICE, Some(last)))
        .await;
    assert_eq!(over.status, StatusCode::NO_CONTENT, "{}", over.text());
}

#[tokio::test]
async fn the_end_of_an_mcp_session_on_one_replica_ends_its_streams_on_the_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _b, on_b, live, _) = held_on_a(Redis::Server(&server)).await;

    // Mallory's `DELETE` is refused upstream, and ends nothing.
    let refused = on_b
        .send(as_user(Request::delete("/mcp"), MALLORY, None))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live.closed(), 0);

    let ended = on_b
        .send(as_user(Request::delete("/mcp"), ALICE, None))
        .await;
    let answered = Instant::now();
    assert_eq!(ended.status, StatusCode::OK);
    closed_soon_after(&live, answered).await;
    assert_eq!(a.layer.stats().snapshot().held, 0);
    assert_eq!(
        a.layer.stats().snapshot().linger_expiries,
        0,
        "ended, not expired"
    );
    // And forgotten in Redis: no window or history of it is left.
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut forgotten = || {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
        !keys
            .iter()
            .any(|key| key.contains("}:h:") || key.contains("}:w"))
    };
    eventually("the session's streams forgotten in Redis", &mut forgotten).await;
    // For good: the holder's last writes do not bring them back.
    flushed(&a.store).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(forgotten(), "written again after the session ended");
}

#[tokio::test]
async fn a_stop_reaches_the_holder_across_a_cluster() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let (a, b, _, live, cursor) = held_on_a(Redis::Cluster(&cluster)).await;
    assert!(b.layer.stop(&stop_request(ALICE, cursor)));
    closed_soon_after(&live, Instant::now()).await;
    assert_eq!(a.layer.stats().snapshot().held, 0);
}

/// A replica whose Redis connections were down while a stop was said
/// hears it once they are back: stops are kept in Redis for a while, and a
/// subscription that comes back reads those it missed, each once.
#[tokio::test]
async fn a_stop_said_while_the_holders_subscription_was_down_reaches_it_once_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let relay = Relay::to(&server).await;
    let (a, b) = replicas_over(
        (Redis::Relayed(&relay), Redis::Server(&server)),
        Some(SHARED_KEY),
    )
    .await;
    let live = LiveUpstream::new(100_000);
    let upstream = Authorizing::new(live.clone());
    let on_a = Client::over(Transport::Http, &a.layer, upstream).await;
    let call = on_a.open(as_user(Request::post("/mcp"), ALICE, None)).await;
    let cursor = last_id(&read_events(call.into_body(), 3).await);
    eventually("the hold on A", || a.layer.stats().snapshot().held == 1).await;

    // A's connections drop, its subscription with them; B stops the call
    // meanwhile, and A, cut off, cannot hear it then.
    relay.cut();
    assert!(b.layer.stop(&stop_request(ALICE, cursor)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live.closed(), 0, "A heard nothing while cut off");
    relay.restore();
    let back = Instant::now();
    eventually("the stop to reach A once it is back", || live.closed() == 1).await;
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(a.layer.stats().snapshot().held, 0);
    // Heard once: the other replica's own stream of the same call, read
    // after the stop, is left alone.
    let again = on_a.open(as_user(Request::post("/mcp"), ALICE, None)).await;
    read_events(again.into_body(), 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(live.closed(), 1, "a stop is carried out once");
    drop(b);
}
