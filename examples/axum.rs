//! `SseResumeLayer` on an axum `Router` that serves its own event stream,
//! with the session from the `Mcp-Session-Id` header (the default scope).
//!
//! ```text
//! cargo run --example axum
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use tokio::net::TcpListener;
use tower_sse_resume::SseResumeLayer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/events", get(events))
        .layer(SseResumeLayer::new());

    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    println!("try:  curl -N -H 'Mcp-Session-Id: s1' {url}");
    println!("stop it, run it again: it goes on after the last event it got, once each");
    axum::serve(listener, app).await
}

/// One event a second, numbered. Like many event logs it resumes a little
/// before the client's `Last-Event-ID` (at least once): the layer drops what
/// the client already has, and sends the last id it forwarded when a client
/// reconnects without one.
async fn events(headers: HeaderMap) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last: u64 = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let first = last.saturating_sub(3) + 1;
    let events = stream::unfold(first, move |id| async move {
        if id > last + 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = Event::default()
            .id(id.to_string())
            .data(format!("event {id}"));
        Some((Ok(event), id + 1))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
