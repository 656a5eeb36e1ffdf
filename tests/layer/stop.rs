//! Stop is not disconnect: a client that goes away leaves its upstream
//! read on (linger), but the end of its MCP session (`DELETE` with its
//! `Mcp-Session-Id`, which the upstream accepts) ends every stream held
//! in its scope now, and the upstream sees the close.

use std::time::Duration;

use http::{Request, StatusCode};
use tokio::time::Instant;

use crate::credentials::{ALICE, Authorizing, Client, MALLORY, as_user};
use crate::linger::{LiveUpstream, eventually, read_events};
use crate::support::*;
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

/// How soon the upstream sees its stream closed after the `DELETE` was
/// answered, as the issue asks.
pub(crate) const CLOSED_WITHIN: Duration = Duration::from_millis(200);

/// A live upstream that accepts only Alice, behind a layer with a history
/// and linger, reached through `transport`.
async fn gateway(transport: Transport) -> (LiveUpstream, SseResumeLayer, Client) {
    gateway_with(transport, SseResumeLayer::new()).await
}

/// As [`gateway`], over `layer`.
async fn gateway_with(
    transport: Transport,
    layer: SseResumeLayer,
) -> (LiveUpstream, SseResumeLayer, Client) {
    let live = LiveUpstream::new(100_000);
    let layer = layer
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30));
    let client = Client::over(transport, &layer, Authorizing::new(live.clone())).await;
    (live, layer, client)
}

/// Waits for `live` to see its stream closed, within [`CLOSED_WITHIN`]
/// of `since`, when the stop or the session's end was answered.
pub(crate) async fn closed_soon_after(live: &LiveUpstream, since: Instant) {
    eventually("the upstream to see the close", || live.closed() == 1).await;
    let took = since.elapsed();
    assert!(took < CLOSED_WITHIN, "closed {took:?} after the stop");
}

/// Reads on, as a server writes a response out.
fn read_on<B>(
    body: B,
) -> tokio::task::JoinHandle<Result<http_body_util::Collected<B::Data>, B::Error>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    tokio::spawn(http_body_util::BodyExt::collect(body))
}

/// The response `reading` reads ends, with every whole event before it.
async fn ends_whole<D: bytes::Buf, E: std::fmt::Debug>(
    reading: tokio::task::JoinHandle<Result<http_body_util::Collected<D>, E>>,
) {
    let rest = tokio::time::timeout(STEP, reading)
        .await
        .expect("the response ends")
        .unwrap()
        .expect("without an error");
    let rest = String::from_utf8(rest.to_bytes().to_vec()).unwrap();
    assert!(rest.is_empty() || rest.ends_with("\n\n"), "{rest}");
}

#[tokio::test]
async fn the_end_of_an_mcp_session_ends_the_streams_held_in_its_scope() {
    for transport in TRANSPORTS {
        let (live, layer, client) = gateway(transport).await;
        let first = client
            .open(as_user(Request::get("/mcp"), ALICE, None))
            .await;
        read_events(first.into_body(), 3).await;
        eventually("the hold", || layer.stats().snapshot().held == 1).await;

        // Another token's `DELETE` is refused upstream, and ends nothing.
        let refused = client
            .send(as_user(Request::delete("/mcp"), MALLORY, None))
            .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(layer.stats().snapshot().held, 1, "over {transport:?}");
        assert_eq!(live.closed(), 0);

        // Alice's own: the upstream accepts it, and her held stream ends.
        let ended = client
            .send(as_user(Request::delete("/mcp"), ALICE, None))
            .await;
        let answered = Instant::now();
        assert_eq!(ended.status, StatusCode::OK);
        closed_soon_after(&live, answered).await;
        assert_eq!(layer.stats().snapshot().held, 0);
        assert_eq!(
            layer.stats().snapshot().linger_expiries,
            0,
            "ended, not expired"
        );
    }
}

#[tokio::test]
async fn the_end_of_an_mcp_session_ends_its_responses_still_attached() {
    for transport in TRANSPORTS {
        let (live, _layer, client) = gateway(transport).await;
        let call = client
            .open(as_user(Request::post("/mcp"), ALICE, None))
            .await;
        let mut body = Box::pin(call.into_body());
        read_events(body.as_mut(), 2).await;
        let reading = read_on(body);
        let ended = client
            .send(as_user(Request::delete("/mcp"), ALICE, None))
            .await;
        let answered = Instant::now();
        assert_eq!(ended.status, StatusCode::OK);
        closed_soon_after(&live, answered).await;
        ends_whole(reading).await;
    }
}

/// A gateway's own "stop" endpoint: the request that asks to stop names
/// the stream by its cursor, with the client's session and credentials.
pub(crate) fn stop_request(authorization: &str, cursor: u32) -> http::request::Parts {
    let request = as_user(Request::post("/stop"), authorization, Some(cursor));
    request.into_parts().0
}

#[tokio::test]
async fn a_stop_ends_a_held_call_now_and_its_resume_gets_the_rest_and_the_end() {
    for transport in TRANSPORTS {
        // A long call (an LLM's completion, say), its client gone.
        let (live, layer, client) = gateway(transport).await;
        let call = client
            .open(as_user(Request::post("/mcp"), ALICE, None))
            .await;
        let got = read_events(call.into_body(), 3).await;
        let cursor = crate::linger::last_id(&got);
        eventually("the hold", || layer.stats().snapshot().held == 1).await;
        eventually("events read while held", || {
            layer.stats().snapshot().events_held >= 2
        })
        .await;

        // Another token's stop stops nothing.
        assert!(
            !layer.stop(&stop_request(MALLORY, cursor)),
            "over {transport:?}"
        );
        assert_eq!(live.closed(), 0);
        assert!(layer.stop(&stop_request(ALICE, cursor)));
        let stopped = Instant::now();
        closed_soon_after(&live, stopped).await;

        // Her resume gets what was read before the stop, and the end; the
        // call is never sent again.
        let resumed = client
            .send(as_user(Request::get("/mcp"), ALICE, Some(cursor)))
            .await;
        assert_eq!(resumed.status, StatusCode::OK);
        the_rest_after(cursor, resumed.text());
        assert_eq!(live.requests(), 1, "never sent again");
    }
}

/// Checks that `rest` is every event after `cursor`, in order, and returns
/// the id of its last.
pub(crate) fn the_rest_after(cursor: u32, rest: &str) -> u32 {
    let ids: Vec<u32> = (rest.lines())
        .filter_map(|line| line.strip_prefix("id: ")?.parse().ok())
        .collect();
    assert_eq!(ids.first(), Some(&(cursor + 1)), "{rest}");
    assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1), "{rest}");
    *ids.last().expect("an event")
}

#[tokio::test]
async fn a_stop_ends_the_response_still_attached_and_its_upstream() {
    // Whether or not one scope is one client: a stop is not a reconnect.
    let layers = [
        SseResumeLayer::new(),
        SseResumeLayer::new().one_client_per_scope(false),
    ];
    for (transport, layer) in TRANSPORTS
        .into_iter()
        .flat_map(|t| layers.clone().map(|l| (t, l)))
    {
        let (live, layer, client) = gateway_with(transport, layer).await;
        let call = client
            .open(as_user(Request::post("/mcp"), ALICE, None))
            .await;
        let mut body = Box::pin(call.into_body());
        let got = read_events(body.as_mut(), 3).await;
        let cursor = crate::linger::last_id(&got);

        let reading = read_on(body);
        assert!(
            layer.stop(&stop_request(ALICE, cursor)),
            "over {transport:?}"
        );
        let stopped = Instant::now();
        closed_soon_after(&live, stopped).await;
        // The client's response ends, with every whole event before it.
        ends_whole(reading).await;
        assert_eq!(layer.stats().snapshot().held, 0);
    }
}
