//! Heap memory of the layer's streams in process: bytes per idle key, per
//! remembered id, per block kept in a replay history, and per held stream.
//!
//! A measurement, not a timing: it fills a layer's streams through the public API
//! (`test_util::Replica`: responses opened on a layer's streams, events
//! pushed through the layer's body code)
//! and prints what the heap grew by, divided by what was added. Two figures
//! for each step:
//!
//! - heap: bytes requested from the allocator and still held, counted by a
//!   counting global allocator (`stats_alloc`, which holds the `unsafe`
//!   this crate forbids itself);
//! - RSS: the growth of the process's resident set (`VmRSS`), which adds
//!   the allocator's own overhead (chunk headers, size classes) and slack.
//!
//! Each scenario runs in a child process of its own, so that memory freed by
//! one does not hide the growth of the next.

use std::alloc::System;
use std::fmt::Write as _;
use std::pin::Pin;
use std::process::Command;

use futures_util::FutureExt;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower_sse_resume::test_util::{Replica, TestResponse};
use tower_sse_resume::{HistoryLimits, MemoryStore, SseResumeLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Names the scenario a child process runs.
const SCENARIO_VAR: &str = "TOWER_SSE_RESUME_MEMORY_SCENARIO";

/// Idle keys measured.
const IDLE_KEYS: usize = 100_000;
/// Keys whose windows are filled.
const FULL_KEYS: usize = 1_000;
/// The default window length of `MemoryStore`.
const WINDOW_LEN: usize = 1024;
/// The stream key the default layer uses for `GET /mcp`.
const STREAM: &str = "GET /mcp";

/// The heap and the resident set at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    heap: isize,
    allocations: isize,
    rss: isize,
}

impl Snapshot {
    fn now() -> Self {
        let stats = GLOBAL.stats();
        // `bytes_allocated` and `bytes_deallocated` already count what
        // reallocations grew and shrank by.
        let heap = stats.bytes_allocated as isize - stats.bytes_deallocated as isize;
        let allocations = stats.allocations as isize - stats.deallocations as isize;
        Self {
            heap,
            allocations,
            rss: vm_rss(),
        }
    }

    /// Prints the growth since `self`, divided by `units`.
    fn report(self, what: &str, units: usize, unit: &str) -> Growth {
        let now = Self::now();
        let growth = Growth {
            heap: (now.heap - self.heap) as f64 / units as f64,
            allocations: (now.allocations - self.allocations) as f64 / units as f64,
            rss: (now.rss - self.rss) as f64 / units as f64,
        };
        growth.print(what, unit);
        growth
    }
}

/// Growth per unit.
#[derive(Clone, Copy)]
struct Growth {
    heap: f64,
    allocations: f64,
    rss: f64,
}

impl Growth {
    fn print(self, what: &str, unit: &str) {
        println!(
            "{what:<58} heap {:>7.1} B/{unit}  ({:.2} allocations/{unit})  RSS {:>7.1} B/{unit}",
            self.heap, self.allocations, self.rss,
        );
    }

    fn plus(self, other: Growth) -> Growth {
        Growth {
            heap: self.heap + other.heap,
            allocations: self.allocations + other.allocations,
            rss: self.rss + other.rss,
        }
    }
}

/// The resident set of this process, in bytes.
fn vm_rss() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: isize = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kib * 1024
}

/// A 36-character id shaped like a UUID, distinct for each `(a, b)`.
fn uuid_like(out: &mut String, a: usize, b: usize) {
    let mix = ((a as u64) ^ ((b as u64) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    out.clear();
    write!(out, "{a:08x}-{b:04x}-4000-8000-{mix:012x}").expect("writing to a String");
    assert_eq!(out.len(), 36);
}

/// A 5-character id like `12345`.
fn short(out: &mut String, i: usize) {
    out.clear();
    write!(out, "{}", 10_000 + i).expect("writing to a String");
    assert_eq!(out.len(), 5);
}

/// Opens a response on the stream of session `k` (a UUID-like scope,
/// stream `GET /mcp`).
fn open(replica: &Replica<MemoryStore>, session: &mut String, k: usize) -> TestResponse {
    uuid_like(session, k, 0);
    replica
        .open(session, STREAM, None)
        .now_or_never()
        .expect("MemoryStore opens at once")
        .expect("MemoryStore does not fail")
}

/// An event of `id`, with one byte of data.
fn event(id: &str) -> String {
    format!("id: {id}\ndata: x\n\n")
}

/// `IDLE_KEYS` keys with an empty window, then with one short id each.
fn idle_keys() {
    // Above the default 100,000 so that no shard evicts: a key costs the
    // same either way.
    let layer = SseResumeLayer::new().max_streams(10 * IDLE_KEYS);
    let replica = Replica::from_layer(&layer);
    let mut session = String::with_capacity(64);
    let mut id = String::with_capacity(64);

    let before = Snapshot::now();
    for k in 0..IDLE_KEYS {
        drop(open(&replica, &mut session, k));
    }
    let empty = before.report(
        &format!("idle key, empty window ({IDLE_KEYS} keys)"),
        IDLE_KEYS,
        "key",
    );
    assert_eq!(replica.streams(), IDLE_KEYS, "no key was evicted");

    let before = Snapshot::now();
    for k in 0..IDLE_KEYS {
        short(&mut id, k % 90_000);
        let mut response = open(&replica, &mut session, k);
        assert_eq!(response.upstream(event(&id)), event(&id).as_bytes());
    }
    let first = before.report("+ its first id (short)", IDLE_KEYS, "key");
    empty
        .plus(first)
        .print("= idle key with a one-id window", "key");
    assert_eq!(replica.streams(), IDLE_KEYS, "no key was evicted");
}

/// `FULL_KEYS` windows filled with `WINDOW_LEN` ids each, then with three
/// times as many more, which the windows evict as they go.
fn full_windows(kind: &str, make_id: fn(&mut String, usize, usize)) {
    let replica = Replica::from_layer(&SseResumeLayer::new());
    let mut session = String::with_capacity(64);
    let mut id = String::with_capacity(64);
    let mut responses: Vec<TestResponse> = (0..FULL_KEYS)
        .map(|k| open(&replica, &mut session, k))
        .collect();
    let ids = FULL_KEYS * WINDOW_LEN;

    let before = Snapshot::now();
    for (k, response) in responses.iter_mut().enumerate() {
        for i in 0..WINDOW_LEN {
            make_id(&mut id, k, i);
            assert_eq!(response.upstream(event(&id)).len(), event(&id).len());
        }
    }
    let filled = before.report(
        &format!("remembered {kind} id, windows just filled ({FULL_KEYS}x{WINDOW_LEN})"),
        ids,
        "id",
    );

    let before = Snapshot::now();
    for (k, response) in responses.iter_mut().enumerate() {
        for i in WINDOW_LEN..4 * WINDOW_LEN {
            make_id(&mut id, k, i);
            assert_eq!(response.upstream(event(&id)).len(), event(&id).len());
        }
    }
    let wrapped = before.report("+ growth after 3 more windows' worth of ids", ids, "id");
    filled.plus(wrapped).print(
        &format!("= remembered {kind} id, windows in steady state"),
        "id",
    );
    for response in &responses {
        assert_eq!(response.window().len(), WINDOW_LEN);
    }
    assert_eq!(replica.streams(), FULL_KEYS, "no key was evicted");
}

/// Keys whose replay histories are filled.
const HISTORY_KEYS: usize = 200;
/// The bytes of each kept block: `id: NNNNN\ndata: ...\n\n`.
const BLOCK_LEN: usize = 100;

/// `HISTORY_KEYS` histories filled with `WINDOW_LEN` blocks of 100 bytes
/// each, then with three times as many more: what a kept block costs beyond
/// its own bytes.
fn histories() {
    let limits = HistoryLimits::new().max_total_bytes(usize::MAX);
    let layer = SseResumeLayer::new().history(limits);
    let replica = Replica::from_layer(&layer);
    let mut session = String::with_capacity(64);
    let mut id = String::with_capacity(64);
    let mut block = Vec::with_capacity(BLOCK_LEN);
    let mut responses: Vec<TestResponse> = (0..HISTORY_KEYS)
        .map(|k| open(&replica, &mut session, k))
        .collect();
    let blocks = HISTORY_KEYS * WINDOW_LEN;
    let mut fill = |rounds: std::ops::Range<usize>| {
        for response in &mut responses {
            for i in rounds.clone() {
                short(&mut id, i);
                block.clear();
                block.extend_from_slice(format!("id: {id}\ndata: ").as_bytes());
                block.resize(BLOCK_LEN - 2, b'x');
                block.extend_from_slice(b"\n\n");
                assert_eq!(response.upstream(block.clone()).len(), BLOCK_LEN);
            }
        }
    };
    let before = Snapshot::now();
    fill(0..WINDOW_LEN);
    let filled = before.report(
        &format!("kept 100-byte block, histories just filled ({HISTORY_KEYS}x{WINDOW_LEN})"),
        blocks,
        "block",
    );
    let before = Snapshot::now();
    fill(WINDOW_LEN..4 * WINDOW_LEN);
    let wrapped = before.report("+ growth after 3 more histories' worth", blocks, "block");
    filled
        .plus(wrapped)
        .print("= kept 100-byte block, histories in steady state", "block");
    let held = layer.stats().snapshot().history_bytes;
    assert_eq!(held, (blocks * BLOCK_LEN) as u64);
}

/// Sessions that each stream one `POST` response (a per-request stream of
/// 20 events) through the layer to its end, then sit idle.
const POST_SESSIONS: usize = 10_000;

/// What a per-request stream leaves behind once its response ended, and
/// that it goes when idle past the store's TTL.
fn per_request_streams() {
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};

    let ttl = std::time::Duration::from_millis(300);
    let layer = SseResumeLayer::new().idle_ttl(ttl);
    let body: String = (1..=20)
        .map(|i| format!("id: {i}\ndata: event {i}\n\n"))
        .collect();
    let expected = bytes::Bytes::from(body);
    let sent = expected.clone();
    let upstream = tower::service_fn(move |_: http::Request<()>| {
        let response = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(sent.clone()))
            .expect("a response");
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    });
    let service = layer.layer(upstream);
    let mut session = String::with_capacity(64);
    let before = Snapshot::now();
    for k in 0..POST_SESSIONS {
        uuid_like(&mut session, k, 0);
        let request = http::Request::post("/chat")
            .header("mcp-session-id", session.as_str())
            .body(())
            .expect("a request");
        let response = service.clone().oneshot(request).now_or_never();
        let body = response.expect("ready at once").expect("infallible");
        let collected = body.into_body().collect().now_or_never();
        let bytes = collected
            .expect("ready at once")
            .expect("infallible")
            .to_bytes();
        assert_eq!(bytes, expected, "every event of each response");
    }
    let replica = Replica::from_layer(&layer);
    assert_eq!(replica.streams(), POST_SESSIONS, "one stream per request");
    before.report(
        &format!("ended per-request stream of 20 events ({POST_SESSIONS} sessions)"),
        POST_SESSIONS,
        "stream",
    );
    std::thread::sleep(ttl * 2);
    assert_eq!(replica.expire(), POST_SESSIONS);
    before.report("  after the idle TTL and `expire`", POST_SESSIONS, "stream");
}

/// Sessions whose client went away while their upstream goes on.
const HELD_SESSIONS: usize = 2_000;

/// What an attached stream of the default layer costs: its registry entry,
/// its state, and its response's body (framer, output, what its client
/// has), once one event went through; no history, no linger.
fn attached_streams() {
    use tower::Layer;

    let rt = current_thread();
    let service = SseResumeLayer::new().layer(tower::service_fn(one_event_then_quiet));
    let what = format!("attached stream, default layer, one event ({HELD_SESSIONS} sessions)");
    drop(attach(&rt, &service, &what));
}

/// What a held stream costs (`SseResumeLayer::linger`): its upstream body,
/// the task reading it, its window and history of one event; against the
/// same streams with their clients still attached.
fn held_streams() {
    use tower::Layer;

    let rt = current_thread();
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(std::time::Duration::from_secs(3600))
        .max_held_streams(10 * HELD_SESSIONS);
    let service = layer.layer(tower::service_fn(one_event_then_quiet));
    let what = format!("attached stream, one event in its history ({HELD_SESSIONS} sessions)");
    let attached = attach(&rt, &service, &what);
    let before = Snapshot::now();
    // Dropped where a runtime can take the upstream on.
    let runtime = rt.enter();
    drop(attached);
    drop(runtime);
    rt.block_on(tokio::task::yield_now());
    assert_eq!(layer.stats().snapshot().held, HELD_SESSIONS as u64);
    before.report(
        "+ when its client goes away and it is held",
        HELD_SESSIONS,
        "stream",
    );
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// Opens `HELD_SESSIONS` sessions' streams through `service`, each response
/// read up to its first event, and reports what they cost as `what`.
fn attach<S, B>(rt: &tokio::runtime::Runtime, service: &S, what: &str) -> Vec<Pin<Box<B>>>
where
    S: tower::Service<http::Request<()>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let mut session = String::with_capacity(64);
    let mut open = |k: usize| {
        uuid_like(&mut session, k, 0);
        let request = http::Request::get("/mcp")
            .header("mcp-session-id", session.as_str())
            .body(())
            .expect("a request");
        rt.block_on(async {
            let response = service.clone().oneshot(request).await.expect("infallible");
            let mut body = Box::pin(response.into_body());
            let frame = body.frame().await.expect("a frame").expect("infallible");
            assert!(frame.is_data());
            body
        })
    };
    let before = Snapshot::now();
    let attached: Vec<_> = (0..HELD_SESSIONS).map(&mut open).collect();
    before.report(what, HELD_SESSIONS, "stream");
    attached
}

/// An upstream that sends one event, then stays open and quiet.
fn one_event_then_quiet(
    _: http::Request<()>,
) -> std::future::Ready<
    Result<
        http::Response<impl http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible>>,
        std::convert::Infallible,
    >,
> {
    use futures_util::StreamExt;
    let first = bytes::Bytes::from_static(b"id: 1\ndata: event 1\n\n");
    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(first),
    )])
    .chain(futures_util::stream::pending());
    let response = http::Response::builder()
        .header("content-type", "text/event-stream")
        .body(http_body_util::StreamBody::new(frames))
        .expect("a response");
    std::future::ready(Ok(response))
}

fn run(scenario: &str) {
    match scenario {
        "attached" => attached_streams(),
        "held" => held_streams(),
        "per_request" => per_request_streams(),
        "histories" => histories(),
        "idle_keys" => idle_keys(),
        "short_ids" => full_windows("short (5 B)", |out, _, i| short(out, i)),
        "uuid_ids" => full_windows("UUID-like (36 B)", uuid_like),
        other => panic!("unknown scenario {other}"),
    }
}

fn main() {
    if let Ok(scenario) = std::env::var(SCENARIO_VAR) {
        run(&scenario);
        return;
    }
    println!(
        "MemoryStore memory (heap: bytes requested and held; RSS: resident set growth, \
         allocator overhead included)"
    );
    let exe = std::env::current_exe().expect("the path of this bench");
    for scenario in [
        "idle_keys",
        "short_ids",
        "uuid_ids",
        "histories",
        "per_request",
        "attached",
        "held",
    ] {
        let status = Command::new(&exe)
            .env(SCENARIO_VAR, scenario)
            .status()
            .expect("running a scenario");
        assert!(status.success(), "scenario {scenario} failed: {status}");
    }
}
