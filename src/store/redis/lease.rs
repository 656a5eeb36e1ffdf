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
    followed: Arc<AtomicBool>,
}

/// A stream this process holds, as its [`Lease`](crate::store::follow::Lease)
/// sees it: dropping it lets the stream go once no other response of this
/// process holds it.
pub(super) struct RedisLease {
    pub(super) shared: Arc<Shared>,
    pub(super) lease_key: String,
    pub(super) window_key: String,
    pub(super) target: Option<Target>,
    pub(super) followed: Arc<AtomicBool>,
}

impl Leases {
    /// Counts one more response holding the stream of `lease_key`; the
    /// first takes the lease. Returns whether it is the first, and the
    /// stream's flag of being followed.
    pub(super) fn add(&self, lease_key: &str, followed_key: String) -> (bool, Arc<AtomicBool>) {
        let mut held = lock(&self.held);
        match held.get_mut(lease_key) {
            Some(entry) => {
                entry.responses += 1;
                (false, Arc::clone(&entry.followed))
            }
            None => {
                let followed = Arc::new(AtomicBool::new(false));
                let entry = LeaseCount {
                    responses: 1,
                    followed_key,
                    followed: Arc::clone(&followed),
                };
                held.insert(lease_key.to_owned(), entry);
                (true, followed)
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
        self.followed.load(Relaxed)
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
        let lease = Duration::from_millis(lease.load(Relaxed));
        let every = (lease / 3).max(Duration::from_millis(10));
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = closing.changed() => return,
        }
        let Some(leases) = leases.upgrade() else {
            return;
        };
        let held: Vec<HeldLease> = lock(&leases.held)
            .iter()
            .map(|(key, held)| {
                let followed = Arc::clone(&held.followed);
                (key.clone(), held.followed_key.clone(), followed)
            })
            .collect();
        drop(leases);
        refresh(&connection, &holder, lease, every, held).await;
    }
}

/// A lease this process holds: its key, the key of its mark that the
/// stream is followed, and where to say whether it is.
type HeldLease = (String, String, Arc<AtomicBool>);

/// Renews the leases `held`, batched: one pipeline, one per scope in a
/// Cluster (a scope's keys share a slot), sent at once, of native calls
/// only: each lease's TTL again (`PEXPIRE`), and whether its stream is
/// followed (`EXISTS` of its mark). A lease that lapsed (Redis was out
/// longer than it) is taken again in a second pipeline, unless another
/// process took it meanwhile (`SET NX`). One that another process took
/// while this one's had lapsed gets its TTL again too: both read the
/// upstream then, and it lapses once neither does.
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
            for (lease_key, followed_key, _) in chunk {
                pipeline
                    .cmd("PEXPIRE")
                    .arg(lease_key)
                    .arg(millis(lease))
                    .cmd("EXISTS")
                    .arg(followed_key);
            }
            let entries: Vec<(String, Arc<AtomicBool>)> = (chunk.iter())
                .map(|(lease_key, _, followed)| (lease_key.clone(), Arc::clone(followed)))
                .collect();
            let (mut connection, holder) = (connection.clone(), holder.to_owned());
            calls.spawn(async move {
                let replies =
                    within(every, pipeline.query_async::<Vec<i64>>(&mut connection)).await;
                let Ok(replies) = replies else {
                    return;
                };
                let (mut lapsed, mut retaken) = (::redis::pipe(), 0);
                for ((lease_key, followed), reply) in entries.iter().zip(replies.chunks(2)) {
                    if let [kept, is_followed] = reply {
                        followed.store(*is_followed == 1, Relaxed);
                        if *kept == 0 {
                            retaken += 1;
                            lapsed
                                .cmd("SET")
                                .arg(lease_key)
                                .arg(&holder)
                                .arg("NX")
                                .arg("PX")
                                .arg(millis(lease))
                                .ignore();
                        }
                    }
                }
                if retaken > 0 {
                    let _ = within(every, lapsed.query_async::<()>(&mut connection)).await;
                }
            });
        }
    }
    while calls.join_next().await.is_some() {}
}
