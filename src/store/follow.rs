//! Following across replicas: what a store hands the layer so that a
//! response on one replica follows a stream another replica reads from its
//! upstream ([`Follow`]), how the reading replica says so ([`Lease`]), how
//! a batch says the stream's upstream ended ([`StreamEnd`]), and how a
//! stop reaches the replica that holds the stream ([`Stop`]).
//!
//! Only a store shared by replicas deals in these, through
//! [`TrackerStore::hold`](super::TrackerStore::hold) and
//! [`TrackerStore::follow`](super::TrackerStore::follow); a store that
//! leaves both to their defaults never meets them.

use std::fmt;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

/// What a [`Follow`] delivers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Followed {
    /// Bytes of whole blocks the holding replica recorded, as forwarded.
    Blocks(Bytes),
    /// The stream's upstream ended: so does the response.
    End,
    /// The stream can no longer be followed: its holder is gone without
    /// ending it (it died, or let it go), the history lost blocks the
    /// follower had not read, or the store stayed unreachable. Carries the
    /// id of the last block delivered that had one. A follow that ends
    /// without a word is lost too, with no id.
    ///
    /// A response that follows its own standing stream (a `GET` on the
    /// stream's key) then sends its request upstream, asked to resume from
    /// the stream's last id (an error, or an answer that is not an
    /// uncompressed event stream, ends it with the gap signal for the
    /// client's cursor). Any
    /// other response (one resuming a per-request stream) ends with the
    /// gap signal, whose data is this id, or without one the client's
    /// cursor.
    Lost(Option<String>),
}

/// A stream another replica reads from its upstream, as this one follows
/// it: the blocks it records, then its end. Made by
/// [`TrackerStore::follow`](super::TrackerStore::follow) with
/// [`Follow::channel`]; dropping it tells the sender.
pub struct Follow {
    receiver: mpsc::Receiver<Followed>,
}

/// Where a store sends what a [`Follow`] delivers.
#[derive(Debug, Clone)]
pub struct FollowSender {
    sender: mpsc::Sender<Followed>,
}

/// The [`Follow`] was dropped: nobody reads what is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfollowed;

impl Follow {
    /// A follow and its sender, which waits once `capacity` items (at
    /// least 1) are unread: a slow client slows its follower, nothing
    /// piles up.
    pub fn channel(capacity: usize) -> (FollowSender, Follow) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (FollowSender { sender }, Follow { receiver })
    }

    pub(crate) fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Followed>> {
        self.receiver.poll_recv(cx)
    }
}

impl FollowSender {
    /// Sends `item`, waiting while the follow is full.
    pub async fn send(&self, item: Followed) -> Result<(), Unfollowed> {
        self.sender.send(item).await.map_err(|_| Unfollowed)
    }

    /// Waits until the follow is dropped.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }

    /// Whether the follow was dropped.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow").finish_non_exhaustive()
    }
}

/// A stream this replica reads from its upstream, marked so in the store
/// for as long as the lease lives: other replicas follow it then, rather
/// than ask the upstream themselves. Made by
/// [`TrackerStore::hold`](super::TrackerStore::hold); dropping it lets the
/// stream go.
pub struct Lease {
    held: Box<dyn HeldStream>,
}

/// A store's side of a [`Lease`]: its `Drop` lets the stream go.
pub trait HeldStream: Send + Sync + 'static {
    /// Whether another replica follows the stream now: a held stream's
    /// linger then goes on.
    fn is_followed(&self) -> bool;

    /// Whether another replica holds the stream now: this one's lease
    /// lapsed (its store was out of reach longer than the lease) and the
    /// other took it. A held stream's linger then ends, so that one
    /// replica reads the stream's upstream and records it, not two. A
    /// response whose client is attached records on: its client's next
    /// cursor must be known wherever it comes back.
    fn is_lost(&self) -> bool {
        false
    }
}

impl Lease {
    /// The lease of `held`.
    pub fn new(held: impl HeldStream) -> Self {
        Self {
            held: Box::new(held),
        }
    }

    /// Whether another replica follows the stream now.
    pub fn is_followed(&self) -> bool {
        self.held.is_followed()
    }

    /// Whether another replica holds the stream now.
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("followed", &self.is_followed())
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// How a stream's upstream ended, as an [`IdBatch`](super::IdBatch) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// A standing stream's upstream ended: the next request asks it anew.
    Ended,
    /// A per-request stream's upstream ended: the stream is complete, and
    /// its history is all a client resuming it gets.
    Complete,
}

/// A stop that every replica sharing a store hears, so that whichever
/// reads the stream's upstream ends it: see
/// [`TrackerStore::broadcast_stop`](super::TrackerStore::broadcast_stop).
/// Scopes are as the layer keeps them, bound to the credentials'
/// fingerprint, never a raw credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// [`SseResumeLayer::stop`](crate::SseResumeLayer::stop): the stream of
    /// `scope` whose events include `cursor`, else `stream`.
    Stream {
        /// The scope, with the credentials' fingerprint.
        scope: String,
        /// The stream key the stop request had.
        stream: String,
        /// The cursor the stop request had, which names the stream first.
        cursor: Option<String>,
    },
    /// The end of an MCP session: every stream of the scope.
    Scope(String),
}

/// Where a store hands on the stops its replicas broadcast, to every
/// [`Stops`] of it. Clones share it.
#[derive(Debug, Clone)]
pub struct StopSender {
    sender: broadcast::Sender<Stop>,
}

/// The stops a store's replicas broadcast, as one layer hears them. Made
/// by [`StopSender::subscribe`].
#[derive(Debug)]
pub struct Stops {
    receiver: broadcast::Receiver<Stop>,
}

impl StopSender {
    /// A sender whose listeners each keep at most `capacity` stops (at
    /// least 1) unread; past that, a listener misses the oldest, and logs
    /// it.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Hands `stop` to every listener.
    pub fn send(&self, stop: Stop) {
        // No listener: no layer to stop anything here.
        let _ = self.sender.send(stop);
    }

    /// A new listener, which hears the stops sent from now on.
    pub fn subscribe(&self) -> Stops {
        Stops {
            receiver: self.sender.subscribe(),
        }
    }
}

impl Stops {
    /// The next stop; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Stop> {
        loop {
            match self.receiver.recv().await {
                Ok(stop) => return Some(stop),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "stops from other replicas came too fast: missed some"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
