//! Holds: a stream whose client went away, its upstream still read in the
//! background for a while, so that the client can come back and take it
//! over (see `crate::linger`).

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};

use super::{HoldSender, StreamState, lock_state};
use crate::stats::Stats;

/// What a response of a stream started with: enough to start another one
/// the same way when a client takes the stream over, or resumes it once
/// it is complete.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// Whether the request was not a `GET`: a per-request stream, which
    /// is complete once its upstream body ends.
    pub(crate) per_request: bool,
}

/// A stream's hold: the response whose client went away, reading its
/// upstream in the background. Dropping it ends the linger.
pub(crate) struct Hold {
    pub(crate) id: u64,
    /// Asks the lingering task for the upstream: it answers on the sender
    /// it is handed.
    pub(crate) takeover: HoldSender,
    /// Where the history stood when the client went away: a takeover
    /// without a cursor replays what came after it.
    pub(crate) mark: u64,
}

/// What a lingering task hands the response that takes its stream over.
pub(crate) struct Handover {
    /// The upstream body, a `Pin<Box<B>>` of the service's body type.
    pub(crate) body: Box<dyn Any + Send>,
    /// Upstream bytes read but not yet part of a whole block.
    pub(crate) pending: Vec<Bytes>,
    /// What the task read from the upstream after its hold was taken.
    pub(crate) leftover: Leftover,
    pub(crate) head: Arc<Head>,
}

impl Handover {
    /// This handover with its upstream body as a `B`, the body type of
    /// the service now asking; `None` when it is another service's.
    pub(crate) fn typed<B: 'static>(self) -> Option<TakenOver<B>> {
        let body = self.body.downcast::<Pin<Box<B>>>().ok()?;
        Some(TakenOver {
            body: *body,
            pending: self.pending,
            leftover: self.leftover,
            head: self.head,
        })
    }
}

/// A handover whose upstream body is of the asking service's type: what
/// a response that takes a stream over is made of.
pub(crate) struct TakenOver<B> {
    pub(crate) body: Pin<Box<B>>,
    /// Upstream bytes read but not yet part of a whole block.
    pub(crate) pending: Vec<Bytes>,
    /// What the task read from the upstream after its hold was taken.
    pub(crate) leftover: Leftover,
    pub(crate) head: Arc<Head>,
}

/// The last thing a lingering task read, that it could no longer record.
#[derive(Debug, Default)]
pub(crate) enum Leftover {
    #[default]
    Nothing,
    Trailers(HeaderMap),
    End,
}

/// The streams held in process, oldest first, at most `max` of them.
pub(crate) struct Holds {
    max: usize,
    held: Mutex<VecDeque<(u64, Weak<Mutex<StreamState>>)>>,
    next_id: Mutex<u64>,
    stats: Stats,
}

impl Holds {
    pub(crate) fn new(max: usize, stats: Stats) -> Self {
        Self {
            max: max.max(1),
            held: Mutex::default(),
            next_id: Mutex::new(1),
            stats,
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        let mut next = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
        let id = *next;
        *next += 1;
        id
    }

    /// Counts a new hold of `stream`, and ends the oldest when there are
    /// more than the bound.
    pub(crate) fn add(&self, id: u64, stream: Weak<Mutex<StreamState>>) {
        self.stats.add_held(1);
        let evicted = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.push_back((id, stream));
            let excess = held.len().saturating_sub(self.max);
            held.drain(..excess).collect::<Vec<_>>()
        };
        for (id, stream) in evicted {
            self.stats.add_held(-1);
            if let Some(stream) = stream.upgrade() {
                // Dropping the hold tells its task to let the upstream go.
                let hold = lock_state(&stream).take_hold(id);
                if hold.is_some() {
                    self.stats.held_evicted();
                }
            }
        }
    }

    /// The hold `id` ended.
    pub(crate) fn remove(&self, id: u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = held.iter().position(|(held, _)| *held == id) {
            held.remove(at);
            self.stats.add_held(-1);
        }
    }
}

impl fmt::Debug for Holds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Holds")
            .field("max", &self.max)
            .field("held", &held.len())
            .finish()
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("mark", &self.mark)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handover")
            .field("pending", &self.pending.len())
            .field("leftover", &self.leftover)
            .finish_non_exhaustive()
    }
}
