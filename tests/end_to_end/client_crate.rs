//! A reconnecting SSE client from crates.io (`eventsource-client`) through
//! the proxy, over real sockets, against an upstream that drops the
//! connection and replays from earlier than asked.

use std::net::SocketAddr;
use std::time::Duration;

use crate::proxy::{Proxy, Script, Upstream, parse_data};
use eventsource_client::{Client, ClientBuilder, ReconnectOptions, SSE};
use futures_util::StreamExt;
use launchdarkly_sdk_transport::HyperTransport;
use tower_sse_resume::SseResumeLayer;

/// Each exchange takes about 2 s; this bounds it on a slow machine.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_every_event_once_in_order() {
    let script = Script::flaky();
    let (total, reconnects) = (script.total, script.cuts.len());
    let upstream = Upstream::start(script).await;
    let layer = SseResumeLayer::new();
    let proxy = Proxy::start(upstream.addr, layer.clone()).await;

    let got = follow(proxy.addr, total).await;

    assert_eq!(got.ids, (1..=total).collect::<Vec<_>>(), "once, in order");
    assert!(
        got.drops >= reconnects,
        "{} drops, want {reconnects}",
        got.drops
    );
    // Each reconnect carried the client's own cursor to the upstream.
    let asked: Vec<Option<u64>> = upstream
        .seen()
        .iter()
        .map(|seen| seen.last_event_id.as_deref().map(|id| id.parse().unwrap()))
        .collect();
    assert_eq!(asked.len(), reconnects + 1, "{asked:?}");
    assert_eq!(asked, got.cursors, "the upstream got the client's cursor");
    let stats = layer.stats().snapshot();
    assert_eq!(stats.cursors_injected, 0, "the client sent its own cursor");
    assert!(
        stats.duplicates_dropped >= 3 * reconnects as u64,
        "{stats:?}"
    );
}

/// The control: the same exchange without the layer shows the upstream's
/// replays to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_the_same_client_gets_duplicates() {
    let script = Script::flaky();
    let total = script.total;
    let upstream = Upstream::start(script).await;
    let proxy = Proxy::without_layer(upstream.addr).await;

    let got = follow(proxy.addr, total).await;

    let mut unique = got.ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique, (1..=total).collect::<Vec<_>>(), "{:?}", got.ids);
    assert!(
        got.ids.len() as u64 > total,
        "no replay seen: {:?}",
        got.ids
    );
}

/// What the client saw.
struct Followed {
    /// The id of every event, in order.
    ids: Vec<u64>,
    /// The last id the client had when each connection opened.
    cursors: Vec<Option<u64>>,
    /// Errors the client reconnected after.
    drops: usize,
}

/// An `eventsource-client` for `/events` at `addr` in session `session`,
/// reconnecting by itself 50 to 200 ms after each drop.
pub(crate) fn reconnecting_client(addr: SocketAddr, session: &str) -> impl Client {
    let transport = HyperTransport::builder()
        .disable_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build_http()
        .unwrap();
    let reconnect = ReconnectOptions::reconnect(true)
        .retry_initial(false)
        .delay(Duration::from_millis(50))
        .delay_max(Duration::from_millis(200))
        .build();
    ClientBuilder::for_url(&format!("http://{addr}/events"))
        .unwrap()
        .header("mcp-session-id", session)
        .unwrap()
        .reconnect(reconnect)
        .build_with_transport(transport)
}

/// Follows `/events` through `proxy` with `eventsource-client` until event
/// `last` arrives.
async fn follow(proxy: SocketAddr, last: u64) -> Followed {
    let client = reconnecting_client(proxy, "client-crate");

    let mut got = Followed {
        ids: Vec::new(),
        cursors: Vec::new(),
        drops: 0,
    };
    let mut stream = client.stream();
    let run = async {
        while got.ids.last() != Some(&last) {
            match stream.next().await {
                Some(Ok(SSE::Event(event))) => {
                    let id: u64 = event.id.as_deref().unwrap().parse().unwrap();
                    let (data_id, _sent) = parse_data(&event.data).unwrap();
                    assert_eq!(data_id, id, "the data belongs to its id");
                    got.ids.push(id);
                }
                Some(Ok(SSE::Connected(_))) => got.cursors.push(got.ids.last().copied()),
                Some(Ok(SSE::Comment(_))) => {}
                // A dropped connection: the client reconnects by itself.
                Some(Err(_)) => got.drops += 1,
                None => panic!("the client gave up"),
            }
        }
    };
    if tokio::time::timeout(DEADLINE, run).await.is_err() {
        panic!("timed out after {DEADLINE:?} with ids {:?}", got.ids);
    }
    got
}
