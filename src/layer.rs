//! [`SseResumeLayer`] and its builder.

use std::sync::Arc;

use tower_layer::Layer;

use crate::framer::DEFAULT_MAX_BLOCK_LEN;
use crate::key::{BoxedExtractor, DefaultStreamKey, Header};
use crate::service::SseResume;
use crate::stats::Stats;
use crate::store::{MemoryStore, TrackerStore};
use crate::tracker::DEFAULT_WINDOW_LEN;

/// The builder methods shared by `SseResumeLayer` and `SseResume`, on
/// their `settings`.
macro_rules! knobs {
    () => {
        /// Reads each request's scope (whose stream it is) with `extractor`.
        /// Requests without one are deduplicated within their own response
        /// only.
        pub fn scope(mut self, extractor: impl $crate::key::KeyExtractor) -> Self {
            self.settings.knobs.scope =
                std::sync::Arc::new($crate::key::BoxedExtractor::new(extractor));
            self
        }

        /// Reads each request's stream key (which stream of the scope) with
        /// `extractor`. A request without one uses the empty key.
        pub fn stream_key(mut self, extractor: impl $crate::key::KeyExtractor) -> Self {
            self.settings.knobs.stream_key =
                std::sync::Arc::new($crate::key::BoxedExtractor::new(extractor));
            self
        }

        /// Whether a `GET` without `Last-Event-ID` is sent upstream with the
        /// last id its stream forwarded. On by default.
        pub fn inject_last_event_id(mut self, inject: bool) -> Self {
            self.settings.knobs.inject = inject;
            self
        }

        /// Whether injection is skipped for requests whose
        /// `MCP-Protocol-Version` is `2026-07-28` or later: that revision
        /// removed resumption. On by default.
        pub fn mcp_protocol_gate(mut self, gate: bool) -> Self {
            self.settings.knobs.mcp_protocol_gate = gate;
            self
        }

        /// Whether events that come without an id get one stamped by the
        /// layer, so that clients can resume against the store's replay
        /// history even when the upstream numbers nothing. Off by default.
        ///
        /// A stamped id is `<epoch>-<n>`, unique and rising per stream, and
        /// goes out as an `id:` line before the block's own lines: the one
        /// change the layer makes to an event. Blocks with an `id` field,
        /// even an empty one, and blocks that dispatch nothing keep their
        /// bytes. Stamped ids are never sent upstream and never
        /// deduplicate. Streams without a scope are not stamped; without a
        /// replay history, stamped ids resume nothing.
        pub fn stamp_ids(mut self, stamp: bool) -> Self {
            // Each request opens at an epoch no other of its stream had,
            // above the ones before: from the store when it keeps one
            // across replicas (`RedisStore`), else from this process's
            // clock in milliseconds. The `id:` line ends in LF, a line end
            // in every stream whatever its others are. After a replay the
            // upstream is asked from the newest id it sent itself, or from
            // none; after a gap the client's own `Last-Event-ID` goes up as
            // sent, as the history no longer says whether it was stamped,
            // and an upstream's own ids may have the same shape (Redis
            // stream ids do).
            self.settings.knobs.stamp_ids = stamp;
            self
        }

        /// Whether a block whose id the client already has is dropped
        /// whatever its event, as for an upstream whose replays re-render
        /// their data (a timestamp in it, say). Off by default: a block is
        /// a duplicate only when its data and event type are those its id
        /// was first forwarded with; an id that comes back with another
        /// event is a new event (an upstream that restarted and numbers
        /// from 1 again), forwarded, and the stream's ids start over from
        /// it. Trusting ids also saves fingerprinting every data byte,
        /// which costs most on long events.
        pub fn trust_ids(mut self, trust: bool) -> Self {
            self.settings.knobs.trust_ids = trust;
            self
        }

        /// What to do when the store fails at the start of a request.
        pub fn failure_policy(mut self, policy: $crate::FailurePolicy) -> Self {
            self.settings.knobs.failure_policy = policy;
            self
        }

        /// Blocks longer than this are forwarded without deduplication.
        /// 1 MiB by default.
        pub fn max_block_len(mut self, max: usize) -> Self {
            self.settings.knobs.max_block_len = max;
            self
        }

        /// Ids longer than this, in bytes, are forwarded but not tracked.
        /// 256 by default.
        pub fn max_id_len(mut self, max: usize) -> Self {
            self.settings.knobs.max_id_len = max;
            self
        }

        /// A handle on the counters, shared by the layer and every service
        /// made from it.
        pub fn stats(&self) -> $crate::Stats {
            self.settings.knobs.stats.clone()
        }
    };
}
pub(crate) use knobs;

/// The default [`SseResumeLayer::max_id_len`]: longer ids are forwarded
/// but not tracked.
pub const DEFAULT_MAX_ID_LEN: usize = 256;

/// What to do when the store fails at the start of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Go on without the store: the response is deduplicated within itself
    /// only, and nothing is injected. Counted and logged. The default.
    #[default]
    FailOpen,
    /// Answer `503 Service Unavailable` without calling the inner service.
    FailClosed,
}

/// Makes the event streams of a service resumable and duplicate-free.
///
/// See the [crate documentation](crate) for what it does.
#[derive(Debug, Clone)]
pub struct SseResumeLayer<T = MemoryStore> {
    pub(crate) settings: Settings<T>,
}

/// What the layer and every service it makes share: the store, and the
/// knobs, which do not depend on it.
#[derive(Debug)]
pub(crate) struct Settings<T> {
    pub(crate) store: Arc<T>,
    pub(crate) knobs: Knobs,
}

/// The settings that do not depend on the store; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    pub(crate) scope: Arc<BoxedExtractor>,
    pub(crate) stream_key: Arc<BoxedExtractor>,
    pub(crate) inject: bool,
    pub(crate) mcp_protocol_gate: bool,
    pub(crate) stamp_ids: bool,
    pub(crate) trust_ids: bool,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) max_block_len: usize,
    pub(crate) max_id_len: usize,
    pub(crate) unscoped_window_len: usize,
    pub(crate) stats: Stats,
}

impl<T> Clone for Settings<T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            knobs: self.knobs.clone(),
        }
    }
}

impl Default for SseResumeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SseResumeLayer {
    /// The defaults: a [`MemoryStore`], the scope from the `Mcp-Session-Id`
    /// header, the stream key of [`DefaultStreamKey`](crate::key::DefaultStreamKey)
    /// (a `GET` by method, path and query; a stream per request for other
    /// methods), events compared with their ids, injection on
    /// (except for MCP `2026-07-28` and later), fail-open, blocks up to
    /// 1 MiB, ids up to 256 bytes.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                store: Arc::new(MemoryStore::new()),
                knobs: Knobs {
                    scope: Arc::new(BoxedExtractor::new(Header::mcp_session_id())),
                    stream_key: Arc::new(BoxedExtractor::new(DefaultStreamKey)),
                    inject: true,
                    mcp_protocol_gate: true,
                    stamp_ids: false,
                    trust_ids: false,
                    failure_policy: FailurePolicy::FailOpen,
                    max_block_len: DEFAULT_MAX_BLOCK_LEN,
                    max_id_len: DEFAULT_MAX_ID_LEN,
                    unscoped_window_len: DEFAULT_WINDOW_LEN,
                    stats: Stats::default(),
                },
            },
        }
    }
}

impl<T: TrackerStore> SseResumeLayer<T> {
    /// Keeps trackers in `store` instead.
    pub fn store<U: TrackerStore>(self, store: U) -> SseResumeLayer<U> {
        SseResumeLayer {
            settings: self.settings.with_store(store),
        }
    }

    knobs!();
}

impl<T> Settings<T> {
    pub(crate) fn with_store<U>(self, store: U) -> Settings<U> {
        Settings {
            store: Arc::new(store),
            knobs: self.knobs,
        }
    }
}

impl<S, T> Layer<S> for SseResumeLayer<T> {
    type Service = SseResume<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SseResume::from_settings(inner, self.settings.clone())
    }
}
