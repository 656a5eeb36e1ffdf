//! The layer's configuration: its store, its options, and the builder
//! methods that [`SseResumeLayer`](crate::SseResumeLayer) and
//! [`SseResume`](crate::SseResume) share.

use std::fmt;
use std::sync::Arc;

use crate::credentials::Binding;
use crate::framer::DEFAULT_MAX_BLOCK_LEN;
use crate::key::{BoxedExtractor, DefaultStreamKey, Header};
use crate::stats::Stats;
use crate::store::{StoreLimits, TrackerStore};
use crate::stream::{StreamLimits, Streams};

/// The builder methods shared by `SseResumeLayer` and `SseResume`, on
/// their `config`.
macro_rules! builder_methods {
    () => {
        /// Reads each request's scope (whose stream it is) with `extractor`.
        /// Requests without one are deduplicated within their own response
        /// only.
        pub fn scope(mut self, extractor: impl $crate::key::KeyExtractor) -> Self {
            let options = self.config.options_mut();
            options.mcp_scope = $crate::key::reads_mcp_session_id(&extractor);
            options.scope = std::sync::Arc::new($crate::key::BoxedExtractor::new(extractor));
            self
        }

        /// Reads each request's credentials with `extractor`: a stream
        /// belongs to the credentials of the request that opened it, and
        /// the layer answers from it only requests with the same ones. By
        /// default [`DefaultCredentials`]($crate::key::DefaultCredentials):
        /// `Authorization`, `Proxy-Authorization` and an `access_token`
        /// in the URL. Give a [`Cookie`]($crate::key::Cookie), a
        /// [`Header`]($crate::key::Header), or a closure that reads the
        /// principal an authentication layer in front put in the
        /// request's extensions; `|_: &http::request::Parts| None` binds
        /// streams to their scope alone.
        ///
        /// A request with other credentials than a stream's, or none,
        /// finds nothing of it: no replay, takeover, follow, complete
        /// stream's rest or injected cursor, and it never ends another
        /// client's response. It goes to the upstream, which decides. A
        /// refreshed token is other credentials: its resume goes upstream
        /// too, and gets the gap signal when the upstream cannot resume.
        /// Only a keyed fingerprint of the credentials is kept
        /// ([`credential_key`](Self::credential_key)), never their bytes.
        pub fn credentials(mut self, extractor: impl $crate::key::KeyExtractor) -> Self {
            (self.config.options_mut().credentials)
                .set_extractor(Some($crate::key::BoxedExtractor::new(extractor)));
            self
        }

        /// The key of the credentials' fingerprint (HMAC-SHA-256, 128 bits
        /// kept). By default a random key made once per process, so a
        /// stream bound to credentials is found on this replica only:
        /// with a store shared by replicas (`RedisStore`), give each the
        /// same secret key, at least 32 random bytes, kept as secret as
        /// the credentials themselves. Until then the layer says so in
        /// its log, once.
        pub fn credential_key(mut self, key: impl AsRef<[u8]>) -> Self {
            (self.config.options_mut().credentials).set_key(key.as_ref());
            self
        }

        /// Sends a keep-alive, a comment block (`:` and a blank line), when
        /// nothing has come from the upstream for `quiet`, so that load
        /// balancers and proxies that close idle connections (often after
        /// 60 s) keep the stream open. Off by default. Only at a block
        /// boundary, never inside a block; never recorded, never replayed,
        /// counted in [`StatsSnapshot::keep_alives`](crate::StatsSnapshot::keep_alives).
        /// Needs a tokio runtime with its timer.
        pub fn keep_alive(mut self, quiet: std::time::Duration) -> Self {
            self.config.options_mut().keep_alive = Some(quiet);
            self
        }

        /// The query parameter a client may send its cursor in, for
        /// browsers whose `EventSource` cannot set `Last-Event-ID` after a
        /// page reload: `last_event_id` by default, as Mercure and Nchan
        /// read it; `None` reads none. A request's `Last-Event-ID` header
        /// wins over it. The parameter is not part of the stream key, and
        /// goes upstream unchanged; the cursor also goes upstream as
        /// `Last-Event-ID`, exactly as if the client had sent the header,
        /// and every rule of a cursor applies to it. A value that does not
        /// percent-decode to UTF-8 is ignored.
        pub fn cursor_query(mut self, name: Option<&str>) -> Self {
            self.config.options_mut().cursor_query = name.map(str::to_owned);
            self
        }

        /// Whether one scope is one client, as an MCP session is: with
        /// [`linger`]($crate::SseResumeLayer::linger), a request whose `Last-Event-ID` its
        /// stream knows then also takes over the upstream of the response
        /// still attached to the stream (its client's old connection, not
        /// yet seen to be gone), and that response ends. On by default for
        /// the `Mcp-Session-Id` scope (the default, or
        /// [`Header::mcp_session_id`]($crate::key::Header::mcp_session_id)
        /// given to [`scope`](Self::scope)), off for any other. Only a
        /// response that opened alone can be ended this way, so two
        /// clients of one scope never end each other's responses over and
        /// over: the second gets its own upstream request.
        pub fn one_client_per_scope(mut self, one: bool) -> Self {
            self.config.options_mut().one_client = Some(one);
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

        /// Whether the upstream resumes from `Last-Event-ID` exactly where
        /// a client stopped, as an upstream with an event store does. Off
        /// by default: the layer cannot know. When a follow's holder died
        /// and the stream goes on from the upstream, asked from the last
        /// id the client has, the client first gets the gap signal (the
        /// `sse-resume-gap` event), unless this says the upstream lost
        /// nothing.
        pub fn upstream_resumes(mut self, resumes: bool) -> Self {
            self.config.options_mut().upstream_resumes = resumes;
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

/// The builder methods that set how streams are kept in process, and
/// those that need what they set (priming needs a history): on
/// [`SseResumeLayer`](crate::SseResumeLayer) only, so that every service a
/// layer makes shares one registry of streams, kept within one set of
/// limits, checked together when the layer makes a service.
macro_rules! limit_methods {
    () => {
        /// Whether each response of a scoped stream that reads an upstream
        /// starts with a priming event, as MCP 2025-11-25 describes: a
        /// stamped id with empty data, which a client keeps as its cursor,
        /// so that it can resume even before the upstream sent anything.
        /// It is kept in the history like any stamped event; a browser's
        /// `EventSource` dispatches it as a message with empty data, which
        /// MCP clients ignore. A response that takes a held stream over,
        /// follows one, or replays a complete one goes on with a stream
        /// primed already, and is not primed again. Never for MCP
        /// `2026-07-28` or later. Off by default.
        ///
        /// # Panics
        ///
        /// When the layer makes a service (`Layer::layer`) without
        /// [`stamp_ids`](Self::stamp_ids) and a replay history
        /// ([`history`](Self::history)): the priming event's id is a
        /// stamped one, which a client resumes from through the history.
        pub fn prime(mut self, prime: bool) -> Self {
            self.config.options_mut().prime = prime;
            self
        }

        /// The `retry` hint that goes with the priming event: how long a
        /// client waits before it reconnects. None by default. Setting it
        /// turns [`prime`](Self::prime) on.
        pub fn prime_retry(mut self, retry: std::time::Duration) -> Self {
            let options = self.config.options_mut();
            options.prime_retry = Some(retry);
            options.prime = true;
            self
        }

        /// Keeps a replay history of each stream within `limits`, so that
        /// a client reconnecting with `Last-Event-ID` gets the blocks it
        /// missed from the layer, even from an upstream that cannot
        /// resume. Off by default. In process, or, with a store that keeps
        /// one (`RedisStore`), in the store within the same limits, shared
        /// by every replica: the store's is the one replayed. Setting it
        /// empties the layer's streams.
        ///
        /// With [`linger`](Self::linger) and such a store, the process that
        /// reads a stream's upstream keeps its history in process too,
        /// within the same limits: a client that takes the stream over
        /// there gets what was recorded while it was away, including the
        /// blocks still on their way to the store (it is written behind
        /// the stream, in batches).
        pub fn history(mut self, limits: $crate::HistoryLimits) -> Self {
            self.config
                .set_limits(|streams| streams.history = Some(limits));
            self
        }

        /// The most ids each stream's window remembers (at least 1): 1024 by
        /// default, in process and in the store. Setting it empties the
        /// layer's streams.
        pub fn window_len(mut self, len: usize) -> Self {
            self.config.set_limits(|streams| streams.window_len = len);
            self
        }

        /// The most streams kept in process (at least 1): 100,000 by
        /// default. When full, the least recently used streams make room,
        /// those no response holds first. Setting it empties the layer's
        /// streams.
        pub fn max_streams(mut self, max: usize) -> Self {
            self.config.set_limits(|streams| streams.max_streams = max);
            self
        }

        /// The most streams kept in process per scope (at least 1): 64 by
        /// default. When full, the least recently used stream of the scope
        /// that no response holds makes room, so that a session's ended
        /// tool calls go before its live stream. A store that keeps
        /// streams (`RedisStore`) keeps as many per scope. Setting it
        /// empties the layer's streams.
        pub fn max_streams_per_scope(mut self, max: usize) -> Self {
            self.config
                .set_limits(|streams| streams.max_streams_per_scope = max);
            self
        }

        /// How long a stream no response holds may sit unused in process
        /// before it is let go: one hour by default. A stream a store keeps
        /// is let go from the process a few seconds after its last response
        /// ends, and lives on in the store. Setting it empties the layer's
        /// streams.
        pub fn idle_ttl(mut self, ttl: std::time::Duration) -> Self {
            self.config.set_limits(|streams| streams.idle_ttl = ttl);
            self
        }

        /// Keeps reading a stream's upstream for up to `time` when its
        /// client goes away first, recording every block into the stream's
        /// replay history and window as if forwarded, so that nothing the
        /// upstream sends meanwhile is lost, even from an upstream that
        /// can neither resume nor replay. Off by default.
        ///
        /// The client that comes back takes the upstream over instead of
        /// a new upstream request: a request whose `Last-Event-ID` the
        /// stream knows, or a `GET` on the stream's key. It gets the
        /// upstream response's status and headers, the history after its
        /// cursor (without one, what was recorded while it was away), then
        /// the live remainder. A per-request stream (a `POST`) whose
        /// upstream ended is complete: resuming it from a cursor its
        /// history holds replays the rest and ends, without an upstream
        /// request; a client that has all of it gets `204 No Content`,
        /// which stops an `EventSource` (an empty `200` would have it
        /// reconnect forever).
        ///
        /// A stream lingers only when its response is the only one
        /// attached, has a scope, and its request's `MCP-Protocol-Version`
        /// is before `2026-07-28` (there, closing a stream cancels its
        /// request). The upstream is let go when it ends, when `time` runs
        /// out with no client, or when more streams are held than
        /// [`max_held_streams`](Self::max_held_streams), oldest first.
        ///
        /// A stop is not a disconnect: an MCP session's end (a `DELETE`
        /// with the session's `Mcp-Session-Id`, the scope when it is MCP's,
        /// once the upstream answers it with `2xx`) ends every stream of
        /// that scope and credentials, held or read by a response still
        /// attached (which ends), the upstream seeing its body closed at
        /// once, and forgets their histories; and
        /// [`stop`](crate::SseResumeLayer::stop) ends one stream. With a
        /// store that replicas share, whichever holds the stream ends it.
        ///
        /// The background reading needs a tokio runtime, and the
        /// service's response bodies to be `Send + 'static`, as the
        /// bodies of hyper and axum are.
        ///
        /// # Panics
        ///
        /// When the layer makes a service (`Layer::layer`) without a
        /// replay history ([`history`](Self::history)), which linger
        /// records into.
        pub fn linger(mut self, time: std::time::Duration) -> Self {
            self.config.options_mut().linger = Some(time);
            self.config.set_limits(|streams| streams.linger = true);
            self
        }

        /// The most streams held at once, with [`linger`](Self::linger):
        /// 1024 by default. Past it, the oldest hold lets its upstream go.
        /// Setting it empties the layer's streams.
        pub fn max_held_streams(mut self, max: usize) -> Self {
            self.config.set_limits(|streams| streams.max_held = max);
            self
        }
    };
}
pub(crate) use limit_methods;

/// The default [`SseResumeLayer::max_id_len`](crate::SseResumeLayer::max_id_len): longer ids are forwarded
/// but not tracked.
pub(crate) const DEFAULT_MAX_ID_LEN: usize = 256;

/// What to do when the store fails at the start of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Go on without the store: the response is deduplicated within itself
    /// only, and nothing is injected. Counted and logged. The default.
    ///
    /// A client that resumes from a cursor then gets the gap signal first
    /// (the `sse-resume-gap` event and the `SSE-Resume-Gap: 1` header):
    /// nothing tells what it missed, and a live upstream does not resume
    /// from its cursor. Not with
    /// [`upstream_resumes`](crate::SseResumeLayer::upstream_resumes), whose
    /// upstream does.
    #[default]
    FailOpen,
    /// Answer `503 Service Unavailable` without calling the inner service.
    FailClosed,
}

/// What the layer and every service it makes share: the store, the
/// streams kept in process, and the options, which do not depend on
/// either. Cloned per service, read per request through one shared `Arc`
/// each.
pub(crate) struct Config<T> {
    pub(crate) store: Arc<T>,
    pub(crate) streams: Arc<Streams>,
    pub(crate) options: Arc<Options>,
}

/// The options that do not depend on the store.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) scope: Arc<BoxedExtractor>,
    pub(crate) credentials: Binding,
    pub(crate) stream_key: Arc<BoxedExtractor>,
    pub(crate) inject: bool,
    pub(crate) mcp_protocol_gate: bool,
    pub(crate) stamp_ids: bool,
    pub(crate) trust_ids: bool,
    pub(crate) upstream_resumes: bool,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) max_block_len: usize,
    pub(crate) max_id_len: usize,
    pub(crate) linger: Option<std::time::Duration>,
    pub(crate) cursor_query: Option<String>,
    pub(crate) keep_alive: Option<std::time::Duration>,
    pub(crate) prime: bool,
    pub(crate) prime_retry: Option<std::time::Duration>,
    /// Set by `one_client_per_scope`; by default, whether the scope is
    /// MCP's session id.
    pub(crate) one_client: Option<bool>,
    pub(crate) mcp_scope: bool,
    pub(crate) stats: Stats,
}

impl Options {
    pub(crate) fn one_client_per_scope(&self) -> bool {
        self.one_client.unwrap_or(self.mcp_scope)
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scope: Arc::new(BoxedExtractor::new(Header::mcp_session_id())),
            credentials: Binding::default(),
            stream_key: Arc::new(BoxedExtractor::new(DefaultStreamKey)),
            inject: true,
            mcp_protocol_gate: true,
            stamp_ids: false,
            trust_ids: false,
            upstream_resumes: false,
            failure_policy: FailurePolicy::FailOpen,
            max_block_len: DEFAULT_MAX_BLOCK_LEN,
            max_id_len: DEFAULT_MAX_ID_LEN,
            linger: None,
            cursor_query: Some(crate::query::DEFAULT_CURSOR_QUERY.to_owned()),
            keep_alive: None,
            prime: false,
            prime_retry: None,
            one_client: None,
            mcp_scope: true,
            stats: Stats::default(),
        }
    }
}

impl<T> Config<T> {
    pub(crate) fn new(store: T) -> Self {
        let options = Arc::<Options>::default();
        Self {
            store: Arc::new(store),
            streams: Arc::new(Streams::new(StreamLimits::default(), options.stats.clone())),
            options,
        }
    }

    /// The same options over `store`, with streams of their own: what the
    /// old store kept means nothing to the new one. The store takes the
    /// layer's limits that it keeps too.
    pub(crate) fn with_store<U: TrackerStore>(self, store: U) -> Config<U> {
        let limits = self.streams.limits();
        store.set_limits(StoreLimits::from(&limits));
        Config {
            store: Arc::new(store),
            streams: Arc::new(Streams::new(limits, self.options.stats.clone())),
            options: self.options,
        }
    }

    /// Carries out in this process the stops that the replicas sharing the
    /// store broadcast, from a task of its own: started once for the
    /// layer's streams, when the layer makes a service within a tokio
    /// runtime. The task ends with the store, or with the streams.
    pub(crate) fn listen_for_stops(&self)
    where
        T: TrackerStore,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.streams.start_listening() {
            return;
        }
        let Some(mut stops) = self.store.stops() else {
            return;
        };
        let streams = Arc::downgrade(&self.streams);
        runtime.spawn(async move {
            while let Some(stop) = stops.next().await {
                let Some(streams) = streams.upgrade() else {
                    return;
                };
                streams.carry_out(&stop);
            }
        });
    }

    /// Panics with what to add when a knob is set that cannot work with
    /// the others: better at start than a knob that silently does nothing.
    pub(crate) fn check(&self) {
        let history = self.streams.limits().history.is_some();
        let options = &self.options;
        assert!(
            options.linger.is_none() || history,
            "SseResumeLayer::linger needs a replay history, to keep what the upstream \
             sends while the client is away: add .history(HistoryLimits::new())"
        );
        assert!(
            !options.prime || (options.stamp_ids && history),
            "SseResumeLayer::prime (and prime_retry) needs stamped ids and a replay history, \
             for the priming event's id to resume from: add .stamp_ids(true) and \
             .history(HistoryLimits::new())"
        );
    }

    /// Changes how the streams are kept in process, emptying them, and
    /// tells the store the limits it keeps too.
    pub(crate) fn set_limits(&mut self, change: impl FnOnce(&mut StreamLimits))
    where
        T: TrackerStore,
    {
        let mut limits = self.streams.limits();
        change(&mut limits);
        self.store.set_limits(StoreLimits::from(&limits));
        self.streams = Arc::new(Streams::new(limits, self.options.stats.clone()));
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
            streams: Arc::clone(&self.streams),
            options: Arc::clone(&self.options),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Config<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store)
            .field("streams", &self.streams.limits())
            .field("options", &self.options)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::SseResumeLayer;
    use crate::key::{Cookie, Header};

    fn one_client(layer: &SseResumeLayer) -> bool {
        layer.config.options.one_client_per_scope()
    }

    #[test]
    fn one_client_per_scope_follows_the_mcp_session_scope_however_it_is_given() {
        assert!(one_client(&SseResumeLayer::new()));
        assert!(one_client(
            &SseResumeLayer::new().scope(Header::mcp_session_id())
        ));
        let other = http::HeaderName::from_static("x-session");
        assert!(!one_client(
            &SseResumeLayer::new().scope(Header::new(other))
        ));
        assert!(!one_client(&SseResumeLayer::new().scope(Cookie::new("s"))));
        let chosen = SseResumeLayer::new().scope(Cookie::new("s"));
        assert!(one_client(&chosen.one_client_per_scope(true)));
    }

    /// A store that keeps what the layer last told it of its limits.
    #[derive(Default)]
    struct Told(std::sync::Mutex<Vec<crate::StoreLimits>>);

    impl crate::TrackerStore for std::sync::Arc<Told> {
        async fn open(
            &self,
            _: &crate::StreamKey,
            _: Option<&str>,
        ) -> Result<crate::Snapshot, crate::StoreError> {
            Ok(crate::Snapshot::InProcess)
        }

        fn record(
            &self,
            _: &crate::StreamKey,
            _: u64,
            _: &crate::IdBatch,
        ) -> Result<(), crate::StoreError> {
            Ok(())
        }

        fn set_limits(&self, limits: crate::StoreLimits) {
            self.0.lock().unwrap().push(limits);
        }
    }

    #[test]
    fn the_store_takes_the_layers_limits_whenever_they_are_set() {
        let told = std::sync::Arc::new(Told::default());
        let history = crate::HistoryLimits::new().max_events(7);
        // Set before the store is given, and after.
        let layer = SseResumeLayer::new()
            .window_len(3)
            .store(std::sync::Arc::clone(&told))
            .max_streams_per_scope(5)
            .history(history);
        let last = *told.0.lock().unwrap().last().unwrap();
        assert_eq!(last.window_len(), 3);
        assert_eq!(last.max_streams_per_scope(), 5);
        assert_eq!(last.history(), Some(history));
        assert_eq!(
            told.0.lock().unwrap().len(),
            3,
            "once given, once per change"
        );
        // What the layer keeps in process is the same.
        let limits = layer.config.streams.limits();
        assert_eq!(crate::StoreLimits::from(&limits), last);
    }

    /// A service of `layer`'s: its inner one is of no matter here.
    fn make_service(layer: &SseResumeLayer) {
        drop(tower::Layer::layer(layer, ()));
    }

    #[test]
    #[should_panic(expected = "linger needs a replay history")]
    fn linger_without_a_history_panics_when_the_layer_makes_a_service() {
        make_service(&SseResumeLayer::new().linger(std::time::Duration::from_secs(1)));
    }

    #[test]
    #[should_panic(expected = "add .stamp_ids(true)")]
    fn priming_without_stamped_ids_panics_when_the_layer_makes_a_service() {
        let history = crate::HistoryLimits::new();
        make_service(&SseResumeLayer::new().history(history).prime(true));
    }

    #[test]
    #[should_panic(expected = "prime (and prime_retry) needs stamped ids and a replay history")]
    fn priming_without_a_history_panics_when_the_layer_makes_a_service() {
        make_service(&SseResumeLayer::new().stamp_ids(true).prime(true));
    }

    #[test]
    fn linger_and_priming_with_what_they_need_make_services() {
        let layer = SseResumeLayer::new()
            .linger(std::time::Duration::from_secs(1))
            .stamp_ids(true)
            .prime(true)
            .history(crate::HistoryLimits::new());
        make_service(&layer);
        make_service(&SseResumeLayer::new());
    }

    #[test]
    fn a_retry_hint_turns_priming_on() {
        let layer = SseResumeLayer::new().prime_retry(std::time::Duration::from_secs(3));
        assert!(layer.config.options.prime);
        assert!(!SseResumeLayer::new().config.options.prime);
    }
}
