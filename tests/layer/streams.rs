//! Streams and responses in one process: the cases of `stream_cases`
//! through `oneshot` and a real hyper server, two tabs over HTTP, and any
//! interleaving of two responses of one stream.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use crate::stream_cases::*;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse_resume::{HistoryLimits, MemoryStore, SseResumeLayer};

fn replicas() -> Replicas<MemoryStore> {
    Replicas::one(SseResumeLayer::new())
}

#[tokio::test]
async fn two_topics_are_two_streams() {
    for transport in TRANSPORTS {
        two_topics(&replicas(), transport).await;
    }
}

#[tokio::test]
async fn two_post_responses_are_two_streams() {
    for transport in TRANSPORTS {
        two_post_responses(&replicas(), transport).await;
    }
}

#[tokio::test]
async fn a_renumbered_upstream_loses_nothing() {
    for transport in TRANSPORTS {
        renumbered_upstream(&replicas(), transport).await;
    }
}

#[tokio::test]
async fn a_replay_holds_only_its_own_stream() {
    for transport in TRANSPORTS {
        let layer = SseResumeLayer::new().history(HistoryLimits::new());
        another_streams_replay(&Replicas::one(layer), transport).await;
    }
}

#[tokio::test]
async fn two_tabs_each_get_every_event() {
    two_tabs(&replicas()).await;
}

#[tokio::test]
async fn two_tabs_over_http_each_get_every_event() {
    // Both requests are in before either upstream sends its first event.
    let both_in = Arc::new(tokio::sync::Barrier::new(2));
    let upstream = service_fn(move |_: Request<hyper::body::Incoming>| {
        let both_in = Arc::clone(&both_in);
        async move {
            both_in.wait().await;
            let response = Response::builder()
                .header("content-type", "text/event-stream")
                .body(http_body_util::Full::new(Bytes::from(events(1..=10))))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let server = Server::start(SseResumeLayer::new().layer(upstream)).await;
    let (a, b) = tokio::join!(
        server.send(get("/feed", "s1").body(()).unwrap()),
        server.send(get("/feed", "s1").body(()).unwrap()),
    );
    assert_eq!(a.text(), events(1..=10));
    assert_eq!(b.text(), events(1..=10));
}

#[tokio::test]
async fn concurrent_responses_where_one_has_a_cursor() {
    concurrent_responses_one_with_a_cursor(&replicas()).await;
}

#[tokio::test]
async fn a_second_response_still_drops_what_its_client_has() {
    // A client has 1..3; its second response's upstream replays 2 and 3
    // before 4, while a first response is still attached.
    let layer = SseResumeLayer::new();
    let upstream = Upstream::new([
        Reply::sse([events(1..=3)]),
        Reply::sse([events(1..=3)]),
        Reply::sse([events(2..=4)]),
    ]);
    let service = layer.layer(upstream);
    let got = read(
        service
            .clone()
            .oneshot(get("/feed", "s1").body(()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.text(), events(1..=3));
    let held = service
        .clone()
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    let second = service
        .oneshot(get("/feed", "s1").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(read(second).await.text(), events(4..=4));
    assert_eq!(read(held).await.text(), "", "the held one had 1..3 too");
}

/// One event of a scripted upstream: its id and which of two events with
/// that id it is.
#[derive(Debug, Clone, Copy)]
struct Event {
    id: u8,
    variant: u8,
}

impl Event {
    fn block(self) -> String {
        format!(
            "id: {}\ndata: variant {} of {}\n\n",
            self.id, self.variant, self.id
        )
    }
}

fn event() -> impl Strategy<Value = Event> {
    (1..8u8, 0..2u8).prop_map(|(id, variant)| Event { id, variant })
}

/// What a client has, as DESIGN.md says: a list of ids with their events
/// that starts over from an id that comes back with another event.
#[derive(Debug, Clone, Default)]
struct Has(Vec<(u8, u8)>);

impl Has {
    /// Whether `event` is new to this client; records it when it is.
    fn observe(&mut self, event: Event) -> bool {
        match self.0.iter().find(|(id, _)| *id == event.id) {
            Some((_, variant)) if *variant == event.variant => false,
            Some(_) => {
                self.0 = vec![(event.id, event.variant)];
                true
            }
            None => {
                self.0.push((event.id, event.variant));
                true
            }
        }
    }
}

/// A body that yields its chunks one per poll.
fn chunked(blocks: Vec<String>) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
    let frames = blocks
        .into_iter()
        .map(|block| Ok(Frame::data(Bytes::from(block))));
    StreamBody::new(futures_util::stream::iter(frames))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two responses of one stream, the second opened after `opens_after`
    /// polls of the first, polled in the order `schedule` says: each
    /// client gets every event of its own upstream it did not have, and
    /// nothing else.
    #[test]
    fn any_interleaving_of_two_responses(
        first in prop::collection::vec(event(), 0..12),
        second in prop::collection::vec(event(), 0..12),
        opens_after in 0..6usize,
        schedule in prop::collection::vec(any::<bool>(), 0..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let out = run(layer_for_one_stream(), &first, &second, opens_after, &schedule).await;
            let [expected_first, expected_second] = expected(&first, &second, opens_after, &schedule);
            prop_assert_eq!(&out[0], &expected_first);
            prop_assert_eq!(&out[1], &expected_second);
            Ok(())
        })?;
    }
}

/// A layer whose stream key ignores the query, so that `/feed?0` and
/// `/feed?1` are two responses of one stream with their own upstreams.
fn layer_for_one_stream() -> SseResumeLayer {
    SseResumeLayer::new()
        .stream_key(|parts: &http::request::Parts| Some(parts.uri.path().to_owned()))
}

/// Polls the two responses as `schedule` says (`false`: the first, `true`:
/// the second), then both to their ends, and returns what each client got.
async fn run(
    layer: SseResumeLayer,
    first: &[Event],
    second: &[Event],
    opens_after: usize,
    schedule: &[bool],
) -> [String; 2] {
    let upstreams = [first.to_vec(), second.to_vec()];
    let service = layer.layer(service_fn(move |request: Request<()>| {
        let which: usize = request.uri().query().unwrap().parse().unwrap();
        let blocks = upstreams[which].iter().map(|e| e.block()).collect();
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(chunked(blocks))
            .unwrap();
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    }));
    let open = |which: usize| {
        let request = get(&format!("/feed?{which}"), "s1").body(()).unwrap();
        service.clone().oneshot(request)
    };
    let mut out = [Vec::new(), Vec::new()];
    let mut a = open(0).await.unwrap().into_body();
    for _ in 0..opens_after {
        poll_into(&mut a, &mut out[0]);
    }
    let mut b = open(1).await.unwrap().into_body();
    for &second in schedule {
        if second {
            poll_into(&mut b, &mut out[1]);
        } else {
            poll_into(&mut a, &mut out[0]);
        }
    }
    while poll_into(&mut a, &mut out[0]) {}
    while poll_into(&mut b, &mut out[1]) {}
    out.map(|bytes| String::from_utf8(bytes).unwrap())
}

/// Polls `body` once and appends its data; `false` once it has ended.
fn poll_into<B>(body: &mut B, out: &mut Vec<u8>) -> bool
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    match poll_once(pin!(body.frame())) {
        Poll::Ready(Some(frame)) => {
            if let Some(data) = frame.unwrap().data_ref() {
                out.extend_from_slice(data);
            }
            true
        }
        Poll::Ready(None) => false,
        Poll::Pending => panic!("an iterator body is always ready"),
    }
}

/// What each client should get, by the model: the second client has, when
/// it opens, what the stream forwarded so far (the same assumption
/// injection makes); each client then gets each of its upstream's events
/// that it does not have.
fn expected(
    first: &[Event],
    second: &[Event],
    opens_after: usize,
    schedule: &[bool],
) -> [String; 2] {
    let upstreams = [first, second];
    let mut stream = Has::default();
    let mut clients = [Has::default(), Has::default()];
    let mut next = [0, 0];
    let mut out = [String::new(), String::new()];
    // One poll of a body reads upstream chunks, one event each, until it
    // has one to send or the upstream ends.
    let mut step = |which: usize, stream: &mut Has, clients: &mut [Has; 2]| {
        while let Some(&event) = upstreams[which].get(next[which]) {
            next[which] += 1;
            if clients[which].observe(event) {
                stream.observe(event);
                out[which].push_str(&event.block());
                return;
            }
        }
    };
    for _ in 0..opens_after {
        step(0, &mut stream, &mut clients);
    }
    clients[1] = stream.clone();
    for &second in schedule {
        step(usize::from(second), &mut stream, &mut clients);
    }
    for which in [0, 1] {
        for _ in 0..upstreams[which].len() {
            step(which, &mut stream, &mut clients);
        }
    }
    out
}

#[tokio::test]
async fn many_tool_calls_never_push_out_a_live_stream() {
    // A session holds its `GET` stream open while it makes more tool calls
    // than a scope keeps streams: the calls' ended streams go first.
    let layer = SseResumeLayer::new().max_streams_per_scope(8);
    let mut replies = vec![Reply::sse([events(1..=3)])];
    replies.extend((0..20).map(|_| Reply::sse([named("", "call", 1..=2)])));
    replies.push(Reply::sse([events(4..=5)]));
    let upstream = Upstream::new(replies);
    let service = layer.layer(upstream.clone());
    let live = service
        .clone()
        .oneshot(get("/mcp", "s1").body(()).unwrap())
        .await
        .unwrap();
    let (parts, body) = live.into_parts();
    let mut body = pin!(body);
    let mut first = Vec::new();
    while first.len() < events(1..=3).len() {
        let frame = tokio::time::timeout(STEP, body.frame()).await;
        let frame = frame.expect("body stalled").unwrap().unwrap();
        first.extend_from_slice(frame.data_ref().unwrap());
    }
    assert_eq!(first, events(1..=3).as_bytes());
    for _ in 0..20 {
        let call = Request::post("/mcp")
            .header("mcp-session-id", "s1")
            .body(())
            .unwrap();
        read(service.clone().oneshot(call).await.unwrap()).await;
    }
    drop((parts, body));
    let again = read(
        service
            .oneshot(get("/mcp", "s1").body(()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again.text(), events(4..=5));
    let seen = upstream.seen();
    assert_eq!(
        seen.last().unwrap().last_event_id(),
        Some("3"),
        "the live stream's window was kept"
    );
}

/// An id a client keeps, with the event (type and data lines) a duplicate
/// must repeat.
type Tracked = (u8, (Option<u8>, Vec<u8>));

/// One generated block of an event stream, by its parts.
#[derive(Debug, Clone)]
struct Generated {
    /// `None`: no id line; `Some(0)`: an empty `id:`; `Some(255)`: an id
    /// with a NUL; else the id `n`.
    id: Option<u8>,
    event: Option<u8>,
    data: Vec<u8>,
    comment: bool,
    retry: bool,
    line_end: &'static str,
}

impl Generated {
    fn bytes(&self) -> String {
        let mut lines = Vec::new();
        if self.comment {
            lines.push(": note".to_owned());
        }
        match self.id {
            None => {}
            Some(0) => lines.push("id:".to_owned()),
            Some(255) => lines.push("id: 1\0".to_owned()),
            Some(n) => lines.push(format!("id: {n}")),
        }
        if let Some(event) = self.event {
            lines.push(format!("event: e{event}"));
        }
        lines.extend(self.data.iter().map(|value| format!("data: v{value}")));
        if self.retry || lines.is_empty() {
            lines.push("retry: 10".to_owned());
        }
        let mut text: String = lines
            .iter()
            .map(|line| format!("{line}{}", self.line_end))
            .collect();
        text.push_str(self.line_end);
        text
    }

    /// The id a client keeps, and the event a duplicate must repeat.
    fn tracked(&self) -> Option<Tracked> {
        match self.id {
            Some(n) if n != 0 && n != 255 => Some((n, (self.event, self.data.clone()))),
            _ => None,
        }
    }
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop::option::weighted(
            0.8,
            prop_oneof![8 => 1..6u8, 1 => Just(0u8), 1 => Just(255u8)],
        ),
        prop::option::weighted(0.2, 0..2u8),
        prop::collection::vec(0..3u8, 0..3),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::sample::select(vec!["\n", "\r\n", "\r"]),
    )
        .prop_map(|(id, event, data, comment, retry, line_end)| Generated {
            id,
            event,
            data,
            comment,
            retry,
            line_end,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any stream through the whole layer, cut anywhere: the output is the
    /// input with exactly the blocks dropped that repeat an event the
    /// client has, byte for byte.
    #[test]
    fn the_layer_is_byte_exact_on_any_stream(
        blocks in prop::collection::vec(generated(), 0..24),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let input: String = blocks.iter().map(Generated::bytes).collect();
        let mut expected = String::new();
        let mut has: Vec<Tracked> = Vec::new();
        for block in &blocks {
            let keep = match block.tracked() {
                None => true,
                Some((id, event)) => match has.iter().find(|(held, _)| *held == id) {
                    Some((_, held)) if *held == event => false,
                    Some(_) => {
                        has = vec![(id, event)];
                        true
                    }
                    None => {
                        has.push((id, event));
                        true
                    }
                },
            };
            if keep {
                expected.push_str(&block.bytes());
            }
        }
        let mut offsets: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
        offsets.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for offset in offsets {
            chunks.push(input[start..offset].to_owned());
            start = offset;
        }
        chunks.push(input[start..].to_owned());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let got = runtime.block_on(async {
            let upstream = Upstream::new([Reply::sse(chunks)]);
            let request = get("/feed", "s1").body(()).unwrap();
            exchange(Transport::Oneshot, &SseResumeLayer::new(), &upstream, vec![request]).await
        });
        prop_assert_eq!(got[0].text(), expected);
    }
}
