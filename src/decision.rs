//! What a request decided when it opened: which stream, what its client
//! has, what to ask the upstream, and how its response starts. The service
//! makes the decision; the response future and the body only apply it.

use std::sync::Arc;

use http::HeaderValue;

use crate::headers::header_value;
use crate::linger::LingerConfig;
use crate::recorder::Recorder;
use crate::stamp::clock_epoch;
use crate::stats::Stats;
use crate::store::{Follow, TrackerStore};
use crate::stream::{Attachment, Handover, Opened, Replay, Serve, Stream, StreamState};

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
}

/// What one request decided: its response's place on its stream, where its
/// ids go, what to ask the upstream, and how the response starts.
pub(crate) struct Decision {
    /// The response attached to its stream: what its client has.
    pub(crate) attachment: Attachment,
    pub(crate) recorder: Recorder,
    /// Taken when the request goes upstream.
    pub(crate) upstream_cursor: UpstreamCursor,
    /// What goes out before the upstream's first byte.
    pub(crate) replay: Replay,
    /// The client's cursor, for the gap event.
    pub(crate) cursor: Option<String>,
    /// Where stamped ids start, when the layer stamps them.
    pub(crate) stamp_epoch: Option<u64>,
    /// How the response is served: by the inner service, or by a held
    /// stream's upstream or history.
    pub(crate) serve: Serve,
    /// The held stream's upstream, once its task handed it over.
    pub(crate) handover: Option<Handover>,
    /// The stream as another replica records it, when this response
    /// follows it.
    pub(crate) follow: Option<Follow>,
    /// Whether the request itself opens the stream it follows (a `GET` on
    /// its standing stream, not a resume of a per-request one): then it
    /// may go upstream when the stream's holder goes away.
    pub(crate) follows_own: bool,
    /// How the response lingers when its client goes away, if it may.
    pub(crate) linger: Option<LingerConfig>,
    /// Whether the request was not a `GET`: a per-request stream.
    pub(crate) per_request: bool,
    /// Whether one scope is one client, so that a reconnect may end this
    /// response and take its upstream over.
    pub(crate) one_client: bool,
    /// Whether the response starts with a priming event, and its `retry`.
    pub(crate) prime: Option<Option<std::time::Duration>>,
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
    /// A stream in a scope, as the layer's streams opened it.
    pub(crate) fn scoped<T: TrackerStore>(
        opened: Opened,
        store: Arc<T>,
        stats: Stats,
        resumption: Resumption,
        cursor: Option<String>,
        linger: Option<LingerConfig>,
    ) -> Self {
        let Opened {
            key,
            attachment,
            cursor_known,
            replay,
            stamp_epoch,
            stored,
            serve,
            may_linger,
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
            serve = serve.name(),
            "stream opened"
        );
        let replayed = matches!(replay, Replay::Blocks(_));
        // The newest id the upstream sent: stamped ids never go in the
        // window. One that is not a valid header value is never sent.
        let last_id = || {
            let id = attachment.stream.lock().last_id();
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
        Self {
            attachment,
            recorder: match stored {
                Some(stored) => Recorder::to_store(store, key, stored, stats),
                None => Recorder::nowhere(stats),
            },
            upstream_cursor,
            replay,
            cursor,
            stamp_epoch,
            serve,
            handover: None,
            follow: None,
            follows_own: false,
            linger: linger.filter(|_| may_linger),
            per_request: resumption.per_request,
            one_client: resumption.one_client,
            prime: resumption.prime,
        }
    }

    /// A request without a scope, or whose store failed open: a window of
    /// its own response only.
    pub(crate) fn unscoped(window_len: usize, stats: &Stats) -> Self {
        Self {
            attachment: Stream::new(StreamState::new(window_len, None)).attach(),
            recorder: Recorder::nowhere(stats.clone()),
            upstream_cursor: UpstreamCursor::Keep,
            replay: Replay::Off,
            cursor: None,
            stamp_epoch: None,
            serve: Serve::Upstream,
            handover: None,
            follow: None,
            follows_own: false,
            linger: None,
            per_request: false,
            one_client: false,
            prime: None,
        }
    }
}
