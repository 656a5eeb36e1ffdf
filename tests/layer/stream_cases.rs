//! Who a response delivers to, case by case: each client gets every event
//! of its own upstream response that it does not have, and nothing of
//! another stream. Written once, run in one process ([`MemoryStore`]) and
//! across two replicas sharing one Redis.
//!
//! [`MemoryStore`]: tower_sse_resume::MemoryStore

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse_resume::{SseResumeLayer, TrackerStore};

use crate::support::*;

/// The layers of the replicas a client alternates between (one for a
/// single process), and how to wait until what one recorded is seen by all.
pub(crate) struct Replicas<T> {
    pub(crate) layers: Vec<SseResumeLayer<T>>,
    pub(crate) settle: Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
}

impl<T: TrackerStore> Replicas<T> {
    /// One replica: nothing to wait for.
    pub(crate) fn one(layer: SseResumeLayer<T>) -> Self {
        Self {
            layers: vec![layer],
            settle: Box::new(|| Box::pin(async {})),
        }
    }

    fn layer(&self, i: usize) -> &SseResumeLayer<T> {
        &self.layers[i % self.layers.len()]
    }

    /// Sends the requests in order, the `i`th to replica `i`, each to the
    /// end of its body, waiting for the stores to settle after each.
    async fn send(
        &self,
        transport: Transport,
        upstream: &Upstream,
        requests: Vec<Request<()>>,
    ) -> Vec<Received> {
        let mut received = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            let got = exchange(transport, self.layer(i), upstream, vec![request]).await;
            received.extend(got);
            (self.settle)().await;
        }
        received
    }
}

/// `id: <prefix><i>` events with data `<data> <i>`.
pub(crate) fn named(prefix: &str, data: &str, ids: impl IntoIterator<Item = u32>) -> String {
    ids.into_iter()
        .map(|i| format!("id: {prefix}{i}\ndata: {data} {i}\n\n"))
        .collect()
}

/// `/events?topic=a` and `/events?topic=b` are two streams: each numbers
/// from 1, and b's request carries no id of a's.
pub(crate) async fn two_topics<T: TrackerStore>(replicas: &Replicas<T>, transport: Transport) {
    let upstream = Upstream::new([
        Reply::sse([named("", "a", 1..=5)]),
        Reply::sse([named("", "b", 1..=5)]),
    ]);
    let got = replicas
        .send(
            transport,
            &upstream,
            vec![
                get("/events?topic=a", "s1").body(()).unwrap(),
                get("/events?topic=b", "s1").body(()).unwrap(),
            ],
        )
        .await;
    assert_eq!(got[0].text(), named("", "a", 1..=5));
    assert_eq!(
        got[1].text(),
        named("", "b", 1..=5),
        "topic b got everything"
    );
    let seen = upstream.seen();
    assert_eq!(seen[1].last_event_id(), None, "no id of topic a injected");
}

/// Two chat completions streamed by `POST /chat`, each numbering from 1:
/// two streams, each whole.
pub(crate) async fn two_post_responses<T: TrackerStore>(
    replicas: &Replicas<T>,
    transport: Transport,
) {
    let upstream = Upstream::new([
        Reply::sse([named("", "first answer", 1..=5)]),
        Reply::sse([named("", "second answer", 1..=5)]),
    ]);
    let post = || {
        Request::post("/chat")
            .header("mcp-session-id", "s1")
            .body(())
            .unwrap()
    };
    let got = replicas
        .send(transport, &upstream, vec![post(), post()])
        .await;
    assert_eq!(got[0].text(), named("", "first answer", 1..=5));
    assert_eq!(got[1].text(), named("", "second answer", 1..=5));
}

/// The upstream restarted and numbers from 1 again: the client reconnects
/// with `Last-Event-ID: 20` and gets all 30 new events, not just 21..30,
/// told first that it may have lost some: what the upstream had not sent
/// before its restart is lost to it.
pub(crate) async fn renumbered_upstream<T: TrackerStore>(
    replicas: &Replicas<T>,
    transport: Transport,
) {
    let upstream = Upstream::new([
        Reply::sse([named("", "before the deploy", 1..=20)]),
        Reply::sse([named("", "after the deploy", 1..=30)]),
    ]);
    let got = replicas
        .send(
            transport,
            &upstream,
            vec![
                get("/feed", "s1").body(()).unwrap(),
                get("/feed", "s1")
                    .header("last-event-id", "20")
                    .body(())
                    .unwrap(),
            ],
        )
        .await;
    assert_eq!(got[0].text(), named("", "before the deploy", 1..=20));
    // Its numbers went back: the upstream numbers anew, and the layer
    // cannot know that it went on from where the client stopped.
    assert_eq!(
        got[1].text(),
        gap_event("20") + &named("", "after the deploy", 1..=30),
        "the gap signal, then every new event, though its id was seen before"
    );
}

/// MCP tool calls A and B on `POST /mcp`; a `GET` resuming A from `A:3`
/// replays A's last two events and nothing of B's. The layers need a
/// replay history.
pub(crate) async fn another_streams_replay<T: TrackerStore>(
    replicas: &Replicas<T>,
    transport: Transport,
) {
    let upstream = Upstream::new([
        Reply::sse([named("A:", "a", 1..=5)]),
        Reply::sse([named("B:", "b", 1..=5)]),
        // The upstream resumes A itself: its own replay of A:5 is dropped.
        Reply::sse([named("A:", "a", 5..=6)]),
    ]);
    let post = || {
        Request::post("/mcp")
            .header("mcp-session-id", "s1")
            .body(())
            .unwrap()
    };
    let resume = get("/mcp", "s1")
        .header("last-event-id", "A:3")
        .body(())
        .unwrap();
    let got = replicas
        .send(transport, &upstream, vec![post(), post(), resume])
        .await;
    assert_eq!(got[1].text(), named("B:", "b", 1..=5));
    assert_eq!(
        got[2].text(),
        named("A:", "a", 4..=6),
        "A's events after the cursor, and nothing of B's"
    );
    let seen = upstream.seen();
    assert_eq!(
        seen[2].last_event_id(),
        Some("A:5"),
        "the upstream resumes A after what was replayed"
    );
}

/// Two responses of one stream opened at once, then read to their ends
/// in `order`; each upstream answers with its own events.
async fn open_both<T: TrackerStore>(
    layers: [&SseResumeLayer<T>; 2],
    replies: [Reply; 2],
    requests: [Request<()>; 2],
    order: [usize; 2],
) -> [String; 2] {
    let [first, second] = replies;
    let [one, two] = requests;
    let upstreams = [Upstream::new([first]), Upstream::new([second])];
    let a = layers[0].layer(upstreams[0].clone()).oneshot(one);
    let a = a.await.unwrap().into_body();
    let b = layers[1].layer(upstreams[1].clone()).oneshot(two);
    let b = b.await.unwrap().into_body();
    let mut bodies = [Some(a), Some(b)];
    let mut texts = [String::new(), String::new()];
    for i in order {
        let body = bodies[i].take().unwrap();
        let bytes = tokio::time::timeout(STEP, body.collect())
            .await
            .expect("body stalled")
            .unwrap()
            .to_bytes();
        texts[i] = String::from_utf8(bytes.to_vec()).unwrap();
    }
    texts
}

/// Reads `body` until it has given `want`, which must be all it gives
/// then: then polls it once more, while its upstream is quiet, so that
/// what it forwarded is handed to the store.
async fn read_exactly<B>(mut body: Pin<&mut B>, want: &str, what: &str)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut text = String::new();
    while text.len() < want.len() {
        let frame = tokio::time::timeout(STEP, body.frame()).await;
        let frame = frame.expect("body stalled").expect("more events").unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    assert_eq!(text, want, "{what}");
    let more = poll_once(pin!(body.frame()));
    assert!(more.is_pending(), "{what}: more than {want:?}");
}

/// Reads `body` to its end.
async fn read_rest<B>(body: Pin<&mut B>) -> String
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let bytes = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("body stalled")
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Two tabs of one session. Tab A (replica 0) gets 1..5 and its upstream
/// stays open; tab B (replica 1) opens after that, without a cursor, so
/// it is taken to have what its stream forwarded: 5 is injected upstream,
/// whose replay of 4 and 5 is dropped, and B gets exactly 6..10. Then,
/// with B read before or after it, A's upstream sends 6..10: A gets them
/// too, although B forwarded them on the stream (read `[1, 0]`).
pub(crate) async fn two_tabs<T: TrackerStore>(replicas: &Replicas<T>) {
    for order in [[0, 1], [1, 0]] {
        let session = format!("tabs-{}{}", order[0], order[1]);
        // A's upstream sends 1..5, then 6..10 when released.
        let (release_a, released) = oneshot::channel::<()>();
        let released = Arc::new(Mutex::new(Some(released)));
        let upstream_a = service_fn(move |_: Request<()>| {
            let released = released.lock().unwrap().take().expect("one request");
            async move {
                let first = stream::once(async {
                    Ok::<_, Infallible>(Frame::data(Bytes::from(events(1..=5))))
                });
                let then = stream::once(async move {
                    released.await.expect("released");
                    Ok(Frame::data(Bytes::from(events(6..=10))))
                });
                let response = Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(StreamBody::new(first.chain(then)))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        let a = replicas.layer(0).layer(upstream_a);
        let a = a.oneshot(get("/feed", &session).body(()).unwrap());
        let a = a.await.unwrap().into_body();
        let mut a = pin!(a);
        read_exactly(a.as_mut(), &events(1..=5), "tab A, before B opens").await;
        (replicas.settle)().await;

        let upstream_b = Upstream::new([Reply::sse([events(4..=10)])]);
        let b = replicas.layer(1).layer(upstream_b.clone());
        let b = b.oneshot(get("/feed", &session).body(()).unwrap());
        let b = b.await.unwrap().into_body();
        let mut b = pin!(b);
        let seen = upstream_b.seen();
        assert_eq!(seen[0].last_event_id(), Some("5"), "B's upstream resumes");

        let (rest_a, got_b) = if order == [0, 1] {
            release_a.send(()).unwrap();
            let rest_a = read_rest(a.as_mut()).await;
            (rest_a, read_rest(b.as_mut()).await)
        } else {
            let got_b = read_rest(b.as_mut()).await;
            release_a.send(()).unwrap();
            (read_rest(a.as_mut()).await, got_b)
        };
        let got_a = events(1..=5) + &rest_a;
        assert_eq!(got_a, events(1..=10), "tab A, read {order:?}");
        assert_eq!(
            got_b,
            events(6..=10),
            "tab B, opened after 1..5, read {order:?}"
        );
    }
}

/// A client has 1..5; a second response of the stream opens without a
/// cursor (its upstream sends 6..10), and a third with `Last-Event-ID: 3`
/// (its upstream sends 4..10). Whichever is read first, each gets what its
/// client lacks.
pub(crate) async fn concurrent_responses_one_with_a_cursor<T: TrackerStore>(
    replicas: &Replicas<T>,
) {
    for order in [[0, 1], [1, 0]] {
        let session = format!("cursor-{}{}", order[0], order[1]);
        let upstream = Upstream::new([Reply::sse([events(1..=5)])]);
        let first = exchange(
            Transport::Oneshot,
            replicas.layer(0),
            &upstream,
            vec![get("/feed", &session).body(()).unwrap()],
        )
        .await;
        assert_eq!(first[0].text(), events(1..=5));
        (replicas.settle)().await;
        let texts = open_both(
            [replicas.layer(0), replicas.layer(1)],
            [Reply::sse([events(6..=10)]), Reply::sse([events(4..=10)])],
            [
                get("/feed", &session).body(()).unwrap(),
                get("/feed", &session)
                    .header("last-event-id", "3")
                    .body(())
                    .unwrap(),
            ],
            order,
        )
        .await;
        assert_eq!(texts[0], events(6..=10), "without a cursor, read {order:?}");
        assert_eq!(texts[1], events(4..=10), "from cursor 3, read {order:?}");
    }
}
