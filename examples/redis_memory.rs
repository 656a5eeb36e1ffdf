//! Redis memory per stream: what `RedisStore` keeps of a stream with a
//! full history, as Redis counts it.
//!
//! ```text
//! cargo run --release --features redis --example redis_memory
//! cargo run --release --features redis --example redis_memory -- 1000 100
//! ```
//!
//! Starts a `redis-server` of its own on loopback (or the binary
//! `TOWER_SSE_RESUME_REDIS_SERVER` names), gives a `RedisStore` the
//! layer's default history, records `EVENTS` events (1,000 by default) of
//! `DATA` bytes of data each (100) on each of 20 streams, each in a scope
//! of its own, in batches of 10 as a response would, and sums `MEMORY
//! USAGE` over every key the store wrote, after a client resumed each
//! stream from its first event: the figure per stream is that sum over
//! 20. Not part of the test suite.

use std::process::ExitCode;

use tower_sse_resume::{
    HistoryLimits, IdBatch, RedisStore, SseResumeLayer, StreamKey, TrackerStore,
};
use tower_sse_resume_support::RedisServer;

const STREAMS: usize = 20;
const BATCH: usize = 10;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<usize>());
    let (events, data) = match (args.next(), args.next()) {
        (None, _) => (1000, 100),
        (Some(Ok(events)), None) => (events, 100),
        (Some(Ok(events)), Some(Ok(data))) => (events, data),
        _ => {
            eprintln!("usage: redis_memory [EVENTS [DATA_BYTES]]");
            return ExitCode::from(2);
        }
    };
    let Some(server) = RedisServer::start() else {
        eprintln!("redis-server is not on PATH");
        return ExitCode::FAILURE;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(measure(&server, events, data));
    ExitCode::SUCCESS
}

async fn measure(server: &RedisServer, events: usize, data: usize) {
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect to redis-server");
    // The layer hands the store its history's limits.
    let _layer = SseResumeLayer::new()
        .store(store.clone())
        .history(HistoryLimits::new());
    let payload = "x".repeat(data);
    for stream in 0..STREAMS {
        let key = StreamKey::new(&format!("session-{stream}"), "GET /events");
        let tower_sse_resume::Snapshot::Stored(opened) =
            store.open(&key, None).await.expect("open")
        else {
            panic!("Redis keeps its streams");
        };
        let mut batch = IdBatch::new();
        for n in 1..=events {
            let id = n.to_string();
            let block = format!("id: {id}\ndata: {payload}\n\n");
            // A fingerprint is a hash: spread over all 64 bits, as a real one.
            batch.push_event(&id, (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            batch.push_block(Some(&id), block.as_bytes());
            if n % BATCH == 0 || n == events {
                store
                    .record(&key, opened.generation, &batch)
                    .expect("queued");
                batch = IdBatch::new();
                // Written as they come, not coalesced into one write.
                store.flush().await;
            }
        }
    }
    store.flush().await;
    // A client resuming each stream from its first event, as one does: what
    // a replay leaves in Redis counts too.
    for stream in 0..STREAMS {
        let key = StreamKey::new(&format!("session-{stream}"), "GET /events");
        store.open(&key, Some("1")).await.expect("resume");
    }
    let client = redis::Client::open(server.url()).expect("a URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    let mut by_kind = std::collections::BTreeMap::<String, (usize, u64)>::new();
    let mut total = 0;
    for key in &keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut redis)
            .await
            .expect("MEMORY USAGE");
        let bytes = bytes.unwrap_or(0);
        total += bytes;
        // The key's kind: what follows the hash tag, up to the stream.
        let kind = key
            .split_once("}:")
            .map_or(key.as_str(), |(_, rest)| rest)
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        let entry = by_kind.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
    let per_stream = total as f64 / STREAMS as f64;
    println!(
        "redis memory: {STREAMS} streams of {events} events ({data} bytes of data each): {} keys, {total} bytes, {:.0} bytes per stream ({:.1} per event)",
        keys.len(),
        per_stream,
        per_stream / events.max(1) as f64,
    );
    for (kind, (count, bytes)) in by_kind {
        println!(
            "  {kind}: {count} keys, {:.0} bytes per stream",
            bytes as f64 / STREAMS as f64
        );
    }
}
