//! A fixed amount of work for counting the layer's instructions per event
//! under callgrind: the same 10,000 events of about 100 bytes, read
//! through the layer (or not at all) a given number of times, in chunks
//! of one event or of a given size. Instruction counts do not move with
//! the machine's load as timings do, so two counts of two builds compare
//! exactly.
//!
//! ```text
//! cargo build --release --example per_event
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.pass \
//!     target/release/examples/per_event pass 3 0
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.layer \
//!     target/release/examples/per_event layer 3 0
//! ```
//!
//! The layer's instructions per event are then the difference of the two
//! totals ("Collected"), divided by the events read (30,000 here). Modes:
//! `pass` (no layer), `layer` (the default layer), `trust` (with
//! `trust_ids`), `history` (with a replay history). Then how many times
//! the events are read, and the chunk size in bytes (0: one event per
//! chunk, as a proxy mostly gets them). Every tenth event repeats the id of
//! the one before, so that some are dropped.
//!
//! With a fourth argument, `STREAMS`, the events go instead to that many
//! streams open at once, one event to each in turn, ROUNDS events each: as
//! a gateway of many quiet streams sees them, each stream's state gone from
//! the cache by its next event. Under `valgrind --tool=cachegrind
//! --cache-sim=yes`, the misses an event then count what the layer's state
//! costs beyond its instructions:
//!
//! ```text
//! valgrind --tool=cachegrind --cache-sim=yes target/release/examples/per_event layer 20 0 20000
//! ```
//!
//! Not part of the test suite.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

/// The events of one response.
const EVENTS: usize = 10_000;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "layer".to_owned());
    let (Some(rounds), Some(chunk), Some(streams)) = (
        number(args.next(), 3),
        number(args.next(), 0),
        number(args.next(), 0),
    ) else {
        eprintln!("usage: per_event [pass|layer|trust|history] [ROUNDS] [CHUNK_BYTES] [STREAMS]");
        return ExitCode::FAILURE;
    };
    let Some(layer) = layer_of(&mode) else {
        eprintln!("no mode {mode:?}: pass, layer, trust or history");
        return ExitCode::FAILURE;
    };
    if streams > 0 {
        return interleaved(layer, rounds, streams);
    }
    let chunks = chunks(chunk);
    let upstream = tower::service_fn(move |_: Request<()>| {
        let chunks = Arc::clone(&chunks);
        let frames =
            (0..chunks.len()).map(move |i| Ok::<_, Infallible>(Frame::data(chunks[i].clone())));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        std::future::ready(Ok::<_, Infallible>(event_stream(body)))
    });
    let bytes = match layer {
        None => read(upstream, rounds),
        Some(layer) => read(ServiceBuilder::new().layer(layer).service(upstream), rounds),
    };
    report(bytes)
}

/// The layer a mode names: `Some(None)` for `pass`, `None` for no mode.
fn layer_of(mode: &str) -> Option<Option<SseResumeLayer>> {
    Some(match mode {
        "pass" => None,
        "layer" => Some(SseResumeLayer::new()),
        "trust" => Some(SseResumeLayer::new().trust_ids(true)),
        "history" => Some(SseResumeLayer::new().history(HistoryLimits::new())),
        _ => return None,
    })
}

/// A response of event-stream `body`.
fn event_stream<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    (response.headers_mut()).insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

/// The runtime each run reads on: one thread, as a callgrind count wants.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// A `GET` of `path` in the scope (MCP session) `scope`.
fn request(path: &str, scope: usize) -> Request<()> {
    Request::get(path)
        .header("mcp-session-id", format!("s-{scope}"))
        .body(())
        .expect("a valid request")
}

/// Appends event `id`, of about 100 bytes, to `body`.
fn push_event(body: &mut Vec<u8>, id: usize) {
    body.extend_from_slice(format!("id: {id}\ndata: ").as_bytes());
    body.extend(std::iter::repeat_n(b'x', 100));
    body.extend_from_slice(b"\n\n");
}

/// `arg` as a number, `default` when absent; `None` when not a number.
fn number(arg: Option<String>, default: usize) -> Option<usize> {
    arg.map_or(Some(default), |arg| arg.parse().ok())
}

/// The events, cut into chunks of `size` bytes, or one event each for 0.
fn chunks(size: usize) -> Arc<[Bytes]> {
    let mut body = Vec::new();
    let mut ends = vec![0];
    for n in 1..=EVENTS {
        let id = if n % 10 == 0 { n - 1 } else { n };
        push_event(&mut body, id);
        ends.push(body.len());
    }
    let body = Bytes::from(body);
    match size {
        0 => ends.windows(2).map(|w| body.slice(w[0]..w[1])).collect(),
        size => (0..body.len())
            .step_by(size)
            .map(|start| body.slice(start..(start + size).min(body.len())))
            .collect(),
    }
}

/// Reads a response of `service` to its end `rounds` times, each in a
/// scope of its own (an MCP session), and returns the bytes read.
fn read<S, B>(mut service: S, rounds: usize) -> usize
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let runtime = runtime();
    let mut total = 0;
    for round in 0..rounds {
        let request = request("/mcp", round);
        total += runtime.block_on(async {
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .len()
        });
    }
    total
}

/// What feeds one upstream body, event by event.
type Feed = tokio::sync::mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// `streams` streams open at once through `layer` (or none), each sent
/// `rounds` events, one to each stream in turn, each read as it is sent.
fn interleaved(layer: Option<SseResumeLayer>, rounds: usize, streams: usize) -> ExitCode {
    // Each request's upstream body is fed by `send_in_turn`, through a
    // channel the service keeps here.
    let feeds: Arc<std::sync::Mutex<Vec<Feed>>> = Arc::default();
    let upstream = {
        let feeds = Arc::clone(&feeds);
        tower::service_fn(move |_: Request<()>| {
            let (feed, mut frames) = tokio::sync::mpsc::unbounded_channel();
            feeds.lock().unwrap().push(feed);
            let frames = futures_util::stream::poll_fn(move |cx| frames.poll_recv(cx));
            std::future::ready(Ok::<_, Infallible>(event_stream(StreamBody::new(frames))))
        })
    };
    let bytes = match layer {
        None => send_in_turn(upstream, &feeds, rounds, streams),
        Some(layer) => {
            let service = ServiceBuilder::new().layer(layer).service(upstream);
            send_in_turn(service, &feeds, rounds, streams)
        }
    };
    report(bytes)
}

/// Opens `streams` streams of `service`, each in a scope of its own, then
/// sends each an event in turn, `rounds` times, through the upstream
/// bodies' `feeds`, reading each as it is sent. Returns the bytes read.
fn send_in_turn<S, B>(
    mut service: S,
    feeds: &std::sync::Mutex<Vec<Feed>>,
    rounds: usize,
    streams: usize,
) -> usize
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let runtime = runtime();
    let _entered = runtime.enter();
    let mut bodies = Vec::with_capacity(streams);
    for stream in 0..streams {
        let request = request("/events", stream);
        let response = runtime.block_on(async { service.ready().await?.call(request).await });
        bodies.push(Box::pin(response.unwrap().into_body()));
    }
    let feeds = std::mem::take(&mut *feeds.lock().unwrap());
    let waker = futures_util::task::noop_waker();
    let mut context = std::task::Context::from_waker(&waker);
    let mut bytes = 0;
    for round in 1..=rounds {
        let mut event = Vec::new();
        push_event(&mut event, round);
        let event = Bytes::from(event);
        for (feed, body) in feeds.iter().zip(&mut bodies) {
            let _ = feed.send(Ok(Frame::data(event.clone())));
            let polled = body.as_mut().poll_frame(&mut context);
            if let std::task::Poll::Ready(Some(Ok(frame))) = polled {
                bytes += frame.data_ref().map_or(0, Bytes::len);
            }
        }
    }
    bytes
}

fn report(bytes: usize) -> ExitCode {
    println!("{bytes} bytes read");
    ExitCode::SUCCESS
}
