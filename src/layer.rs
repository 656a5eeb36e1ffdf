//! [`SseResumeLayer`]: makes [`SseResume`] services.

use tower_layer::Layer;

use crate::config::{Config, builder_methods, limit_methods};
use crate::service::SseResume;
use crate::store::{MemoryStore, TrackerStore};

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
}

impl<S, T> Layer<S> for SseResumeLayer<T> {
    type Service = SseResume<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SseResume::from_config(inner, self.config.clone())
    }
}
