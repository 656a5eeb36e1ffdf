//! The demo: a flaky upstream on loopback, and a page that watches it two
//! ways at once, straight and through the layer. The end-to-end tests
//! (`tests/end_to_end/demo.rs`) drive this same code.
//!
//! The proxy serves the page at `/`, the layer's counters as JSON at
//! `/demo/stats`, the upstream's stream through the layer at `/events`, and
//! the same stream without the layer at `/direct/events`: one origin, so
//! the page's two `EventSource`s need no CORS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_sse_resume::{SseResumeLayer, Stats, TrackerStore};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response of the demo, whichever way it went.
pub(crate) type DemoBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long a client's connection lasts in the live demo, either way.
pub(crate) const LIVE_CUT: Duration = Duration::from_secs(4);
/// Events per connection before the replaying upstream drops it.
const PER_CONNECTION: u64 = 12;
/// How far back a reconnect replays: the client has these already.
const REPLAY: u64 = 4;
const INTERVAL: Duration = Duration::from_millis(250);
/// Where the page finds the upstream's stream without the layer.
const DIRECT: &str = "/direct";

/// The demo behind the proxy: `/` the page, `/demo/stats` the layer's
/// counters, `/direct/...` the upstream without the layer, and everything
/// else through `layer` to `forwarder`. With `cut`, every response ends
/// after that long, either way, as a flaky network would end it.
pub(crate) fn app<T, F, B>(
    layer: SseResumeLayer<T>,
    forwarder: F,
    cut: Option<Duration>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<DemoBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<DemoBody>, Infallible>> + Send,
> + Clone
+ Send
+ 'static
where
    T: TrackerStore,
    F: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    F::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let stats = layer.stats();
    let through = layer.layer(forwarder.clone());
    service_fn(move |mut request: Request<Incoming>| {
        let (through, direct, stats) = (through.clone(), forwarder.clone(), stats.clone());
        async move {
            let path = request.uri().path();
            if path == "/" {
                return Ok(html(PAGE));
            }
            if path == "/demo/stats" {
                return Ok(json(&stats));
            }
            if let Some(rest) = path.strip_prefix(DIRECT).filter(|r| r.starts_with('/')) {
                // The same upstream path, without the layer.
                let query = request.uri().query().map(|q| format!("?{q}"));
                let uri = format!("{rest}{}", query.unwrap_or_default());
                *request.uri_mut() = uri.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
                let response = direct.oneshot(request).await?;
                return Ok(cut_after(response, cut));
            }
            let response = through.oneshot(request).await?;
            Ok(cut_after(response, cut))
        }
    })
}

/// The layer's counters that tell what it did for the page's clients.
fn json(stats: &Stats) -> Response<DemoBody> {
    let now = stats.snapshot();
    let body = serde_json::json!({
        "events_forwarded": now.events_forwarded,
        "duplicates_dropped": now.duplicates_dropped,
        "events_replayed": now.events_replayed,
        "takeovers": now.takeovers,
        "cursors_injected": now.cursors_injected,
        "gaps": now.gaps,
        "held": now.held,
    });
    typed(full(body.to_string()), "application/json")
}

fn html(page: &'static str) -> Response<DemoBody> {
    typed(full(page), "text/html; charset=utf-8")
}

/// A response of `content_type` that no cache keeps: the page, the
/// counters and the streams are all live.
fn typed(body: DemoBody, content_type: &'static str) -> Response<DemoBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn full(body: impl Into<Bytes>) -> DemoBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn not_found() -> Response<DemoBody> {
    let mut response = Response::new(full("not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Starts the demo upstream on a free loopback port: numbered events at
/// `/events`. The replaying one (`live` false) drops every connection
/// after a few events and, on a reconnect, starts from earlier than the
/// client's `Last-Event-ID`. The live one cannot resume at all: event `n`
/// happens `n` intervals after it started, whoever is connected.
pub(crate) async fn start_upstream(live: bool) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let service = hyper::service::service_fn(move |request| async move {
                    Ok::<_, Infallible>(match request.uri().path() {
                        "/events" if live => live_events(started),
                        "/events" => replaying_events(&request),
                        _ => not_found(),
                    })
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn replaying_events(request: &Request<Incoming>) -> Response<DemoBody> {
    let asked = request
        .headers()
        .get("last-event-id")
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    // At least once: start a few events before the client's cursor.
    let first = asked.map_or(1, |id| id.saturating_sub(REPLAY).max(1));
    let events = futures_util::stream::unfold(first, move |id| async move {
        if id >= first + PER_CONNECTION {
            // Drop the connection, as a flaky upstream would.
            return Some((Err::<Frame<Bytes>, BoxError>("demo drop".into()), u64::MAX));
        }
        if id == u64::MAX {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
        Some((Ok(Frame::data(event(id))), id + 1))
    });
    event_stream(events)
}

fn live_events(started: tokio::time::Instant) -> Response<DemoBody> {
    let first = (started.elapsed().as_millis() / INTERVAL.as_millis()) as u64 + 1;
    let events = futures_util::stream::unfold(first, move |id| async move {
        tokio::time::sleep_until(started + INTERVAL * id as u32).await;
        Some((Ok::<_, BoxError>(Frame::data(event(id))), id + 1))
    });
    event_stream(events)
}

fn event(id: u64) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: event {id}\n\n"))
}

fn event_stream(
    events: impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static,
) -> Response<DemoBody> {
    // Browsers wait 3 s before they reconnect unless told otherwise.
    let retry = futures_util::stream::once(async {
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"retry: 500\n\n")))
    });
    let body = StreamBody::new(retry.chain(events)).boxed_unsync();
    typed(body, "text/event-stream")
}

/// The flaky network: the response's body ends after `cut`, as if its
/// connection dropped, and the browser reconnects.
pub(crate) fn cut_after<B>(response: Response<B>, cut: Option<Duration>) -> Response<DemoBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| {
        CutAfter {
            body: Box::pin(body),
            deadline: cut.map(|cut| Box::pin(tokio::time::sleep(cut))),
        }
        .map_err(Into::into)
        .boxed_unsync()
    })
}

struct CutAfter<B> {
    body: Pin<Box<B>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B: Body> Body for CutAfter<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        self.body.as_mut().poll_frame(cx)
    }
}

/// The page: the same upstream stream twice, side by side. On the left
/// straight from the upstream, each duplicate in red and each gap marked;
/// on the right through the layer. Counters for both, and the layer's own
/// from `/demo/stats`. The element ids are what the tests read.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse-resume: with and without</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 1.5em 2em; color: #222 }
h1 { font-size: 1.4em; margin: 0 0 .2em }
.intro { margin: 0 0 1em; color: #555 }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em }
.side { border: 2px solid #ccc; border-radius: 8px; padding: .8em 1em }
#direct { border-color: #d9a0a0 } #proxied { border-color: #9cc79c }
.side h2 { font-size: 1.1em; margin: 0 0 .5em }
table { border-collapse: collapse; margin-bottom: .6em }
td { padding: .1em .8em .1em 0 } td.n { font: bold 1.3em ui-monospace, monospace; text-align: right }
.bad td.n { color: #b00 } .good td.n { color: #070 }
.log { font: 13px ui-monospace, monospace; height: 16em; overflow: hidden; background: #fafafa; padding: .3em .5em }
.dup { color: #fff; background: #c00 } .gap { color: #b00; font-weight: bold } .reconnect { color: #888 }
#layer { margin-top: 1em; padding: .6em 1em; background: #f2f5fb; border-radius: 8px }
#layer span { font: bold 1.1em ui-monospace, monospace; margin-right: 1.5em }
</style>
<h1>tower-sse-resume: the same stream, with and without the layer</h1>
<p class="intro">Both sides read one flaky upstream whose connections drop.
The browser reconnects with <code>Last-Event-ID</code>. Straight from the
upstream, its replays come twice and what it sent while the browser was
away is lost. Through <code>SseResumeLayer</code>, every event comes once.</p>
<div class="sides">
  <section class="side" id="direct">
    <h2>Straight to the upstream <code>/direct/events</code></h2>
    <table>
      <tr><td>events received</td><td class="n" id="direct-received">0</td></tr>
      <tr class="bad"><td>duplicates</td><td class="n" id="direct-duplicates">0</td></tr>
      <tr class="bad"><td>lost</td><td class="n" id="direct-lost">0</td></tr>
      <tr><td>reconnects</td><td class="n" id="direct-reconnects">0</td></tr>
    </table>
    <div class="log" id="direct-log"></div>
  </section>
  <section class="side" id="proxied">
    <h2>Through the layer <code>/events</code></h2>
    <table>
      <tr><td>events received</td><td class="n" id="proxied-received">0</td></tr>
      <tr class="good"><td>duplicates</td><td class="n" id="proxied-duplicates">0</td></tr>
      <tr class="good"><td>lost</td><td class="n" id="proxied-lost">0</td></tr>
      <tr><td>reconnects</td><td class="n" id="proxied-reconnects">0</td></tr>
      <tr><td>gaps signalled by the layer</td><td class="n" id="proxied-gaps">0</td></tr>
    </table>
    <div class="log" id="proxied-log"></div>
  </section>
</div>
<div id="layer">The layer's own counters (<code>/demo/stats</code>, every
client): duplicates dropped <span id="layer-duplicates_dropped">0</span>
replayed <span id="layer-events_replayed">0</span>
takeovers <span id="layer-takeovers">0</span>
cursors injected <span id="layer-cursors_injected">0</span></div>
<script>
const session = Math.random().toString(36).slice(2);
function watch(side, url) {
  const counts = { received: 0, duplicates: 0, lost: 0, reconnects: -1, gaps: 0 };
  let last = 0;
  const log = document.getElementById(side + "-log");
  function line(text, cls) {
    const div = document.createElement("div");
    div.textContent = text;
    if (cls) div.className = cls;
    log.prepend(div);
    while (log.childNodes.length > 60) log.lastChild.remove();
  }
  function show() {
    for (const name in counts) {
      const cell = document.getElementById(side + "-" + name);
      if (cell) cell.textContent = Math.max(counts[name], 0);
    }
  }
  const source = new EventSource(url);
  source.onopen = () => {
    if (++counts.reconnects > 0) line("... reconnected", "reconnect");
    show();
  };
  source.addEventListener("sse-resume-gap", () => {
    counts.gaps++; line("gap signalled by the layer", "gap"); show();
  });
  source.onmessage = (event) => {
    const id = Number(event.lastEventId);
    counts.received++;
    if (last && id <= last) {
      counts.duplicates++; line(`#${id} ${event.data}  duplicate`, "dup");
    } else {
      if (last && id > last + 1) {
        counts.lost += id - last - 1;
        line(`--- ${id - last - 1} lost (#${last + 1} to #${id - 1}) ---`, "gap");
      }
      line(`#${id} ${event.data}`);
      last = id;
    }
    show();
  };
}
watch("direct", "/direct/events?session=" + session);
watch("proxied", "/events?session=" + session);
async function layer() {
  try {
    const stats = await (await fetch("/demo/stats")).json();
    for (const name in stats) {
      const cell = document.getElementById("layer-" + name);
      if (cell) cell.textContent = stats[name];
    }
  } catch (e) {}
}
setInterval(layer, 1000);
layer();
</script>
"#;
