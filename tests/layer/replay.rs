//! The replay history with `MemoryStore`: resuming a client from the store
//! when the upstream cannot, the gap signal, stamped ids, and the bounds.
//! Each through `oneshot` and a real hyper server on loopback.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

fn layer_with_history(limits: HistoryLimits) -> SseResumeLayer {
    SseResumeLayer::new().history(limits)
}

fn resume(session: &str, cursor: &str) -> Request<()> {
    get("/mcp", session)
        .header("last-event-id", cursor)
        .body(())
        .unwrap()
}

#[tokio::test]
async fn an_upstream_that_ignores_the_cursor_is_resumed_from_the_history() {
    for transport in TRANSPORTS {
        // The layer forwarded 1..8, the client confirms 5; the upstream
        // ignores Last-Event-ID and goes on with what happens now.
        let upstream = Upstream::new([Reply::sse([events(1..=8)]), Reply::sse([events(9..=12)])]);
        let layer = layer_with_history(HistoryLimits::new());
        let got = exchange(
            transport,
            &layer,
            &upstream,
            vec![get("/mcp", "s").body(()).unwrap(), resume("s", "5")],
        )
        .await;
        assert_eq!(got[0].text(), events(1..=8), "{transport:?}");
        assert_eq!(got[1].text(), events(6..=12), "{transport:?}");
        assert_eq!(got[1].status, 200);
        assert!(got[1].headers.get("sse-resume-gap").is_none());
        let seen = upstream.seen();
        assert_eq!(
            seen[1].last_event_id(),
            Some("8"),
            "{transport:?}: the upstream is asked from the newest id held"
        );
        let stats = layer.stats().snapshot();
        assert_eq!((stats.events_replayed, stats.gaps), (3, 0));
    }
}

#[tokio::test]
async fn the_upstreams_own_replay_is_dropped_after_the_history() {
    for transport in TRANSPORTS {
        // This upstream starts over from 1 on every connection, in chunks
        // that split ids and blank lines: only 9 and 10 are new.
        let replay = events(1..=10);
        let chunks: Vec<Bytes> = replay
            .as_bytes()
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect();
        let upstream = Upstream::new([Reply::sse([events(1..=8)]), Reply::sse(chunks)]);
        let layer = layer_with_history(HistoryLimits::new());
        let got = exchange(
            transport,
            &layer,
            &upstream,
            vec![get("/mcp", "s").body(()).unwrap(), resume("s", "3")],
        )
        .await;
        assert_eq!(got[1].text(), events(4..=10), "{transport:?}");
    }
}

#[tokio::test]
async fn an_evicted_cursor_gets_the_gap_signal_and_every_live_event() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([
            Reply::sse([events(1..=10)]),
            Reply::sse([events(3..=12)]),
            Reply::sse([events(13..=14)]),
        ]);
        let layer = layer_with_history(HistoryLimits::new().max_events(3));
        let got = exchange(
            transport,
            &layer,
            &upstream,
            vec![
                get("/mcp", "s").body(()).unwrap(),
                resume("s", "2"),
                resume("other-session", "12"),
            ],
        )
        .await;
        // 2 is in the window but no longer in the history: the window is cut
        // after it, so the upstream's replay of 3.. goes through, after the
        // gap event.
        let expected = gap_event("2") + &events(3..=12);
        assert_eq!(got[1].text(), expected, "{transport:?}");
        assert_eq!(got[1].status, 200, "never a status EventSource retries");
        assert_eq!(got[1].headers["sse-resume-gap"], "1");
        // A session the store never saw: a gap too, and the live events.
        assert_eq!(
            got[2].text(),
            gap_event("12") + &events(13..=14),
            "{transport:?}"
        );
        assert_eq!(layer.stats().snapshot().gaps, 2);
    }
}

#[tokio::test]
async fn ids_are_stamped_on_an_upstream_that_sends_none() {
    for transport in TRANSPORTS {
        let plain = |from: u32, to: u32| -> String {
            (from..=to)
                .map(|i| format!("data: event {i}\n\n"))
                .collect()
        };
        let upstream = Upstream::new([
            Reply::sse([format!("\u{feff}{}: keep-alive\n\n", plain(1, 3))]),
            Reply::sse([plain(4, 5) + "id: own\ndata: own\n\nid:\ndata: reset\n\n"]),
        ]);
        let layer = layer_with_history(HistoryLimits::new()).stamp_ids(true);
        let first = exchange(
            transport,
            &layer,
            &upstream,
            vec![get("/mcp", "s").body(()).unwrap()],
        )
        .await;
        let text = first[0].text();
        let ids = stamped_ids(text);
        assert_eq!(ids.len(), 3, "{transport:?}: {text:?}");
        let (epoch, _) = ids[0].split_once('-').unwrap();
        assert_eq!(
            text,
            format!(
                "\u{feff}id: {epoch}-1\ndata: event 1\n\nid: {epoch}-2\ndata: event 2\n\n\
                 id: {epoch}-3\ndata: event 3\n\n: keep-alive\n\n"
            ),
            "{transport:?}: the stamp goes after the byte order mark, comments get none"
        );

        // The client confirms the first event: the rest comes from the
        // history, then the live events with stamps of a later epoch.
        let got = exchange(transport, &layer, &upstream, vec![resume("s", &ids[0])]).await;
        let text = got[0].text();
        let replayed = format!("id: {epoch}-2\ndata: event 2\n\nid: {epoch}-3\ndata: event 3\n\n");
        assert!(text.starts_with(&replayed), "{transport:?}: {text:?}");
        // Nobody read the upstream since: what it sent meanwhile is lost,
        // and the client hears of it after the replay.
        let gap = gap_event(&format!("{epoch}-3"));
        let live = text[replayed.len()..]
            .strip_prefix(&gap)
            .unwrap_or_else(|| panic!("{transport:?}: no gap signal after the replay: {text:?}"));
        let live_ids = stamped_ids(live);
        let (later, _) = live_ids[0].split_once('-').unwrap();
        assert!(
            later.parse::<u64>().unwrap() > epoch.parse::<u64>().unwrap(),
            "stamps rise"
        );
        assert_eq!(
            live,
            format!(
                "id: {later}-1\ndata: event 4\n\nid: {later}-2\ndata: event 5\n\n\
                 id: own\ndata: own\n\nid:\ndata: reset\n\n"
            ),
            "{transport:?}: the live events stamped, ids of their own, even empty, kept"
        );
        assert_eq!(
            upstream.seen()[1].last_event_id(),
            None,
            "{transport:?}: stamped ids never go upstream"
        );
    }
}

/// The stamped ids of a stream, in order: `id:` lines of the form `E-N`.
fn stamped_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim_start_matches('\u{feff}').strip_prefix("id: "))
        .filter(|id| id.split_once('-').is_some())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_replay_is_not_followed_by_a_byte_order_mark() {
    let upstream = Upstream::new([
        Reply::sse([events(1..=3)]),
        Reply::sse([format!("\u{feff}{}", events(4..=4))]),
    ]);
    let layer = layer_with_history(HistoryLimits::new());
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap(), resume("s", "1")],
    )
    .await;
    // In the middle of a stream, a byte order mark would be part of a name.
    assert_eq!(got[1].text(), events(2..=4));
}

#[tokio::test]
async fn the_history_stays_within_its_bounds_under_a_long_stream() {
    let layer = SseResumeLayer::new().history(HistoryLimits::new().max_events(100).max_bytes(4096));
    let body = events(1..=20_000);
    let upstream = Upstream::new([Reply::sse(
        body.as_bytes()
            .chunks(1000)
            .map(Bytes::copy_from_slice)
            .collect::<Vec<_>>(),
    )]);
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(got[0].text(), body);
    let bytes = layer.stats().snapshot().history_bytes;
    assert!(bytes <= 4096 && bytes > 0, "{bytes} bytes");
    // The newest 100 blocks are the ones kept: 19901 to 20000.
    let upstream = Upstream::new([Reply::sse([""]), Reply::sse([""])]);
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![resume("s", "19901"), resume("s", "19900")],
    )
    .await;
    assert_eq!(got[0].text(), events(19_902..=20_000));
    assert!(got[1].text().starts_with("event: sse-resume-gap\n"));
}

#[tokio::test(start_paused = true)]
async fn blocks_older_than_the_age_limit_are_a_gap() {
    let layer = layer_with_history(HistoryLimits::new().max_age(Duration::from_secs(60)));
    let upstream = Upstream::new([Reply::sse([events(1..=3)]), Reply::sse([events(3..=4)])]);
    let service = layer.layer(upstream);
    let first = read(
        service
            .clone()
            .oneshot(get("/mcp", "s").body(()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.text(), events(1..=3));
    tokio::time::advance(Duration::from_secs(61)).await;
    let got = read(service.oneshot(resume("s", "2")).await.unwrap()).await;
    assert_eq!(got.text(), gap_event("2") + &events(3..=4));
}

/// An upstream whose bodies the test feeds by hand, one channel per request.
fn fed_upstream(
    bodies: Vec<mpsc::UnboundedReceiver<&'static str>>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<UpstreamBody>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<Response<UpstreamBody>, std::convert::Infallible>>,
> + Clone {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    service_fn(move |_: Request<()>| {
        let receiver = bodies.lock().unwrap().remove(0);
        let chunks = stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(Bytes::from(chunk))), receiver))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(StreamBody::new(chunks)))
            .unwrap();
        std::future::ready(Ok(response))
    })
}

async fn next_text(body: &mut (impl http_body::Body<Data = Bytes> + Unpin)) -> String {
    let frame = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("a frame in time")
        .expect("not the end")
        .unwrap_or_else(|_| panic!("no error"));
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn a_replay_racing_live_events_has_no_duplicate_and_no_gap() {
    // The stream of a client whose connection died unnoticed goes on
    // forwarding while the client reconnects: what it forwards after the
    // reconnect never reached the client, and must come on the new stream.
    let (old_feed, old_body) = mpsc::unbounded_channel();
    let (new_feed, new_body) = mpsc::unbounded_channel();
    let layer = layer_with_history(HistoryLimits::new());
    let service = layer.layer(fed_upstream(vec![old_body, new_body]));

    let mut old = service
        .clone()
        .oneshot(get("/mcp", "s").body(()).unwrap())
        .await
        .unwrap()
        .into_body();
    old_feed
        .send("id: 1\ndata: a\n\nid: 2\ndata: b\n\n")
        .unwrap();
    assert_eq!(
        next_text(&mut old).await,
        "id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    );

    // The client got 1 and reconnects; 2 comes from the history.
    let mut new = service.oneshot(resume("s", "1")).await.unwrap().into_body();
    assert_eq!(next_text(&mut new).await, "id: 2\ndata: b\n\n");

    // Live events race on both streams: the old one forwards 3 and 4 into
    // the dead connection first, then the new one's upstream sends 2..5.
    old_feed
        .send("id: 3\ndata: c\n\nid: 4\ndata: d\n\n")
        .unwrap();
    assert_eq!(
        next_text(&mut old).await,
        "id: 3\ndata: c\n\nid: 4\ndata: d\n\n"
    );
    new_feed
        .send("id: 2\ndata: b\n\nid: 3\ndata: c\n\nid: 4\ndata: d\n\nid: 5\ndata: e\n\n")
        .unwrap();
    assert_eq!(
        next_text(&mut new).await,
        "id: 3\ndata: c\n\nid: 4\ndata: d\n\nid: 5\ndata: e\n\n",
        "2 once, from the history; 3 and 4 not lost to the old stream"
    );

    // The next reconnect resumes from the new stream's history.
    drop((old_feed, new_feed, old, new));
}

#[tokio::test]
async fn all_the_histories_of_a_store_stay_within_its_total() {
    let layer = SseResumeLayer::new().history(HistoryLimits::new().max_total_bytes(10_000));
    let sessions = 50;
    let upstream = Upstream::new((0..sessions).map(|_| Reply::sse([events(1..=100)])));
    let requests = (0..sessions)
        .map(|i| get("/mcp", &format!("s{i}")).body(()).unwrap())
        .collect();
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert!(got.iter().all(|got| got.text() == events(1..=100)));
    // Each stream trims its own history to its share as it records; the
    // next request trims the quiet ones.
    let resumed = exchange(
        Transport::Oneshot,
        &layer,
        &Upstream::new([Reply::sse([""])]),
        vec![resume("s49", "99")],
    )
    .await;
    let held = layer.stats().snapshot().history_bytes;
    assert!(held <= 10_000 && held > 5_000, "{held} bytes");
    // The last stream still resumes from its recent events.
    assert_eq!(resumed[0].text(), events(100..=100));
}

#[tokio::test]
async fn stamped_ids_never_deduplicate() {
    // The same id-less event twice: two events to a client, each with a
    // stamp of its own, and a replay from the first is the second.
    let upstream = Upstream::new([
        Reply::sse(["data: same\n\ndata: same\n\n"]),
        Reply::sse([""]),
    ]);
    let layer = layer_with_history(HistoryLimits::new()).stamp_ids(true);
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap()],
    )
    .await;
    let ids = stamped_ids(got[0].text());
    assert_eq!(
        got[0].text(),
        format!(
            "id: {}\ndata: same\n\nid: {}\ndata: same\n\n",
            ids[0], ids[1]
        )
    );
    assert_ne!(ids[0], ids[1]);
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![resume("s", &ids[0])],
    )
    .await;
    assert_eq!(got[0].text(), format!("id: {}\ndata: same\n\n", ids[1]));
}

#[tokio::test]
async fn streams_without_a_scope_are_not_stamped() {
    let upstream = Upstream::new([Reply::sse(["data: a\n\n"])]);
    let layer = layer_with_history(HistoryLimits::new()).stamp_ids(true);
    let unscoped = Request::get("/mcp").body(()).unwrap();
    let got = exchange(Transport::Oneshot, &layer, &upstream, vec![unscoped]).await;
    assert_eq!(got[0].text(), "data: a\n\n", "nothing could resume it");
}

#[tokio::test]
async fn comments_and_retry_only_blocks_are_not_kept() {
    let upstream = Upstream::new([
        Reply::sse([
            ": hello\n\nretry: 5\n\nid: 1\ndata: a\n\n: ping\n\nretry: 9\n\nid: 2\ndata: b\n\n",
        ]),
        Reply::sse([""]),
    ]);
    let layer = layer_with_history(HistoryLimits::new());
    let got = exchange(
        Transport::Oneshot,
        &layer,
        &upstream,
        vec![get("/mcp", "s").body(()).unwrap(), resume("s", "1")],
    )
    .await;
    assert_eq!(
        got[1].text(),
        "id: 2\ndata: b\n\n",
        "the event, and only it"
    );
}

#[tokio::test]
async fn a_block_or_id_the_history_cannot_keep_ends_it_through_the_layer() {
    let long_data = format!("id: 2\ndata: {}\n\n", "x".repeat(64));
    let long_id = format!("id: {}\ndata: b\n\n", "7".repeat(40));
    for (what, middle, layer) in [
        (
            "a block over the length limit",
            long_data,
            layer_with_history(HistoryLimits::new()).max_block_len(48),
        ),
        (
            "an id over the id limit",
            long_id,
            layer_with_history(HistoryLimits::new()).max_id_len(16),
        ),
    ] {
        let body = format!("id: 1\ndata: a\n\n{middle}id: 3\ndata: c\n\n");
        let upstream = Upstream::new([Reply::sse([body.clone()]), Reply::sse([""])]);
        let got = exchange(
            Transport::Oneshot,
            &layer,
            &upstream,
            vec![get("/mcp", "s").body(()).unwrap(), resume("s", "1")],
        )
        .await;
        assert_eq!(got[0].text(), body, "{what}: forwarded");
        assert_eq!(
            got[1].text(),
            gap_event("1"),
            "{what}: a replay from 1 would skip it, so it is a gap"
        );
        assert_eq!(got[1].headers["sse-resume-gap"], "1", "{what}");
    }
}

#[tokio::test]
async fn a_cursor_in_the_url_resumes_as_the_header_does() {
    for transport in TRANSPORTS {
        let layer = layer_with_history(HistoryLimits::new());
        let upstream = Upstream::new([Reply::sse([events(1..=3)]), Reply::sse([events(3..=4)])]);
        let requests = vec![
            get("/mcp", "s").body(()).unwrap(),
            get("/mcp?last_event_id=1", "s").body(()).unwrap(),
        ];
        let got = exchange(transport, &layer, &upstream, requests).await;
        assert_eq!(
            got[1].text(),
            events(2..=4),
            "{transport:?}: the history after the cursor, then the rest"
        );
        let seen = upstream.seen();
        assert_eq!(
            seen[1].query.as_deref(),
            Some("last_event_id=1"),
            "{transport:?}: the query goes upstream unchanged"
        );
        assert_eq!(
            seen[1].last_event_id(),
            Some("3"),
            "{transport:?}: and the cursor as Last-Event-ID, after the replay"
        );
    }
}

#[tokio::test]
async fn the_header_wins_over_the_url_and_the_parameter_is_no_part_of_the_key() {
    let layer = layer_with_history(HistoryLimits::new());
    let upstream = Upstream::new([
        Reply::sse([events(1..=3)]),
        Reply::sse([""]),
        Reply::sse([events(7..=8)]),
        Reply::sse([""]),
    ]);
    let requests = vec![
        get("/mcp", "s").body(()).unwrap(),
        get("/mcp?last_event_id=1", "s")
            .header("last-event-id", "2")
            .body(())
            .unwrap(),
        // An unknown cursor: a gap, and the stream of `GET /mcp` goes on.
        get("/mcp?last_event_id=zz", "s").body(()).unwrap(),
        get("/mcp", "s").body(()).unwrap(),
    ];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!(got[1].text(), events(3..=3), "resumed from the header's 2");
    assert!(
        got[2]
            .text()
            .starts_with("event: sse-resume-gap\ndata: zz\n\n")
    );
    assert_eq!(
        upstream.seen()[3].last_event_id(),
        Some("8"),
        "the cursor's request recorded into `GET /mcp`: its last id is injected"
    );
}

#[tokio::test]
async fn a_cursor_in_the_url_decodes_and_can_be_switched_off() {
    let upstream = Upstream::new([
        Reply::sse(["id: a/1\ndata: x\n\nid: a/2\ndata: y\n\n"]),
        Reply::sse([""]),
    ]);
    let layer = layer_with_history(HistoryLimits::new());
    let requests = vec![
        get("/mcp", "s").body(()).unwrap(),
        get("/mcp?last_event_id=a%2F1", "s").body(()).unwrap(),
    ];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!(got[1].text(), "id: a/2\ndata: y\n\n");

    let upstream = Upstream::new([Reply::sse([events(1..=3)]), Reply::sse([events(1..=3)])]);
    let layer = layer_with_history(HistoryLimits::new()).cursor_query(None);
    let requests = vec![
        get("/mcp", "s").body(()).unwrap(),
        get("/mcp?last_event_id=1", "s").body(()).unwrap(),
    ];
    let got = exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    assert_eq!(got[1].text(), events(1..=3), "another stream, no cursor");
    assert_eq!(upstream.seen()[1].last_event_id(), None);
}

/// The layer for MCP priming: stamped ids, a history, priming with a
/// `retry` hint of 3 s.
fn priming() -> SseResumeLayer {
    layer_with_history(HistoryLimits::new())
        .stamp_ids(true)
        .prime(true)
        .prime_retry(Duration::from_secs(3))
}

/// The priming event a body starts with, and its id.
fn priming_id(body: &str) -> &str {
    let (first, _) = body.split_once("\n\n").expect("a first block");
    let id = first.strip_prefix("id: ").expect("an id first");
    let (id, rest) = id.split_once('\n').unwrap();
    assert_eq!(
        rest, "retry: 3000\ndata:",
        "an id, the retry hint, empty data"
    );
    assert!(id.split_once('-').is_some(), "a stamped id: {id}");
    id
}

#[tokio::test]
async fn each_stream_starts_with_a_priming_event_a_client_can_resume_from() {
    for transport in TRANSPORTS {
        let layer = priming();
        let upstream = Upstream::new([Reply::sse([""]), Reply::sse(["data: a\n\ndata: b\n\n"])]);
        // The first response: the priming event, then nothing yet.
        let got = exchange(
            transport,
            &layer,
            &upstream,
            vec![get("/mcp", "s").body(()).unwrap()],
        )
        .await;
        let body = got[0].text().to_owned();
        let id = priming_id(&body);
        assert_eq!(
            body.len(),
            format!("id: {id}\nretry: 3000\ndata:\n\n").len(),
            "{body}"
        );
        // Resuming from the priming id: known, so no gap for the cursor;
        // but nobody read the upstream since, and this one, asked anew,
        // cannot resume: the gap signal comes before its first event.
        let got = exchange(transport, &layer, &upstream, vec![resume("s", id)]).await;
        let resumed = got[0].text();
        assert!(got[0].headers.get("sse-resume-gap").is_none());
        let second = priming_id(resumed);
        assert_ne!(second, id, "each response primes with its own id");
        let (epoch, _) = second.split_once('-').unwrap();
        assert_eq!(
            resumed,
            format!(
                "id: {second}\nretry: 3000\ndata:\n\n{}id: {epoch}-2\ndata: a\n\nid: {epoch}-3\ndata: b\n\n",
                gap_event(id)
            ),
            "{transport:?}: primed, the gap, then the upstream's events, stamped"
        );
        let stats = layer.stats().snapshot();
        assert_eq!(
            (stats.gaps, stats.unknown_cursors),
            (1, 0),
            "{transport:?}: the one gap after a known cursor: {stats:?}"
        );
    }
}

/// A priming event starts a response that reads an upstream; a response
/// that replays a complete stream, takes a held one over or follows one
/// continues a stream already primed, its replay carrying ids. Primed, a
/// complete stream's replay put a priming event into the history after the
/// end, one more at each resume.
#[tokio::test]
async fn resuming_a_complete_stream_primes_nothing_and_replays_the_same_each_time() {
    for transport in TRANSPORTS {
        let layer = priming().linger(Duration::from_secs(30));
        let upstream = Upstream::new([Reply::sse(["data: a\n\ndata: b\n\ndata: c\n\n"])]);
        let call = Request::post("/mcp")
            .header("mcp-session-id", "s")
            .body(())
            .unwrap();
        let got = exchange(transport, &layer, &upstream, vec![call]).await;
        let body = got[0].text().to_owned();
        priming_id(&body);
        let first_event = body.split("\n\n").nth(1).expect("a first event");
        let cursor = first_event
            .strip_prefix("id: ")
            .and_then(|rest| rest.split_once('\n'))
            .map(|(id, _)| id.to_owned())
            .expect("a stamped id");
        let mut replays = Vec::new();
        for _ in 0..3 {
            let got = exchange(transport, &layer, &upstream, vec![resume("s", &cursor)]).await;
            replays.push(got[0].text().to_owned());
        }
        let (epoch, _) = cursor.split_once('-').unwrap();
        let rest = format!("id: {epoch}-3\ndata: b\n\nid: {epoch}-4\ndata: c\n\n");
        assert_eq!(replays, [rest.clone(), rest.clone(), rest], "{transport:?}");
        assert_eq!(
            upstream.seen().len(),
            1,
            "{transport:?}: complete, never sent again"
        );
    }
}

#[tokio::test]
async fn no_priming_for_mcp_2026_07_28() {
    let upstream = Upstream::new([Reply::sse(["data: a\n\n"])]);
    let request = get("/mcp", "s")
        .header("mcp-protocol-version", "2026-07-28")
        .body(())
        .unwrap();
    let got = exchange(Transport::Oneshot, &priming(), &upstream, vec![request]).await;
    assert!(got[0].text().starts_with("id: "), "stamped still");
    assert!(
        !got[0].text().contains("data:\n\n"),
        "no priming: {}",
        got[0].text()
    );
}
