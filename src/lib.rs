//! Makes Server-Sent Events streams resumable and duplicate-free behind any
//! HTTP service: a Tower middleware for gateways, reverse proxies and MCP
//! proxies.
//!
//! When an SSE connection through a proxy drops, the client reconnects and
//! the upstream replays: without help the client gets events twice, or, if
//! the upstream is not asked to resume, loses them. [`SseResumeLayer`]
//! frames `text/event-stream` response bodies as they stream, drops the
//! blocks the client already has (the same id with the same event), and on
//! a reconnect
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
//! # Streams and responses
//!
//! A *stream* is what the upstream sends under one scope (by default the
//! `Mcp-Session-Id` header) and one stream key; a *response* is one client
//! connection's view of it.
//!
//! - **Which stream.** By default ([`key::DefaultStreamKey`]) a `GET` is a
//!   standing stream keyed by method, path and query: `/events?topic=a`
//!   and `/events?topic=b` are two. Any other method makes a per-request
//!   stream that no other request shares: two chat completions streamed by
//!   `POST /chat` never share a window. A later `GET` whose
//!   `Last-Event-ID` is one of a per-request stream's ids resumes that
//!   stream and no other, as MCP does. [`SseResumeLayer::stream_key`]
//!   chooses otherwise.
//! - **Who has what.** A response drops a block only when its own client
//!   has the id: the ids up to its cursor, or without one, the ids its
//!   stream had forwarded before it opened (the same assumption injection
//!   makes), and the ids it forwarded itself. Two tabs of one session each
//!   get every event. The stream records every id forwarded on any of its
//!   responses, for injection and cursor resolution.
//! - **What is a duplicate.** The same id with the same event again: the
//!   same data and event type as the block the id was forwarded with
//!   (line ends, comments and `retry` aside). An id that comes back with
//!   another event is a new event, as from an upstream that restarted and
//!   numbers from 1 again: it is forwarded, and the stream's ids start over
//!   from it. [`SseResumeLayer::trust_ids`] drops by id alone, for
//!   upstreams whose replays re-render their data.
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
//! // Each completion numbers its events from 1.
//! let upstream = service_fn(|_request: Request<()>| async {
//!     let body = Full::new(Bytes::from("id: 1\ndata: hello\n\nid: 2\ndata: world\n\n"));
//!     let response = Response::builder().header("content-type", "text/event-stream");
//!     Ok::<_, std::convert::Infallible>(response.body(body).unwrap())
//! });
//! let service = ServiceBuilder::new().layer(SseResumeLayer::new()).service(upstream);
//! for _ in 0..2 {
//!     let request = Request::post("/chat").header("mcp-session-id", "s1").body(()).unwrap();
//!     let response = service.clone().oneshot(request).await.unwrap();
//!     let body = response.into_body().collect().await.unwrap().to_bytes();
//!     assert_eq!(body, "id: 1\ndata: hello\n\nid: 2\ndata: world\n\n", "each gets all");
//! }
//! # }
//! ```
//!
//! # What it guarantees
//!
//! - **Byte-exact.** The output is the input with whole duplicate blocks
//!   removed: no re-encoding, line ends, comments and unknown fields as
//!   received.
//! - **Only explicit ids deduplicate.** A block is dropped only when its last
//!   valid `id` is non-empty, its client has it, and its event is the one
//!   the id came with. Blocks without an id, comments, `retry`-only
//!   blocks, an empty `id:` and a truncated last block always pass.
//! - **Never loses what the client has not confirmed.** A reconnect with
//!   `Last-Event-ID: X` forgets the ids forwarded after `X`, so the
//!   upstream's replay of them goes through; an `X` the window does not know
//!   clears it. A response opened before such a reconnect stops recording
//!   into the stream, and keeps what its own client has.
//! - **Scoped.** A stream never crosses scopes; a `Last-Event-ID` finds
//!   its stream within the scope, the request's own stream first. Requests
//!   without a scope are deduplicated within their own response only.
//! - **Careful injection.** `Last-Event-ID` is added only to a `GET` that
//!   has none, and never for MCP `2026-07-28` or later.
//! - **Off the hot path, bounded.** The layer keeps its streams in
//!   process and the body checks ids there; a store behind it is written
//!   in batches. Windows, ids, blocks, streams and idle time all have
//!   limits ([`SseResumeLayer::max_streams`] and the knobs beside it). A
//!   failing store degrades to pass-through (or `503` with
//!   [`FailurePolicy::FailClosed`]).
//! - Responses that are not `text/event-stream`, or are compressed, pass
//!   through untouched.
//!
//! # Security: whose a stream is
//!
//! Some requests are answered from what the layer kept, without the
//! upstream: a replay, a takeover, a follow on another replica, a
//! complete stream's rest; and some act on another's stream: an injected
//! cursor, the one-client displacement. A scope (a session id) is not enough
//! to trust for that: it leaks through logs, URLs and shared links. So a
//! stream belongs to the scope *and* the credentials of the request that
//! opened it ([`SseResumeLayer::credentials`]; by default
//! `Authorization`, `Proxy-Authorization` and an `access_token` in the
//! URL). A request with other credentials, or none, finds nothing of it
//! and goes to the upstream, which decides.
//!
//! Only a keyed fingerprint of the credentials is kept (HMAC-SHA-256,
//! [`SseResumeLayer::credential_key`]), never their bytes. Replicas over
//! one shared store need the same key. A refreshed token is other
//! credentials: its resume goes upstream, and gets the gap signal when the
//! upstream cannot resume. To keep resumes across refreshes, bind to the
//! principal an authentication layer in front resolved:
//!
//! ```
//! # use tower_sse_resume::SseResumeLayer;
//! #[derive(Clone)]
//! struct User {
//!     id: String,
//! }
//!
//! let layer = SseResumeLayer::new().credentials(|parts: &http::request::Parts| {
//!     parts.extensions.get::<User>().map(|user| user.id.clone())
//! });
//! # let _ = layer;
//! ```
//!
//! Requests without credentials are bound by their scope alone: whoever
//! knows it gets its streams. A scope carried in a URL is as secret as the
//! URL.
//!
//! # Where streams are kept
//!
//! The layer keeps every stream it serves in process: its window of ids,
//! its history, and the responses attached to it. Every service made from
//! one layer shares them. A [`TrackerStore`] is what is kept behind that:
//!
//! - [`MemoryStore`], the default, keeps nothing more: one process.
//! - `RedisStore` (feature `redis`) keeps the windows and histories in
//!   Redis, so that a client reconnecting to another replica of
//!   a gateway is resumed and deduplicated there too.
//! - A store of your own implements two methods over plain data, `open`
//!   and `record`; the trait's other five have defaults: `hold` and
//!   `follow`, for following across replicas, `broadcast_stop` and
//!   `stops`, for stops across replicas, and `set_limits`, which hands a
//!   store the layer's limits it keeps too. See the [`store`]
//!   module, and the conformance suite every store runs (`test_util`,
//!   feature `test-util`).
//!
//! # Resuming when the upstream cannot: the replay history
//!
//! Many SSE servers ignore `Last-Event-ID`, or forget their events when
//! they restart. Give the layer a [`HistoryLimits`] and it keeps the last
//! blocks of each stream as raw bytes, bounded by count, bytes and age
//! ([`SseResumeLayer::history`]; with `RedisStore` it is kept in Redis,
//! within the same limits, shared between replicas):
//!
//! ```
//! use tower_sse_resume::{HistoryLimits, SseResumeLayer};
//!
//! let layer = SseResumeLayer::new()
//!     .history(HistoryLimits::new().max_events(500))
//!     .stamp_ids(true); // for upstreams that send no ids
//! # let _ = layer;
//! ```
//!
//! A reconnect with a cursor in the history gets what followed it; one
//! with a cursor the history does not hold gets the gap signal:
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_sse_resume::{HistoryLimits, SseResumeLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // An upstream that cannot resume: it sends the same three events to
//! // every request, whatever its `Last-Event-ID`.
//! let upstream = service_fn(|_request: Request<()>| async {
//!     let body = "id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n";
//!     let response = Response::builder().header("content-type", "text/event-stream");
//!     Ok::<_, std::convert::Infallible>(response.body(Full::new(Bytes::from(body))).unwrap())
//! });
//! let layer = SseResumeLayer::new().history(HistoryLimits::new());
//! let service = ServiceBuilder::new().layer(layer).service(upstream);
//! let get = |cursor: Option<&str>| {
//!     let request = Request::get("/events").header("mcp-session-id", "s1");
//!     let request = match cursor {
//!         Some(cursor) => request.header("last-event-id", cursor),
//!         None => request,
//!     };
//!     service.clone().oneshot(request.body(()).unwrap())
//! };
//!
//! let first = get(None).await.unwrap().into_body().collect().await.unwrap();
//! assert_eq!(first.to_bytes(), "id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n");
//!
//! // The client got event 1 only: 2 and 3 come from the history, and the
//! // upstream's stream, all of it a replay, is dropped.
//! let resumed = get(Some("1")).await.unwrap().into_body().collect().await.unwrap();
//! assert_eq!(resumed.to_bytes(), "id: 2\ndata: b\n\nid: 3\ndata: c\n\n");
//!
//! // A cursor the history does not hold: still 200, the gap signal, then
//! // the stream as it comes.
//! let response = get(Some("zz")).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["sse-resume-gap"], "1");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(body.starts_with(b"event: sse-resume-gap\ndata: zz\n\nid: 1\ndata: a\n\n"));
//! # }
//! ```
//!
//! - **A cursor in the history.** A client reconnecting with
//!   `Last-Event-ID: X` first gets the blocks that followed `X`, from the
//!   history, byte for byte; then the upstream's stream, which is asked to
//!   resume from the newest id the history holds (or from none when the
//!   upstream never sent one), and deduplicated as ever, so the upstream's
//!   own replay of what was just sent is dropped. The history and the
//!   window are one snapshot, taken under one lock (one transaction in
//!   Redis), and a stream opened before the reconnect stops recording, so a
//!   replay racing live events doubles nothing and skips nothing.
//! - **A cursor not in the history** (evicted, expired, or never seen): the
//!   response is still `200` (an `EventSource` retries other statuses
//!   forever), starts with an event of type [`GAP_EVENT`]
//!   (`event: sse-resume-gap`, the cursor as its data, no id, so the
//!   client keeps its cursor) and carries the header
//!   [`SSE_RESUME_GAP`]`: 1`; then the stream goes on live, with the
//!   cursor applied to the window as without a history. Listen for it with
//!   `source.addEventListener("sse-resume-gap", ...)`.
//! - **What it keeps**: every block that dispatches an event or carries an
//!   id, as forwarded, once: a block with an id when its stream first
//!   forwards the id (two responses of one stream never put one upstream
//!   event in twice), a block without one from a single response, the
//!   one that opened when no other response of the stream was attached
//!   (another's would be the same upstream events again, which nothing
//!   tells apart; its clients' stamped ids then resume with a gap
//!   signal). Comments and `retry`-only blocks are not kept. A
//!   block it cannot keep (over the byte limit, over the block or id length
//!   limit) ends the history before it: no replay ever skips an event
//!   silently; a cursor from before it is a gap.
//! - **Stamped ids** ([`SseResumeLayer::stamp_ids`]): events without an id
//!   get `id: <epoch>-<n>`, unique and rising per stream, so clients of an
//!   upstream that numbers nothing can resume too. Stamped ids are never
//!   sent upstream, and never deduplicate.
//!
//! # Clients that go away: linger and takeover
//!
//! With [`SseResumeLayer::linger`], a client that goes away before its
//! upstream ends leaves the upstream read on in the background for a while,
//! every block recorded into the history as if forwarded, so that an
//! upstream that can neither resume nor replay loses nothing either. The
//! client that comes back takes the upstream over instead of a new
//! upstream request: the upstream's status and headers, the history after
//! its cursor, then the live remainder, each event once. A per-request
//! stream whose upstream ended is complete, and resumes from its history
//! alone.
//!
//! ```
//! use std::time::Duration;
//! use tower_sse_resume::{HistoryLimits, SseResumeLayer};
//!
//! let layer = SseResumeLayer::new()
//!     .history(HistoryLimits::new())
//!     .linger(Duration::from_secs(30))
//!     .max_held_streams(10_000);
//! # let _ = layer;
//! ```
//!
//! With `RedisStore` and a history, a client that comes back on another
//! replica *follows* the stream there: the replay from the shared history,
//! then what the holding replica records, until the stream ends, with no
//! upstream request. When the holder dies, a standing stream goes on from
//! the upstream, asked from its last recorded id, with the gap signal
//! before the upstream's first event unless that event shows it goes on
//! from there (or [`SseResumeLayer::upstream_resumes`] says the upstream
//! lost nothing); the replica then holds the stream itself, lingering as
//! its holder did. A per-request one ends with the gap signal ([`TrackerStore::hold`],
//! [`TrackerStore::follow`]; `RedisStore` documents what each case can
//! lose). The inner service, its future and the request body must be
//! `Send + 'static` for it, as hyper's and axum's are.
//!
//! # When something fails: what the client sees
//!
//! The rule: where the layer cannot know that what follows continues
//! exactly where the client stopped, the client gets the *gap signal*
//! first (an `event: sse-resume-gap` whose data is its cursor, and the
//! `SSE-Resume-Gap: 1` header when it starts the response), never silence.
//! [`SseResumeLayer::upstream_resumes`] declares an upstream that resumes
//! exactly from `Last-Event-ID`, and keeps the signal off where the layer
//! relies on it.
//!
//! | What happened | What the client sees |
//! |---|---|
//! | Its cursor is in the history | The events after it, then the live stream, each once |
//! | Its cursor is in the history, but nobody read the upstream since (no linger, the linger ran out, the holder died) | The events after it, then the gap signal before the upstream's first event, unless the upstream shows it goes on from there (it repeats the last id, or numbers on from it) |
//! | Its cursor is not in the history (evicted, unknown) | `200`, the gap signal, then the live stream |
//! | No history: its cursor goes upstream as `Last-Event-ID` | What the upstream resends, deduplicated; the upstream decides what is lost |
//! | Its cursor is a number the stream knows, and the upstream's first new event has a lower one: it numbers anew, as after a restart | The gap signal before that event: what the upstream had not sent before is lost to it |
//! | A complete stream, resumed from its last event | `204 No Content`: an `EventSource` stops |
//! | The store fails as the request starts | Fail open: the upstream's stream, deduplicated within the response, after the gap signal when it resumed from a cursor. Fail closed: `503` |
//! | The store fails mid-stream | Nothing: the stream goes on; ids and blocks not written leave a hole, and a later replay across it gets the gap signal |
//! | A block longer than [`max_block_len`](SseResumeLayer::max_block_len) | Forwarded whole, not deduplicated; the history forgets what came before it |
//! | The upstream body fails | Every whole block before the error, then the error |
//! | The replica it follows on dies | A standing stream: the upstream from the last recorded id, after the gap signal unless it shows it goes on from there. A per-request stream: the gap signal, then the end |
//! | A replay crosses a hole a gap signal told of | The gap signal again, where the hole is: the history keeps it |
//! | It comes back without a cursor to where its client went away (a takeover, or a follow on another replica), after it was sent ids: its connection was cut before they reached it, say | The gap signal (with empty data), then what came while it was away, then the live stream: it names none of the ids it was sent, so it may lack them |
//! | A stop, or its MCP session's `DELETE` | Its response ends; a later resume gets the rest and the end, or `204` |
//!
//! Known limits: without linger, a request without a cursor is taken to
//! have what its stream forwarded (as injection assumes), so a client
//! whose connection was cut before any event reached it, and that comes
//! back without a cursor to a fresh upstream request, misses what was
//! written to that connection as it went, unsaid. With linger, the
//! takeover or follow that serves it starts with the gap signal (above).
//! A stop is kept in Redis for the store's TTL (the newest 1,024 or so),
//! so that a replica whose subscription was down hears it once back.
//!
//! The [`framer`] module, the sans-IO parser underneath, is usable on its
//! own.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod framer;
pub mod key;
pub mod store;
mod stream;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

mod body;
mod config;
mod credentials;
mod decision;
mod future;
mod headers;
mod layer;
mod linger;
mod lock;
mod query;
mod recorder;
mod service;
mod stamp;
mod stats;

pub use body::{GAP_EVENT, SseResumeBody};
pub use config::FailurePolicy;
pub use future::ResponseFuture;
pub use headers::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, SSE_RESUME_GAP};
pub use layer::SseResumeLayer;
pub use service::SseResume;
pub use stats::{Stats, StatsSnapshot};
pub use store::{
    IdBatch, MemoryStore, Snapshot, StoreError, StoreLimits, StoredStream, StreamKey, TrackerStore,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::{RedisStats, RedisStore};
pub use stream::{HistoryLimits, Replay};
