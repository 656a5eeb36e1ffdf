//! End-to-end fixtures over real sockets: a flaky, at-least-once SSE
//! upstream on loopback, and the demo's own reverse proxy with the layer in
//! front of it.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::{Layer, service_fn};
use tower_sse_resume::{SseResumeLayer, TrackerStore};

use crate::reverse_proxy;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Milliseconds since the Unix epoch, the clock a browser's `Date.now()`
/// reads.
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// How one connection of the upstream breaks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cut {
    /// The last event the connection sends whole.
    pub(crate) after: u64,
    /// Send the start of the next event, without its blank line, first.
    pub(crate) mid_block: bool,
}

/// What the upstream does.
#[derive(Clone, Debug)]
pub(crate) struct Script {
    /// Events `1..=total`; after the last one a connection stays open.
    pub(crate) total: u64,
    /// Connection `k` breaks as `cuts[k]` says; later ones never break.
    pub(crate) cuts: Vec<Cut>,
    /// A reconnect with `Last-Event-ID: X` starts at `X - replay`: events
    /// the client already has come again (at least once).
    pub(crate) replay: u64,
    /// The pause before each event.
    pub(crate) interval: Duration,
    /// Served at `/`, with `/report` taking what the page posts.
    pub(crate) page: Option<String>,
    /// An upstream that cannot resume: it ignores `Last-Event-ID`, never
    /// breaks, and event `n` happens `n` intervals after it starts, whoever
    /// is connected. `total` and `cuts` then mean nothing.
    pub(crate) live: bool,
    /// With `live`, the first connection gets nothing at all.
    pub(crate) quiet_first: bool,
}

impl Script {
    /// 40 events, 4 cuts (one in the middle of a block), a replay of 3.
    pub(crate) fn flaky() -> Self {
        let cut = |after, mid_block| Cut { after, mid_block };
        Self {
            total: 40,
            cuts: vec![cut(8, false), cut(17, false), cut(26, true), cut(35, false)],
            replay: 3,
            interval: Duration::from_millis(40),
            page: None,
            live: false,
            quiet_first: false,
        }
    }

    /// Events every 40 ms, live only.
    pub(crate) fn live() -> Self {
        Self {
            total: 60,
            cuts: Vec::new(),
            replay: 0,
            interval: Duration::from_millis(40),
            page: None,
            live: true,
            quiet_first: false,
        }
    }
}

/// An `/events` request as the upstream saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path_and_query: String,
    pub(crate) last_event_id: Option<String>,
    pub(crate) version: http::Version,
    /// The id the connection's events start from; `None` for one that
    /// sends none.
    pub(crate) first: Option<u64>,
}

/// The scripted upstream on a free loopback port, stopped when dropped.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    reports: mpsc::UnboundedReceiver<Bytes>,
    task: JoinHandle<()>,
}

/// State shared by the upstream's connections.
struct Shared {
    script: Script,
    started: tokio::time::Instant,
    /// When each event was first sent: a replay is the same event again,
    /// as from an upstream with an event store.
    first_sent: Mutex<HashMap<u64, u64>>,
    connections: AtomicUsize,
    seen: Arc<Mutex<Vec<Seen>>>,
    reports: mpsc::UnboundedSender<Bytes>,
}

impl Upstream {
    pub(crate) async fn start(script: Script) -> Self {
        let seen = Arc::default();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script,
            started: tokio::time::Instant::now(),
            first_sent: Mutex::default(),
            connections: AtomicUsize::new(0),
            seen: Arc::clone(&seen),
            reports: reports_tx,
        });
        let service = service_fn(move |request| respond(Arc::clone(&shared), request));
        let (addr, task) = serve(service).await;
        Self {
            addr,
            seen,
            reports,
            task,
        }
    }

    /// Every `/events` request so far, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The next body posted to `/report`, if one comes within `timeout`.
    pub(crate) async fn report(&mut self, timeout: Duration) -> Option<Bytes> {
        tokio::time::timeout(timeout, self.reports.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The data of event `id`: its number and when it was first sent.
fn event(shared: &Shared, id: u64) -> String {
    let mut first_sent = shared.first_sent.lock().unwrap();
    let sent = *first_sent.entry(id).or_insert_with(now_ms);
    format!("id: {id}\ndata: {id} {sent}\n\n")
}

/// Reads the data of [`event`] back: the number and the send time.
pub(crate) fn parse_data(data: &str) -> Option<(u64, u64)> {
    let (id, sent) = data.split_once(' ')?;
    Some((id.parse().ok()?, sent.parse().ok()?))
}

async fn respond(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str(), &shared.script.page) {
        (&Method::GET, "/events", _) => Ok(events(&shared, &request)),
        (&Method::POST, "/events", _) => Ok(a_call(&shared, &request)),
        (&Method::GET, "/", Some(page)) => {
            let mut response = Response::new(full(page.clone()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            Ok(response)
        }
        (&Method::POST, "/report", Some(_)) => {
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
            };
            let _ = shared.reports.send(body);
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Ok(status(StatusCode::NOT_FOUND)),
    }
}

/// The numbered stream of one connection: from a little before the
/// client's cursor, broken as the script says.
fn events(shared: &Arc<Shared>, request: &Request<Incoming>) -> Response<Body> {
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let asked = last_event_id
        .as_deref()
        .and_then(|id| id.parse::<u64>().ok());
    let script = &shared.script;
    let mut seen = shared.seen.lock().unwrap();
    let connection = shared.connections.fetch_add(1, Ordering::Relaxed);
    let quiet = script.live && script.quiet_first && connection == 0;
    let first = if script.live {
        // The next event to happen.
        let started = shared.started.elapsed();
        (started.as_nanos() / script.interval.as_nanos()) as u64 + 1
    } else {
        asked.map_or(1, |id| id.saturating_sub(script.replay).max(1))
    };
    seen.push(Seen {
        path_and_query: request
            .uri()
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
        last_event_id,
        version: request.version(),
        first: (!quiet).then_some(first),
    });
    drop(seen);
    if script.live {
        return live_events(shared, first, quiet);
    }
    let cut = script.cuts.get(connection).copied();
    let (total, interval) = (script.total, script.interval);
    let shared = Arc::clone(shared);

    let body = stream::unfold(Step::Retry, move |step| {
        let shared = Arc::clone(&shared);
        async move {
            let (frame, next) = match step {
                // Reconnect quickly: browsers wait 3 s by default.
                Step::Retry => (
                    Ok(Bytes::from_static(b"retry: 100\n\n")),
                    Step::Event(first),
                ),
                Step::Event(id) if cut.is_some_and(|cut| id > cut.after) => {
                    if cut.is_some_and(|cut| cut.mid_block) {
                        tokio::time::sleep(interval).await;
                        let whole = event(&shared, id);
                        let half = whole.trim_end_matches('\n').to_owned();
                        (Ok(Bytes::from(half)), Step::Break)
                    } else {
                        return break_connection().await;
                    }
                }
                Step::Event(id) if id > total => {
                    // Everything is sent: stay open until the client leaves.
                    std::future::pending::<()>().await;
                    return None;
                }
                Step::Event(id) => {
                    tokio::time::sleep(interval).await;
                    (Ok(Bytes::from(event(&shared, id))), Step::Event(id + 1))
                }
                Step::Break => return break_connection().await,
                Step::Done => return None,
            };
            Some((frame.map(Frame::data), next))
        }
    });
    let mut response = Response::new(BoxBody::new(StreamBody::new(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A call's stream, as a `POST` (an MCP tool call) gets: a quick `retry`,
/// events `1..=total` at once, and the end.
fn a_call(shared: &Arc<Shared>, request: &Request<Incoming>) -> Response<Body> {
    shared.seen.lock().unwrap().push(Seen {
        path_and_query: request
            .uri()
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
        last_event_id: None,
        version: request.version(),
        first: Some(1),
    });
    let mut text = String::from("retry: 100\n\n");
    for id in 1..=shared.script.total {
        text.push_str(&event(shared, id));
    }
    let mut response = Response::new(full(text));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// The events that happen while the connection lasts, from `first`, the
/// next one.
fn live_events(shared: &Arc<Shared>, first: u64, quiet: bool) -> Response<Body> {
    let (started, interval) = (shared.started, shared.script.interval);
    let retry = stream::once(async { Ok(Frame::data(Bytes::from_static(b"retry: 100\n\n"))) });
    let shared = Arc::clone(shared);
    let events = stream::unfold(first, move |id| {
        let shared = Arc::clone(&shared);
        async move {
            if quiet {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(started + interval * u32::try_from(id).unwrap()).await;
            Some((Ok(Frame::data(Bytes::from(event(&shared, id)))), id + 1))
        }
    });
    let mut response = Response::new(BoxBody::new(StreamBody::new(
        futures_util::StreamExt::chain(retry, events),
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// Where a connection's stream is.
enum Step {
    Retry,
    Event(u64),
    Break,
    Done,
}

/// Fails the body, which makes hyper drop the connection mid-stream. The
/// error comes a moment after the last chunk, as from a real upstream, so
/// that the chunk has been flushed.
async fn break_connection() -> Option<(Result<Frame<Bytes>, BoxError>, Step)> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Some((Err("upstream dropped the connection".into()), Step::Done))
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(BoxError::from).boxed()
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The demo's proxy (`examples/reverse_proxy/proxy.rs`): the layer with
/// the demo's session scope in front of its forwarder, on a free loopback
/// port, stopped when dropped.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr, layer: SseResumeLayer) -> Self {
        Self::start_with(upstream, layer).await
    }

    /// The same proxy, its layer over any store.
    pub(crate) async fn start_with<T: TrackerStore>(
        upstream: SocketAddr,
        layer: SseResumeLayer<T>,
    ) -> Self {
        let layer = layer.scope(reverse_proxy::session_scope);
        Self::serve(layer.layer(reverse_proxy::forwarder(uri_of(upstream)))).await
    }

    /// The same proxy, speaking HTTP/2 with prior knowledge to the
    /// upstream.
    pub(crate) async fn start_http2(upstream: SocketAddr, layer: SseResumeLayer) -> Self {
        let layer = layer.scope(reverse_proxy::session_scope);
        let forwarder = reverse_proxy::forwarder_over(uri_of(upstream), true);
        Self::serve(layer.layer(forwarder)).await
    }

    /// The same proxy without the layer: the control.
    pub(crate) async fn without_layer(upstream: SocketAddr) -> Self {
        Self::serve(reverse_proxy::forwarder(uri_of(upstream))).await
    }

    async fn serve<S, B>(service: S) -> Self
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = reverse_proxy::serve(listener, service).await;
        });
        Self { addr, task }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP relay in front of `target` that cuts every connection carrying a
/// `GET /events` some time after the request, as a flaky network between
/// a client and the proxy would, while the proxy's upstream goes on.
pub(crate) struct CuttingRelay {
    pub(crate) addr: SocketAddr,
    cuts: Arc<AtomicUsize>,
    /// The `Last-Event-ID` of each `GET /events`, as the client sent it.
    cursors: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl CuttingRelay {
    pub(crate) async fn start(target: SocketAddr, after: Duration) -> Self {
        Self::balanced(vec![target], after).await
    }

    /// The same relay in front of several replicas, as a load balancer:
    /// each connection goes to the next of `targets` in turn.
    pub(crate) async fn balanced(targets: Vec<SocketAddr>, after: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicUsize::new(0));
        let cursors = Arc::default();
        let (counted, noted) = (Arc::clone(&cuts), Arc::clone(&cursors));
        let task = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((client, _)) = listener.accept().await {
                let target = targets[next % targets.len()];
                next += 1;
                let (cuts, cursors) = (Arc::clone(&counted), Arc::clone(&noted));
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    relay(client, server, after, cuts, cursors).await;
                });
            }
        });
        Self {
            addr,
            cuts,
            cursors,
            task,
        }
    }

    /// The `Last-Event-ID` of each `GET /events` so far, in order.
    pub(crate) fn cursors(&self) -> Vec<Option<String>> {
        self.cursors.lock().unwrap().clone()
    }

    /// The connections cut so far.
    pub(crate) fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pipes bytes both ways until either side closes, or until `after` past
/// the first `GET /events` the client sends: then both sides are closed.
async fn relay(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    after: Duration,
    cuts: Arc<AtomicUsize>,
    cursors: Arc<Mutex<Vec<Option<String>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut cut_at: Option<tokio::time::Instant> = None;
    let (mut up, mut down) = ([0_u8; 8192], [0_u8; 8192]);
    loop {
        let cut = async {
            match cut_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = client_read.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                if cut_at.is_none() && up[..n].windows(11).any(|w| w == b"GET /events") {
                    cut_at = Some(tokio::time::Instant::now() + after);
                    cursors.lock().unwrap().push(last_event_id(&up[..n]));
                }
                if server_write.write_all(&up[..n]).await.is_err() { return }
            }
            read = server_read.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if client_write.write_all(&down[..n]).await.is_err() { return }
            }
            () = cut => {
                cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// The `Last-Event-ID` header in the head of a request, if it has one.
fn last_event_id(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("last-event-id")
            .then(|| value.trim().to_owned())
    })
}

fn uri_of(addr: SocketAddr) -> Uri {
    format!("http://{addr}").parse().unwrap()
}

/// Serves `service` on a free loopback port until the task is aborted.
async fn serve<S, B>(service: S) -> (SocketAddr, JoinHandle<()>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}
