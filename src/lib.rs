//! Makes Server-Sent Events streams resumable and duplicate-free behind any
//! HTTP service: a Tower middleware for gateways, reverse proxies and MCP
//! proxies.
//!
//! When an SSE connection through a proxy drops, the client reconnects and
//! the upstream replays: without help the client gets events twice, or, if
//! the upstream is not asked to resume, loses them. [`SseResumeLayer`]
//! frames `text/event-stream` response bodies as they stream, drops the
//! blocks whose id the client's stream already carried, and on a reconnect
//! without `Last-Event-ID` asks the upstream to resume where the stream left
//! off.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_sse_resume::SseResumeLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // An upstream that replays events the client already has.
//! let upstream = service_fn(|_request: Request<()>| async {
//!     let body = "id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 1\ndata: a\n\n";
//!     let response = Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(Full::new(Bytes::from(body)))
//!         .unwrap();
//!     Ok::<_, std::convert::Infallible>(response)
//! });
//! let service = ServiceBuilder::new().layer(SseResumeLayer::new()).service(upstream);
//!
//! let request = Request::get("/mcp").header("mcp-session-id", "s1").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
//! # }
//! ```
//!
//! # What it guarantees
//!
//! - **Byte-exact.** The output is the input with whole duplicate blocks
//!   removed: no re-encoding, line ends, comments and unknown fields as
//!   received.
//! - **Only explicit ids deduplicate.** A block is dropped only when its last
//!   valid `id` is non-empty and in the stream's window. Blocks without an
//!   id, comments, `retry`-only blocks, an empty `id:` and a truncated last
//!   block always pass.
//! - **Never loses what the client has not confirmed.** A reconnect with
//!   `Last-Event-ID: X` forgets the ids forwarded after `X`, so the
//!   upstream's replay of them goes through; an `X` the window does not know
//!   clears it.
//! - **Scoped.** Trackers are keyed by a scope (by default the
//!   `Mcp-Session-Id` header) and a stream key (by default method and
//!   path); a `Last-Event-ID` finds the stream it was recorded on within the
//!   scope. Requests without a scope are deduplicated within their own
//!   response only.
//! - **Careful injection.** `Last-Event-ID` is added only to a `GET` that
//!   has none, and never for MCP `2026-07-28` or later.
//! - **Off the hot path, bounded.** The body checks ids in process; the
//!   store is written in batches. Windows, ids, blocks, keys and idle time
//!   all have limits. A failing store degrades to pass-through (or `503`
//!   with [`FailurePolicy::FailClosed`]).
//! - Responses that are not `text/event-stream`, or are compressed, pass
//!   through untouched.
//!
//! The [`framer`] module, the sans-IO parser underneath, is usable on its
//! own.

pub mod framer;
pub mod key;
pub mod store;
pub mod tracker;

mod body;
mod future;
mod layer;
mod service;
mod stamp;
mod stats;

pub use body::{GAP_EVENT, SseResumeBody};
pub use future::ResponseFuture;
pub use layer::{DEFAULT_MAX_ID_LEN, FailurePolicy, SseResumeLayer};
pub use service::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, SSE_RESUME_GAP, SseResume};
pub use stats::{Stats, StatsSnapshot};
pub use store::{IdBatch, MemoryStore, Opened, StoreError, StreamKey, TrackerStore};
#[cfg(feature = "redis")]
pub use store::{RedisStats, RedisStore};
pub use tracker::{HistoryLimits, Replay};
