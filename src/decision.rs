//! What a request decided when it opened: which stream, what its client
//! has, how its response starts, and how it is served (its [`Plan`]). The
//! service decides, once; the response future and the body only carry the
//! decision out.

use std::sync::Arc;

use http::HeaderValue;

use crate::headers::header_value;
use crate::linger::LingerConfig;
use crate::recorder::Recorder;
use crate::stamp::clock_epoch;
use crate::stats::Stats;
use crate::store::{Follow, Stop, TrackerStore};
use crate::stream::{
    Head, Opened, Replay, Response, Serve, Stream, StreamState, Streams, TakenOver,
};

/// How the request asks the upstream to resume, read from its headers
/// before the store is asked anything.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resumption {
    /// Add the stream's last id to a request without `Last-Event-ID`.
    pub(crate) inject: bool,
    /// After a replay from the history, ask from the newest id it holds.
    pub(crate) from_history: bool,
    /// Stamp ids on events without one.
    pub(crate) stamp: bool,
    /// Not a `GET`: a per-request stream.
    pub(crate) per_request: bool,
    /// One scope is one client.
    pub(crate) one_client: bool,
    /// Start with a priming event, with this `retry` hint.
    pub(crate) prime: Option<Option<std::time::Duration>>,
    /// The upstream resumes exactly from `Last-Event-ID`.
    pub(crate) upstream_resumes: bool,
}

/// What one request decided about its response: its place on its stream,
/// where its ids go, and how it starts. How it is served is its [`Plan`].
pub(crate) struct Decision {
    /// The response attached to its stream: what its client has.
    pub(crate) response: Response,
    pub(crate) recorder: Recorder,
    /// What goes out before the first byte of what serves the response.
    pub(crate) replay: Replay,
    /// Whether the gap signal follows the replay: the history ends where
    /// the stream's last reader stopped, and the upstream asked now may
    /// not go on from there.
    pub(crate) gap_after_replay: bool,
    /// Whether the gap signal comes before the replay: the client, without
    /// a cursor, may lack what was sent before it (see
    /// [`Opened::gap_first`](crate::stream::Opened)).
    pub(crate) gap_first: bool,
    /// Whether the stream knew the client's cursor: when it is a number,
    /// the upstream's first new event after it then shows whether the
    /// upstream numbers on from it, or anew (see `Dedup`).
    pub(crate) cursor_known: bool,
    /// The client's cursor, for the gap event.
    pub(crate) cursor: Option<String>,
    /// Where stamped ids start, when the layer stamps them.
    pub(crate) stamp_epoch: Option<u64>,
    /// How the response lingers when its client goes away, if it may.
    pub(crate) linger: Option<LingerConfig>,
    /// Whether the request was not a `GET`: a per-request stream.
    pub(crate) per_request: bool,
    /// Whether one scope is one client, so that a reconnect may end this
    /// response and take its upstream over.
    pub(crate) one_client: bool,
    /// Whether the response starts with a priming event, and its `retry`.
    pub(crate) prime: Option<Option<std::time::Duration>>,
    /// The scope whose streams end once the upstream accepts the request:
    /// an MCP session's `DELETE`.
    pub(crate) ends_scope: Option<EndScope>,
}

/// The end of a scope's streams, for when the upstream accepts the end of
/// the session.
pub(crate) struct EndScope {
    pub(crate) streams: Arc<Streams>,
    pub(crate) scope: String,
    /// Tells the other replicas that share the store: its
    /// [`broadcast_stop`](crate::store::TrackerStore::broadcast_stop).
    pub(crate) broadcast: Box<dyn FnOnce(&Stop) -> bool + Send>,
}

impl EndScope {
    pub(crate) fn run(self) {
        let ended = self.streams.end_scope(&self.scope);
        let told = (self.broadcast)(&Stop::Scope(self.scope));
        tracing::debug!(ended, told, "session ended: its streams end");
    }
}

/// How a request is served: settled once, before its response future
/// runs, and never changed after; the future only carries it out. `B` is
/// the inner service's response body.
pub(crate) enum Plan<B> {
    /// By the inner service, the request's `Last-Event-ID` as this says.
    Upstream(UpstreamCursor),
    /// By the upstream of the held stream, which its task handed over.
    TakeOver(TakenOver<B>),
    /// By what another replica records of the stream, as it records it.
    Follow {
        follow: Follow,
        /// The request opens its own standing stream (a `GET`, not the
        /// resume of a per-request one): it may go upstream when the
        /// stream's holder goes away.
        own: bool,
    },
    /// By the history alone: the stream is complete.
    Complete(Arc<Head>),
    /// Not at all: the store failed, and the layer fails closed.
    Reject,
}

impl<B> Plan<B> {
    /// What serves the response, for the logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Plan::Upstream(_) => "upstream",
            Plan::TakeOver(_) => "takeover",
            Plan::Follow { .. } => "follow",
            Plan::Complete(_) => "complete",
            Plan::Reject => "reject",
        }
    }
}

/// What the upstream request's `Last-Event-ID` becomes.
pub(crate) enum UpstreamCursor {
    Keep,
    Set(HeaderValue),
    /// The client's cursor was replayed from the history, and the upstream
    /// never sent an id to resume from: the cursor means nothing to it.
    Remove,
}

impl Decision {
    /// A stream in a scope, as the layer's streams opened it; with how
    /// the registry would serve it, and what the upstream would be asked.
    pub(crate) fn scoped<T: TrackerStore>(
        opened: Opened,
        store: Arc<T>,
        stats: Stats,
        resumption: Resumption,
        cursor: Option<String>,
        linger: Option<LingerConfig>,
    ) -> (Self, Serve, UpstreamCursor) {
        let Opened {
            key,
            response,
            cursor_known,
            replay,
            stamp_epoch,
            stored,
            serve,
            may_linger,
            unread,
            gap_first,
        } = opened;
        if cursor_known == Some(false) {
            stats.unknown_cursor();
            tracing::debug!(%key, "unknown client cursor: window cleared");
        }
        tracing::debug!(
            %key,
            ?cursor,
            ?cursor_known,
            replay = ?replay.summary(),
            gap_first,
            serve = serve.name(),
            "stream opened"
        );
        let replayed = matches!(replay, Replay::Blocks(_));
        // The newest id the upstream sent: stamped ids never go in the
        // window. One that is not a valid header value is never sent.
        let last_id = || {
            let id = response.stream().lock().last_id();
            id.and_then(|id| header_value(&id))
        };
        let upstream_cursor = if resumption.inject {
            last_id().map_or(UpstreamCursor::Keep, UpstreamCursor::Set)
        } else if resumption.from_history && replayed {
            last_id().map_or(UpstreamCursor::Remove, UpstreamCursor::Set)
        } else {
            UpstreamCursor::Keep
        };
        if let UpstreamCursor::Set(id) = &upstream_cursor {
            tracing::debug!(%key, last_event_id = ?id, "asking the upstream to resume");
        }
        let stamp_epoch = resumption
            .stamp
            .then(|| stamp_epoch.unwrap_or_else(clock_epoch));
        let decision = Self {
            response,
            recorder: match stored {
                Some(stored) => Recorder::to_store(store, key, stored, stats),
                None => Recorder::nowhere(stats),
            },
            // Unless what serves the response is the stream's own reader.
            gap_after_replay: replayed && unread && !resumption.upstream_resumes,
            gap_first,
            replay,
            cursor_known: cursor_known == Some(true),
            cursor,
            stamp_epoch,
            linger: linger.filter(|_| may_linger),
            per_request: resumption.per_request,
            one_client: resumption.one_client,
            prime: resumption.prime,
            ends_scope: None,
        };
        (decision, serve, upstream_cursor)
    }

    /// A request without a scope, or whose store failed open: a window of
    /// its own response only.
    pub(crate) fn unscoped(window_len: usize, stats: &Stats) -> Self {
        Self {
            response: Stream::new(StreamState::new(window_len, None)).attach(),
            recorder: Recorder::nowhere(stats.clone()),
            replay: Replay::Off,
            gap_after_replay: false,
            gap_first: false,
            cursor_known: false,
            cursor: None,
            stamp_epoch: None,
            linger: None,
            per_request: false,
            one_client: false,
            prime: None,
            ends_scope: None,
        }
    }
}
