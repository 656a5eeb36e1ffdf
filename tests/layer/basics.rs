//! The semantics of DESIGN.md, each through `oneshot` and through a real
//! hyper server on loopback.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use tower_sse_resume::store::{Snapshot, StoreError, StoredStream, StreamKey};
use tower_sse_resume::{FailurePolicy, IdBatch, SseResumeLayer, TrackerStore};

/// The headers of an event-stream response.
const SSE: &[(&str, &str)] = &[("content-type", "text/event-stream")];

/// A service answering every request with `headers` and a body from `body`.
fn answering<B, F>(
    headers: &'static [(&'static str, &'static str)],
    body: F,
) -> impl tower::Service<
    Request<()>,
    Response = Response<B>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<Response<B>, std::convert::Infallible>>,
> + Clone
where
    F: Fn() -> B + Clone,
{
    service_fn(move |_: Request<()>| {
        let mut response = Response::new(body());
        for &(name, value) in headers {
            response
                .headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
        std::future::ready(Ok(response))
    })
}

#[tokio::test]
async fn reconnect_with_cursor_gets_exactly_what_the_client_missed() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([events(1..=5)]), Reply::sse([events(1..=8)])]);
        let got = exchange(
            transport,
            &SseResumeLayer::new(),
            &upstream,
            vec![
                get("/mcp", "s").body(()).unwrap(),
                get("/mcp", "s")
                    .header("last-event-id", "3")
                    .body(())
                    .unwrap(),
            ],
        )
        .await;
        assert_eq!(got[0].text(), events(1..=5), "{transport:?}");
        assert_eq!(got[1].text(), events(4..=8), "{transport:?}");
    }
}

#[tokio::test]
async fn reconnect_without_cursor_drops_what_was_forwarded() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([events(1..=5)]), Reply::sse([events(1..=8)])]);
        let layer = SseResumeLayer::new().inject_last_event_id(false);
        let requests = vec![
            get("/mcp", "s").body(()).unwrap(),
            get("/mcp", "s").body(()).unwrap(),
        ];
        let got = exchange(transport, &layer, &upstream, requests).await;
        assert_eq!(got[1].text(), events(6..=8), "{transport:?}");
    }
}

#[tokio::test]
async fn get_without_cursor_is_resumed_upstream_but_post_and_new_mcp_never() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new(std::iter::repeat_n(Reply::sse([events(1..=2)]), 4));
        let requests = vec![
            get("/mcp", "s").body(()).unwrap(),
            get("/mcp", "s").body(()).unwrap(),
            get("/mcp", "s")
                .header("mcp-protocol-version", "2026-07-28")
                .body(())
                .unwrap(),
            get("/mcp", "s").method("POST").body(()).unwrap(),
        ];
        let layer = SseResumeLayer::new().stream_key(tower_sse_resume::key::Path);
        let got = exchange(transport, &layer, &upstream, requests).await;
        let seen = upstream.seen();
        assert_eq!(
            seen[0].last_event_id(),
            None,
            "{transport:?}: nothing to inject yet"
        );
        assert_eq!(seen[1].last_event_id(), Some("2"), "{transport:?}");
        assert_eq!(
            seen[2].last_event_id(),
            None,
            "{transport:?}: MCP 2026-07-28 has no resumption"
        );
        assert_eq!(
            seen[3].last_event_id(),
            None,
            "{transport:?}: a POST is never re-issued"
        );
        assert_eq!(layer.stats().snapshot().cursors_injected, 1);
        assert_eq!(got[0].text(), events(1..=2));
    }
}

#[tokio::test]
async fn injection_can_be_turned_off_and_skips_ids_that_are_not_header_values() {
    let upstream = Upstream::new([
        Reply::sse(["id: a\u{7f}b\ndata: x\n\n"]),
        Reply::sse(["data: y\n\n"]),
        Reply::sse([events(1..=1)]),
        Reply::sse([events(1..=1)]),
    ]);
    let layer = SseResumeLayer::new();
    let service = layer.layer(upstream.clone());
    for session in ["a", "a", "b"] {
        let response = service
            .clone()
            .oneshot(get("/", session).body(()).unwrap())
            .await
            .unwrap();
        read(response).await;
    }
    // The same store, where session b's stream has id 1 to inject.
    let off = layer
        .clone()
        .inject_last_event_id(false)
        .layer(upstream.clone());
    read(off.oneshot(get("/", "b").body(()).unwrap()).await.unwrap()).await;
    let seen = upstream.seen();
    assert_eq!(
        seen[1].last_event_id(),
        None,
        "a DEL in an id is no header value"
    );
    assert_eq!(seen[3].last_event_id(), None, "injection is off");
}

#[tokio::test]
async fn an_unknown_cursor_clears_the_window() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([events(1..=5)]), Reply::sse([events(1..=5)])]);
        let layer = SseResumeLayer::new();
        let requests = vec![
            get("/mcp", "s").body(()).unwrap(),
            get("/mcp", "s")
                .header("last-event-id", "99")
                .body(())
                .unwrap(),
        ];
        let got = exchange(transport, &layer, &upstream, requests).await;
        assert_eq!(
            got[1].text(),
            events(1..=5),
            "{transport:?}: nothing dropped"
        );
        assert_eq!(layer.stats().snapshot().unknown_cursors, 1);
    }
}

#[tokio::test]
async fn a_cursor_finds_its_stream_within_the_scope_only() {
    for transport in TRANSPORTS {
        let upstream = Upstream::new([
            Reply::sse([events(1..=5)]),
            Reply::sse([events(1..=8)]),
            Reply::sse([events(1..=3)]),
        ]);
        let requests = vec![
            get("/first", "s").body(()).unwrap(),
            // Another path, but the cursor was recorded on /first.
            get("/second", "s")
                .header("last-event-id", "4")
                .body(())
                .unwrap(),
            // The same path and cursor in another scope shares nothing.
            get("/first", "other")
                .header("last-event-id", "2")
                .body(())
                .unwrap(),
        ];
        let got = exchange(transport, &SseResumeLayer::new(), &upstream, requests).await;
        assert_eq!(got[1].text(), events(5..=8), "{transport:?}");
        assert_eq!(got[2].text(), events(1..=3), "{transport:?}");
    }
}

#[tokio::test]
async fn requests_without_scope_are_deduplicated_within_their_response_only() {
    for transport in TRANSPORTS {
        let stream = format!("{}{}", events(1..=3), events(2..=4));
        let upstream = Upstream::new([Reply::sse([stream.clone()]), Reply::sse([stream])]);
        let requests = vec![
            Request::get("/").body(()).unwrap(),
            Request::get("/").body(()).unwrap(),
        ];
        let got = exchange(transport, &SseResumeLayer::new(), &upstream, requests).await;
        assert_eq!(got[0].text(), events(1..=4), "{transport:?}");
        assert_eq!(got[1].text(), events(1..=4), "{transport:?}");
        assert!(
            upstream
                .seen()
                .iter()
                .all(|seen| seen.last_event_id().is_none())
        );
    }
}

#[tokio::test]
async fn blocks_that_are_never_duplicates_pass_every_time() {
    for transport in TRANSPORTS {
        let stream = "id: 1\ndata: a\n\n: keep-alive\n\nretry: 10\n\nid:\ndata: reset\n\ndata: no id\n\nid: 1\ndata: a\n\nid: 2\ndata:\n\nid: 1\ndata: cut";
        let upstream = Upstream::new([Reply::sse([stream]), Reply::sse([stream])]);
        let requests = vec![
            get("/", "s").body(()).unwrap(),
            get("/", "s").body(()).unwrap(),
        ];
        let got = exchange(transport, &SseResumeLayer::new(), &upstream, requests).await;
        let without_repeated_1 = stream.replacen("id: 1\ndata: a\n\nid: 2", "id: 2", 1);
        assert_eq!(got[0].text(), without_repeated_1, "{transport:?}");
        let without_1_and_2 =
            ": keep-alive\n\nretry: 10\n\nid:\ndata: reset\n\ndata: no id\n\nid: 1\ndata: cut";
        assert_eq!(got[1].text(), without_1_and_2, "{transport:?}");
    }
}

#[tokio::test]
async fn other_responses_pass_through_untouched() {
    let cases = [
        Reply::sse(["id: 1\n\nid: 1\n\n"])
            .without_header("content-type")
            .header("content-type", "application/json"),
        Reply::sse(["id: 1\n\nid: 1\n\n"]).header("content-encoding", "gzip"),
    ];
    for reply in cases {
        let upstream = Upstream::new([reply]);
        let service = SseResumeLayer::new().layer(upstream);
        let response = service
            .oneshot(get("/", "s").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(read(response).await.text(), "id: 1\n\nid: 1\n\n");
    }

    // Size hints and Content-Length survive on a pass-through...
    let json = answering(
        &[
            ("content-type", "application/json"),
            ("content-length", "2"),
        ],
        || Full::new(Bytes::from_static(b"{}")),
    );
    let response = SseResumeLayer::new()
        .layer(json)
        .oneshot(get("/", "s").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["content-length"], "2");
    assert_eq!(response.body().size_hint().exact(), Some(2));

    // ...and not on a rewritten event stream.
    let sse = answering(
        &[
            ("content-type", "Text/Event-Stream; charset=utf-8"),
            ("content-length", "9"),
        ],
        || Full::new(Bytes::from_static(b"data: x\n\n")),
    );
    let response = SseResumeLayer::new()
        .layer(sse)
        .oneshot(get("/", "s").body(()).unwrap())
        .await
        .unwrap();
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.body().size_hint().exact(), None);
}

#[tokio::test]
async fn an_upstream_error_comes_after_every_complete_block() {
    for transport in TRANSPORTS {
        let reply =
            Reply::sse(["id: 1\ndata: a\n\nid: 2\nda", "ta: b\n\nid: 3\ndata: c"]).failing();
        let upstream = Upstream::new([reply]);
        let got = exchange(
            transport,
            &SseResumeLayer::new(),
            &upstream,
            vec![get("/", "s").body(()).unwrap()],
        )
        .await;
        assert!(got[0].failed, "{transport:?}: the error reaches the client");
        assert!(
            got[0]
                .text()
                .starts_with("id: 1\ndata: a\n\nid: 2\ndata: b\n\n"),
            "{transport:?}: {:?}",
            got[0].text()
        );
    }
}

#[tokio::test]
async fn the_error_of_a_oneshot_body_follows_the_tail() {
    let reply = Reply::sse(["id: 1\ndata: a\n\nid: 2\nda"]).failing();
    let service = SseResumeLayer::new().layer(Upstream::new([reply]));
    let got = read(
        service
            .oneshot(get("/", "s").body(()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert!(got.failed);
    assert_eq!(got.text(), "id: 1\ndata: a\n\nid: 2\nda", "nothing is lost");
}

/// A store that keeps nothing itself but notes every batch handed to it:
/// the smallest store behind the layer.
#[derive(Clone, Default)]
struct NotingStore {
    recorded: Arc<Mutex<Vec<String>>>,
    broken: bool,
}

impl TrackerStore for NotingStore {
    async fn open(&self, key: &StreamKey, _cursor: Option<&str>) -> Result<Snapshot, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        Ok(Snapshot::Stored(StoredStream::new(key.stream())))
    }

    fn record(&self, _key: &StreamKey, _generation: u64, ids: &IdBatch) -> Result<(), StoreError> {
        self.recorded
            .lock()
            .unwrap()
            .extend(ids.iter().map(str::to_owned));
        Ok(())
    }
}

#[tokio::test]
async fn a_client_going_away_flushes_the_recorded_ids() {
    let store = NotingStore::default();
    let layer = SseResumeLayer::new().store(store.clone());
    let service = layer.layer(answering(SSE, || {
        OpenEnded::new(["id: 1\ndata: a\n\nid: 2\ndata: b\n\n", "id: 3\ndata: c\n\n"])
    }));
    let mut body = service
        .oneshot(get("/", "s").body(()).unwrap())
        .await
        .unwrap()
        .into_body();
    assert!(poll_once(pin!(body.frame())).is_ready());
    assert!(store.recorded.lock().unwrap().is_empty(), "still batching");
    drop(body);
    assert_eq!(*store.recorded.lock().unwrap(), ["1", "2"]);
}

#[tokio::test]
async fn a_failing_store_fails_open_or_closed() {
    for transport in TRANSPORTS {
        let broken = NotingStore {
            broken: true,
            ..NotingStore::default()
        };
        let stream = format!("{}{}", events(1..=2), events(1..=2));
        let upstream = Upstream::new([Reply::sse([stream.clone()])]);
        let open = SseResumeLayer::new().store(broken.clone());
        let got = exchange(
            transport,
            &open,
            &upstream,
            vec![get("/", "s").body(()).unwrap()],
        )
        .await;
        assert_eq!(
            got[0].text(),
            events(1..=2),
            "{transport:?}: deduplicated within the response"
        );
        assert_eq!(open.stats().snapshot().store_errors, 1);

        let closed = SseResumeLayer::new()
            .store(broken)
            .failure_policy(FailurePolicy::FailClosed);
        let upstream = Upstream::new([]);
        let got = exchange(
            transport,
            &closed,
            &upstream,
            vec![get("/", "s").body(()).unwrap()],
        )
        .await;
        assert_eq!(got[0].status, 503, "{transport:?}");
        assert!(
            upstream.seen().is_empty(),
            "the inner service is not called"
        );
    }
}

/// A store that fails at the start of a resume cannot say what the client
/// missed: a live upstream ignores the cursor, so the client is told of a
/// possible gap, unless the upstream resumes where the client stopped.
#[tokio::test]
async fn a_store_failing_open_on_a_resume_signals_the_gap_unless_the_upstream_resumes() {
    for transport in TRANSPORTS {
        for upstream_resumes in [false, true] {
            let broken = NotingStore {
                broken: true,
                ..NotingStore::default()
            };
            let upstream = Upstream::new([Reply::sse([events(6..=7)])]);
            let layer = SseResumeLayer::new()
                .store(broken)
                .upstream_resumes(upstream_resumes);
            let resume = get("/", "s").header("last-event-id", "5");
            let got = exchange(transport, &layer, &upstream, vec![resume.body(()).unwrap()]).await;
            let gap = gap_event("5");
            let context = format!("{transport:?}, upstream_resumes({upstream_resumes})");
            assert_eq!(upstream.seen()[0].last_event_id(), Some("5"), "{context}");
            if upstream_resumes {
                assert_eq!(got[0].text(), events(6..=7), "{context}");
                assert!(got[0].headers.get("sse-resume-gap").is_none(), "{context}");
            } else {
                assert_eq!(
                    got[0].text(),
                    format!("{gap}{}", events(6..=7)),
                    "{context}"
                );
                assert_eq!(got[0].headers["sse-resume-gap"], "1", "{context}");
            }
            assert_eq!(layer.stats().snapshot().store_errors, 1);
        }
    }
}

#[tokio::test]
async fn every_split_of_the_ids_and_blank_lines_gives_the_same_output() {
    let first = events(1..=3);
    // The events 2 and 3 again, with other line ends: the same events.
    let replay = "id: 2\r\ndata: event 2\r\n\r\nid: 4\rdata: four\r\rid: 3\ndata: event 3\n\nid: 5\ndata: five\n\n";
    let expected = "id: 4\rdata: four\r\rid: 5\ndata: five\n\n";
    for split in 0..=replay.len() {
        let (head, tail) = replay.split_at(split);
        let upstream = Upstream::new([
            Reply::sse([first.clone()]),
            Reply::sse([head.to_owned(), tail.to_owned()]),
        ]);
        let requests = vec![
            get("/", "s").body(()).unwrap(),
            get("/", "s").body(()).unwrap(),
        ];
        let got = exchange(
            Transport::Oneshot,
            &SseResumeLayer::new(),
            &upstream,
            requests,
        )
        .await;
        assert_eq!(got[1].text(), expected, "split at {split}");
    }
}

#[tokio::test]
async fn memory_stays_flat_over_many_keys_and_long_streams() {
    let layer = SseResumeLayer::new().max_streams(100).window_len(16);
    let long = events(1..=20_000);
    let once = |session: usize, chunks: Vec<String>| {
        let service = layer.layer(Upstream::new([Reply::sse(chunks)]));
        async move {
            let request = get("/", &session.to_string()).body(()).unwrap();
            read(service.oneshot(request).await.unwrap())
                .await
                .text()
                .to_owned()
        }
    };
    let chunks = long.as_bytes().chunks(1000);
    let chunks = chunks.map(|c| String::from_utf8(c.to_vec()).unwrap());
    once(0, chunks.collect()).await;
    assert_eq!(
        once(0, vec![events(19_985..=20_001)]).await,
        events([20_001]),
        "the long stream's window kept its newest 16 ids"
    );
    assert_eq!(
        once(0, vec![events([19_985])]).await,
        events([19_985]),
        "and no more: the oldest went when 20001 came"
    );
    for session in 1..300 {
        assert_eq!(once(session, vec![events(1..=2)]).await, events(1..=2));
        let streams = layer.stats().snapshot().streams;
        assert!(streams <= 100, "{streams} streams");
    }
    assert_eq!(
        once(299, vec![events(1..=3)]).await,
        events([3]),
        "the newest stream is kept"
    );
}

#[tokio::test]
async fn works_in_service_builder_and_axum() {
    let layer = SseResumeLayer::new();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(answering(SSE, || Full::new(Bytes::from(events([1, 1, 2])))));
    let got = read(
        service
            .oneshot(get("/", "s").body(()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.text(), events([1, 2]));

    let app = axum::Router::new()
        .route(
            "/events",
            axum::routing::get(|| async {
                ([("content-type", "text/event-stream")], events([7, 7, 8]))
            }),
        )
        .layer(SseResumeLayer::new());
    let request = Request::get("/events")
        .header("mcp-session-id", "s")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let body = tokio::time::timeout(STEP, response.into_body().collect()).await;
    let body = body.expect("body stalled").unwrap().to_bytes();
    assert_eq!(body, events([7, 8]));
}

#[tokio::test]
async fn trailers_follow_the_last_block() {
    let service = SseResumeLayer::new().layer(service_fn(|_: Request<()>| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-done", "yes".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(
                b"id: 1\ndata: a\n\nid: 1\ndata: a\n\ndata: tail",
            ))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap();
        Ok::<_, std::convert::Infallible>(response)
    }));
    let response = service
        .oneshot(get("/", "s").body(()).unwrap())
        .await
        .unwrap();
    let collected = tokio::time::timeout(STEP, response.into_body().collect()).await;
    let collected = collected.expect("body stalled").unwrap();
    assert_eq!(collected.trailers().unwrap()["x-done"], "yes");
    assert_eq!(collected.to_bytes(), "id: 1\ndata: a\n\ndata: tail");
}

#[tokio::test]
async fn the_service_has_the_layers_knobs() {
    let upstream = Upstream::new([Reply::sse([events(1..=3)]), Reply::sse([events(1..=4)])]);
    let service = tower_sse_resume::SseResume::new(upstream.clone())
        .scope(tower_sse_resume::key::Query::new("session"))
        .inject_last_event_id(false);
    let stats = service.stats();
    for _ in 0..2 {
        let request = Request::get("/events?session=q").body(()).unwrap();
        read(service.clone().oneshot(request).await.unwrap()).await;
    }
    assert_eq!(
        stats.snapshot().duplicates_dropped,
        3,
        "scoped by the query parameter"
    );
    assert!(
        upstream
            .seen()
            .iter()
            .all(|seen| seen.last_event_id().is_none())
    );
}

#[tokio::test]
async fn a_block_over_the_length_limit_is_forwarded_undeduplicated() {
    let long = format!("id: 1\ndata: {}\n\n", "x".repeat(64));
    let stream = format!("{long}{long}id: 2\ndata: y\n\nid: 2\ndata: y\n\n");
    for transport in TRANSPORTS {
        let upstream = Upstream::new([Reply::sse([stream.clone()])]);
        let layer = SseResumeLayer::new().max_block_len(32);
        let got = exchange(
            transport,
            &layer,
            &upstream,
            vec![get("/", "s").body(()).unwrap()],
        )
        .await;
        let expected = format!("{long}{long}id: 2\ndata: y\n\n");
        assert_eq!(
            got[0].text(),
            expected,
            "{transport:?}: both long blocks, one short"
        );
    }
}

/// Sends each request through `layer` to an upstream answering with the
/// next of `replies`, one after the other, and returns what came back.
async fn through<T: TrackerStore>(
    layer: &SseResumeLayer<T>,
    replies: Vec<Reply>,
    requests: Vec<Request<()>>,
) -> (Vec<String>, Upstream) {
    let upstream = Upstream::new(replies);
    let got = exchange(Transport::Oneshot, layer, &upstream, requests).await;
    let texts = got.iter().map(|got| got.text().to_owned()).collect();
    (texts, upstream)
}

#[tokio::test]
async fn ids_over_max_id_len_are_forwarded_but_not_tracked() {
    let layer = SseResumeLayer::new().max_id_len(4);
    let body =
        "id: 1234\ndata: a\n\nid: 12345\ndata: b\n\nid: 1234\ndata: a\n\nid: 12345\ndata: b\n\n";
    let (got, _) = through(
        &layer,
        vec![Reply::sse([body])],
        vec![get("/", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(
        got[0], "id: 1234\ndata: a\n\nid: 12345\ndata: b\n\nid: 12345\ndata: b\n\n",
        "a 4-byte id is tracked, a 5-byte one is not"
    );
}

#[tokio::test]
async fn an_id_with_nul_is_no_id_to_the_layer() {
    let body = "id: 1\0\ndata: a\n\nid: 1\0\ndata: a\n\n";
    let (got, _) = through(
        &SseResumeLayer::new(),
        vec![Reply::sse([body])],
        vec![get("/", "s").body(()).unwrap()],
    )
    .await;
    assert_eq!(got[0], body, "ignored by the WHATWG rules: both pass");
}

#[tokio::test]
async fn the_mcp_gate_can_be_turned_off() {
    let new_mcp = || {
        get("/mcp", "s")
            .header("mcp-protocol-version", "2026-07-28")
            .body(())
            .unwrap()
    };
    for (gate, injected) in [(true, None), (false, Some("2"))] {
        let layer = SseResumeLayer::new().mcp_protocol_gate(gate);
        let (_, upstream) = through(
            &layer,
            vec![Reply::sse([events(1..=2)]), Reply::sse([events(3..=3)])],
            vec![get("/mcp", "s").body(()).unwrap(), new_mcp()],
        )
        .await;
        assert_eq!(
            upstream.seen()[1].last_event_id(),
            injected,
            "gate {gate}: a 2026-07-28 request"
        );
    }
}

#[tokio::test]
async fn a_block_goes_out_as_soon_as_it_is_complete() {
    // The upstream sends one block, and the start of the next, then
    // nothing more: the first goes out at once, not with the next chunk.
    let service = SseResumeLayer::new().layer(answering(SSE, || {
        OpenEnded::new(["id: 1\ndata: a\n\nid: 2\nda"])
    }));
    let mut body = service
        .oneshot(get("/", "s").body(()).unwrap())
        .await
        .unwrap()
        .into_body();
    let Poll::Ready(Some(Ok(frame))) = poll_once(pin!(body.frame())) else {
        panic!("the complete block was held back");
    };
    assert_eq!(frame.into_data().unwrap(), "id: 1\ndata: a\n\n");
    assert!(
        poll_once(pin!(body.frame())).is_pending(),
        "the rest waits for its blank line"
    );
}
