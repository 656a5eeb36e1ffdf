//! A streaming reverse proxy with `SseResumeLayer` in front.
//!
//! With no arguments it runs a self-contained demo: an upstream on loopback
//! that numbers its events, drops the connection every few seconds and, on a
//! reconnect, replays from a few events earlier than asked. Through the
//! proxy, clients see every event exactly once.
//!
//! ```text
//! cargo run --example reverse_proxy                      # the demo
//! cargo run --example reverse_proxy -- --upstream http://127.0.0.1:3000
//! cargo run --example reverse_proxy -- --help
//! cargo run --example reverse_proxy --features redis -- --redis redis://127.0.0.1:6379/
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_sse_resume::{HistoryLimits, SseResumeLayer, Stats};

mod proxy;

use proxy::{BoxError, ProxyBody};

const USAGE: &str = "\
Usage: reverse_proxy [--listen ADDR] [--upstream URL] [--redis URL] [--history] [--stamp-ids]

A streaming SSE reverse proxy that makes event streams resumable and
duplicate-free. With no --upstream it starts a demo upstream on loopback.

Options:
  --listen ADDR     address to listen on (default 127.0.0.1:8080)
  --upstream URL    proxy this http:// server instead of the demo
  --redis URL       keep trackers in Redis, shared by every replica
                    (build with --features redis)
  --history         keep a replay history, to resume clients even when
                    the upstream cannot
  --stamp-ids       stamp ids on events that come without one
  --help            print this help";

struct Options {
    listen: SocketAddr,
    upstream: Option<Uri>,
    redis: Option<String>,
    history: bool,
    stamp_ids: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        listen: ([127, 0, 0, 1], 8080).into(),
        upstream: None,
        redis: None,
        history: false,
        stamp_ids: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => {
                let value = value()?;
                options.listen = value
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {value}"))?;
            }
            "--upstream" => {
                let value = value()?;
                let uri: Uri = value
                    .parse()
                    .map_err(|_| format!("--upstream: not a URL: {value}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!("--upstream: want http://HOST:PORT, got {value}"));
                }
                options.upstream = Some(uri);
            }
            "--redis" => {
                let value = value()?;
                if !cfg!(feature = "redis") {
                    return Err("--redis: build with --features redis".into());
                }
                options.redis = Some(value);
            }
            "--history" => options.history = true,
            "--stamp-ids" => options.stamp_ids = true,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(options))
}

async fn run(options: Options) -> Result<(), String> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", options.listen))?;
    let addr = listener.local_addr().map_err(|error| error.to_string())?;

    let is_demo = options.upstream.is_none();
    let upstream = match options.upstream {
        Some(upstream) => {
            check_reachable(&upstream).await?;
            upstream
        }
        None => {
            let demo = demo::start()
                .await
                .map_err(|error| format!("demo upstream: {error}"))?;
            format!("http://{demo}")
                .parse()
                .map_err(|_| "demo address".to_owned())?
        }
    };

    let history = options.history.then(HistoryLimits::new);
    let mut layer = SseResumeLayer::new()
        .scope(proxy::session_scope)
        .stamp_ids(options.stamp_ids);
    if let Some(limits) = history {
        layer = layer.history(limits);
    }
    tokio::spawn(log_stats(layer.stats()));

    let label = upstream.to_string();
    let forwarder = proxy::forwarder(upstream);
    if is_demo {
        println!("proxying http://{addr} -> a demo upstream that drops every 3 s and replays");
        println!("watch: open http://{addr}/ in a browser: each event arrives once");
        println!("try:   curl -N -H 'Mcp-Session-Id: demo' http://{addr}/events");
        println!("       and when the upstream drops it, the same again: it goes on, no repeats");
    } else {
        println!("proxying http://{addr} -> {label}");
        println!("try:   curl -N -H 'Mcp-Session-Id: s1' http://{addr}/YOUR/EVENTS/PATH");
    }

    match options.redis {
        #[cfg(feature = "redis")]
        Some(url) => {
            let mut store = tower_sse_resume::RedisStore::connect(&url)
                .await
                .map_err(|error| format!("--redis {url}: {error}"))?;
            if let Some(limits) = history {
                store = store.history(limits);
            }
            println!("trackers in Redis at {url}, shared with every proxy using it");
            proxy::serve(
                listener,
                ServiceBuilder::new()
                    .layer(layer.store(store))
                    .service(forwarder),
            )
            .await
        }
        _ => {
            let service = ServiceBuilder::new().layer(layer).service(forwarder);
            proxy::serve(listener, service).await
        }
    }
}

/// Fails with a clear message when nothing answers at `upstream`: better
/// at the start than as a `502` on every request.
async fn check_reachable(upstream: &Uri) -> Result<(), String> {
    let host = upstream.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = upstream.port_u16().unwrap_or(80);
    let connect = TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("upstream {upstream} unreachable: {error}")),
        Err(_) => Err(format!("upstream {upstream} unreachable: no answer in 5 s")),
    }
}

/// Prints the counters once a second, when they changed.
async fn log_stats(stats: Stats) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = None;
    loop {
        tick.tick().await;
        let now = stats.snapshot();
        if last.replace(now) == Some(now) {
            continue;
        }
        println!(
            "forwarded {:>6}  duplicates dropped {:>5}  cursors injected {:>4}  \
             replayed {:>5}  gaps {:>3}",
            now.events_forwarded,
            now.duplicates_dropped,
            now.cursors_injected,
            now.events_replayed,
            now.gaps
        );
    }
}

/// The demo upstream: numbered events, a dropped connection every few
/// seconds, and replays from earlier than asked.
mod demo {
    use super::*;
    use futures_util::StreamExt;

    /// Events per connection before it is dropped.
    const PER_CONNECTION: u64 = 12;
    /// How far back a reconnect replays: the client has these already.
    const REPLAY: u64 = 4;
    const INTERVAL: Duration = Duration::from_millis(250);

    pub(super) async fn start() -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let service = hyper::service::service_fn(respond);
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(addr)
    }

    async fn respond(request: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        if request.uri().path() != "/events" {
            let page = Full::new(Bytes::from_static(PAGE.as_bytes())).map_err(BoxError::from);
            let mut response = Response::new(page.boxed());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return Ok(response);
        }
        let asked = request
            .headers()
            .get("last-event-id")
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        // At least once: start a few events before the client's cursor.
        let first = asked.map_or(1, |id| id.saturating_sub(REPLAY).max(1));
        // Browsers wait 3 s before they reconnect unless told otherwise.
        let retry = futures_util::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"retry: 500\n\n")))
        });
        let events = futures_util::stream::unfold(first, move |id| async move {
            if id >= first + PER_CONNECTION {
                // Drop the connection, as a flaky upstream would.
                return Some((Err::<Frame<Bytes>, BoxError>("demo drop".into()), u64::MAX));
            }
            if id == u64::MAX {
                return None;
            }
            tokio::time::sleep(INTERVAL).await;
            let block = format!("id: {id}\ndata: event {id}\n\n");
            Some((Ok(Frame::data(Bytes::from(block))), id + 1))
        });
        let mut response = Response::new(BoxBody::new(StreamBody::new(retry.chain(events))));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response)
    }

    const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse-resume demo</title>
<style>body{font:14px system-ui;margin:2em} .bad{color:#b00} #log{font-family:monospace}</style>
<h1>tower-sse-resume demo</h1>
<p>The upstream drops this stream every few seconds and replays from earlier
than asked. Through the proxy, each event should arrive exactly once.</p>
<p id="summary"></p>
<div id="log"></div>
<script>
const session = Math.random().toString(36).slice(2);
const source = new EventSource("/events?session=" + session);
let last = 0, received = 0, problems = 0, reconnects = -1;
source.onopen = () => { reconnects++; show(); };
source.onmessage = (event) => {
  const id = Number(event.lastEventId);
  const line = document.createElement("div");
  line.textContent = `#${id} ${event.data}`;
  if (id !== last + 1) { problems++; line.className = "bad"; line.textContent += id <= last ? "  (duplicate)" : "  (gap)"; }
  last = Math.max(last, id); received++;
  document.getElementById("log").prepend(line);
  show();
};
function show() {
  document.getElementById("summary").textContent =
    `received ${received} events, reconnects ${reconnects}, duplicates or gaps ${problems}`;
}
</script>
"#;
}
