//! [`SseResumeLayer`]: makes [`SseResume`] services.

use tower_layer::Layer;

use crate::config::{Config, builder_methods, limit_methods};
use crate::service::SseResume;
use crate::store::{MemoryStore, Stop, TrackerStore};

/// Makes the event streams of a service resumable and duplicate-free.
///
/// See the [crate documentation](crate) for what it does.
#[derive(Debug, Clone)]
pub struct SseResumeLayer<T = MemoryStore> {
    pub(crate) config: Config<T>,
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
            config: Config::new(MemoryStore::new()),
        }
    }
}

impl<T: TrackerStore> SseResumeLayer<T> {
    /// Keeps the streams in `store` behind the layer. Its streams in
    /// process start empty.
    pub fn store<U: TrackerStore>(self, store: U) -> SseResumeLayer<U> {
        SseResumeLayer {
            config: self.config.with_store(store),
        }
    }

    builder_methods!();
    limit_methods!();

    /// Stops the stream that `request` names, for a gateway's own "stop"
    /// endpoint (the user pressed stop on a generation, say): the stream
    /// of its scope and credentials whose events include the request's
    /// cursor (its `Last-Event-ID`, or the cursor in its URL), else its
    /// own stream key's.
    ///
    /// Its upstream ends now, whether held (the client is away) or read
    /// by responses still attached, which end too; and the stream
    /// is complete: a later resume gets what was read before the stop and
    /// the end, or `204`, and never a fresh upstream request that would
    /// start the generation again. Only credentials that opened the
    /// stream stop it. Needs [`linger`](Self::linger), which keeps what a
    /// stop leaves complete. With a store that replicas share
    /// (`RedisStore`), every replica is told, and the one that holds the
    /// stream stops it. Returns whether a stream was stopped here or the
    /// other replicas were told.
    pub fn stop(&self, request: &http::request::Parts) -> bool {
        let options = &self.config.options;
        let Some(scope) = (options.scope.extract(request))
            .and_then(|scope| options.credentials.bind(scope, request))
        else {
            return false;
        };
        let (stream, cursor) = crate::service::stream_and_cursor(options, &mut request.clone());
        let stopped = (self.config.streams).stop(&scope.scope, &stream, cursor.as_deref());
        let stop = Stop::Stream {
            scope: scope.scope,
            stream,
            cursor,
        };
        let told = self.config.store.broadcast_stop(&stop);
        tracing::debug!(stopped, told, "stop asked");
        stopped || told
    }
}

impl<S, T: TrackerStore> Layer<S> for SseResumeLayer<T> {
    type Service = SseResume<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        self.config.check();
        self.config.listen_for_stops();
        SseResume::from_config(inner, self.config.clone())
    }
}
