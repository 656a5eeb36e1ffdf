//! The checks of the conformance suite, each a function of a [`Harness`].
//! [`store_conformance_tests!`](crate::store_conformance_tests) runs them
//! all; each panics on the first thing its store gets wrong.

use std::time::Duration;

use bytes::Bytes;

use super::{Harness, Replica, Setup};
use crate::store::{StreamKey, TrackerStore};
use crate::stream::{HistoryLimits, Replay};

/// The window length most checks use.
const WINDOW: usize = 8;

fn setup() -> Setup {
    Setup {
        window_len: WINDOW,
        ..Setup::default()
    }
}

fn history_setup(limits: HistoryLimits) -> Setup {
    Setup {
        history: Some(limits),
        ..setup()
    }
}

fn key(scope: &str, stream: &str) -> StreamKey {
    StreamKey::new(scope, stream)
}

fn block(id: &str) -> String {
    format!("id: {id}\ndata: event {id}\n\n")
}

fn blocks(ids: &[&str]) -> String {
    ids.iter().map(|id| block(id)).collect()
}

fn replay_of(ids: &[&str]) -> Replay {
    Replay::Blocks(ids.iter().map(|id| Bytes::from(block(id))).collect())
}

fn numbers(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

fn strs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

/// A response of `stream` without a cursor that gets `ids` from its
/// upstream, forwards them and ends; then the harness settles.
async fn stream<H: Harness>(
    harness: &H,
    replica: &Replica<H::Store>,
    stream_key: &StreamKey,
    ids: &[&str],
) {
    let mut response = open(replica, stream_key, None).await;
    let out = response.upstream(blocks(ids));
    assert_eq!(out, blocks(ids).as_bytes(), "a fresh response forwards all");
    response.end();
    harness.settle(replica).await;
}

async fn open<T: TrackerStore>(
    replica: &Replica<T>,
    stream_key: &StreamKey,
    cursor: Option<&str>,
) -> super::TestResponse {
    replica
        .open(stream_key.scope(), stream_key.stream(), cursor)
        .await
        .expect("open")
}

/// The window of `stream_key` as a new response without a cursor sees it.
async fn window<T: TrackerStore>(replica: &Replica<T>, stream_key: &StreamKey) -> Vec<String> {
    open(replica, stream_key, None).await.window()
}

/// A stream never opened has an empty window, on every replica.
pub async fn open_creates_an_empty_stream<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    for replica in [&a, &b] {
        let response = open(replica, &key("s", "GET /mcp"), None).await;
        assert!(response.window().is_empty());
        assert_eq!(response.last_id(), None);
        assert_eq!(response.cursor_known(), None);
        assert_eq!(response.replay(), &Replay::Off);
    }
}

/// What one replica's responses forward, the other's see, oldest first.
pub async fn forwarded_ids_are_kept_oldest_first<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2"]).await;
    stream(harness, &a, &k, &["3", "4"]).await;
    assert_eq!(window(&b, &k).await, ["1", "2", "3", "4"]);
    let response = open(&b, &k, None).await;
    assert_eq!(response.last_id().as_deref(), Some("4"));
    let mut response = response;
    assert!(
        response.upstream(blocks(&["2", "5"])) == block("5").as_bytes(),
        "a response without a cursor has what the stream forwarded before it"
    );
}

/// The window holds the newest `window_len` ids.
pub async fn the_window_keeps_its_newest_ids<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let k = key("s", "GET /mcp");
    let all = numbers(1..=WINDOW + 3);
    stream(harness, &a, &k, &strs(&all)).await;
    assert_eq!(window(&b, &k).await, all[3..]);
}

/// Two responses of one stream on one replica: each client gets every
/// event, and the stream's window records every id either forwarded.
pub async fn responses_of_one_stream_share_its_window<H: Harness>(harness: &H) {
    let (a, _) = harness.pair(setup()).await;
    let k = key("s", "GET /mcp");
    let mut first = open(&a, &k, None).await;
    let mut second = open(&a, &k, None).await;
    assert_eq!(first.upstream(block("1")), block("1").as_bytes());
    assert_eq!(second.window(), ["1"], "one window per stream in a process");
    assert_eq!(
        second.upstream(blocks(&["1", "2"])),
        blocks(&["1", "2"]).as_bytes(),
        "the second client never got 1: it is no duplicate for it"
    );
    assert_eq!(
        first.upstream(blocks(&["1", "2"])),
        block("2").as_bytes(),
        "the first client has 1 already"
    );
    assert_eq!(first.window(), ["1", "2"]);
    let other = open(&a, &key("s", "GET /other"), None).await;
    assert!(other.window().is_empty(), "another key, another stream");
}

/// A cursor the stream knows forgets the ids after it, for every replica,
/// and the upstream's replay of them reaches the client.
pub async fn a_known_cursor_forgets_what_came_after_it<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2", "3", "4", "5"]).await;
    let mut resumed = open(&b, &k, Some("3")).await;
    assert_eq!(resumed.cursor_known(), Some(true));
    assert_eq!(resumed.window(), ["1", "2", "3"]);
    assert_eq!(
        resumed.upstream(blocks(&["2", "3", "4"])),
        block("4").as_bytes(),
        "the client has up to 3; 4 was forwarded but maybe never delivered"
    );
    resumed.end();
    harness.settle(&b).await;
    assert_eq!(
        window(&a, &k).await,
        ["1", "2", "3", "4"],
        "every replica sees it"
    );
}

/// A cursor the stream does not know clears its window: a duplicate is
/// better than a loss.
pub async fn an_unknown_cursor_clears_the_window<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2"]).await;
    let mut resumed = open(&b, &k, Some("9")).await;
    assert_eq!(resumed.cursor_known(), Some(false));
    assert!(resumed.window().is_empty());
    assert_eq!(resumed.upstream(block("1")), block("1").as_bytes());
    drop(resumed);
    let never = open(&a, &key("other", "GET /never"), Some("1")).await;
    assert_eq!(
        never.cursor_known(),
        Some(false),
        "a stream that never was knows no cursor"
    );
}

/// A cursor resolves to the stream of the scope that recorded it, and
/// falls back to the request's own stream.
pub async fn a_cursor_resolves_within_its_scope_only<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    stream(harness, &a, &key("s", "GET /a"), &["1", "2", "3"]).await;
    stream(harness, &a, &key("s", "GET /b"), &["z"]).await;

    let resumed = open(&b, &key("s", "GET /c"), Some("2")).await;
    assert_eq!(
        resumed.key(),
        &key("s", "GET /a"),
        "the cursor's own stream"
    );
    assert_eq!(resumed.cursor_known(), Some(true));
    assert_eq!(resumed.window(), ["1", "2"]);
    drop(resumed);
    let resumed = open(&b, &key("s", "GET /c"), Some("z")).await;
    assert_eq!(resumed.key(), &key("s", "GET /b"));
    drop(resumed);

    let resumed = open(&b, &key("s", "GET /c"), Some("zz")).await;
    assert_eq!(resumed.key(), &key("s", "GET /c"), "the request's own");
    assert_eq!(resumed.cursor_known(), Some(false));
    drop(resumed);
    let resumed = open(&b, &key("s2", "GET /c"), Some("1")).await;
    assert_eq!(
        resumed.key(),
        &key("s2", "GET /c"),
        "another scope's ids are not found"
    );
    assert_eq!(resumed.cursor_known(), Some(false));
}

/// Two tool calls numbering alike: a cursor resumes the one that recorded
/// it, and touches nothing of the other.
pub async fn a_cursor_resolves_to_its_per_request_stream_only<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let (call_a, call_b) = (key("s", "POST /mcp #1"), key("s", "POST /mcp #2"));
    stream(harness, &a, &call_a, &["A:1", "A:2", "A:3"]).await;
    stream(harness, &a, &call_b, &["B:1", "B:2", "B:3"]).await;

    let resumed = open(&b, &key("s", "GET /mcp"), Some("A:2")).await;
    assert_eq!(
        resumed.key(),
        &call_a,
        "the stream that recorded the cursor"
    );
    assert_eq!(resumed.window(), ["A:1", "A:2"]);
    drop(resumed);
    let resumed = open(&b, &key("s", "GET /mcp"), Some("B:3")).await;
    assert_eq!(resumed.key(), &call_b);
    drop(resumed);
    assert_eq!(
        window(&b, &call_a).await,
        ["A:1", "A:2"],
        "resolving B's cursor touched nothing of A"
    );
}

/// Two topics numbering alike: the stream asked for wins when it knows
/// the cursor.
pub async fn a_cursor_its_own_stream_knows_stays_there<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let (topic_a, topic_b) = (key("s", "GET /e?topic=a"), key("s", "GET /e?topic=b"));
    stream(harness, &a, &topic_a, &["1", "2", "3"]).await;
    stream(harness, &a, &topic_b, &["1", "2"]).await;
    stream(harness, &a, &topic_a, &["4"]).await;

    let resumed = open(&b, &topic_b, Some("1")).await;
    assert_eq!(resumed.key(), &topic_b);
    drop(resumed);
    let resumed = open(&b, &topic_b, Some("3")).await;
    assert_eq!(
        resumed.key(),
        &topic_a,
        "a cursor only another stream knows is that stream's"
    );
}

/// An id comes back with its event: the same event again is a duplicate
/// on another replica too, another event under the id is forwarded.
pub async fn an_id_is_kept_with_its_event<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let k = key("s", "GET /f");
    stream(harness, &a, &k, &["1", "2"]).await;
    let mut response = open(&b, &k, None).await;
    assert_eq!(response.upstream(block("1")), b"", "the same event again");
    let renumbered = "id: 2\ndata: another event\n\n";
    assert_eq!(
        response.upstream(renumbered),
        renumbered.as_bytes(),
        "an upstream that numbers anew"
    );
    response.end();
    harness.settle(&b).await;
    let mut response = open(&a, &k, None).await;
    assert_eq!(
        response.window(),
        ["2"],
        "the window started over from the renumbered id"
    );
    assert_eq!(response.upstream(renumbered), b"");
}

/// Scopes that an escaping or hash-tag mistake could merge stay apart.
pub async fn scopes_never_mix<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(setup()).await;
    let scopes = ["s", "s2", "a}b", "a%7Db", "{s}", "", "%", "s:w:x"];
    for (i, scope) in scopes.iter().enumerate() {
        stream(harness, &a, &key(scope, "GET /mcp"), &[&format!("id-{i}")]).await;
    }
    for (i, scope) in scopes.iter().enumerate() {
        let k = key(scope, "GET /mcp");
        assert_eq!(window(&b, &k).await, [format!("id-{i}")], "scope {scope:?}");
        for (j, other) in scopes.iter().enumerate() {
            let resumed = open(&b, &key(other, "GET /x"), Some(&format!("id-{i}"))).await;
            assert_eq!(
                resumed.cursor_known(),
                Some(i == j),
                "id of {scope:?} looked up in {other:?}"
            );
        }
    }
    assert_eq!(window(&a, &key("s", "GET /mcp")).await, ["id-0"]);
}

/// A stream idle past its time is forgotten, with the cursors it knew.
pub async fn idle_streams_are_forgotten<H: Harness>(harness: &H) {
    let idle_ttl = Duration::from_millis(400);
    let (a, b) = harness
        .pair(Setup {
            idle_ttl,
            ..setup()
        })
        .await;
    let k = key("s", "GET /mcp");
    stream(harness, &a, &k, &["1", "2"]).await;
    assert_eq!(window(&b, &k).await, ["1", "2"]);
    tokio::time::sleep(idle_ttl * 2).await;
    a.expire();
    b.expire();
    assert!(window(&b, &k).await.is_empty(), "expired");
    let resumed = open(&b, &key("s", "GET /other"), Some("2")).await;
    assert_eq!(resumed.cursor_known(), Some(false));
}

/// A cursor the history holds replays the blocks after it, of its own
/// stream, and keeps the window so that the upstream's replay is dropped.
pub async fn a_cursor_in_the_history_replays_what_followed_it<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(history_setup(HistoryLimits::new())).await;
    stream(harness, &a, &key("s", "GET /a"), &["1", "2", "3", "4"]).await;

    let mut resumed = open(&b, &key("s", "GET /b"), Some("2")).await;
    assert_eq!(
        resumed.key(),
        &key("s", "GET /a"),
        "the cursor's own stream"
    );
    assert_eq!(resumed.cursor_known(), Some(true));
    assert_eq!(resumed.replay(), &replay_of(&["3", "4"]));
    assert_eq!(resumed.window(), ["1", "2", "3", "4"]);
    let mut expected = blocks(&["3", "4"]).into_bytes();
    expected.extend_from_slice(block("5").as_bytes());
    assert_eq!(
        resumed.upstream(blocks(&["3", "4", "5"])),
        expected,
        "the replay, then the upstream without what the replay sent"
    );
    resumed.end();
    harness.settle(&b).await;

    let resumed = open(&a, &key("s", "GET /a"), Some("5")).await;
    assert_eq!(
        resumed.replay(),
        &replay_of(&[]),
        "nothing followed the newest"
    );
    drop(resumed);
    let resumed = open(&a, &key("s", "GET /a"), None).await;
    assert_eq!(resumed.replay(), &Replay::Off, "no cursor, no replay");
}

/// A cursor the history does not hold is a gap; without a history, no
/// gap either.
pub async fn a_cursor_not_in_the_history_is_a_gap<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(history_setup(HistoryLimits::new())).await;
    stream(harness, &a, &key("s", "GET /a"), &["1", "2"]).await;
    let resumed = open(&b, &key("s", "GET /a"), Some("9")).await;
    assert_eq!(resumed.replay(), &Replay::Gap);
    assert_eq!(resumed.cursor_known(), Some(false));
    drop(resumed);
    let resumed = open(&b, &key("other", "GET /a"), Some("1")).await;
    assert_eq!(
        resumed.replay(),
        &Replay::Gap,
        "another scope's history is not ours"
    );

    let (plain, _) = harness.pair(setup()).await;
    let resumed = open(&plain, &key("s", "GET /a"), Some("1")).await;
    assert_eq!(resumed.replay(), &Replay::Off, "no history, no gap either");
}

/// The history keeps its newest blocks within its count.
pub async fn the_history_keeps_within_its_count<H: Harness>(harness: &H) {
    let (a, b) = harness
        .pair(history_setup(HistoryLimits::new().max_events(3)))
        .await;
    let ids = numbers(1..=10);
    stream(harness, &a, &key("s", "GET /a"), &strs(&ids)).await;
    let resumed = open(&b, &key("s", "GET /a"), Some("8")).await;
    assert_eq!(resumed.replay(), &replay_of(&["9", "10"]));
    drop(resumed);
    let resumed = open(&b, &key("s", "GET /a"), Some("6")).await;
    assert_eq!(resumed.replay(), &Replay::Gap, "evicted");
}

/// A block the history cannot keep (its id is over the length limit) ends
/// the history before it: no replay skips it.
pub async fn a_lost_block_ends_the_history_before_it<H: Harness>(harness: &H) {
    let (a, b) = harness.pair(history_setup(HistoryLimits::new())).await;
    let k = key("s", "GET /a");
    let long_id = "x".repeat(crate::config::DEFAULT_MAX_ID_LEN + 1);
    let mut response = open(&a, &k, None).await;
    let upstream = format!(
        "{}{}{}",
        blocks(&["1", "2"]),
        block(&long_id),
        blocks(&["3", "4"])
    );
    assert_eq!(response.upstream(upstream.clone()), upstream.as_bytes());
    response.end();
    harness.settle(&a).await;
    let resumed = open(&b, &k, Some("1")).await;
    assert_eq!(
        resumed.replay(),
        &Replay::Gap,
        "a replay from 1 would skip a block"
    );
    drop(resumed);
    let resumed = open(&b, &k, Some("3")).await;
    assert_eq!(resumed.replay(), &replay_of(&["4"]));
}
