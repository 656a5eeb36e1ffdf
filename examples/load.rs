//! A load run: N concurrent SSE streams through a streaming reverse proxy on
//! loopback, with `SseResumeLayer` on, off, and without the proxy at all.
//!
//! ```text
//! ulimit -n 8192; cargo run --release --example load
//! cargo run --release --example load -- --streams 100,1000 --seconds 10 --rate 20
//! ```
//!
//! This process runs an upstream that sends every stream `--rate` events a
//! second, each stamped with its send time, and the clients (plain hyper
//! connections, one stream each). The proxy runs in a child process, this
//! program again with `proxy on|off`, so that its peak RSS (`VmHWM`) and
//! CPU time are its own. For each stream count and mode it reports the
//! events the clients received per second, the latency from the upstream's
//! send to the client's receive (p50, p99, max), and the proxy's peak RSS
//! and CPU. Not part of the test suite.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::{Layer, Service, service_fn};
use tower_sse_resume::SseResumeLayer;

#[path = "common/process.rs"]
mod process;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

const USAGE: &str = "\
Usage: load [--streams N,N..] [--seconds S] [--rate R] [--modes M,M..] [--repeat K]

Options:
  --streams N,N..   concurrent SSE streams, one run each (default 100,1000)
  --seconds S       measured seconds per run (default 10)
  --rate R          events per second on each stream (default 20)
  --modes M,M..     direct (no proxy), off (proxy without the layer), on
                    (proxy with the layer) (default direct,off,on)
  --repeat K        run every mode K times, in turns, and report medians
                    (default 1)

N streams need about 2N + 100 open files in this process and in the proxy:
raise the limit first, e.g. `ulimit -n 8192`.";

/// Padding that brings each event to about 100 bytes, a small JSON-RPC
/// notification.
const PAD: &str = "................................................................";

struct Options {
    streams: Vec<usize>,
    seconds: u64,
    rate: u32,
    modes: Vec<Mode>,
    repeat: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Direct,
    Off,
    On,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Off => "off",
            Mode::On => "on",
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if args.first().map(String::as_str) == Some("proxy") {
        return runtime.block_on(proxy_main(&args[1..]));
    }
    let options = match parse_args(&args) {
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
    match runtime.block_on(drive(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        streams: vec![100, 1000],
        seconds: 10,
        rate: 20,
        modes: vec![Mode::Direct, Mode::Off, Mode::On],
        repeat: 1,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--streams" => {
                let value = value()?;
                options.streams = value
                    .split(',')
                    .map(|n| n.parse().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()
                    .ok_or(format!("--streams: not a list of counts: {value}"))?;
            }
            "--seconds" => {
                let value = value()?;
                options.seconds = value
                    .parse()
                    .ok()
                    .filter(|&s| (1..=3600).contains(&s))
                    .ok_or(format!("--seconds: want 1..=3600, got {value}"))?;
            }
            "--rate" => {
                let value = value()?;
                options.rate = value
                    .parse()
                    .ok()
                    .filter(|&r| (1..=10_000).contains(&r))
                    .ok_or(format!("--rate: want 1..=10000, got {value}"))?;
            }
            "--repeat" => {
                let value = value()?;
                options.repeat = value
                    .parse()
                    .ok()
                    .filter(|&k| (1..=100).contains(&k))
                    .ok_or(format!("--repeat: want 1..=100, got {value}"))?;
            }
            "--modes" => {
                let value = value()?;
                options.modes = value
                    .split(',')
                    .map(|mode| match mode {
                        "direct" => Some(Mode::Direct),
                        "off" => Some(Mode::Off),
                        "on" => Some(Mode::On),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or(format!("--modes: want direct, off or on: {value}"))?;
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(options))
}

// ---------------------------------------------------------------------------
// The driver: upstream, proxy child, clients
// ---------------------------------------------------------------------------

/// What the clients measured in one run.
struct Outcome {
    streams: usize,
    mode: Mode,
    events: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
    proxy: Option<ProxyUsage>,
}

struct ProxyUsage {
    peak_rss_kib: u64,
    cpu_seconds: f64,
}

async fn drive(options: Options) -> Result<(), String> {
    let max_streams = options.streams.iter().copied().max().unwrap_or(0);
    let limit = open_files_limit().unwrap_or(u64::MAX);
    if limit < 2 * max_streams as u64 + 100 {
        return Err(format!(
            "{max_streams} streams need about {} open files, the limit is {limit}: \
             run `ulimit -n 8192` first",
            2 * max_streams + 100
        ));
    }
    let upstream = start_upstream(options.rate)
        .await
        .map_err(|error| format!("upstream: {error}"))?;
    println!(
        "{} s per run, {} events/s per stream, events of about 100 bytes, upstream {upstream}",
        options.seconds, options.rate
    );
    let mut summaries = Vec::new();
    for &streams in &options.streams {
        // In turns, so that a noisy moment spreads over every mode.
        for _ in 0..options.repeat {
            for &mode in &options.modes {
                let summary = run(streams, mode, upstream, &options).await?.summary();
                summary.print(options.rate);
                summaries.push(summary);
            }
        }
    }
    if options.repeat > 1 {
        println!("medians of {} runs:", options.repeat);
        for &streams in &options.streams {
            for &mode in &options.modes {
                let runs: Vec<&Summary> = summaries
                    .iter()
                    .filter(|s| s.streams == streams && s.mode == mode)
                    .collect();
                Summary::median(&runs).print(options.rate);
            }
        }
    }
    print_layer_cost(&summaries, options.repeat);
    Ok(())
}

/// One run: a proxy child (unless direct), `streams` clients, the window.
async fn run(
    streams: usize,
    mode: Mode,
    upstream: SocketAddr,
    options: &Options,
) -> Result<Outcome, String> {
    let proxy = match mode {
        Mode::Direct => None,
        Mode::Off | Mode::On => Some(ProxyChild::spawn(mode, upstream)?),
    };
    let target = proxy.as_ref().map_or(upstream, |proxy| proxy.addr);

    let measuring = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = watch::channel(false);
    let (connected_tx, mut connected) = tokio::sync::mpsc::channel(streams);
    // Connect in waves, so that the listen backlogs do not overflow.
    let connecting = Arc::new(Semaphore::new(64));
    let mut clients = Vec::with_capacity(streams);
    for i in 0..streams {
        let session = format!("{}-{streams}-{i}", mode.name());
        clients.push(tokio::spawn(client(
            target,
            session,
            Arc::clone(&connecting),
            connected_tx.clone(),
            Arc::clone(&measuring),
            stopped.clone(),
        )));
    }
    drop(connected_tx);
    for _ in 0..streams {
        match tokio::time::timeout(Duration::from_secs(60), connected.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(error))) => return Err(format!("a client failed to connect: {error}")),
            Ok(None) | Err(_) => return Err("clients did not connect within 60 s".into()),
        }
    }
    // Let the streams settle into their rhythm before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let cpu_before = proxy.as_ref().and_then(ProxyChild::cpu_seconds);
    measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    measuring.store(false, Ordering::SeqCst);
    let seconds = start.elapsed().as_secs_f64();
    let usage = proxy.as_ref().map(|proxy| ProxyUsage {
        peak_rss_kib: proxy.peak_rss_kib().unwrap_or(0),
        cpu_seconds: proxy
            .cpu_seconds()
            .zip(cpu_before)
            .map_or(0.0, |(after, before)| after - before),
    });

    let _ = stop.send(true);
    let mut events = 0;
    let mut latencies_us = Vec::new();
    for client in clients {
        let got = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .map_err(|_| "a client did not stop within 10 s".to_owned())?
            .map_err(|error| format!("a client failed: {error}"))??;
        events += got.events;
        latencies_us.extend(got.latencies_us);
    }
    drop(proxy);
    Ok(Outcome {
        streams,
        mode,
        events,
        seconds,
        latencies_us,
        proxy: usage,
    })
}

/// What one client counted while measuring.
struct Got {
    events: u64,
    latencies_us: Vec<u32>,
}

/// One SSE stream: connect, then read and time events until told to stop.
async fn client(
    target: SocketAddr,
    session: String,
    connecting: Arc<Semaphore>,
    connected: tokio::sync::mpsc::Sender<Result<(), String>>,
    measuring: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> Result<Got, String> {
    let response = {
        let _permit = connecting.acquire().await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(30), open(target, &session)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let _ = connected.send(Err(error.clone())).await;
                return Err(error);
            }
            Err(_) => {
                let error = "connect timed out".to_owned();
                let _ = connected.send(Err(error.clone())).await;
                return Err(error);
            }
        }
    };
    let _ = connected.send(Ok(())).await;

    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut got = Got {
        events: 0,
        latencies_us: Vec::new(),
    };
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stop.changed() => return Ok(got),
        };
        let Some(Ok(frame)) = frame else {
            return Err(format!("stream {session} ended early"));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = micros();
        buffer.extend_from_slice(&data);
        while let Some(end) = memchr::memmem::find(&buffer, b"\n\n") {
            let sent = sent_micros(&buffer[..end]);
            if let (true, Some(sent)) = (measuring.load(Ordering::Relaxed), sent) {
                got.events += 1;
                got.latencies_us
                    .push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
            }
            buffer.drain(..end + 2);
        }
    }
}

/// Opens `GET /events` on a new connection.
async fn open(target: SocketAddr, session: &str) -> Result<Response<Incoming>, String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("/events")
        .header(header::HOST, target.to_string())
        .header("mcp-session-id", session)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    Ok(response)
}

/// The send time in an event block's `data: SENT PAD` line.
fn sent_micros(block: &[u8]) -> Option<u64> {
    let start = memchr::memmem::find(block, b"data: ")? + 6;
    let rest = &block[start..];
    let end = rest.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Microseconds since this process started: the upstream and the clients
/// share the clock.
fn micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

async fn start_upstream(rate: u32) -> std::io::Result<SocketAddr> {
    let period = Duration::from_secs(1) / rate;
    let service = service_fn(move |request: Request<Incoming>| async move {
        if request.uri().path() != "/events" {
            return Ok::<_, Infallible>(status(StatusCode::NOT_FOUND));
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let events = futures_util::stream::unfold((tick, 1u64), |(mut tick, id)| async move {
            tick.tick().await;
            let block = format!("id: {id}\ndata: {} {PAD}\n\n", micros());
            Some((Ok(Frame::data(Bytes::from(block))), (tick, id + 1)))
        });
        let mut response = Response::new(BoxBody::new(StreamBody::new(events)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        Ok(response)
    });
    serve(TcpListener::bind("127.0.0.1:0").await?, service)
}

/// Serves `service` on `listener` in the background.
fn serve<S, B>(listener: TcpListener, service: S) -> std::io::Result<SocketAddr>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("accept: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(BoxError::from).boxed());
    *response.status_mut() = status;
    response
}

// ---------------------------------------------------------------------------
// The proxy, in a child process
// ---------------------------------------------------------------------------

/// The proxy child, killed when dropped.
struct ProxyChild {
    child: Child,
    addr: SocketAddr,
}

impl ProxyChild {
    fn spawn(mode: Mode, upstream: SocketAddr) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut child = Command::new(exe)
            .args(["proxy", mode.name(), &upstream.to_string()])
            // It exits when this pipe closes, even if this process dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("proxy process: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        let read = BufReader::new(stdout).read_line(&mut line);
        let addr = match read {
            Ok(_) => line
                .trim()
                .strip_prefix("listening ")
                .and_then(|a| a.parse().ok()),
            Err(_) => None,
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the proxy process said {line:?}"));
        };
        Ok(Self { child, addr })
    }

    /// The child's peak resident set, in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        process::status_kib(self.child.id(), "VmHWM:")
    }

    /// The child's user and system CPU time so far.
    fn cpu_seconds(&self) -> Option<f64> {
        process::cpu_seconds(self.child.id())
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `load proxy on|off UPSTREAM`: the proxy, with the layer or without.
async fn proxy_main(args: &[String]) -> ExitCode {
    let (Some(mode), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: load proxy on|off HOST:PORT");
        return ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("load proxy: not an address: {upstream}");
        return ExitCode::from(2);
    };
    // Leave when the driver goes, however it goes.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        eprintln!("load proxy: cannot listen");
        return ExitCode::FAILURE;
    };
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let forward = service_fn(move |request| forward(client.clone(), upstream, request));
    let served = match mode.as_str() {
        "on" => serve(listener, SseResumeLayer::new().layer(forward)),
        "off" => serve(listener, forward),
        _ => {
            eprintln!("load proxy: want on or off, got {mode}");
            return ExitCode::from(2);
        }
    };
    let Ok(addr) = served else {
        return ExitCode::FAILURE;
    };
    println!("listening {addr}");
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

/// Streams `request` to `upstream` and the response back, as
/// `examples/reverse_proxy.rs` does.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    parts.uri = uri;
    if let Ok(host) = HeaderValue::from_str(&upstream.to_string()) {
        parts.headers.insert(header::HOST, host);
    }
    Ok(
        match client.request(Request::from_parts(parts, body)).await {
            Ok(response) => response.map(|body| body.map_err(BoxError::from).boxed()),
            Err(_) => status(StatusCode::BAD_GATEWAY),
        },
    )
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

/// One run in figures.
#[derive(Clone, Copy)]
struct Summary {
    streams: usize,
    mode: Mode,
    events_per_second: f64,
    /// Latencies in milliseconds.
    p50: f64,
    p99: f64,
    max: f64,
    /// The proxy's peak RSS in MiB and CPU use in percent of one core.
    proxy: Option<(f64, f64)>,
}

impl Outcome {
    fn summary(mut self) -> Summary {
        self.latencies_us.sort_unstable();
        let sorted = &self.latencies_us;
        Summary {
            streams: self.streams,
            mode: self.mode,
            events_per_second: self.events as f64 / self.seconds,
            p50: percentile(sorted, 0.50),
            p99: percentile(sorted, 0.99),
            max: percentile(sorted, 1.0),
            proxy: self.proxy.map(|usage| {
                (
                    usage.peak_rss_kib as f64 / 1024.0,
                    usage.cpu_seconds / self.seconds * 100.0,
                )
            }),
        }
    }
}

impl Summary {
    /// The median of each figure over `runs` of one stream count and mode.
    fn median(runs: &[&Summary]) -> Summary {
        let median = |figure: &dyn Fn(&Summary) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(|run| figure(run)).collect();
            values.sort_unstable_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Summary {
            streams: runs[0].streams,
            mode: runs[0].mode,
            events_per_second: median(&|s| s.events_per_second),
            p50: median(&|s| s.p50),
            p99: median(&|s| s.p99),
            max: median(&|s| s.max),
            proxy: runs[0].proxy.map(|_| {
                (
                    median(&|s| s.proxy.map_or(0.0, |p| p.0)),
                    median(&|s| s.proxy.map_or(0.0, |p| p.1)),
                )
            }),
        }
    }

    fn print(&self, rate: u32) {
        let proxy = self.proxy.map_or("no proxy".to_owned(), |(rss, cpu)| {
            format!("proxy peak RSS {rss:6.1} MiB, CPU {cpu:5.1} %")
        });
        println!(
            "{:>5} streams  {:<6}  {:>8.0} events/s (nominal {:>6})  \
             latency p50 {:6.3} ms  p99 {:7.3} ms  max {:8.3} ms  {proxy}",
            self.streams,
            self.mode.name(),
            self.events_per_second,
            self.streams as u64 * u64::from(rate),
            self.p50,
            self.p99,
            self.max,
        );
    }
}

/// The `q` quantile of `sorted` microseconds, in milliseconds.
fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[rank]) / 1000.0
}

/// The latency the layer adds: `on` minus `off` at each stream count,
/// from the medians when the runs were repeated.
fn print_layer_cost(summaries: &[Summary], repeat: usize) {
    let median_of = |streams: usize, mode: Mode| {
        let runs: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.streams == streams && s.mode == mode)
            .collect();
        (!runs.is_empty()).then(|| Summary::median(&runs))
    };
    let mut counts: Vec<usize> = summaries.iter().map(|s| s.streams).collect();
    counts.dedup();
    for streams in counts {
        let (Some(on), Some(off)) = (median_of(streams, Mode::On), median_of(streams, Mode::Off))
        else {
            continue;
        };
        let rss = match (on.proxy, off.proxy) {
            (Some(on), Some(off)) => format!(", {:+.1} MiB peak RSS", on.0 - off.0),
            _ => String::new(),
        };
        println!(
            "{streams:>5} streams: the layer adds {:+.3} ms at p50, {:+.3} ms at p99{rss} \
             (median of {repeat})",
            on.p50 - off.p50,
            on.p99 - off.p99,
        );
    }
}
