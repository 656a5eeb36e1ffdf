//! Nothing the layer kept reaches a request the upstream would refuse: a
//! stream belongs to the credentials of the request that opened it.
//!
//! The upstream here accepts only Alice's bearer token and answers
//! anything else with `401`, as a real MCP server must. Mallory knows
//! Alice's session id (session ids leak through logs, URLs and shared
//! links) but not her token. Every path that answers from what the layer
//! kept, or acts on another client's stream, must send him to the
//! upstream instead.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

use crate::linger::{LiveUpstream, last_id, read_events};
use crate::support::*;
use tower_sse_resume::{HistoryLimits, SSE_RESUME_GAP, SseResumeLayer};

pub(crate) type AnyBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) const ALICE: &str = "Bearer alice-token-7f3a";
pub(crate) const ALICE_REFRESHED: &str = "Bearer alice-token-refreshed-91c2";
pub(crate) const MALLORY: &str = "Bearer mallory-token-0b5d";
pub(crate) const REFUSED: &str = "unauthorized";

/// A request the upstream was asked: its `Authorization` and its
/// `Last-Event-ID`.
pub(crate) type Asked = (String, Option<String>);

/// The upstream's own check in front of `inner`: Alice's tokens pass,
/// anything else gets `401`. Remembers the `Last-Event-ID` of every
/// request it was asked, refused or not.
#[derive(Clone)]
pub(crate) struct Authorizing<S> {
    inner: S,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl<S> Authorizing<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            asked: Arc::default(),
        }
    }

    /// Each request the upstream was asked: its `Authorization` and its
    /// `Last-Event-ID`.
    pub(crate) fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

impl<S, B, Bd> Service<Request<B>> for Authorizing<S>
where
    S: Service<Request<B>, Response = Response<Bd>, Error = Infallible>,
    S::Future: Into<std::future::Ready<Result<Response<Bd>, Infallible>>>,
    Bd: Body<Data = Bytes> + Send + 'static,
    Bd::Error: Into<BoxError>,
{
    type Response = Response<AnyBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<AnyBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let header = |name: &str| {
            (request.headers().get(name)).map(|value| value.to_str().unwrap().to_owned())
        };
        let authorization = header("authorization").unwrap_or_default();
        let cursor = header("last-event-id");
        self.asked
            .lock()
            .unwrap()
            .push((authorization.clone(), cursor));
        if authorization != ALICE && authorization != ALICE_REFRESHED {
            let refused = Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", "Bearer")
                .body(
                    Full::new(Bytes::from_static(REFUSED.as_bytes()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .unwrap();
            return std::future::ready(Ok(refused));
        }
        let ready: std::future::Ready<_> = self.inner.call(request).into();
        let response = ready.into_inner().unwrap();
        std::future::ready(Ok(
            response.map(|body| body.map_err(Into::into).boxed_unsync())
        ))
    }
}

/// One layered upstream, reached through `transport`, each request on a
/// connection of its own whose response is returned still streaming.
pub(crate) struct Client {
    open: Box<dyn Fn(Request<()>) -> OpenFuture + Send + Sync>,
}

type OpenFuture = std::pin::Pin<Box<dyn Future<Output = Response<AnyBody>> + Send>>;

impl Client {
    pub(crate) async fn over<T, U>(
        transport: Transport,
        layer: &SseResumeLayer<T>,
        upstream: Authorizing<U>,
    ) -> Self
    where
        T: tower_sse_resume::TrackerStore,
        U: Clone + Send + Sync + 'static,
        Authorizing<U>: Service<Request<()>, Response = Response<AnyBody>, Error = Infallible>
            + Service<
                Request<hyper::body::Incoming>,
                Response = Response<AnyBody>,
                Error = Infallible,
            >,
        <Authorizing<U> as Service<Request<()>>>::Future: Send + 'static,
        <Authorizing<U> as Service<Request<hyper::body::Incoming>>>::Future: Send + 'static,
    {
        let service = layer.layer(upstream);
        let open: Box<dyn Fn(Request<()>) -> OpenFuture + Send + Sync> = match transport {
            Transport::Oneshot => Box::new(move |request| {
                let service = service.clone();
                Box::pin(async move {
                    let response = service.oneshot(request).await.unwrap();
                    response.map(|body| body.boxed_unsync())
                })
            }),
            Transport::Http | Transport::Http2 => {
                let server = Arc::new(Server::start(service).await.over(transport));
                Box::new(move |request| {
                    let server = Arc::clone(&server);
                    Box::pin(async move {
                        let response = server.open(request).await;
                        response.map(|body| body.map_err(Into::into).boxed_unsync())
                    })
                })
            }
        };
        Self { open }
    }

    pub(crate) async fn open(&self, request: Request<()>) -> Response<AnyBody> {
        tokio::time::timeout(STEP, (self.open)(request))
            .await
            .expect("no response in time")
    }

    /// The whole response, which must end: a refusal, or a stream that
    /// completes.
    pub(crate) async fn send(&self, request: Request<()>) -> Received {
        let response = self.open(request).await;
        tokio::time::timeout(Duration::from_secs(10), read(response))
            .await
            .expect("the response did not end")
    }
}

/// A request of session `s-alice` with `authorization`.
pub(crate) fn as_user(
    request: http::request::Builder,
    authorization: &str,
    cursor: Option<u32>,
) -> Request<()> {
    let mut request = request
        .header("mcp-session-id", "s-alice")
        .header("authorization", authorization);
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor.to_string());
    }
    request.body(()).unwrap()
}

fn lingering() -> SseResumeLayer {
    SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(5))
}

/// The upstream's refusal, passed through untouched: nothing the layer
/// kept before it, no gap signal.
#[track_caller]
pub(crate) fn assert_refused(received: &Received, what: &str) {
    assert_eq!(received.status, StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(received.text(), REFUSED, "{what}: nothing prepended");
    assert!(
        !received.headers.contains_key(SSE_RESUME_GAP),
        "{what}: no gap signal"
    );
}

#[tokio::test]
async fn a_complete_tool_call_is_not_replayed_to_another_token() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([events(1..=5)])]);
        let layer = lingering();
        let client = Client::over(transport, &layer, Authorizing::new(upstream)).await;
        let call = client
            .send(as_user(Request::post("/mcp"), ALICE, None))
            .await;
        assert_eq!(call.text(), events(1..=5));

        let stranger = client
            .send(as_user(Request::get("/mcp"), MALLORY, Some(1)))
            .await;
        assert_refused(&stranger, &format!("over {transport:?}"));
        assert_eq!(layer.stats().snapshot().completes_replayed, 0);
    }
}

#[tokio::test]
async fn a_complete_tool_call_is_replayed_to_its_own_token() {
    // The control of the test above: the same resume with Alice's token is
    // answered from the history, without the upstream.
    let upstream = Authorizing::new(Upstream::new([Reply::sse([events(1..=5)])]));
    let layer = lingering();
    let client = Client::over(Transport::Oneshot, &layer, upstream.clone()).await;
    client
        .send(as_user(Request::post("/mcp"), ALICE, None))
        .await;
    let resumed = client
        .send(as_user(Request::get("/mcp"), ALICE, Some(1)))
        .await;
    assert_eq!(resumed.text(), events(2..=5));
    assert_eq!(upstream.asked().len(), 1);
    assert_eq!(layer.stats().snapshot().completes_replayed, 1);
}

#[tokio::test]
async fn a_held_stream_is_not_taken_over_by_another_token() {
    for transport in TRANSPORTS {
        let upstream = Authorizing::new(LiveUpstream::new(100_000));
        let layer = lingering();
        let client = Client::over(transport, &layer, upstream.clone()).await;
        let first = client
            .open(as_user(Request::get("/mcp"), ALICE, None))
            .await;
        let cursor = last_id(&read_events(first.into_body(), 5).await);
        // Alice is away; her stream is held.
        crate::linger::eventually("the hold", || layer.stats().snapshot().held == 1).await;

        for cursor in [None, Some(cursor)] {
            let stranger = client
                .send(as_user(Request::get("/mcp"), MALLORY, cursor))
                .await;
            assert_refused(&stranger, &format!("{cursor:?} over {transport:?}"));
        }
        assert_eq!(layer.stats().snapshot().takeovers, 0);

        // Alice herself takes it over, and loses nothing.
        let back = client
            .open(as_user(Request::get("/mcp"), ALICE, Some(cursor)))
            .await;
        assert_eq!(back.status(), 200);
        let got = read_events(back.into_body(), 5).await;
        assert!(
            got.starts_with(&events([cursor + 1])),
            "over {transport:?}: {got}"
        );
        assert_eq!(layer.stats().snapshot().takeovers, 1);
        let asked = upstream.asked();
        assert_eq!(asked.len(), 3, "Alice's one request and Mallory's two");
        assert!(asked[1..].iter().all(|(token, _)| token == MALLORY));
    }
}

#[tokio::test]
async fn another_tokens_get_has_no_cursor_injected() {
    for transport in TRANSPORTS {
        let upstream = Authorizing::new(Upstream::new([
            Reply::sse([events(1..=3)]),
            Reply::sse([events(4..=5)]),
        ]));
        let layer = SseResumeLayer::new();
        let client = Client::over(transport, &layer, upstream.clone()).await;
        client
            .send(as_user(Request::get("/mcp"), ALICE, None))
            .await;
        let stranger = client
            .send(as_user(Request::get("/mcp"), MALLORY, None))
            .await;
        assert_refused(&stranger, &format!("over {transport:?}"));
        // Alice's own reconnect still gets her cursor injected.
        client
            .send(as_user(Request::get("/mcp"), ALICE, None))
            .await;

        let asked = upstream.asked();
        assert_eq!(asked[1], (MALLORY.to_owned(), None), "over {transport:?}");
        assert_eq!(asked[2], (ALICE.to_owned(), Some("3".to_owned())));
        assert_eq!(layer.stats().snapshot().cursors_injected, 1);
    }
}

#[tokio::test]
async fn a_replay_to_another_token_is_the_upstreams_401_with_nothing_prepended() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([events(1..=5)])]);
        let layer = SseResumeLayer::new().history(HistoryLimits::new());
        let client = Client::over(transport, &layer, Authorizing::new(upstream)).await;
        client
            .send(as_user(Request::get("/feed"), ALICE, None))
            .await;
        let stranger = client
            .send(as_user(Request::get("/feed"), MALLORY, Some(2)))
            .await;
        assert_refused(&stranger, &format!("over {transport:?}"));
        let stats = layer.stats().snapshot();
        assert_eq!((stats.events_replayed, stats.gaps), (0, 0));
    }
}

#[tokio::test]
async fn another_tokens_resume_never_ends_the_response_attached_to_the_stream() {
    // One client per scope (the MCP default): a resume whose cursor the
    // stream knows ends the old response and takes its upstream, as its
    // own client's reconnect. Not so for another token.
    for transport in TRANSPORTS {
        let upstream = Authorizing::new(LiveUpstream::new(100_000));
        let layer = lingering();
        let client = Client::over(transport, &layer, upstream.clone()).await;
        let alice = client
            .open(as_user(Request::get("/mcp"), ALICE, None))
            .await;
        let mut alice = std::pin::pin!(alice.into_body());
        let mut seen = String::new();
        while seen.matches("\n\n").count() < 3 {
            let frame = tokio::time::timeout(STEP, alice.frame()).await.unwrap();
            let frame = frame.expect("Alice's stream goes on").unwrap();
            seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
        let cursor = last_id(&seen);

        let stranger = client
            .send(as_user(Request::get("/mcp"), MALLORY, Some(cursor)))
            .await;
        assert_refused(&stranger, &format!("over {transport:?}"));

        // Alice's response is still open and goes on where it was.
        let more = read_events(alice.as_mut(), 3).await;
        assert!(
            more.starts_with(&events([cursor + 1])),
            "over {transport:?}: {more}"
        );
        assert_eq!(layer.stats().snapshot().takeovers, 0);
    }
}

#[tokio::test]
async fn a_refreshed_token_goes_upstream_and_gets_the_gap_signal() {
    // OAuth clients refresh their token mid-session. The layer cannot tell
    // a refresh from a stranger: the resume goes to the upstream, and as
    // this one cannot resume, the client hears of the gap rather than
    // losing events silently.
    for transport in TRANSPORTS {
        let upstream = Authorizing::new(Upstream::new([
            Reply::sse([events(1..=5)]),
            Reply::sse([events(9..=10)]),
        ]));
        let layer = SseResumeLayer::new().history(HistoryLimits::new());
        let client = Client::over(transport, &layer, upstream.clone()).await;
        client
            .send(as_user(Request::get("/feed"), ALICE, None))
            .await;
        let resumed = client
            .send(as_user(Request::get("/feed"), ALICE_REFRESHED, Some(3)))
            .await;

        assert_eq!(resumed.status, StatusCode::OK);
        assert_eq!(
            resumed.headers.get(SSE_RESUME_GAP).map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "over {transport:?}"
        );
        assert!(resumed.text().ends_with(&events(9..=10)));
        assert!(
            !resumed.text().contains("event 4"),
            "nothing of Alice's old history"
        );
        let asked = upstream.asked();
        assert_eq!(asked[1], (ALICE_REFRESHED.to_owned(), Some("3".to_owned())));
    }
}

/// Every event and span the layer logs, at every level, with all their
/// fields, as text: what a log would show.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn write(&self, head: &str, fields: impl FnOnce(&mut dyn tracing::field::Visit)) {
        let mut line = head.to_owned();
        fields(&mut Fields(&mut line));
        line.push('\n');
        self.0.lock().unwrap().push_str(&line);
    }
}

/// Writes each field as ` name=value`.
struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Captured {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let head = format!("span {}", span.metadata().name());
        self.write(&head, |fields| span.record(fields));
        tracing::span::Id::from_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.write("record", |fields| values.record(fields));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let head = format!("{} {}", event.metadata().level(), event.metadata().target());
        self.write(&head, |fields| event.record(fields));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_token_in_the_url_is_other_credentials_than_the_same_in_the_header() {
    // The upstream reads the header only: what the layer kept for Alice's
    // header is not replayed to a request with her token in the URL.
    let upstream = Authorizing::new(Upstream::new([Reply::sse([events(1..=5)])]));
    let layer = lingering();
    let client = Client::over(Transport::Oneshot, &layer, upstream).await;
    client
        .send(as_user(Request::post("/mcp"), ALICE, None))
        .await;
    let secret = ALICE.strip_prefix("Bearer ").unwrap();
    let in_url = Request::get(format!("/mcp?access_token={secret}"))
        .header("mcp-session-id", "s-alice")
        .header("last-event-id", "2");
    assert_refused(&client.send(in_url.body(()).unwrap()).await, "in the URL");
    assert_eq!(layer.stats().snapshot().completes_replayed, 0);
}

#[test]
fn no_log_shows_a_credential() {
    let captured = Captured::default();
    // This thread's: each test below runs its runtime, and the layer's
    // tasks, on it.
    let _guard = tracing::subscriber::set_default(captured.clone());
    // `tracing` caches whether a callsite is wanted when a thread first
    // reaches it: with one dispatcher alive it asks that thread's default,
    // none on the threads of the tests running beside this one, and would
    // mute the callsite here too. With two alive it asks both of them.
    let _second = tracing::Dispatch::new(Captured::default());
    // Takeovers, replays, follows' kin and refusals, Alice's, her
    // refreshed token's and Mallory's, over every transport.
    a_complete_tool_call_is_not_replayed_to_another_token();
    a_complete_tool_call_is_replayed_to_its_own_token();
    a_held_stream_is_not_taken_over_by_another_token();
    another_tokens_get_has_no_cursor_injected();
    a_replay_to_another_token_is_the_upstreams_401_with_nothing_prepended();
    another_tokens_resume_never_ends_the_response_attached_to_the_stream();
    a_refreshed_token_goes_upstream_and_gets_the_gap_signal();
    a_token_in_the_url_is_other_credentials_than_the_same_in_the_header();
    let logged = captured.text();
    // The control: the log saw those paths, fields and all.
    assert!(logged.contains("took a held stream over"), "{logged}");
    assert!(logged.contains("other credentials"), "{logged}");
    assert!(logged.contains("key="), "{logged}");
    for token in ["alice-token", "mallory-token"] {
        assert!(!logged.contains(token), "{token} in the log:\n{logged}");
    }
}

#[tokio::test]
async fn debug_output_shows_neither_the_credential_key_nor_a_token() {
    const KEY: &[u8] = b"k3y-s3cr3t-of-the-replicas-32-by";
    let layer = lingering().credential_key(KEY);
    let upstream = Authorizing::new(Upstream::new([Reply::sse([events(1..=3)])]));
    let client = Client::over(Transport::Oneshot, &layer, upstream).await;
    client
        .send(as_user(Request::get("/mcp"), ALICE, None))
        .await;
    let service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let shown = format!("{layer:?}\n{service:?}\n{layer:#?}");
    // The control: the options are there, the binding among them.
    assert!(shown.contains("Binding"), "{shown}");
    let as_bytes = format!("{:?}", &KEY[..3]);
    let as_hex: String = KEY[..3].iter().map(|b| format!("{b:02x}")).collect();
    let in_text = std::str::from_utf8(&KEY[..6]).unwrap();
    for secret in [
        in_text,
        &as_bytes[1..as_bytes.len() - 1],
        &as_hex,
        "alice-token",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
}

/// An upstream that takes Alice's and Mallory's tokens alike and tags
/// each event's data with its owner, numbering each owner's events from
/// 1: the ids of the two collide. A GET gets `GET_EVENTS` events a few
/// milliseconds apart, then its end; a POST (a tool call) three at once.
#[derive(Clone, Default)]
struct Tagging {
    next: Arc<Mutex<[u32; 2]>>,
}

const GET_EVENTS: u32 = 30;

impl<B> Service<Request<B>> for Tagging {
    type Response = Response<AnyBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<AnyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let token = request.headers().get("authorization").unwrap();
        let (owner, slot) = match token.to_str().unwrap() {
            ALICE => ("alice", 0),
            MALLORY => ("mallory", 1),
            other => panic!("an unknown token: {other}"),
        };
        let post = request.method() == http::Method::POST;
        let count = if post { 3 } else { GET_EVENTS };
        let first = {
            let mut next = self.next.lock().unwrap();
            next[slot] += count;
            next[slot] - count + 1
        };
        let pause = if post {
            Duration::ZERO
        } else {
            Duration::from_millis(2)
        };
        use futures_util::StreamExt;
        let frames = futures_util::stream::iter(first..first + count).then(move |id| async move {
            tokio::time::sleep(pause).await;
            let event = format!("id: {id}\ndata: {owner} {id}\n\n");
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(event)))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::StreamBody::new(frames).boxed_unsync())
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// What a client does in one step of the property test.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A GET without a cursor.
    Fresh,
    /// A GET from the client's own newest id.
    Own,
    /// A GET from the other client's newest id.
    Others,
    /// A tool call.
    Call,
}

/// Reads `body` until `events` came or it ended.
async fn read_up_to<B>(body: B, events: usize) -> String
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut text = String::new();
    while text.matches("\n\n").count() < events {
        let frame = tokio::time::timeout(STEP, body.frame()).await;
        let Some(frame) = frame.expect("body stalled") else {
            break;
        };
        if let Some(data) = frame.unwrap().data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    text
}

/// Runs `steps` of Alice (`false`) and Mallory (`true`) in one session
/// over `transport`; returns each response's text with whose it was.
async fn interleave(steps: &[(bool, Step)], transport: Transport) -> Vec<(bool, String)> {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_millis(100));
    let service = layer.layer(Tagging::default());
    let server = match transport {
        Transport::Oneshot => None,
        _ => Some(Server::start(service.clone()).await.over(transport)),
    };
    let mut newest: [Option<u32>; 2] = [None, None];
    let mut out = Vec::new();
    for &(mallory, step) in steps {
        let (me, other) = (usize::from(mallory), usize::from(!mallory));
        let token = [ALICE, MALLORY][me];
        let (request, cursor) = match step {
            Step::Fresh => (Request::get("/mcp"), None),
            Step::Own => (Request::get("/mcp"), newest[me]),
            Step::Others => (Request::get("/mcp"), newest[other]),
            Step::Call => (Request::post("/mcp"), None),
        };
        let request = as_user(request, token, cursor);
        // A GET is read a little and left, to be held; a call to its end.
        let events = if matches!(step, Step::Call) {
            usize::MAX
        } else {
            3
        };
        let text = match &server {
            None => {
                let response = service.clone().oneshot(request).await.unwrap();
                read_up_to(response.into_body(), events).await
            }
            Some(server) => read_up_to(server.open(request).await.into_body(), events).await,
        };
        if text.contains("id: ") {
            newest[me] = Some(last_id(&text));
        }
        out.push((mallory, text));
    }
    out
}

fn step() -> impl proptest::strategy::Strategy<Value = (bool, Step)> {
    use proptest::prelude::*;
    let step = prop_oneof![
        Just(Step::Fresh),
        Just(Step::Own),
        Just(Step::Others),
        Just(Step::Call),
    ];
    (any::<bool>(), step)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Alice and Mallory in one session, in any order, each resuming from
    /// their own ids or the other's, which are the same numbers: neither
    /// ever gets an event of the other's.
    #[test]
    fn no_interleaving_gives_one_token_the_others_events(
        steps in proptest::collection::vec(step(), 1..=12),
        http in proptest::prelude::any::<bool>(),
    ) {
        let transport = if http { Transport::Http } else { Transport::Oneshot };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let out = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), interleave(&steps, transport)).await
        });
        let out = out.expect("the steps took over a minute");
        for (n, (mallory, text)) in out.iter().enumerate() {
            let foreign = if *mallory { "data: alice" } else { "data: mallory" };
            proptest::prop_assert!(
                !text.contains(foreign),
                "step {} of {:?} over {:?}: {}", n, steps, transport, text
            );
        }
    }
}
