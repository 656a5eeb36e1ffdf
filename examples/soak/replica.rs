//! One replica of the gateway in a child process: the demo's proxy with
//! the layer over `RedisStore`, so that it can be killed with `SIGKILL`
//! and its CPU time and memory are its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_sse_resume::{HistoryLimits, RedisStore, SseResumeLayer};

/// How long a replica waits for Redis when a request opens.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

use crate::{process, reverse_proxy};

/// How long a replica's hold on a stream lasts unrenewed in Redis.
pub(crate) const LEASE: Duration = Duration::from_secs(1);

/// The header that names a replica: on its responses, so that a client
/// knows which replica served it, and on its requests to the upstream, so
/// that the upstream knows which replica holds each stream.
pub(crate) const NAME_HEADER: &str = "x-soak-replica";

/// How the replicas are set up.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) upstream: SocketAddr,
    pub(crate) redis: String,
    /// With a history and linger, for an upstream that cannot resume.
    pub(crate) linger: bool,
}

/// A replica's child process, killed when dropped.
pub(crate) struct Replica {
    /// What it says in `x-soak-replica`.
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    /// Where its standard error goes: a panic would be written there.
    pub(crate) log: PathBuf,
}

impl Replica {
    /// Starts a replica named `name` on `port` (0 for any), logging to
    /// `log`.
    pub(crate) fn spawn(
        setup: &Setup,
        name: &str,
        port: u16,
        log: PathBuf,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("replica")
            .arg(setup.upstream.to_string())
            .arg(&setup.redis)
            .arg(if setup.linger { "linger" } else { "plain" })
            .arg(port.to_string())
            .arg(name)
            // It exits when this pipe closes, even if the soak dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("replica process: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the replica said {line:?}"));
        };
        Ok(Self {
            name: name.to_owned(),
            addr,
            child,
            stdin,
            stdout,
            log,
        })
    }

    /// Kills the replica at once, as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The layer's counters, as the replica prints them.
    pub(crate) fn stats(&mut self) -> Option<String> {
        writeln!(self.stdin, "stats").ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        Some(line.trim().strip_prefix("stats ")?.to_owned())
    }

    /// The resident set now, in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        process::status_kib(self.child.id(), "VmRSS:")
    }

    /// The user and system CPU time so far.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        process::cpu_seconds(self.child.id())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `soak replica UPSTREAM REDIS linger|plain PORT NAME`: one replica.
pub(crate) async fn main(args: &[String]) -> ExitCode {
    let [upstream, redis, mode, port, name] = args else {
        eprintln!("usage: soak replica HOST:PORT REDIS_URL linger|plain PORT NAME");
        return ExitCode::from(2);
    };
    let (Ok(upstream), Ok(port), Ok(name)) = (
        upstream.parse::<SocketAddr>(),
        port.parse::<u16>(),
        HeaderValue::from_str(name),
    ) else {
        eprintln!("soak replica: bad address, port or name");
        return ExitCode::from(2);
    };
    if std::env::var_os("SOAK_DEBUG").is_some() {
        crate::trace::install();
    }
    let store = match RedisStore::connect(redis).await {
        // Up to 2 s for Redis when a request opens (250 ms by default):
        // on a loaded 2-core machine the soak shares with Redis and every
        // client, a scheduling delay past the default fails the open open,
        // and a live upstream then loses what the holder read meanwhile.
        // That is the documented fallback, not what the soak measures.
        Ok(store) => store.lease(LEASE).timeout(OPEN_TIMEOUT),
        Err(error) => {
            eprintln!("soak replica: {redis}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut layer = SseResumeLayer::new().scope(reverse_proxy::session_scope);
    if mode == "linger" {
        layer = layer
            .history(HistoryLimits::new())
            .linger(Duration::from_secs(30));
    }
    let redis_stats = store.clone();
    let layer = layer.store(store);
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await else {
        eprintln!("soak replica: cannot listen on port {port}");
        return ExitCode::FAILURE;
    };
    let addr = listener.local_addr().expect("an address");
    let forwarder = reverse_proxy::forwarder(format!("http://{upstream}").parse().expect("a URI"));
    let named = name.clone();
    let service = ServiceBuilder::new()
        .map_response(move |mut response: Response<_>| {
            response.headers_mut().insert(NAME_HEADER, named.clone());
            response
        })
        .layer(layer.clone())
        .map_request(move |mut request: Request<Incoming>| {
            request.headers_mut().insert(NAME_HEADER, name.clone());
            request
        })
        .service(forwarder);
    tokio::spawn(reverse_proxy::serve(listener, service));
    println!("listening {addr}");
    // Answers `stats` on stdin; leaves when the soak goes, however it goes.
    let stats = layer.stats();
    let lines = tokio::task::spawn_blocking(move || {
        let mut stdin = BufReader::new(std::io::stdin());
        let mut line = String::new();
        while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.trim() == "stats" {
                println!("stats {:?} {:?}", stats.snapshot(), redis_stats.stats());
            }
            line.clear();
        }
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    });
    let _ = lines.await;
    ExitCode::SUCCESS
}
