//! The official MCP Python SDK on both sides of the demo's proxy: a
//! FastMCP server without an event store, which cannot resume, and an SDK
//! client whose tool call loses its connection after 10 of its 30
//! notifications and resumes with its resumption token (`mcp/*.py`).
//!
//! Needs `python3` with the `mcp` package (`pip install mcp==1.20.0`, as
//! `.ci/run` does). Without it the tests are skipped with a message, unless
//! `TOWER_SSE_RESUME_REQUIRE_MCP=1`, which makes them fail instead.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

use crate::proxy::Proxy;

/// How long the server may take to listen, interpreter start included.
const SERVER_START: Duration = Duration::from_secs(30);
/// How long the client may take in all: its interpreter's start, its
/// first connection (each wait bounded by 30 s in `client.py`), and the
/// resumed call (bounded by the test's timeout). Past it, the client is
/// killed and the test fails: a hung SDK must not hang CI.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tool_call_resumes_with_every_notification_and_its_result_once() {
    let layer = proxy_layer().linger(Duration::from_secs(30));
    let Some(got) = call_through(layer.clone(), 20).await else {
        return;
    };
    let expected: Vec<String> = (1..=30).map(|i| format!("notification {i}")).collect();
    assert_eq!(got["cut_at"], 10, "{got}");
    assert_eq!(
        got["notifications"],
        serde_json::json!(expected),
        "once, in order"
    );
    assert_eq!(got["result"], serde_json::json!(["counted to 30"]), "{got}");
    let stats = layer.stats().snapshot();
    assert_eq!(stats.takeovers, 1, "{stats:?}");
}

/// The control: without linger the proxy lets the server's stream go with
/// the client's connection, and the resumed call gets nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_linger_the_cut_tool_call_loses_the_rest_and_its_result() {
    let Some(got) = call_through(proxy_layer(), 3).await else {
        return;
    };
    assert_eq!(got["result"], Value::Null, "{got}");
    let notifications = got["notifications"].as_array().unwrap();
    assert!(notifications.len() < 30, "{got}");
}

/// The layer as `reverse_proxy --history --stamp-ids` sets it up.
fn proxy_layer() -> SseResumeLayer {
    SseResumeLayer::new()
        .history(HistoryLimits::new())
        .stamp_ids(true)
}

/// Runs the client's call through the proxy with `layer`, in front of a
/// fresh server; `None` when the SDK is missing.
async fn call_through(layer: SseResumeLayer, timeout_secs: u64) -> Option<Value> {
    if !sdk_available() {
        return None;
    }
    let server = Server::start();
    let proxy = Proxy::start(server.addr, layer).await;
    let url = format!("http://{}/mcp", proxy.addr);
    let output = tokio::task::spawn_blocking(move || {
        let mut client = Command::new("python3");
        client
            .arg(script("client.py"))
            .args([url, timeout_secs.to_string()]);
        output_within(client, CLIENT_DEADLINE)
    })
    .await
    .unwrap();
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).expect("the client's JSON"))
}

/// Runs `command` to its end and returns what it wrote, like
/// [`Command::output`], but kills it and fails the test if it is still
/// running after `deadline`.
fn output_within(mut command: Command, deadline: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // Read both pipes as the child writes, so that it never blocks on a
    // full one while we wait.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on the child") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the client was still running after {deadline:?}, and was killed\n{}\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap()),
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn sdk_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import mcp"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        let required = std::env::var("TOWER_SSE_RESUME_REQUIRE_MCP").as_deref() == Ok("1");
        assert!(
            !required,
            "python3 with `mcp` is missing: pip install mcp==1.20.0"
        );
        tower_sse_resume_support::skipped(
            "python3 with `mcp` is missing (pip install mcp==1.20.0)",
        );
    }
    found
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/end_to_end/mcp")
        .join(name)
}

/// The SDK's server on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .arg(script("server.py"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + SERVER_START;
        while TcpStream::connect(server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the MCP server exited: {status}");
            }
            assert!(Instant::now() < deadline, "the MCP server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
