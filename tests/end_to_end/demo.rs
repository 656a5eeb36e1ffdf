//! The demo's side-by-side page in headless Chromium, as
//! `cargo run --example reverse_proxy` serves it: after 15 s, the counters
//! the page shows, read from its DOM, have the stream straight from the
//! upstream with duplicates or losses, and the same stream through the
//! layer with none.
//!
//! The page runs in a frame of a test page on the same origin, which reads
//! the frame's counters and posts them to `/report`: the demo itself has
//! no hook for the test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{ServiceExt, service_fn};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

use crate::browser::{Browser, ONE_BROWSER, have_chromium};
use crate::reverse_proxy;
use crate::reverse_proxy_demo::{self as demo, DemoBody};

/// How long the page runs before its counters are read.
const WATCH: Duration = Duration::from_secs(15);

/// The default demo: an upstream that drops every few seconds and replays
/// from earlier than asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_duplicates_straight_and_none_through_the_layer() {
    let layer = SseResumeLayer::new().scope(reverse_proxy::session_scope);
    let Some(counters) = watch_the_page(layer, false).await else {
        return;
    };
    eprintln!("replaying upstream, the page after {WATCH:?}: {counters:?}");
    let c = |name: &str| counters[name];
    assert!(c("direct-duplicates") > 0, "{counters:?}");
    assert!(c("direct-reconnects") >= 2, "{counters:?}");
    assert_eq!(
        (c("proxied-duplicates"), c("proxied-lost")),
        (0, 0),
        "{counters:?}"
    );
    assert!(c("proxied-reconnects") >= 2, "{counters:?}");
    // Through the layer the page got about as many events as straight,
    // once each: none held back.
    let straight_once = c("direct-received") - c("direct-duplicates");
    assert!(c("proxied-received") + 5 >= straight_once, "{counters:?}");
    assert!(c("layer-duplicates_dropped") > 0, "{counters:?}");
}

/// `--demo live --linger 30`: an upstream that cannot resume, both sides'
/// connections cut every 4 s. Straight, what the upstream sent while the
/// browser reconnected is lost; through the layer, which read on, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_demo_page_with_linger_shows_losses_straight_and_none_through_the_layer() {
    let layer = SseResumeLayer::new()
        .scope(reverse_proxy::session_scope)
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30));
    let Some(counters) = watch_the_page(layer, true).await else {
        return;
    };
    eprintln!("live upstream, linger 30 s, the page after {WATCH:?}: {counters:?}");
    let c = |name: &str| counters[name];
    assert!(c("direct-lost") > 0, "{counters:?}");
    assert!(c("direct-reconnects") >= 2, "{counters:?}");
    assert_eq!(
        (
            c("proxied-duplicates"),
            c("proxied-lost"),
            c("proxied-gaps")
        ),
        (0, 0, 0),
        "{counters:?}"
    );
    assert!(c("proxied-reconnects") >= 2, "{counters:?}");
    // Nothing lost: the page got as many events through the layer as the
    // upstream sent since it opened, more than straight.
    assert!(c("proxied-received") > c("direct-received"), "{counters:?}");
    assert!(c("layer-takeovers") >= 2, "{counters:?}");
}

/// Serves the demo as the example does, with `layer`, against its
/// replaying or live upstream, opens its page in Chromium, and reads the
/// page's counters after [`WATCH`]. `None` when the browser is missing.
async fn watch_the_page(layer: SseResumeLayer, live: bool) -> Option<HashMap<String, u64>> {
    if !have_chromium() {
        return None;
    }
    let _one = ONE_BROWSER.lock().await;
    let upstream = demo::start_upstream(live).await.unwrap();
    let forwarder = reverse_proxy::forwarder(format!("http://{upstream}").parse().unwrap());
    let cut = live.then_some(demo::LIVE_CUT);
    let app = demo::app(layer, forwarder, cut);

    let (reports, mut report) = mpsc::unbounded_channel();
    let service = service_fn(move |request: Request<Incoming>| {
        let (app, reports) = (app.clone(), reports.clone());
        async move {
            match request.uri().path() {
                "/test" => Ok::<_, Infallible>(page(test_page())),
                "/report" => {
                    let body = request.into_body().collect().await;
                    let _ = reports.send(body.map(|body| body.to_bytes()).unwrap_or_default());
                    let mut response = Response::new(empty());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok(response)
                }
                _ => app.oneshot(request).await,
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(reverse_proxy::serve(listener, service));

    let mut browser = Browser::launch(&format!("http://{addr}/test"));
    let report = browser.report(&mut report).await;
    drop(browser);
    server.abort();
    let counters: HashMap<String, u64> =
        serde_json::from_slice(&report).expect("the page's counters");
    Some(counters)
}

/// The demo's page in a frame, and after [`WATCH`] every counter of it,
/// by element id, posted to `/report`.
fn test_page() -> String {
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<iframe id="demo" src="/" style="width: 1200px; height: 900px"></iframe>
<script>
setTimeout(() => {{
  const page = document.getElementById("demo").contentDocument;
  const counters = {{}};
  for (const cell of page.querySelectorAll("[id^=direct-], [id^=proxied-], [id^=layer-]")) {{
    if (/^[0-9]+$/.test(cell.textContent.trim())) counters[cell.id] = Number(cell.textContent);
  }}
  fetch("/report", {{ method: "POST", body: JSON.stringify(counters) }});
}}, {});
</script>
"#,
        WATCH.as_millis()
    )
}

fn page(html: String) -> Response<DemoBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

fn empty() -> DemoBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}
