//! Two replicas of the demo's proxy behind a load balancer, sharing one
//! real `redis-server`, in front of an upstream that cannot resume. The
//! balancer, a small TCP relay, sends each connection to the other
//! replica and cuts every `GET /events` after a while: the client
//! reconnects through the other replica each time, which follows the
//! stream the first one holds. A reconnecting client from crates.io
//! (`eventsource-client`) and the test's own client each get every event
//! once, in order, and the upstream sees one request.
//!
//! Without `redis-server` on `PATH` every test prints a message and passes,
//! unless `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use eventsource_client::{Client, SSE};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tower_sse_resume::{HistoryLimits, RedisStore, SseResumeLayer};
use tower_sse_resume_support::RedisServer;

use crate::client_crate::reconnecting_client;
use crate::proxy::{CuttingRelay, Proxy, Script, Upstream, parse_data};

/// The exchange takes about 3 s; this bounds it on a slow machine.
const DEADLINE: Duration = Duration::from_secs(30);
/// The balancer cuts every event stream this long after it opened.
const CUT_AFTER: Duration = Duration::from_millis(700);

/// The upstream, two replicas of the proxy over one Redis, and the
/// balancer in front of them.
struct Gateway {
    upstream: Upstream,
    replicas: Vec<SseResumeLayer<RedisStore>>,
    relay: CuttingRelay,
    _proxies: Vec<Proxy>,
    _server: RedisServer,
}

async fn gateway() -> Option<Gateway> {
    gateway_with(Some(Duration::from_secs(10))).await
}

/// The same gateway, its replicas lingering as `linger` says.
async fn gateway_with(linger: Option<Duration>) -> Option<Gateway> {
    let server = RedisServer::start()?;
    let upstream = Upstream::start(Script::live()).await;
    let mut replicas = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect to redis-server");
        let mut layer = SseResumeLayer::new()
            .store(store)
            .history(HistoryLimits::new());
        if let Some(linger) = linger {
            layer = layer.linger(linger);
        }
        proxies.push(Proxy::start_with(upstream.addr, layer.clone()).await);
        replicas.push(layer);
    }
    let targets = proxies.iter().map(|proxy| proxy.addr).collect();
    let relay = CuttingRelay::balanced(targets, CUT_AFTER).await;
    Some(Gateway {
        upstream,
        replicas,
        relay,
        _proxies: proxies,
        _server: server,
    })
}

/// How many events a client reads: 2.4 s of them, over three cuts or more.
const EVENTS: usize = 60;

impl Gateway {
    /// The client got every event once, in order, from the first its one
    /// upstream request sent (which depends on when it came, as this
    /// upstream numbers its events by the clock).
    fn check(&self, ids: &[u64]) {
        let seen = self.upstream.seen();
        assert_eq!(seen.len(), 1, "one upstream request: {seen:?}");
        let first = seen[0].first.expect("a live upstream");
        assert_eq!(
            ids,
            (first..).take(EVENTS).collect::<Vec<_>>(),
            "every event once, in order, from the upstream's first"
        );
        assert!(self.relay.cuts() >= 2, "{} cuts", self.relay.cuts());
        let follows: u64 = (self.replicas.iter())
            .map(|layer| layer.stats().snapshot().follows)
            .sum();
        assert!(follows >= 1, "no replica followed the other");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_client_through_two_replicas_gets_every_event_once() {
    let Some(gateway) = gateway().await else {
        return;
    };
    let ids = with_eventsource_client(gateway.relay.addr, EVENTS).await;
    gateway.check(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_client_through_two_replicas_gets_every_event_once() {
    let Some(gateway) = gateway().await else {
        return;
    };
    let ids = with_own_client(gateway.relay.addr, EVENTS).await;
    gateway.check(&ids);
}

/// The control: without linger, nobody holds the stream while the client
/// reconnects, each replica asks the upstream anew, and what the upstream
/// sent meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_linger_the_same_client_loses_events_at_every_cut() {
    let Some(gateway) = gateway_with(None).await else {
        return;
    };
    let ids = with_own_client(gateway.relay.addr, EVENTS).await;
    let skipped = ids.windows(2).filter(|pair| pair[1] > pair[0] + 1);
    assert!(skipped.count() > 0, "nothing lost: {ids:?}");
    assert!(gateway.upstream.seen().len() > 1);
}

/// Follows `/events` through `balancer` with `eventsource-client` until
/// `count` events came; returns their ids in the order they came.
async fn with_eventsource_client(balancer: SocketAddr, count: usize) -> Vec<u64> {
    let client = reconnecting_client(balancer, "replicas");
    let mut ids = Vec::new();
    let mut stream = client.stream();
    let run = async {
        while ids.len() < count {
            match stream.next().await {
                Some(Ok(SSE::Event(event))) => {
                    let id: u64 = event.id.as_deref().unwrap().parse().unwrap();
                    let (data_id, _sent) = parse_data(&event.data).unwrap();
                    assert_eq!(data_id, id, "the data belongs to its id");
                    ids.push(id);
                }
                Some(Ok(_)) | Some(Err(_)) => {}
                None => panic!("the client gave up"),
            }
        }
    };
    if tokio::time::timeout(DEADLINE, run).await.is_err() {
        panic!("timed out after {DEADLINE:?} with ids {ids:?}");
    }
    ids
}

/// The same with a client of the test's own: a new connection after each
/// cut, with `Last-Event-ID` the last id it got, as `EventSource` does.
async fn with_own_client(balancer: SocketAddr, count: usize) -> Vec<u64> {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut ids: Vec<u64> = Vec::new();
    let run = async {
        while ids.len() < count {
            let mut request = http::Request::get(format!("http://{balancer}/events"))
                .header("mcp-session-id", "replicas-own");
            if let Some(id) = ids.last() {
                request = request.header("last-event-id", id.to_string());
            }
            let request = request.body(Empty::new()).unwrap();
            let Ok(response) = client.request(request).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut body = response.into_body();
            let mut pending = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                pending.push_str(std::str::from_utf8(data).unwrap());
                while let Some(end) = pending.find("\n\n") {
                    let block: String = pending.drain(..end + 2).collect();
                    let id = block.lines().find_map(|l| l.strip_prefix("id: "));
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                    if let (Some(id), Some(data)) = (id, data) {
                        let id: u64 = id.parse().unwrap();
                        assert_eq!(
                            parse_data(data).unwrap().0,
                            id,
                            "the data belongs to its id"
                        );
                        ids.push(id);
                        if ids.len() == count {
                            return;
                        }
                    }
                }
            }
            // Cut: reconnect after a short delay.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(DEADLINE, run).await.is_err() {
        panic!("timed out after {DEADLINE:?} with ids {ids:?}");
    }
    ids
}
