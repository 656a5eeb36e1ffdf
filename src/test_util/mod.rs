//! The conformance suite of [`TrackerStore`]: what every store must do,
//! as checks that any store can run. Feature `test-util`.
//!
//! The checks drive a store as the layer does, through a [`Replica`]: the
//! layer's streams in one process over one handle on the store. A
//! [`TestResponse`] opened on a replica pushes upstream bytes through the
//! layer's own body code and hands back what its client gets. Each check
//! works on two replicas, `a` and `b`, from [`Harness::pair`]: for a store
//! that keeps nothing behind the layer ([`MemoryStore`](crate::MemoryStore))
//! they are one replica, for a shared store two processes over the same
//! backend. What `a` forwards, `b` must see once the harness has settled.
//!
//! # Running the suite against a store
//!
//! In a test file of the crate that has the store (with `tokio`'s `macros`
//! and `rt-multi-thread` features among its dev-dependencies):
//!
//! ```
//! use std::future::{Future, ready};
//! use tower_sse_resume::MemoryStore;
//! use tower_sse_resume::test_util::{Harness, Replica, Setup};
//!
//! struct Memory;
//!
//! impl Harness for Memory {
//!     type Store = MemoryStore;
//!
//!     fn pair(&self, setup: Setup) -> impl Future<Output = (Replica<MemoryStore>, Replica<MemoryStore>)> + Send {
//!         // Nothing behind the layer: both are one process.
//!         let replica = Replica::new(MemoryStore::new(), setup);
//!         ready((replica.clone(), replica))
//!     }
//!
//!     fn settle(&self, _replica: &Replica<MemoryStore>) -> impl Future<Output = ()> + Send {
//!         ready(())
//!     }
//! }
//!
//! // `None` would skip every check, as when a server is missing.
//! tower_sse_resume::store_conformance_tests!(Some(Memory));
//! # fn main() {}
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::body::Dedup;
use crate::config::Config;
use crate::decision::{Decision, Resumption};
use crate::store::{StoreError, StreamKey, TrackerStore};
use crate::stream::{DEFAULT_WINDOW_LEN, HistoryLimits, Replay, Request as StreamRequest};

pub mod checks;

/// How a check wants its replicas set up: the layer's limits, which
/// [`Replica::new`] hands to the store too ([`TrackerStore::set_limits`]),
/// and the time to live, which a store that has one of its own is given
/// alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setup {
    /// The most ids each window remembers, in the store and in process.
    pub window_len: usize,
    /// How long a stream may sit idle before it is forgotten.
    pub idle_ttl: Duration,
    /// A replay history within these limits, or none.
    pub history: Option<HistoryLimits>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            window_len: DEFAULT_WINDOW_LEN,
            idle_ttl: Duration::from_secs(3600),
            history: None,
        }
    }
}

/// How a test crate makes the replicas under test.
pub trait Harness: Send + Sync {
    /// The store under test.
    type Store: TrackerStore;

    /// Two replicas over one fresh, empty store set up as `setup` says
    /// (its window length, its time to live, its replay history). For a
    /// store that keeps nothing behind the layer, two clones of one
    /// replica.
    fn pair(
        &self,
        setup: Setup,
    ) -> impl Future<Output = (Replica<Self::Store>, Replica<Self::Store>)> + Send;

    /// Waits until what the responses of `replica` recorded is stored for
    /// every replica.
    fn settle(&self, replica: &Replica<Self::Store>) -> impl Future<Output = ()> + Send;
}

/// Feature `test-util`. Expands to one `#[tokio::test]` per check of
/// [`checks`], each running
/// against the harness `$harness` evaluates to (an `Option`: `None` skips
/// them all, as when the server a store needs is missing).
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        $crate::store_conformance_tests!(@tests $harness;
            open_creates_an_empty_stream,
            forwarded_ids_are_kept_oldest_first,
            the_window_keeps_its_newest_ids,
            responses_of_one_stream_share_its_window,
            a_known_cursor_forgets_what_came_after_it,
            an_unknown_cursor_clears_the_window,
            a_cursor_resolves_within_its_scope_only,
            a_cursor_resolves_to_its_per_request_stream_only,
            a_cursor_its_own_stream_knows_stays_there,
            an_id_is_kept_with_its_event,
            scopes_never_mix,
            idle_streams_are_forgotten,
            a_cursor_in_the_history_replays_what_followed_it,
            a_cursor_not_in_the_history_is_a_gap,
            the_history_keeps_within_its_count,
            a_lost_block_ends_the_history_before_it,
        );
    };
    (@tests $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(harness) = $harness else { return };
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    $crate::test_util::checks::$check(&harness),
                )
                .await
                .expect("the check took too long");
            }
        )*
    };
}

/// The layer's streams in one process, over one handle on a store: what a
/// replica of a gateway holds. Clones are the same replica.
pub struct Replica<T> {
    config: Config<T>,
}

impl<T: TrackerStore> Replica<T> {
    /// A replica over `store`, its streams in process set up as `setup`
    /// says, with the layer's defaults otherwise; the store takes the
    /// limits it keeps too, as from a layer.
    pub fn new(store: T, setup: Setup) -> Self {
        let mut config = Config::new(store);
        config.set_limits(|limits| {
            limits.window_len = setup.window_len;
            limits.idle_ttl = setup.idle_ttl;
            limits.history = setup.history;
        });
        Self { config }
    }

    /// The streams of `layer`, shared with every service it makes: to
    /// look at what a layer holds.
    pub fn from_layer(layer: &crate::SseResumeLayer<T>) -> Self {
        Self {
            config: layer.config.clone(),
        }
    }

    /// The store.
    pub fn store(&self) -> &T {
        &self.config.store
    }

    /// Opens a response on the stream `stream` of `scope`, as a request
    /// with the client's `cursor` would.
    pub async fn open(
        &self,
        scope: &str,
        stream: &str,
        cursor: Option<&str>,
    ) -> Result<TestResponse, StoreError> {
        let key = StreamKey::new(scope, stream);
        let snapshot = self.config.store.open(&key, cursor).await?;
        let get = stream.starts_with("GET ");
        let request = StreamRequest {
            get,
            linger: false,
            one_client: false,
        };
        let opened = self.config.streams.open(key, cursor, snapshot, request);
        let (key, cursor_known, replay) = (
            opened.key.clone(),
            opened.cursor_known,
            opened.replay.clone(),
        );
        let resumption = Resumption {
            inject: false,
            from_history: false,
            stamp: false,
            per_request: !get,
            one_client: false,
            prime: None,
            upstream_resumes: true,
        };
        let options = &self.config.options;
        let (decision, _, _) = Decision::scoped(
            opened,
            Arc::clone(&self.config.store),
            options.stats.clone(),
            resumption,
            cursor.map(str::to_owned),
            None,
        );
        Ok(TestResponse {
            key,
            cursor_known,
            replay,
            dedup: Dedup::new(decision, options),
        })
    }

    /// Lets go of the streams in process that no response holds and that
    /// sat idle past their time, and returns how many went.
    pub fn expire(&self) -> usize {
        self.config.streams.expire()
    }

    /// The number of streams held in process now.
    pub fn streams(&self) -> usize {
        self.config.streams.len()
    }
}

impl<T> Clone for Replica<T> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Replica<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("config", &self.config)
            .finish()
    }
}

/// One response opened on a [`Replica`]: upstream bytes in, what its
/// client gets out, through the layer's own body code.
#[derive(Debug)]
pub struct TestResponse {
    key: StreamKey,
    cursor_known: Option<bool>,
    replay: Replay,
    dedup: Dedup,
}

impl TestResponse {
    /// The stream the response belongs to: its request's, or the one its
    /// cursor was recorded on.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Whether the client's cursor was known; `None` without one.
    pub fn cursor_known(&self) -> Option<bool> {
        self.cursor_known
    }

    /// What the replay history gave the client before the upstream.
    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// The ids the stream's window holds now, oldest first.
    pub fn window(&self) -> Vec<String> {
        self.dedup.stream().lock().ids().collect()
    }

    /// The newest id of the stream's window.
    pub fn last_id(&self) -> Option<String> {
        self.dedup.stream().lock().last_id()
    }

    /// Pushes `chunk` of the upstream's body through the response, and
    /// returns what its client gets for it: the replay or gap first, on
    /// the first call.
    pub fn upstream(&mut self, chunk: impl Into<Bytes>) -> Vec<u8> {
        self.dedup.push(chunk.into());
        self.dedup.take_output()
    }

    /// Ends the upstream's body: the response hands what it recorded to
    /// the store and detaches from its stream. Returns what the client gets
    /// last.
    pub fn end(mut self) -> Vec<u8> {
        self.dedup.end();
        self.dedup.take_output()
    }
}
