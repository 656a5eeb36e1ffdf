//! Leases: the streams this process reads from their upstream, marked so
//! in Redis for as long as it does, so that other replicas follow them
//! rather than ask the upstream again.
//!
//! A lease is taken and let go through the write queue, in order with the
//! stream's ids: a follower never sees a stream let go before its last
//! blocks are written. In between, one task keeps every lease of the
//! process alive, and learns whether each stream is followed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use ::redis::Value;
#[cfg(test)]
use ::redis::aio::ConnectionManager;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Shared;
use super::connection::{Connection, within};
use super::queue::Target;
use super::replies::millis;
use crate::lock::lock;
use crate::store::follow::HeldStream;

/// Refresh scripts per pipeline.
const PIPELINE_LEN: usize = 256;

/// The leases this process holds, by lease key.
#[derive(Default)]
pub(super) struct Leases {
    held: std::sync::Mutex<HashMap<String, LeaseCount>>,
}

/// One stream's lease, shared by every response of this process that
/// reads the stream's upstream.
struct LeaseCount {
    responses: usize,
    followed_key: String,
    state: Arc<LeaseState>,
}

/// What the refresh learns of a lease, for the responses that hold it.
#[derive(Default)]
pub(super) struct LeaseState {
    /// Another replica follows the stream.
    followed: AtomicBool,
    /// Another replica holds the stream: this one's lease lapsed, and the
    /// other took it. Not renewed while so; taken again once free.
    lost: AtomicBool,
}

/// A stream this process holds, as its [`Lease`](crate::store::follow::Lease)
/// sees it: dropping it lets the stream go once no other response of this
/// process holds it.
pub(super) struct RedisLease {
    pub(super) shared: Arc<Shared>,
    pub(super) lease_key: String,
    pub(super) window_key: String,
    pub(super) target: Option<Target>,
    pub(super) state: Arc<LeaseState>,
}

impl Leases {
    /// Counts one more response holding the stream of `lease_key`; the
    /// first takes the lease. Returns whether it is the first, and what
    /// the refresh learns of the lease.
    pub(super) fn add(&self, lease_key: &str, followed_key: String) -> (bool, Arc<LeaseState>) {
        let mut held = lock(&self.held);
        match held.get_mut(lease_key) {
            Some(entry) => {
                entry.responses += 1;
                (false, Arc::clone(&entry.state))
            }
            None => {
                let state = Arc::<LeaseState>::default();
                let entry = LeaseCount {
                    responses: 1,
                    followed_key,
                    state: Arc::clone(&state),
                };
                held.insert(lease_key.to_owned(), entry);
                (true, state)
            }
        }
    }

    /// Counts one response fewer; returns whether it was the last.
    fn remove(&self, lease_key: &str) -> bool {
        let mut held = lock(&self.held);
        let Some(entry) = held.get_mut(lease_key) else {
            return false;
        };
        entry.responses -= 1;
        if entry.responses == 0 {
            held.remove(lease_key);
            return true;
        }
        false
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.held).len()
    }
}

impl HeldStream for RedisLease {
    fn is_followed(&self) -> bool {
        self.state.followed.load(Relaxed) && !self.is_lost()
    }

    fn is_lost(&self) -> bool {
        self.state.lost.load(Relaxed)
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        if let (true, Some(target)) = (
            self.shared.leases.remove(&self.lease_key),
            self.target.take(),
        ) {
            let window_key = std::mem::take(&mut self.window_key);
            self.shared.queue.push_lease(window_key, || target, false);
        }
    }
}

/// Keeps every lease of the process alive, a third of the lease apart,
/// until `closing`.
pub(super) async fn refresh_leases(
    leases: std::sync::Weak<Leases>,
    connection: Connection,
    holder: Arc<str>,
    lease: Arc<AtomicU64>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(third_of(&lease)) => {}
            _ = closing.changed() => return,
        }
        // Read after the wait: the lease may have been set again during it,
        // and the next wait is a third of what this refresh sets.
        let (lease_now, every) = (millis_of(&lease), third_of(&lease));
        let Some(leases) = leases.upgrade() else {
            return;
        };
        let held: Vec<HeldLease> = lock(&leases.held)
            .iter()
            .map(|(key, held)| {
                let state = Arc::clone(&held.state);
                (key.clone(), held.followed_key.clone(), state)
            })
            .collect();
        drop(leases);
        refresh(&connection, &holder, lease_now, every, held).await;
    }
}

/// The lease as this process has it set now.
pub(super) fn millis_of(lease: &AtomicU64) -> Duration {
    Duration::from_millis(lease.load(Relaxed))
}

/// How often a lease is renewed, or a follower looks at it: a third of it.
pub(super) fn third_of(lease: &AtomicU64) -> Duration {
    (millis_of(lease) / 3).max(Duration::from_millis(10))
}

/// A lease this process holds: its key, the key of its mark that the
/// stream is followed, and where to say what the refresh learns.
type HeldLease = (String, String, Arc<LeaseState>);

/// Renews the leases `held`, batched: one pipeline, one per scope in a
/// Cluster (a scope's keys share a slot), sent at once, of native calls
/// only: each lease's holder, its TTL set again (`GETEX`), and whether
/// its stream is followed (`EXISTS` of its mark). A lease that lapsed
/// (Redis was out longer than it) is taken again in a second pipeline,
/// unless another process took it meanwhile (`SET NX`).
///
/// A lease another process holds now is lost: that process went on from
/// the upstream when this one's lapsed. A lost lease is not renewed, only
/// read (`GET`), and taken again once it is free; the `GETEX` that found
/// it lost gave the other's lease one TTL more, as its holder's own
/// renewal does.
async fn refresh(
    connection: &Connection,
    holder: &str,
    lease: Duration,
    every: Duration,
    held: Vec<HeldLease>,
) {
    let mut calls = JoinSet::new();
    for batch in connection.batches(&held, |(lease_key, _, _)| lease_key.as_str()) {
        for chunk in batch.chunks(PIPELINE_LEN) {
            let mut pipeline = ::redis::pipe();
            for (lease_key, followed_key, state) in chunk {
                if state.lost.load(Relaxed) {
                    pipeline.cmd("GET").arg(lease_key);
                } else {
                    pipeline
                        .cmd("GETEX")
                        .arg(lease_key)
                        .arg("PX")
                        .arg(millis(lease));
                }
                pipeline.cmd("EXISTS").arg(followed_key);
            }
            let entries: Vec<(String, Arc<LeaseState>)> = (chunk.iter())
                .map(|(lease_key, _, state)| (lease_key.clone(), Arc::clone(state)))
                .collect();
            let (mut connection, holder) = (connection.clone(), holder.to_owned());
            calls.spawn(async move {
                let replies = within(every, pipeline.query_async::<Vec<Value>>(&mut connection));
                let Ok(replies) = replies.await else {
                    return;
                };
                let mut free = Vec::new();
                for ((lease_key, state), reply) in entries.iter().zip(replies.chunks(2)) {
                    let [holder_now, followed] = reply else {
                        continue;
                    };
                    state
                        .followed
                        .store(matches!(followed, Value::Int(1)), Relaxed);
                    match holder_now {
                        Value::Nil => free.push((lease_key.as_str(), state)),
                        now if is_holder(now, &holder) => state.lost.store(false, Relaxed),
                        _ => lose(lease_key, state),
                    }
                }
                retake(&mut connection, &holder, lease, every, free).await;
            });
        }
    }
    while calls.join_next().await.is_some() {}
}

/// Takes again the leases `free`, found lapsed, unless another process
/// took one meanwhile (`SET NX`), and reads who holds each now: a claim
/// this process queued with the stream's first ids may have been written
/// since, and a refused `SET NX` then means nothing lost.
async fn retake(
    connection: &mut Connection,
    holder: &str,
    lease: Duration,
    every: Duration,
    free: Vec<(&str, &Arc<LeaseState>)>,
) {
    if free.is_empty() {
        return;
    }
    let mut retake = ::redis::pipe();
    for (lease_key, _) in &free {
        (retake.cmd("SET").arg(*lease_key).arg(holder))
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .ignore();
        retake.cmd("GET").arg(*lease_key);
    }
    let replies = within(every, retake.query_async::<Vec<Value>>(connection));
    let Ok(replies) = replies.await else {
        return;
    };
    for ((lease_key, state), holder_now) in free.into_iter().zip(&replies) {
        if is_holder(holder_now, holder) {
            state.lost.store(false, Relaxed);
        } else if *holder_now != Value::Nil {
            lose(lease_key, state);
        }
    }
}

/// Marks the lease of `lease_key` lost to another process.
fn lose(lease_key: &str, state: &LeaseState) {
    if !state.lost.swap(true, Relaxed) {
        tracing::info!(lease_key, "another replica holds the stream now");
    }
}

/// Whether `reply`, a lease's value, names this process.
fn is_holder(reply: &Value, holder: &str) -> bool {
    match reply {
        Value::BulkString(bytes) => bytes == holder.as_bytes(),
        Value::SimpleString(text) => text == holder,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_sse_resume_support::RedisServer;

    const HOLDER: &str = "this process";
    const LEASE_KEY: &str = "p:{s}:l:stream";

    async fn connect(server: &RedisServer) -> Connection {
        let client = ::redis::Client::open(server.url()).unwrap();
        Connection::Single(ConnectionManager::new(client).await.unwrap())
    }

    async fn set(connection: &mut Connection, holder: &str) {
        let () = ::redis::cmd("SET")
            .arg(LEASE_KEY)
            .arg(holder)
            .query_async(connection)
            .await
            .unwrap();
    }

    async fn holder_now(connection: &mut Connection) -> Option<String> {
        ::redis::cmd("GET")
            .arg(LEASE_KEY)
            .query_async(connection)
            .await
            .unwrap()
    }

    /// Retakes the one lease, found lapsed; returns whether it is lost.
    async fn retake_one(connection: &mut Connection) -> bool {
        let state = Arc::new(LeaseState::default());
        let (lease, every) = (Duration::from_secs(10), Duration::from_secs(1));
        retake(connection, HOLDER, lease, every, vec![(LEASE_KEY, &state)]).await;
        state.lost.load(Relaxed)
    }

    // The refresh found the lease free, and then this process's own claim,
    // queued with the stream's first ids, was written before the retake:
    // the lease is this process's, not lost.
    #[tokio::test]
    async fn a_lease_this_process_claimed_since_it_was_found_free_is_not_lost() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let mut connection = connect(&server).await;
        set(&mut connection, HOLDER).await;
        assert!(!retake_one(&mut connection).await, "lost to itself");
        assert_eq!(holder_now(&mut connection).await.as_deref(), Some(HOLDER));
    }

    #[tokio::test]
    async fn a_lease_another_process_took_since_it_was_found_free_is_lost() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let mut connection = connect(&server).await;
        set(&mut connection, "another").await;
        assert!(retake_one(&mut connection).await);
        assert_eq!(
            holder_now(&mut connection).await.as_deref(),
            Some("another"),
            "taken from the other"
        );
    }

    #[tokio::test]
    async fn a_free_lease_is_taken_again_with_its_ttl() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let mut connection = connect(&server).await;
        assert!(!retake_one(&mut connection).await);
        assert_eq!(holder_now(&mut connection).await.as_deref(), Some(HOLDER));
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(LEASE_KEY)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 5_000, "{ttl} ms");
    }
}
