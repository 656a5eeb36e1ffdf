//! The layer's configuration: its store, its options, and the builder
//! methods that [`SseResumeLayer`](crate::SseResumeLayer) and
//! [`SseResume`](crate::SseResume) share.

use std::sync::Arc;

use crate::framer::DEFAULT_MAX_BLOCK_LEN;
use crate::key::{BoxedExtractor, DefaultStreamKey, Header};
use crate::stats::Stats;
use crate::tracker::DEFAULT_WINDOW_LEN;

/// The builder methods shared by `SseResumeLayer` and `SseResume`, on
/// their `config`.
macro_rules! builder_methods {
    () => {
        /// Reads each request's scope (whose stream it is) with `extractor`.
        /// Requests without one are deduplicated within their own response
        /// only.
        pub fn scope(mut self, extractor: impl $crate::key::KeyExtractor) -> Self {
            self.config.options_mut().scope =
                std::sync::Arc::new($crate::key::BoxedExtractor::new(extractor));
            self
        }

        /// Reads each request's stream key (which stream of the scope) with
        /// `extractor`. A request without one uses the empty key.
        pub fn stream_key(mut self, extractor: impl $crate::key::KeyExtractor) -> Self {
            self.config.options_mut().stream_key =
                std::sync::Arc::new($crate::key::BoxedExtractor::new(extractor));
            self
        }

        /// Whether a `GET` without `Last-Event-ID` is sent upstream with the
        /// last id its stream forwarded. On by default.
        pub fn inject_last_event_id(mut self, inject: bool) -> Self {
            self.config.options_mut().inject = inject;
            self
        }

        /// Whether injection is skipped for requests whose
        /// `MCP-Protocol-Version` is `2026-07-28` or later: that revision
        /// removed resumption. On by default.
        pub fn mcp_protocol_gate(mut self, gate: bool) -> Self {
            self.config.options_mut().mcp_protocol_gate = gate;
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
            self.config.options_mut().stamp_ids = stamp;
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
            self.config.options_mut().trust_ids = trust;
            self
        }

        /// What to do when the store fails at the start of a request.
        pub fn failure_policy(mut self, policy: $crate::FailurePolicy) -> Self {
            self.config.options_mut().failure_policy = policy;
            self
        }

        /// Blocks longer than this are forwarded without deduplication.
        /// 1 MiB by default.
        pub fn max_block_len(mut self, max: usize) -> Self {
            self.config.options_mut().max_block_len = max;
            self
        }

        /// Ids longer than this, in bytes, are forwarded but not tracked.
        /// 256 by default.
        pub fn max_id_len(mut self, max: usize) -> Self {
            self.config.options_mut().max_id_len = max;
            self
        }

        /// A handle on the counters, shared by the layer and every service
        /// made from it.
        pub fn stats(&self) -> $crate::Stats {
            self.config.options.stats.clone()
        }
    };
}
pub(crate) use builder_methods;

/// The default [`SseResumeLayer::max_id_len`](crate::SseResumeLayer::max_id_len): longer ids are forwarded
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

/// What the layer and every service it makes share: the store, and the
/// options, which do not depend on it. Cloned per service, read per
/// request through one shared `Arc` each.
#[derive(Debug)]
pub(crate) struct Config<T> {
    pub(crate) store: Arc<T>,
    pub(crate) options: Arc<Options>,
}

/// The options that do not depend on the store.
#[derive(Debug, Clone)]
pub(crate) struct Options {
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

impl Default for Options {
    fn default() -> Self {
        Self {
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
        }
    }
}

impl<T> Config<T> {
    pub(crate) fn new(store: T) -> Self {
        Self {
            store: Arc::new(store),
            options: Arc::default(),
        }
    }

    pub(crate) fn with_store<U>(self, store: U) -> Config<U> {
        Config {
            store: Arc::new(store),
            options: self.options,
        }
    }

    /// The options, to change: the first change copies them from what
    /// other services share.
    pub(crate) fn options_mut(&mut self) -> &mut Options {
        Arc::make_mut(&mut self.options)
    }
}

impl<T> Clone for Config<T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            options: Arc::clone(&self.options),
        }
    }
}
