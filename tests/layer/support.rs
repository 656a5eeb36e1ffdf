//! A scripted SSE upstream, and two ways to reach it through the layer:
//! `oneshot` in process, and a real hyper server on loopback with a real
//! hyper client.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service, ServiceExt};
use tower_sse_resume::{SseResumeLayer, TrackerStore};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type UpstreamBody = BoxBody<Bytes, BoxError>;

/// Every network step of a test is bounded by this.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// `n` events `id: i\ndata: event i\n\n` for i in `ids`.
/// The layer's gap signal, as it tells of a possible gap after `cursor`
/// (empty for a client that named none).
pub(crate) fn gap_event(cursor: &str) -> String {
    format!("event: {}\ndata: {cursor}\n\n", tower_sse_resume::GAP_EVENT)
}

pub(crate) fn events(ids: impl IntoIterator<Item = u32>) -> String {
    ids.into_iter()
        .map(|i| format!("id: {i}\ndata: event {i}\n\n"))
        .collect()
}

/// What the upstream answers.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) chunks: Vec<Bytes>,
    /// Fail the body with an error after the chunks.
    pub(crate) error_at_end: bool,
}

impl Reply {
    /// An event stream made of `chunks`.
    pub(crate) fn sse<I, C>(chunks: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<Bytes>,
    {
        Self {
            status: StatusCode::OK,
            headers: vec![("content-type", "text/event-stream".to_owned())],
            chunks: chunks.into_iter().map(Into::into).collect(),
            error_at_end: false,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub(crate) fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub(crate) fn failing(mut self) -> Self {
        self.error_at_end = true;
        self
    }

    fn into_response(self) -> Response<UpstreamBody> {
        let frames = self
            .chunks
            .into_iter()
            .map(|chunk| Ok::<_, BoxError>(Frame::data(chunk)));
        let error_at_end = self.error_at_end;
        // The error comes a moment later, as from a real upstream, so that a
        // server has flushed what came before it.
        let error = stream::iter(error_at_end.then_some(())).then(|()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err("upstream broke".into())
        });
        let body = StreamBody::new(stream::iter(frames).chain(error));
        let mut response = Response::new(BodyExt::boxed(body));
        *response.status_mut() = self.status;
        for (name, value) in self.headers {
            response.headers_mut().append(name, value.parse().unwrap());
        }
        response
    }
}

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
}

impl Seen {
    pub(crate) fn last_event_id(&self) -> Option<&str> {
        self.headers
            .get("last-event-id")
            .map(|v| v.to_str().unwrap())
    }
}

/// An upstream that answers each request with the next scripted reply and
/// remembers what it was asked.
#[derive(Clone)]
pub(crate) struct Upstream {
    replies: Arc<Mutex<Vec<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub(crate) fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        let mut replies: Vec<Reply> = replies.into_iter().collect();
        replies.reverse();
        Self {
            replies: Arc::new(Mutex::new(replies)),
            seen: Arc::default(),
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl<B> Service<Request<B>> for Upstream {
    type Response = Response<UpstreamBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.seen.lock().unwrap().push(Seen {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
            headers: request.headers().clone(),
        });
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop()
            .expect("no reply scripted for this request");
        std::future::ready(Ok(reply.into_response()))
    }
}

/// What the client got.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The body ended with an error after `body`.
    pub(crate) failed: bool,
}

impl Received {
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// How a test reaches the layer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport {
    /// `ServiceExt::oneshot` on the layered service.
    Oneshot,
    /// A hyper server on 127.0.0.1 and a hyper HTTP/1.1 client.
    Http,
    /// The same server, and a hyper HTTP/2 client with prior knowledge.
    Http2,
}

pub(crate) const TRANSPORTS: [Transport; 3] =
    [Transport::Oneshot, Transport::Http, Transport::Http2];

/// A request with a session, as an MCP client would send it.
pub(crate) fn get(path: &str, session: &str) -> http::request::Builder {
    Request::get(path).header("mcp-session-id", session)
}

/// Sends `requests` in order through one layered upstream, each one to the
/// end of its body, and returns what the client got for each.
pub(crate) async fn exchange<T: TrackerStore>(
    transport: Transport,
    layer: &SseResumeLayer<T>,
    upstream: &Upstream,
    requests: Vec<Request<()>>,
) -> Vec<Received> {
    let service = layer.layer(upstream.clone());
    let mut received = Vec::new();
    match transport {
        Transport::Oneshot => {
            for request in requests {
                let response = service.clone().oneshot(request).await.unwrap();
                received.push(read(response).await);
            }
        }
        Transport::Http | Transport::Http2 => {
            let server = Server::start(service).await.over(transport);
            for request in requests {
                received.push(server.send(request).await);
            }
        }
    }
    received
}

/// Reads a response to its end, keeping the bytes before an error.
pub(crate) async fn read<B>(response: Response<B>) -> Received
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    let mut failed = false;
    loop {
        match tokio::time::timeout(STEP, body.frame())
            .await
            .expect("body stalled")
        {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(_)) => {
                failed = true;
                break;
            }
            None => break,
        }
    }
    Received {
        status: parts.status,
        headers: parts.headers,
        body: bytes.into(),
        failed,
    }
}

/// A hyper server on a free loopback port, stopped when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    /// Whether the client speaks HTTP/2 to it.
    http2: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(crate) async fn start<S, B>(service: S) -> Self
    where
        S: Service<Request<hyper::body::Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
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
        Self {
            addr,
            http2: false,
            task,
        }
    }

    /// The same server, its client speaking HTTP/2 for `Transport::Http2`.
    pub(crate) fn over(mut self, transport: Transport) -> Self {
        self.http2 = matches!(transport, Transport::Http2);
        self
    }

    /// Sends one request on a new connection and reads the whole response.
    pub(crate) async fn send(&self, request: Request<()>) -> Received {
        let response = self.open(request).await;
        read(response).await
    }

    /// Sends one request on a new connection and returns the response with
    /// its body still streaming.
    pub(crate) async fn open(&self, request: Request<()>) -> Response<hyper::body::Incoming> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(self.addr))
            .await
            .unwrap()
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        if self.http2 {
            // HTTP/2 names the server in the URI's authority.
            let target = parts
                .uri
                .path_and_query()
                .map_or("/", |target| target.as_str());
            parts.uri = format!("http://{}{target}", self.addr).parse().unwrap();
            let io = TokioIo::new(stream);
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = Request::from_parts(parts, Empty::<Bytes>::new());
            return tokio::time::timeout(STEP, sender.send_request(request))
                .await
                .unwrap()
                .unwrap();
        }
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        parts
            .headers
            .insert("host", self.addr.to_string().parse().unwrap());
        let request = Request::from_parts(parts, Empty::<Bytes>::new());
        tokio::time::timeout(STEP, sender.send_request(request))
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body that yields `chunks` one per poll, then waits forever: a stream
/// whose upstream is still open.
pub(crate) struct OpenEnded {
    chunks: Vec<Bytes>,
}

impl OpenEnded {
    pub(crate) fn new(chunks: impl IntoIterator<Item = &'static str>) -> Self {
        let mut chunks: Vec<Bytes> = chunks
            .into_iter()
            .map(|c: &'static str| Bytes::from_static(c.as_bytes()))
            .collect();
        chunks.reverse();
        Self { chunks }
    }
}

impl Body for OpenEnded {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.chunks.pop() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
}

/// Polls a future once, without a runtime.
pub(crate) fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// The fingerprint of the event of `block`, one whole block, as the layer
/// records it with its id.
pub(crate) fn fingerprint_of(block: &str) -> u64 {
    let mut framer = tower_sse_resume::framer::Framer::new();
    framer.push(Bytes::copy_from_slice(block.as_bytes()));
    match framer.next_segment() {
        Some(tower_sse_resume::framer::Segment::Block(block)) => block.fingerprint(),
        other => panic!("not one block: {other:?}"),
    }
}
