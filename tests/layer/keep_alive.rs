//! Keep-alives on a quiet stream, in paused time: an upstream the test
//! feeds by hand.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};

use crate::support::*;
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

const QUIET: Duration = Duration::from_secs(30);

type Fed = UnsyncBoxBody<Bytes, Infallible>;

/// A response of `layer` over an upstream body that sends what the test
/// pushes into the returned sender, and ends when it is dropped.
async fn fed(
    layer: &SseResumeLayer,
    cursor: Option<&str>,
) -> (
    mpsc::UnboundedSender<&'static str>,
    Pin<Box<impl Body<Data = Bytes, Error = Infallible>>>,
) {
    let (sender, receiver) = mpsc::unbounded_channel::<&'static str>();
    let receiver = std::sync::Arc::new(std::sync::Mutex::new(Some(receiver)));
    let upstream = service_fn(move |_: Request<()>| {
        let receiver = receiver.lock().unwrap().take().expect("one request");
        let frames = stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(chunk.as_bytes()))),
                receiver,
            ))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap();
        std::future::ready(Ok::<Response<Fed>, Infallible>(response))
    });
    let mut request = get("/feed", "s1");
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    let response = layer
        .layer(upstream)
        .oneshot(request.body(()).unwrap())
        .await
        .unwrap();
    (sender, Box::pin(response.into_body()))
}

/// The next frame's data, or `None` when nothing comes within `wait`.
async fn within<B>(body: &mut Pin<Box<B>>, wait: Duration) -> Option<String>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let frame = tokio::time::timeout(wait, body.frame()).await.ok()?;
    let data = frame?.unwrap().into_data().unwrap();
    Some(String::from_utf8(data.to_vec()).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_quiet_stream_gets_a_comment_every_so_often() {
    let layer = SseResumeLayer::new().keep_alive(QUIET);
    let (upstream, mut body) = fed(&layer, None).await;
    upstream.send("id: 1\ndata: a\n\n").unwrap();
    assert_eq!(
        within(&mut body, Duration::ZERO).await.as_deref(),
        Some("id: 1\ndata: a\n\n")
    );
    assert_eq!(within(&mut body, QUIET / 2).await, None, "not yet");
    assert_eq!(within(&mut body, QUIET).await.as_deref(), Some(":\n\n"));
    assert_eq!(
        within(&mut body, QUIET + Duration::from_secs(1))
            .await
            .as_deref(),
        Some(":\n\n")
    );
    // An event resets the quiet.
    tokio::time::sleep(QUIET / 2).await;
    upstream.send("id: 2\ndata: b\n\n").unwrap();
    assert_eq!(
        within(&mut body, Duration::ZERO).await.as_deref(),
        Some("id: 2\ndata: b\n\n")
    );
    assert_eq!(within(&mut body, QUIET * 3 / 4).await, None);
    assert_eq!(within(&mut body, QUIET).await.as_deref(), Some(":\n\n"));
    assert_eq!(layer.stats().snapshot().keep_alives, 3);
}

#[tokio::test(start_paused = true)]
async fn never_inside_a_block() {
    let layer = SseResumeLayer::new().keep_alive(QUIET);
    let (upstream, mut body) = fed(&layer, None).await;
    upstream.send("id: 1\ndata: par").unwrap();
    assert_eq!(
        within(&mut body, QUIET * 3).await,
        None,
        "the block is still open"
    );
    upstream.send("t\n\n").unwrap();
    assert_eq!(
        within(&mut body, Duration::ZERO).await.as_deref(),
        Some("id: 1\ndata: part\n\n")
    );
    assert_eq!(within(&mut body, QUIET * 2).await.as_deref(), Some(":\n\n"));
}

#[tokio::test(start_paused = true)]
async fn keep_alives_are_off_by_default_and_never_recorded_or_replayed() {
    let plain = SseResumeLayer::new();
    let (upstream, mut body) = fed(&plain, None).await;
    upstream.send("id: 1\ndata: a\n\n").unwrap();
    within(&mut body, Duration::ZERO).await.unwrap();
    assert_eq!(within(&mut body, QUIET * 10).await, None, "off by default");

    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .keep_alive(QUIET);
    let (upstream, mut body) = fed(&layer, None).await;
    upstream.send("id: 1\ndata: a\n\n").unwrap();
    within(&mut body, Duration::ZERO).await.unwrap();
    assert_eq!(within(&mut body, QUIET * 2).await.as_deref(), Some(":\n\n"));
    upstream.send("id: 2\ndata: b\n\n").unwrap();
    within(&mut body, Duration::ZERO).await.unwrap();
    drop((upstream, body));
    let (_upstream, mut resumed) = fed(&layer, Some("1")).await;
    assert_eq!(
        within(&mut resumed, Duration::ZERO).await.as_deref(),
        Some("id: 2\ndata: b\n\n"),
        "the replay holds no keep-alive"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_before_the_first_byte_drops_its_byte_order_mark() {
    let layer = SseResumeLayer::new().keep_alive(QUIET);
    let (upstream, mut body) = fed(&layer, None).await;
    assert_eq!(within(&mut body, QUIET * 2).await.as_deref(), Some(":\n\n"));
    upstream.send("\u{feff}id: 1\ndata: a\n\n").unwrap();
    assert_eq!(
        within(&mut body, Duration::ZERO).await.as_deref(),
        Some("id: 1\ndata: a\n\n"),
        "mid-stream, a byte order mark would be part of a field name"
    );
}
