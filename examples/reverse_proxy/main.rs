//! A streaming reverse proxy with `SseResumeLayer` in front.
//!
//! With no arguments it runs a self-contained demo: an upstream on loopback
//! that numbers its events, drops the connection every few seconds and, on a
//! reconnect, replays from a few events earlier than asked. Through the
//! proxy, clients see every event exactly once. Its page, at `/`, shows
//! the same stream straight from the upstream (`/direct/events`, the layer
//! left out) beside the stream through the layer (`/events`), with the
//! layer's counters from `/demo/stats` (`demo.rs`).
//!
//! `--demo live` runs an upstream that cannot resume instead: it ignores
//! `Last-Event-ID`, and a client gets the events that happen while it is
//! connected. The proxy cuts every client's connection every few seconds,
//! as a flaky network would. Without `--linger`, what happens while the
//! client reconnects is lost; with it, nothing is.
//!
//! ```text
//! cargo run --example reverse_proxy                      # the demo
//! cargo run --example reverse_proxy -- --demo live             # events lost
//! cargo run --example reverse_proxy -- --demo live --linger 30 # none lost
//! cargo run --example reverse_proxy -- --upstream http://127.0.0.1:3000
//! cargo run --example reverse_proxy -- --help
//! cargo run --example reverse_proxy --features redis -- --redis redis://127.0.0.1:6379/
//! cargo run --example reverse_proxy --features metrics -- --metrics 127.0.0.1:9090
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use std::convert::Infallible;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_sse_resume::{HistoryLimits, SseResumeLayer, Stats, TrackerStore};

mod demo;
mod proxy;

use proxy::ProxyBody;

const USAGE: &str = "\
Usage: reverse_proxy [--listen ADDR] [--upstream URL] [--demo replay|live]
                     [--redis URL] [--history] [--stamp-ids] [--linger SECS]
                     [--metrics ADDR]

A streaming SSE reverse proxy that makes event streams resumable and
duplicate-free. With no --upstream it starts a demo upstream on loopback,
and serves a page at / that shows its stream straight (/direct/events,
without the layer) beside the same through the layer (/events), with the
layer's counters (/demo/stats).

Options:
  --listen ADDR     address to listen on (default 127.0.0.1:8080)
  --upstream URL    proxy this http:// server instead of the demo
  --demo MODE       the demo upstream: `replay` (the default) drops every
                    few seconds and replays from earlier than asked; `live`
                    cannot resume at all, and the proxy cuts each client's
                    connection every few seconds
  --redis URL       keep streams in Redis, shared by every replica
                    (build with --features redis)
  --history         keep a replay history, to resume clients even when
                    the upstream cannot
  --stamp-ids       stamp ids on events that come without one
  --linger SECS     when a client goes away, read its upstream on for up
                    to SECS seconds, so that it loses nothing (implies
                    --history)
  --metrics ADDR    serve the layer's counters at http://ADDR/metrics in
                    the Prometheus text format (build with --features
                    metrics)
  --help            print this help

The scope of a stream is the request's Mcp-Session-Id, or for the demo's
page, whose EventSource cannot send headers, `?session=` in the URL: for
the demo only, as a URL leaks. Either way a stream is bound to the
request's Authorization: another token never reads it. With --redis,
give every replica the same secret in SSE_RESUME_CREDENTIAL_KEY, or each
resumes the streams of requests with an Authorization only itself.";

struct Options {
    listen: SocketAddr,
    upstream: Option<Uri>,
    live: bool,
    redis: Option<String>,
    history: bool,
    stamp_ids: bool,
    linger: Option<Duration>,
    metrics: Option<SocketAddr>,
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
        live: false,
        redis: None,
        history: false,
        stamp_ids: false,
        linger: None,
        metrics: None,
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
            "--demo" => match value()?.as_str() {
                "live" => options.live = true,
                "replay" => options.live = false,
                other => return Err(format!("--demo: want replay or live, got {other}")),
            },
            "--linger" => {
                let value = value()?;
                let secs: u64 = value
                    .parse()
                    .map_err(|_| format!("--linger: not a number of seconds: {value}"))?;
                options.linger = Some(Duration::from_secs(secs));
                options.history = true;
            }
            "--metrics" => {
                let value = value()?;
                if !cfg!(feature = "metrics") {
                    return Err("--metrics: build with --features metrics".into());
                }
                let addr = value
                    .parse()
                    .map_err(|_| format!("--metrics: not an address: {value}"))?;
                options.metrics = Some(addr);
            }
            "--history" => options.history = true,
            "--stamp-ids" => options.stamp_ids = true,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(options))
}

async fn run(options: Options) -> Result<(), String> {
    if let Some(addr) = options.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|error| format!("--metrics {addr}: {error}"))?;
        println!("metrics: http://{addr}/metrics");
    }
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
            let demo = demo::start_upstream(options.live)
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
    if let Some(linger) = options.linger {
        layer = layer.linger(linger);
    }
    tokio::spawn(log_stats(layer.stats()));

    let label = upstream.to_string();
    let forwarder = proxy::forwarder(upstream);
    // In the live demo, every client's connection is cut now and then.
    let cut = (is_demo && options.live).then_some(demo::LIVE_CUT);
    if is_demo && options.live {
        let linger = if options.linger.is_some() {
            "with --linger, nothing is lost"
        } else {
            "without --linger, what happens while a client reconnects is lost"
        };
        println!(
            "proxying http://{addr} -> a live demo upstream that cannot resume; the proxy cuts each client every {} s",
            demo::LIVE_CUT.as_secs()
        );
        println!("{linger}");
        println!("watch: open http://{addr}/ in a browser: the page shows the stream straight");
        println!("       from the upstream (the losses) and through the layer");
    } else if is_demo {
        println!("proxying http://{addr} -> a demo upstream that drops every 3 s and replays");
        println!("watch: open http://{addr}/ in a browser: the page shows the stream straight");
        println!("       from the upstream (duplicates in red) and through the layer (each once)");
        println!("try:   curl -N -H 'Mcp-Session-Id: demo' http://{addr}/events");
        println!("       and when the upstream drops it, the same again: it goes on, no repeats");
    } else {
        println!("proxying http://{addr} -> {label}");
        println!("try:   curl -N -H 'Mcp-Session-Id: s1' http://{addr}/YOUR/EVENTS/PATH");
    }

    match options.redis {
        #[cfg(feature = "redis")]
        Some(url) => {
            // The layer hands the store its history's limits.
            let store = tower_sse_resume::RedisStore::connect(&url)
                .await
                .map_err(|error| format!("--redis {url}: {error}"))?;
            // Every replica must fingerprint credentials alike to resume
            // each other's streams: a secret they share, from the
            // environment rather than the command line, which `ps` shows.
            let layer = match std::env::var("SSE_RESUME_CREDENTIAL_KEY") {
                Ok(key) => layer.credential_key(key),
                Err(_) => layer,
            };
            println!("streams in Redis at {url}, shared with every proxy using it");
            serve(listener, layer.store(store), forwarder, is_demo, cut).await
        }
        _ => serve(listener, layer, forwarder, is_demo, cut).await,
    }
}

/// Serves the proxy: the demo's page and routes around it for the demo,
/// the layer in front of `forwarder` alone for a real upstream.
async fn serve<T, F>(
    listener: TcpListener,
    layer: SseResumeLayer<T>,
    forwarder: F,
    is_demo: bool,
    cut: Option<Duration>,
) -> Result<(), String>
where
    T: TrackerStore,
    F: tower::Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    F::Future: Send + 'static,
{
    if is_demo {
        proxy::serve(listener, demo::app(layer, forwarder, cut)).await
    } else {
        let service = ServiceBuilder::new().layer(layer).service(forwarder);
        proxy::serve(listener, service).await
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
             replayed {:>5}  gaps {:>3}  held {:>3}  takeovers {:>4}",
            now.events_forwarded,
            now.duplicates_dropped,
            now.cursors_injected,
            now.events_replayed,
            now.gaps,
            now.held,
            now.takeovers
        );
    }
}
