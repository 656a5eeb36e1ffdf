//! The contract of [`TrackerStore`], written once and run against every
//! store: each test crate implements [`Harness`] for its store and expands
//! [`conformance_tests!`](crate::conformance_tests).
//!
//! Every check works through two handles, `a` and `b`: for an in-process
//! store they are one store, for a shared store two replicas over the same
//! backend. What `a` records, `b` must see once the harness has settled.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use tower_sse_resume::store::StreamKey;
use tower_sse_resume::tracker::Tracker;
use tower_sse_resume::{HistoryLimits, IdBatch, Replay, TrackerStore};

/// Every wait of a check is bounded by this.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// How a test crate makes the stores under test.
pub(crate) trait Harness {
    type Store: TrackerStore + Clone;

    /// Two handles on one fresh, empty set of trackers, whose windows keep
    /// `window_len` ids and which forget a tracker idle for `ttl`.
    async fn pair(&self, window_len: usize, ttl: Duration) -> (Self::Store, Self::Store);

    /// Like [`pair`](Self::pair), with windows of `WINDOW` ids, no expiry,
    /// and a replay history within `limits`.
    async fn history_pair(&self, limits: HistoryLimits) -> (Self::Store, Self::Store);

    /// Waits until what `store` was handed is stored for every handle.
    async fn settle(&self, store: &Self::Store);
}

/// Expands to one `#[tokio::test]` per check, each running against the
/// harness `$make` evaluates to (an `Option`: `None` skips).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@tests $make;
            load_creates_an_empty_tracker,
            record_persists_ids_oldest_first,
            record_keeps_the_last_window,
            streams_of_one_key_share_a_tracker,
            a_known_cursor_forgets_what_came_after_it,
            an_unknown_cursor_clears_the_window,
            find_stream_looks_within_the_scope_only,
            open_resolves_the_cursor_stream_in_one_call,
            a_cursor_resolves_to_its_per_request_stream_only,
            a_cursor_its_own_stream_knows_stays_there,
            fingerprints_are_kept_with_the_ids,
            scopes_never_mix,
            expire_forgets_idle_trackers,
            a_cursor_in_the_history_replays_what_followed_it,
            a_cursor_not_in_the_history_is_a_gap,
            the_history_keeps_within_its_count,
            a_lost_block_ends_the_history_before_it,
        );
    };
    (@tests $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(harness) = $make else { return };
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    $crate::store_conformance::$check(&harness),
                )
                .await
                .expect("the check took too long");
            }
        )*
    };
}

pub(crate) const WINDOW: usize = 8;
const LONG: Duration = Duration::from_secs(3600);

fn key(scope: &str, stream: &str) -> StreamKey {
    StreamKey::new(scope, stream)
}

/// Forwards `ids` on `tracker` as the body does: check-and-record in the
/// window, then the new ones handed to the store.
fn forward<S: TrackerStore>(store: &S, key: &StreamKey, tracker: &Tracker, ids: &[&str]) {
    let mut batch = IdBatch::new();
    {
        let mut window = tracker.lock();
        for id in ids {
            if window.check_and_record(id) {
                batch.push(id);
            }
        }
    }
    store.record(key, &batch).expect("record");
}

/// Forwards `ids` on a stream of `key` that then ends.
async fn stream<H: Harness>(harness: &H, store: &H::Store, key: &StreamKey, ids: &[&str]) {
    let tracker = store.load(key).await.expect("load");
    forward(store, key, &tracker, ids);
    drop(tracker);
    harness.settle(store).await;
}

async fn ids<S: TrackerStore>(store: &S, key: &StreamKey) -> Vec<String> {
    let tracker = store.load(key).await.expect("load");
    tracker.lock().ids().collect()
}

pub(crate) async fn load_creates_an_empty_tracker<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    for store in [&a, &b] {
        let tracker = store.load(&key("s", "GET /mcp")).await.expect("load");
        assert!(tracker.lock().is_empty());
        assert_eq!(tracker.last_id(), None);
    }
}

pub(crate) async fn record_persists_ids_oldest_first<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    let k = key("s", "GET /mcp");
    let tracker = a.load(&k).await.expect("load");
    forward(&a, &k, &tracker, &["1", "2"]);
    forward(&a, &k, &tracker, &["3", "2", "4"]);
    drop(tracker);
    harness.settle(&a).await;
    assert_eq!(ids(&b, &k).await, ["1", "2", "3", "4"]);
    assert_eq!(
        b.load(&k).await.expect("load").last_id().as_deref(),
        Some("4")
    );
}

pub(crate) async fn record_keeps_the_last_window<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    let k = key("s", "GET /mcp");
    let all: Vec<String> = (1..=WINDOW + 3).map(|i| i.to_string()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    stream(harness, &a, &k, &all).await;
    assert_eq!(ids(&b, &k).await, all[3..]);
}

pub(crate) async fn streams_of_one_key_share_a_tracker<H: Harness>(harness: &H) {
    let (a, _) = harness.pair(WINDOW, LONG).await;
    let k = key("s", "GET /mcp");
    let first = a.load(&k).await.expect("load");
    let second = a.load(&k).await.expect("load");
    assert!(
        first.same_window(&second),
        "two live streams of one key share a window"
    );
    assert!(first.lock().check_and_record("1"));
    assert!(
        !second.lock().check_and_record("1"),
        "an id forwarded on one stream is a duplicate on the other"
    );
    let other = a.load(&key("s", "GET /other")).await.expect("load");
    assert!(!other.same_window(&first));
}

pub(crate) async fn a_known_cursor_forgets_what_came_after_it<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2", "3", "4", "5"]).await;
    assert!(b.apply_cursor(&k, "3").await.expect("apply_cursor"));
    assert_eq!(ids(&b, &k).await, ["1", "2", "3"]);
    assert_eq!(ids(&a, &k).await, ["1", "2", "3"], "every handle sees it");
    // What comes after the cursor is recorded again after it.
    stream(harness, &b, &k, &["4", "2"]).await;
    assert_eq!(ids(&a, &k).await, ["1", "2", "3", "4"]);
}

pub(crate) async fn an_unknown_cursor_clears_the_window<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2"]).await;
    assert!(!b.apply_cursor(&k, "9").await.expect("apply_cursor"));
    assert!(ids(&a, &k).await.is_empty());
    assert!(
        !a.apply_cursor(&key("s", "GET /never"), "1")
            .await
            .expect("apply_cursor"),
        "a stream that never was knows no cursor"
    );
}

pub(crate) async fn find_stream_looks_within_the_scope_only<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    stream(harness, &a, &key("s1", "GET /a"), &["x", "y"]).await;
    stream(harness, &a, &key("s1", "GET /b"), &["z"]).await;
    let find = |scope: &'static str, id: &'static str| {
        let b = b.clone();
        async move { b.find_stream(scope, id).await.expect("find_stream") }
    };
    assert_eq!(find("s1", "x").await.as_deref(), Some("GET /a"));
    assert_eq!(find("s1", "z").await.as_deref(), Some("GET /b"));
    assert_eq!(find("s1", "nope").await, None);
    assert_eq!(
        find("s2", "x").await,
        None,
        "another scope's ids are not found"
    );
}

pub(crate) async fn open_resolves_the_cursor_stream_in_one_call<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    stream(harness, &a, &key("s", "GET /a"), &["1", "2", "3"]).await;

    let opened = b.open("s", "GET /b", Some("2")).await.expect("open");
    assert_eq!(opened.key, key("s", "GET /a"), "the cursor's own stream");
    assert_eq!(opened.cursor_known, Some(true));
    assert_eq!(
        opened.attachment.tracker().lock().ids().collect::<Vec<_>>(),
        ["1", "2"]
    );
    drop(opened);

    let opened = b.open("s", "GET /b", Some("zz")).await.expect("open");
    assert_eq!(
        opened.key,
        key("s", "GET /b"),
        "falls back to the request's"
    );
    assert_eq!(opened.cursor_known, Some(false));
    drop(opened);

    let opened = a.open("s", "GET /a", None).await.expect("open");
    assert_eq!(opened.key, key("s", "GET /a"));
    assert_eq!(opened.cursor_known, None);
    assert_eq!(opened.attachment.tracker().last_id().as_deref(), Some("2"));
}

pub(crate) async fn a_cursor_resolves_to_its_per_request_stream_only<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    // Two tool calls, each a per-request stream numbering from 1.
    let (call_a, call_b) = (key("s", "POST /mcp #1"), key("s", "POST /mcp #2"));
    stream(harness, &a, &call_a, &["A:1", "A:2", "A:3"]).await;
    stream(harness, &a, &call_b, &["B:1", "B:2", "B:3"]).await;

    let opened = b.open("s", "GET /mcp", Some("A:2")).await.expect("open");
    assert_eq!(opened.key, call_a, "the stream that recorded the cursor");
    assert_eq!(
        opened.attachment.tracker().lock().ids().collect::<Vec<_>>(),
        ["A:1", "A:2"]
    );
    drop(opened);
    let opened = b.open("s", "GET /mcp", Some("B:3")).await.expect("open");
    assert_eq!(opened.key, call_b);
    assert_eq!(
        ids(&b, &call_a).await,
        ["A:1", "A:2"],
        "resolving B's cursor touched nothing of A"
    );
}

pub(crate) async fn a_cursor_its_own_stream_knows_stays_there<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    // Two topics, each numbering from 1: the one asked for wins.
    stream(harness, &a, &key("s", "GET /e?topic=a"), &["1", "2", "3"]).await;
    stream(harness, &a, &key("s", "GET /e?topic=b"), &["1", "2"]).await;
    stream(harness, &a, &key("s", "GET /e?topic=a"), &["4"]).await;

    let opened = b
        .open("s", "GET /e?topic=b", Some("1"))
        .await
        .expect("open");
    assert_eq!(opened.key, key("s", "GET /e?topic=b"));
    drop(opened);
    let opened = b
        .open("s", "GET /e?topic=b", Some("3"))
        .await
        .expect("open");
    assert_eq!(
        opened.key,
        key("s", "GET /e?topic=a"),
        "a cursor only another stream knows is that stream's"
    );
}

pub(crate) async fn fingerprints_are_kept_with_the_ids<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    let stream_key = key("s", "GET /f");
    let mut batch = IdBatch::new();
    batch.push_event("1", 11);
    batch.push_event("2", 22);
    a.record(&stream_key, &batch).expect("record");
    harness.settle(&a).await;

    let mut batch = IdBatch::new();
    batch.start_window_over();
    batch.push_event("2", 23);
    batch.push_event("3", 33);
    a.record(&stream_key, &batch).expect("record");
    harness.settle(&a).await;
    // MemoryStore keeps what its trackers hold, and they were not told:
    // only a store that persists ids shows the batch.
    let opened = b.open("s", "GET /f", None).await.expect("open");
    let ids: Vec<String> = opened.attachment.tracker().lock().ids().collect();
    assert!(
        ids == ["2", "3"] || ids.is_empty(),
        "the window started over from 2: {ids:?}"
    );
}

pub(crate) async fn scopes_never_mix<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(WINDOW, LONG).await;
    // Scopes that an escaping or hash-tag mistake could merge.
    let scopes = ["s", "s2", "a}b", "a%7Db", "{s}", "", "%", "s:w:x"];
    for (i, scope) in scopes.iter().enumerate() {
        stream(harness, &a, &key(scope, "GET /mcp"), &[&format!("id-{i}")]).await;
    }
    for (i, scope) in scopes.iter().enumerate() {
        let k = key(scope, "GET /mcp");
        assert_eq!(ids(&b, &k).await, [format!("id-{i}")], "scope {scope:?}");
        for (j, other) in scopes.iter().enumerate() {
            let found = b
                .find_stream(other, &format!("id-{i}"))
                .await
                .expect("find");
            assert_eq!(
                found.is_some(),
                i == j,
                "id of {scope:?} looked up in {other:?}"
            );
        }
    }
    // A cursor in one scope leaves the same stream of another alone.
    assert!(
        !b.apply_cursor(&key("s2", "GET /mcp"), "id-0")
            .await
            .expect("cursor")
    );
    assert_eq!(ids(&a, &key("s", "GET /mcp")).await, ["id-0"]);
    let opened = b.open("s2", "GET /mcp", Some("id-0")).await.expect("open");
    assert_eq!(opened.key, key("s2", "GET /mcp"));
    assert_eq!(opened.cursor_known, Some(false));
}

pub(crate) async fn expire_forgets_idle_trackers<H: Harness>(harness: &H) {
    let ttl = Duration::from_millis(400);
    let (a, b) = harness.pair(WINDOW, ttl).await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2"]).await;
    assert_eq!(ids(&b, &k).await, ["1", "2"]);
    tokio::time::sleep(ttl * 2).await;
    a.expire().await.expect("expire");
    b.expire().await.expect("expire");
    assert!(ids(&b, &k).await.is_empty(), "expired");
    assert_eq!(b.find_stream("s", "1").await.expect("find"), None);
    let opened = b.open("s", "GET /mcp", Some("2")).await.expect("open");
    assert_eq!(opened.cursor_known, Some(false));
}

// ---------------------------------------------------------------------------
// The replay history
// ---------------------------------------------------------------------------

fn block(id: &str) -> String {
    format!("id: {id}\ndata: event {id}\n\n")
}

/// Forwards the blocks of `ids` on a stream of `key` that then ends, as
/// the body does: in the window and its history in process, and handed to
/// the store when it keeps them itself. `lost` marks a block the history
/// could not keep, forwarded before the others.
async fn stream_blocks<H: Harness>(
    harness: &H,
    store: &H::Store,
    key: &StreamKey,
    ids: &[&str],
    lost_first: bool,
) {
    let tracker = store.load(key).await.expect("load");
    let mut batch = IdBatch::new();
    {
        let mut window = tracker.lock();
        if lost_first {
            window.forget_history();
            batch.forget_history();
        }
        for id in ids {
            assert!(window.check_and_record(id));
            window.record_block(Some(id), block(id).as_bytes());
            batch.push(id);
            if store.persists_blocks() {
                batch.push_block(Some(id), block(id).as_bytes());
            }
        }
    }
    if store.persists_ids() {
        store.record(key, &batch).expect("record");
    }
    drop(tracker);
    harness.settle(store).await;
}

fn blocks(ids: &[&str]) -> Replay {
    Replay::Blocks(ids.iter().map(|id| Bytes::from(block(id))).collect())
}

pub(crate) async fn a_cursor_in_the_history_replays_what_followed_it<H: Harness>(harness: &H) {
    let (a, b) = harness.history_pair(HistoryLimits::new()).await;
    stream_blocks(
        harness,
        &a,
        &key("s", "GET /a"),
        &["1", "2", "3", "4"],
        false,
    )
    .await;

    let opened = b.open("s", "GET /b", Some("2")).await.expect("open");
    assert_eq!(opened.key, key("s", "GET /a"), "the cursor's own stream");
    assert_eq!(opened.cursor_known, Some(true));
    assert_eq!(opened.replay, blocks(&["3", "4"]));
    assert_eq!(
        opened.attachment.tracker().lock().ids().collect::<Vec<_>>(),
        ["1", "2", "3", "4"],
        "the replayed ids stay, so an upstream's replay of them is dropped"
    );
    assert_eq!(opened.attachment.tracker().last_id().as_deref(), Some("4"));
    drop(opened);

    let opened = a.open("s", "GET /a", Some("4")).await.expect("open");
    assert_eq!(opened.replay, blocks(&[]), "nothing followed the newest");
    let opened = a.open("s", "GET /a", None).await.expect("open");
    assert_eq!(opened.replay, Replay::Off, "no cursor, no replay");
}

pub(crate) async fn a_cursor_not_in_the_history_is_a_gap<H: Harness>(harness: &H) {
    let (a, b) = harness.history_pair(HistoryLimits::new()).await;
    stream_blocks(harness, &a, &key("s", "GET /a"), &["1", "2"], false).await;
    let opened = b.open("s", "GET /a", Some("9")).await.expect("open");
    assert_eq!(opened.replay, Replay::Gap);
    assert_eq!(opened.cursor_known, Some(false));
    let opened = b.open("other", "GET /a", Some("1")).await.expect("open");
    assert_eq!(
        opened.replay,
        Replay::Gap,
        "another scope's history is not ours"
    );

    let (plain, _) = harness.pair(WINDOW, LONG).await;
    let opened = plain.open("s", "GET /a", Some("1")).await.expect("open");
    assert_eq!(opened.replay, Replay::Off, "no history, no gap either");
}

pub(crate) async fn the_history_keeps_within_its_count<H: Harness>(harness: &H) {
    let (a, b) = harness
        .history_pair(HistoryLimits::new().max_events(3))
        .await;
    let ids: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    stream_blocks(harness, &a, &key("s", "GET /a"), &ids, false).await;
    let opened = b.open("s", "GET /a", Some("8")).await.expect("open");
    assert_eq!(opened.replay, blocks(&["9", "10"]));
    let opened = b.open("s", "GET /a", Some("6")).await.expect("open");
    assert_eq!(opened.replay, Replay::Gap, "evicted");
}

pub(crate) async fn a_lost_block_ends_the_history_before_it<H: Harness>(harness: &H) {
    let (a, b) = harness.history_pair(HistoryLimits::new()).await;
    let stream = key("s", "GET /a");
    stream_blocks(harness, &a, &stream, &["1", "2"], false).await;
    stream_blocks(harness, &a, &stream, &["3", "4"], true).await;
    let opened = b.open("s", "GET /a", Some("1")).await.expect("open");
    assert_eq!(
        opened.replay,
        Replay::Gap,
        "a replay from 1 would skip a block"
    );
    let opened = b.open("s", "GET /a", Some("3")).await.expect("open");
    assert_eq!(opened.replay, blocks(&["4"]));
}
