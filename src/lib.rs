//! Tower middleware that makes Server-Sent Events streams resumable and
//! duplicate-free behind any HTTP service.

pub mod framer;
pub mod key;
pub mod store;
pub mod tracker;

mod body;
mod future;
mod layer;
mod service;
mod stats;

pub use body::SseResumeBody;
pub use future::ResponseFuture;
pub use layer::{DEFAULT_MAX_ID_LEN, FailurePolicy, SseResumeLayer};
pub use service::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, SseResume};
pub use stats::{Stats, StatsSnapshot};
pub use store::{MemoryStore, StoreError, StreamKey, TrackerStore};
