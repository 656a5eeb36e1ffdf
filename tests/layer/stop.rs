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
const CLOSED_WITHIN: Duration = Duration::from_millis(200);

#[tokio::test]
async fn the_end_of_an_mcp_session_ends_the_streams_held_in_its_scope() {
    for transport in TRANSPORTS {
        let live = LiveUpstream::new(100_000);
        let layer = SseResumeLayer::new()
            .history(HistoryLimits::new())
            .linger(Duration::from_secs(30));
        let client = Client::over(transport, &layer, Authorizing::new(live.clone())).await;
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
        eventually("the upstream to see the close", || live.closed() == 1).await;
        let took = answered.elapsed();
        assert!(took < CLOSED_WITHIN, "closed {took:?} after the answer");
        assert_eq!(layer.stats().snapshot().held, 0);
        assert_eq!(
            layer.stats().snapshot().linger_expiries,
            0,
            "ended, not expired"
        );
    }
}
