//! A load run: N concurrent SSE streams through a streaming reverse proxy on
//! loopback, with `SseResumeLayer` on, off, and without the proxy at all.
//!
//! ```text
//! ulimit -n 8192; cargo run --release --example load
//! cargo run --release --example load -- --streams 100,1000 --seconds 10 --rate 20
//! ulimit -n 20000; cargo run --release --example load -- --streams 9000 --seconds 15 \
//!     --rate 1 --modes off,on,history,off-left,linger --repeat 3
//! ```
//!
//! This process runs an upstream that sends every stream `--rate` events a
//! second, each stamped with its send time, and the clients (plain hyper
//! connections, one stream each). The proxy runs in a child process, this
//! program again with `proxy MODE`, so that its peak RSS (`VmHWM`) and
//! CPU time are its own. For each stream count and mode it reports the
//! events the clients received per second, the latency from the upstream's
//! send to the client's receive (p50, p99, max), and the proxy's peak RSS
//! and CPU; then what the layer costs: its peak RSS on minus off, divided
//! by the streams ("added per stream"), and its CPU on over off. Not part
//! of the test suite.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
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
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

#[path = "common/process.rs"]
mod process;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

const USAGE: &str = "\
Usage: load [--streams N,N..] [--seconds S] [--rate R] [--modes M,M..] [--repeat K]
            [--wrap CMD]

Options:
  --streams N,N..   concurrent SSE streams, one run each (default 100,1000)
  --seconds S       measured seconds per run (default 10)
  --rate R          events per second on each stream (default 20)
  --modes M,M..     (default direct,off,on)
                      direct    no proxy
                      off       the proxy without the layer
                      on        the proxy with `SseResumeLayer::new()`
                      history   with `.history(HistoryLimits::new())`
                      linger    with a history and `.linger(..)`; each
                                client leaves after its first event, and
                                the proxy reads on for it: held streams
                      off-left  the proxy without the layer, the clients
                                leaving as for linger: linger's baseline
  --repeat K        run every mode K times, in turns, and report medians
                    (default 1)
  --wrap CMD        run the proxy under CMD, split at spaces, e.g.
                    `heaptrack` or `valgrind --tool=massif`: a profile, its
                    RSS and CPU figures are then the wrapper's

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
    wrap: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Direct,
    Off,
    On,
    History,
    Linger,
    OffLeft,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::Direct,
        Mode::Off,
        Mode::On,
        Mode::History,
        Mode::Linger,
        Mode::OffLeft,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Off => "off",
            Mode::On => "on",
            Mode::History => "history",
            Mode::Linger => "linger",
            Mode::OffLeft => "off-left",
        }
    }

    fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// Whether the proxy runs the layer.
    fn layered(self) -> bool {
        matches!(self, Mode::On | Mode::History | Mode::Linger)
    }

    /// Whether each client leaves after its first event.
    fn clients_leave(self) -> bool {
        matches!(self, Mode::Linger | Mode::OffLeft)
    }

    /// The run without the layer that this one is measured against.
    fn baseline(self) -> Option<Mode> {
        match self {
            Mode::On | Mode::History => Some(Mode::Off),
            Mode::Linger => Some(Mode::OffLeft),
            Mode::Direct | Mode::Off | Mode::OffLeft => None,
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
        wrap: Vec::new(),
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
                    .map(Mode::from_name)
                    .collect::<Option<_>>()
                    .ok_or(format!(
                        "--modes: want direct, off, on, history, linger or off-left: {value}"
                    ))?;
            }
            "--wrap" => {
                options.wrap = value()?.split_whitespace().map(str::to_owned).collect();
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
    /// The bytes the layer's replay histories held at the end.
    history_bytes: u64,
}

async fn drive(options: Options) -> Result<(), String> {
    let max_streams = options.streams.iter().copied().max().unwrap_or(0);
    if let Some((soft, hard)) = open_files_limits() {
        if let Some(message) = too_few_files(max_streams, soft, hard) {
            return Err(message);
        }
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
    let mut proxy = match mode {
        Mode::Direct => None,
        _ => Some(ProxyChild::spawn(mode, upstream, &options.wrap)?),
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
            mode.clients_leave(),
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
    let usage = proxy.as_mut().map(|proxy| ProxyUsage {
        peak_rss_kib: proxy.peak_rss_kib().unwrap_or(0),
        cpu_seconds: proxy
            .cpu_seconds()
            .zip(cpu_before)
            .map_or(0.0, |(after, before)| after - before),
        history_bytes: proxy.history_bytes(),
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

/// One SSE stream: connect, then read and time events until told to stop;
/// or, when it `leaves`, go away after the first event.
async fn client(
    target: SocketAddr,
    session: String,
    connecting: Arc<Semaphore>,
    connected: tokio::sync::mpsc::Sender<Result<(), String>>,
    measuring: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
    leaves: bool,
) -> Result<Got, String> {
    let permit = connecting.acquire().await.map_err(|e| e.to_string())?;
    let opened = async {
        let response = open(target, &session).await?;
        let mut body = response.into_body();
        if leaves {
            first_event(&mut body).await?;
        }
        Ok::<_, String>(body)
    };
    let body = match tokio::time::timeout(Duration::from_secs(30), opened).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            let _ = connected.send(Err(error.clone())).await;
            return Err(error);
        }
        Err(_) => {
            let error = "connect timed out".to_owned();
            let _ = connected.send(Err(error.clone())).await;
            return Err(error);
        }
    };
    if leaves {
        // Gone before the next client comes: the proxy holds the stream.
        drop(body);
        drop(permit);
        let _ = connected.send(Ok(())).await;
        return Ok(Got {
            events: 0,
            latencies_us: Vec::new(),
        });
    }
    drop(permit);
    let _ = connected.send(Ok(())).await;

    let mut body = body;
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

/// Reads `body` up to the end of its first event.
async fn first_event(body: &mut Incoming) -> Result<(), String> {
    let mut buffer: Vec<u8> = Vec::new();
    while memchr::memmem::find(&buffer, b"\n\n").is_none() {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("the stream ended before its first event".into()),
        }
    }
    Ok(())
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

/// The soft and hard limits on open files, from `/proc/self/limits`
/// (`None` for unlimited).
fn open_files_limits() -> Option<(u64, Option<u64>)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.split_whitespace().skip(3);
    let soft = fields.next()?.parse().ok()?;
    let hard = fields.next()?.parse().ok();
    Some((soft, hard))
}

/// What to say when `streams` streams need more open files than the soft
/// limit allows: this process holds both ends of every stream but the
/// proxy's, the proxy both of its own, and each inherits the limit.
fn too_few_files(streams: usize, soft: u64, hard: Option<u64>) -> Option<String> {
    let needed = 2 * streams as u64 + 100;
    if soft >= needed {
        return None;
    }
    // A round figure, with room to spare.
    let enough = needed.div_ceil(1024) * 1024;
    let mut message = format!(
        "{streams} streams need about {needed} open files in this process and in the proxy, \
         and the limit is {soft}: run `ulimit -n {enough}` first, in the same shell"
    );
    if hard.is_some_and(|hard| hard < enough) {
        let hard = hard.unwrap_or_default();
        message += &format!(
            "; the hard limit is {hard}, so raise that first \
             (`nofile` in /etc/security/limits.conf, or `LimitNOFILE=` for a service), \
             or run fewer streams"
        );
    }
    Some(message)
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
    /// What it answers on, a line for each question.
    answers: BufReader<ChildStdout>,
}

impl ProxyChild {
    fn spawn(mode: Mode, upstream: SocketAddr, wrap: &[String]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut command = match wrap.split_first() {
            Some((wrapper, args)) => {
                let mut command = Command::new(wrapper);
                command.args(args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(["proxy", mode.name(), &upstream.to_string()])
            // It exits when this pipe closes, even if this process dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("proxy process: {e}"))?;
        let mut answers = BufReader::new(child.stdout.take().expect("piped"));
        // A wrapper may say things of its own first.
        let mut said = String::new();
        let addr = loop {
            let mut line = String::new();
            if answers.read_line(&mut line).unwrap_or(0) == 0 {
                break None;
            }
            if let Some(addr) = line.trim().strip_prefix("listening ") {
                break addr.parse().ok();
            }
            said += &line;
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the proxy process said {said:?}"));
        };
        Ok(Self {
            child,
            addr,
            answers,
        })
    }

    /// The bytes the layer's replay histories hold now, as the proxy says.
    fn history_bytes(&mut self) -> u64 {
        let asked = self
            .child
            .stdin
            .as_mut()
            .is_some_and(|stdin| stdin.write_all(b"stats\n").is_ok() && stdin.flush().is_ok());
        let mut line = String::new();
        if !asked || self.answers.read_line(&mut line).is_err() {
            return 0;
        }
        line.trim()
            .strip_prefix("history_bytes ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
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

/// `load proxy MODE UPSTREAM`: the proxy, with the layer or without.
async fn proxy_main(args: &[String]) -> ExitCode {
    let (Some(mode), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: load proxy MODE HOST:PORT");
        return ExitCode::from(2);
    };
    let Some(mode) = Mode::from_name(mode).filter(|&mode| mode != Mode::Direct) else {
        eprintln!("load proxy: not a proxy mode: {mode}");
        return ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("load proxy: not an address: {upstream}");
        return ExitCode::from(2);
    };
    let layer = match mode {
        Mode::History => SseResumeLayer::new().history(HistoryLimits::new()),
        Mode::Linger => SseResumeLayer::new()
            .history(HistoryLimits::new())
            // Longer than any run, for as many streams as any run has.
            .linger(Duration::from_secs(3600))
            .max_held_streams(1_000_000),
        _ => SseResumeLayer::new(),
    };
    // Answers the driver's questions; leaves when the driver goes, however
    // it goes.
    let stats = layer.stats();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line == "stats" {
                println!("history_bytes {}", stats.snapshot().history_bytes);
            }
        }
        std::process::exit(0);
    });
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        eprintln!("load proxy: cannot listen");
        return ExitCode::FAILURE;
    };
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let forward = service_fn(move |request| forward(client.clone(), upstream, request));
    let served = match mode.layered() {
        true => serve(listener, layer.layer(forward)),
        false => serve(listener, forward),
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
    proxy: Option<ProxyFigures>,
}

/// The proxy's figures in one run.
#[derive(Clone, Copy)]
struct ProxyFigures {
    /// Peak RSS, in KiB.
    peak_rss_kib: f64,
    /// CPU use, in percent of one core.
    cpu_percent: f64,
    /// The bytes the replay histories held at the end.
    history_bytes: f64,
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
            proxy: self.proxy.map(|usage| ProxyFigures {
                peak_rss_kib: usage.peak_rss_kib as f64,
                cpu_percent: usage.cpu_seconds / self.seconds * 100.0,
                history_bytes: usage.history_bytes as f64,
            }),
        }
    }
}

impl Summary {
    /// The median of each figure over `runs` of one stream count and mode.
    fn median(runs: &[&Summary]) -> Summary {
        let median = |figure: &dyn Fn(&Summary) -> f64| median(runs.iter().map(|run| figure(run)));
        let proxy = |figure: fn(&ProxyFigures) -> f64| {
            move |s: &Summary| s.proxy.as_ref().map_or(0.0, figure)
        };
        Summary {
            streams: runs[0].streams,
            mode: runs[0].mode,
            events_per_second: median(&|s| s.events_per_second),
            p50: median(&|s| s.p50),
            p99: median(&|s| s.p99),
            max: median(&|s| s.max),
            proxy: runs[0].proxy.map(|_| ProxyFigures {
                peak_rss_kib: median(&proxy(|p| p.peak_rss_kib)),
                cpu_percent: median(&proxy(|p| p.cpu_percent)),
                history_bytes: median(&proxy(|p| p.history_bytes)),
            }),
        }
    }

    fn print(&self, rate: u32) {
        let proxy = self.proxy.map_or("no proxy".to_owned(), |proxy| {
            format!(
                "proxy peak RSS {:6.1} MiB, CPU {:5.1} %",
                proxy.peak_rss_kib / 1024.0,
                proxy.cpu_percent
            )
        });
        let events = match self.mode.clients_leave() {
            true => format!("{:<77}", "clients left, streams held"),
            false => format!(
                "{:>8.0} events/s (nominal {:>6})  \
                 latency p50 {:6.3} ms  p99 {:7.3} ms  max {:8.3} ms",
                self.events_per_second,
                self.streams as u64 * u64::from(rate),
                self.p50,
                self.p99,
                self.max,
            ),
        };
        println!(
            "{:>5} streams  {:<8}  {events}  {proxy}",
            self.streams,
            self.mode.name(),
        );
    }
}

/// The distinct `items`, in the order they first come.
fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// The median of `values` (the upper one of an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `q` quantile of `sorted` microseconds, in milliseconds.
fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[rank]) / 1000.0
}

/// What the layer costs at each stream count, each layered mode against its
/// baseline, from the medians when the runs were repeated: the latency it
/// adds, the memory it adds per stream (peak RSS on minus off, divided by
/// the streams; with a history, also beyond the bytes the histories hold),
/// and its CPU over the baseline's.
fn print_layer_cost(summaries: &[Summary], repeat: usize) {
    let median_of = |streams: usize, mode: Mode| {
        let runs: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.streams == streams && s.mode == mode)
            .collect();
        (!runs.is_empty()).then(|| Summary::median(&runs))
    };
    let counts = distinct(summaries.iter().map(|s| s.streams));
    let modes = distinct(summaries.iter().map(|s| s.mode));
    let of = match repeat {
        1 => "one run each".to_owned(),
        k => format!("medians of {k} runs"),
    };
    for streams in counts {
        for &mode in modes.iter().filter(|mode| mode.layered()) {
            let Some(on) = median_of(streams, mode) else {
                continue;
            };
            let Some(base) = mode.baseline() else {
                continue;
            };
            let Some(off) = median_of(streams, base) else {
                println!(
                    "{streams:>5} streams, {}: no `{}` run to measure it against",
                    mode.name(),
                    base.name()
                );
                continue;
            };
            let (Some(on_proxy), Some(off_proxy)) = (on.proxy, off.proxy) else {
                continue;
            };
            let added = (on_proxy.peak_rss_kib - off_proxy.peak_rss_kib) * 1024.0 / streams as f64;
            let history = on_proxy.history_bytes / streams as f64;
            let beyond = match history > 0.0 {
                true => format!(
                    " ({:.2} KiB beyond the {:.2} KiB of events its history holds)",
                    (added - history) / 1024.0,
                    history / 1024.0
                ),
                false => String::new(),
            };
            let latency = match mode.clients_leave() {
                true => String::new(),
                false => format!(
                    "; latency {:+.3} ms at p50, {:+.3} ms at p99",
                    on.p50 - off.p50,
                    on.p99 - off.p99
                ),
            };
            let (on_cpu, off_cpu) = (on_proxy.cpu_percent, off_proxy.cpu_percent);
            let ratio = match off_cpu >= 0.1 {
                true => format!(
                    ", {:.2}x ({:+.0} %)",
                    on_cpu / off_cpu,
                    (on_cpu / off_cpu - 1.0) * 100.0
                ),
                false => String::new(),
            };
            println!(
                "{streams:>5} streams, {} against {}: added per stream {:.2} KiB{beyond}; \
                 CPU {on_cpu:.1} % against {off_cpu:.1} %{ratio}{latency} ({of})",
                mode.name(),
                base.name(),
                added / 1024.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_open_files_names_the_ulimit_that_would_do() {
        assert_eq!(too_few_files(1000, 2100, Some(4096)), None);
        let message = too_few_files(9000, 1024, Some(1_048_576)).expect("too few");
        assert!(message.contains("`ulimit -n 18432`"), "{message}");
        assert!(!message.contains("hard limit"), "{message}");
        let message = too_few_files(9000, 1024, Some(4096)).expect("too few");
        assert!(message.contains("the hard limit is 4096"), "{message}");
        assert!(too_few_files(9000, 1024, None).is_some(), "unlimited hard");
    }

    #[test]
    fn each_stream_count_and_mode_is_reported_once_in_the_order_run() {
        let runs = [
            (100, Mode::Off),
            (100, Mode::On),
            (9000, Mode::Off),
            (100, Mode::Off),
        ];
        assert_eq!(distinct(runs.iter().map(|r| r.0)), [100, 9000]);
        assert_eq!(distinct(runs.iter().map(|r| r.1)), [Mode::Off, Mode::On]);
    }

    #[test]
    fn each_layered_mode_has_its_baseline() {
        for mode in Mode::ALL {
            assert_eq!(Mode::from_name(mode.name()), Some(mode));
            assert_eq!(mode.baseline().is_some(), mode.layered(), "{mode:?}");
            if let Some(base) = mode.baseline() {
                assert_eq!(base.clients_leave(), mode.clients_leave(), "{mode:?}");
            }
        }
    }
}
