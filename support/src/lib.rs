//! What the tests and the benches of `tower-sse-resume` share, which is not
//! part of the crate: a throwaway `redis-server` on a free loopback port,
//! killed when dropped, and a Redis Cluster of them.
//!
//! When `redis-server` is not on `PATH`, [`RedisServer::start`] prints why
//! and returns `None`, so that the caller skips, unless
//! `TOWER_SSE_RESUME_REQUIRE_REDIS=1`: then it panics, as CI wants.
//!
//! `TOWER_SSE_RESUME_REDIS_SERVER` and `TOWER_SSE_RESUME_REDIS_CLI` name
//! other binaries to run instead of `redis-server` and `redis-cli`: a
//! `valkey-server` and `valkey-cli`, say, for the suite against Valkey.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Set to `1` to turn a missing `redis-server` into a failure.
pub const REQUIRE_REDIS: &str = "TOWER_SSE_RESUME_REQUIRE_REDIS";

/// The server binary to run instead of `redis-server`: a path, or a name
/// on `PATH`.
pub const SERVER_BINARY: &str = "TOWER_SSE_RESUME_REDIS_SERVER";

/// The client binary to run instead of `redis-cli`, for forming a Cluster.
pub const CLI_BINARY: &str = "TOWER_SSE_RESUME_REDIS_CLI";

/// The server binary: [`SERVER_BINARY`] when set, else `redis-server`.
pub fn server_binary() -> String {
    binary(SERVER_BINARY, "redis-server")
}

/// The client binary: [`CLI_BINARY`] when set, else `redis-cli`.
pub fn cli_binary() -> String {
    binary(CLI_BINARY, "redis-cli")
}

fn binary(variable: &str, default: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// How long a server may take to answer `PING` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port, or returns
    /// `None` when `redis-server` is missing and not required.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        if !redis_available() {
            return None;
        }
        // Another process may take the port between its probe and the
        // server's bind: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "tower-sse-resume-redis-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let mut server = Self {
                child: None,
                port,
                args: extra.iter().map(|arg| (*arg).to_owned()).collect(),
                dir,
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(error) => last_error = Some(error),
            }
        }
        panic!("could not start redis-server: {last_error:?}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's `INFO` of `section` (`commandstats`, `cpu`, ...), as
    /// it answers it; `None` when it does not.
    pub fn info(&self, section: &str) -> Option<String> {
        info(self.addr(), section)
    }

    /// Kills the server at once (`SIGKILL`), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server without killing it (`SIGSTOP`): it takes
    /// connections but answers nothing until [`resume`](Self::resume), as
    /// an overloaded or partitioned server would, and keeps its data.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill {signal} failed");
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn()
            .unwrap_or_else(|error| panic!("could not restart redis-server: {error}"));
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut child = Command::new(server_binary())
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &dir, "--daemonize", "no", "--loglevel", "warning"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.addr()) {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited: {status}",
                    server_binary()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("redis-server did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `redis-server` can run here; prints why not, or panics when it
/// is required.
pub fn redis_available() -> bool {
    tool_available(&server_binary())
}

/// Whether `tool` runs here; prints why not, or panics when Redis is
/// required.
fn tool_available(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        if std::env::var(REQUIRE_REDIS).is_ok_and(|value| value == "1") {
            panic!("{tool} is not on PATH and {REQUIRE_REDIS}=1");
        }
        skipped(&format!(
            "{tool} is not on PATH (set {REQUIRE_REDIS}=1 to fail instead)"
        ));
    }
    found
}

/// The file a skipped test adds a line to, when set: `.ci/run` prints
/// them at the end, as libtest shows nothing of a test that passed.
pub const SKIPPED_LOG: &str = "TOWER_SSE_RESUME_SKIPPED_LOG";

/// Says that a test is skipped and why: on standard error, and in the file
/// [`SKIPPED_LOG`] names.
pub fn skipped(why: &str) {
    eprintln!("skipped: {why}");
    if let Some(path) = std::env::var_os(SKIPPED_LOG) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut file) = file {
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            let _ = writeln!(file, "{test}: {why}");
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// `INFO section` of the server at `addr`: its bulk reply, read over a
/// plain socket so that no client library is needed.
pub fn info(addr: SocketAddr, section: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "INFO {section}\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buffer = [0; 16 * 1024];
    // `$<len>\r\n<bytes>\r\n`: read until all of it is in.
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buffer[..n]);
        let header_end = reply.windows(2).position(|w| w == b"\r\n")?;
        let len: usize = std::str::from_utf8(reply.get(1..header_end)?)
            .ok()?
            .parse()
            .ok()?;
        if reply.first() != Some(&b'$') {
            return None;
        }
        let body = header_end + 2;
        if reply.len() >= body + len {
            return String::from_utf8(reply[body..body + len].to_vec()).ok();
        }
    }
}

/// A Redis Cluster of three primaries on loopback, each a [`RedisServer`].
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts and joins three nodes, or returns `None` when `redis-server`
    /// is missing and not required.
    pub fn start() -> Option<Self> {
        Self::start_nodes(3, &[])
    }

    /// Starts three primaries with a replica each, which takes over within
    /// about a second when its primary dies.
    pub fn start_with_replicas() -> Option<Self> {
        Self::start_nodes(6, &["--cluster-node-timeout", "1000"])
    }

    fn start_nodes(count: usize, extra: &[&str]) -> Option<Self> {
        if !tool_available(&cli_binary()) {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..count {
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ];
            args.extend_from_slice(extra);
            nodes.push(RedisServer::start_with(&args)?);
        }
        let addrs: Vec<String> = nodes.iter().map(|node| node.addr().to_string()).collect();
        let replicas = (count / 3 - 1).to_string();
        let status = Command::new(cli_binary())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas, "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create: {status}");
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster.wait_until_replicas_synced();
        Some(cluster)
    }

    /// Waits until every replica has its primary's data: one that never
    /// synced cannot take over.
    fn wait_until_replicas_synced(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            loop {
                let output = Command::new(cli_binary())
                    .args(["-p", &node.port().to_string(), "info", "replication"])
                    .output()
                    .expect("redis-cli runs");
                let info = String::from_utf8_lossy(&output.stdout);
                if !info.contains("role:slave") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica did not sync");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until every node that runs sees the cluster whole.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            while !cluster_ok(node.port()) {
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The node that is the primary of the slot of hash tag `tag` now.
    pub fn primary_of(&self, tag: &str) -> usize {
        let alive = self
            .nodes
            .iter()
            .find(|node| node.child.is_some())
            .expect("a node");
        let cli = |args: &[&str]| {
            let output = Command::new(cli_binary())
                .args(["-p", &alive.port().to_string()])
                .args(args)
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let slot: u16 = cli(&["cluster", "keyslot", tag])
            .trim()
            .parse()
            .expect("a slot");
        for line in cli(&["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if l <= slot && slot <= h)
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|port| port.parse().ok())
                    .expect("a port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .expect("a node");
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// Kills node `index` at once (`SIGKILL`).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// One cluster for every test that runs while another holds it: a
    /// cluster takes seconds to form. The last holder's drop stops it.
    pub fn shared() -> Option<Arc<Self>> {
        static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cluster) = shared.upgrade() {
            return Some(cluster);
        }
        let cluster = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&cluster);
        Some(cluster)
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

fn cluster_ok(port: u16) -> bool {
    Command::new(cli_binary())
        .args(["-p", &port.to_string(), "cluster", "info"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("cluster_state:ok"))
}
