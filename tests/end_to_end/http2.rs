//! HTTP/2 end to end: a hyper HTTP/2 client with prior knowledge, the
//! demo's proxy, and the flaky upstream over HTTP/2 too, whose stream is
//! reset mid-block on one of its cuts.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_sse_resume::SseResumeLayer;

use crate::proxy::{Proxy, Script, Upstream, parse_data};

/// The whole exchange, reconnects included, takes about 2 s.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_both_ways_every_event_arrives_once_in_order() {
    let script = Script::flaky();
    let (total, cuts) = (script.total, script.cuts.len());
    let upstream = Upstream::start(script).await;
    let layer = SseResumeLayer::new();
    let proxy = Proxy::start_http2(upstream.addr, layer.clone()).await;
    let (ids, resets) = tokio::time::timeout(DEADLINE, follow(proxy.addr, total))
        .await
        .expect("the exchange took too long");
    assert_eq!(ids, (1..=total).collect::<Vec<_>>(), "once, in order");
    assert_eq!(
        resets, cuts,
        "each upstream cut reached the client as an error"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), cuts + 1, "{seen:?}");
    assert!(
        seen.iter()
            .all(|seen| seen.version == http::Version::HTTP_2),
        "the upstream was spoken to over HTTP/2: {seen:?}"
    );
    assert!(layer.stats().snapshot().duplicates_dropped > 0);
}

/// Reads `/events` over HTTP/2 until `total` events came, reconnecting
/// with the last id after each error. Returns the ids in order and how many
/// times the stream failed.
async fn follow(proxy: SocketAddr, total: u64) -> (Vec<u64>, usize) {
    let mut ids: Vec<u64> = Vec::new();
    let mut resets = 0;
    while (ids.len() as u64) < total {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = Request::get(format!("http://{proxy}/events?session=h2"));
        if let Some(last) = ids.last() {
            request = request.header("last-event-id", last.to_string());
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let mut body = response.into_body();
        let mut text = String::new();
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.push_str(std::str::from_utf8(data).unwrap());
                    }
                    // Every whole block that came is the client's.
                    while let Some((block, rest)) = text.split_once("\n\n") {
                        if let Some(data) =
                            block.lines().find_map(|line| line.strip_prefix("data: "))
                        {
                            ids.push(parse_data(data).unwrap().0);
                        }
                        text = rest.to_owned();
                    }
                    if ids.len() as u64 >= total {
                        return (ids, resets);
                    }
                }
                Some(Err(_)) => {
                    resets += 1;
                    break;
                }
                None => break,
            }
        }
    }
    (ids, resets)
}
