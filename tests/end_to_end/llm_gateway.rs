//! The LLM gateway recipe (`examples/llm_gateway.rs`) in headless
//! Chromium: a completion survives a page reload mid-answer, whole, from
//! one upstream request, and another page joins it and gets all of it.
//!
//! The gateway's page runs in frames of a test page on the same origin,
//! which drives it as a user would (send, reload, open the share link) and
//! posts what each frame shows to `/report`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::browser::{Browser, ONE_BROWSER, have_chromium};
use crate::llm_gateway_example::{fake_upstream, gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_survives_a_reload_whole_and_another_page_joins_it() {
    if !have_chromium() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let upstream = fake_upstream::start().await.unwrap();
    let (gateway, layer) = gateway(upstream.url());
    let (reports, mut report) = mpsc::unbounded_channel::<Bytes>();
    let app = Router::new()
        .route("/test", get(|| async { Html(TEST_PAGE) }))
        .route(
            "/report",
            post(
                |State(reports): State<mpsc::UnboundedSender<Bytes>>, body: Bytes| async move {
                    let _ = reports.send(body);
                },
            ),
        )
        .with_state(reports)
        .merge(gateway);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut browser = Browser::launch(&format!("http://{addr}/test"));
    let report = browser.report(&mut report).await;
    drop(browser);
    server.abort();

    let report: Value = serde_json::from_slice(&report).expect("the page's report");
    let text = |name: &str| report[name].as_str().unwrap_or_default().to_owned();
    let answer = fake_upstream::ANSWER;
    let stats = layer.stats().snapshot();
    eprintln!(
        "before the reload the page had {} of {} characters ({} tokens); {report}; \
         upstream requests {}; takeovers {}, completes replayed {}, events replayed {}",
        text("before_reload").len(),
        answer.len(),
        fake_upstream::tokens().len(),
        upstream.requests(),
        stats.takeovers,
        stats.completes_replayed,
        stats.events_replayed,
    );
    assert_eq!(text("error"), "", "{report}");
    let before = text("before_reload");
    assert!(
        !before.is_empty() && before.len() < answer.len() && answer.starts_with(&before),
        "reloaded mid-answer: {report}"
    );
    assert_eq!(text("first"), answer, "after the reload, whole and once");
    assert_eq!(text("first_status"), "done", "{report}");
    assert_eq!(text("joined"), answer, "the second page got all of it");
    assert_eq!(text("joined_status"), "done", "{report}");
    assert_eq!(upstream.requests(), 1, "one upstream request in all");
    assert!(
        stats.takeovers + stats.completes_replayed >= 2,
        "the reload and the join answered by the layer: {stats:?}"
    );
}

/// Drives the gateway's page in a frame: sends the prompt, reloads the
/// frame once a few tokens have come, waits for the answer to end, then
/// opens the page's share link in a second frame and waits for that
/// answer too. Posts what each showed, or the first error.
const TEST_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<iframe id="one" src="/" style="width: 900px; height: 500px"></iframe>
<iframe id="two" style="width: 900px; height: 500px"></iframe>
<script>
const report = {};
const one = document.getElementById("one"), two = document.getElementById("two");
const $ = (frame, id) => frame.contentDocument && frame.contentDocument.getElementById(id);
const text = (frame, id) => ($(frame, id) || {}).textContent || "";
function until(check, then, what) {
  const started = Date.now();
  const timer = setInterval(() => {
    let ok = false;
    try { ok = check(); } catch (e) {}
    if (ok) { clearInterval(timer); then(); }
    else if (Date.now() - started > 20000) { clearInterval(timer); done("timed out waiting for " + what); }
  }, 10);
}
function done(error) {
  if (error) report.error = error;
  fetch("/report", { method: "POST", body: JSON.stringify(report) });
}
until(() => $(one, "send") && one.contentDocument.readyState === "complete", () => {
  $(one, "send").click();
  until(() => text(one, "output").split(" ").length >= 8, () => {
    report.before_reload = text(one, "output");
    const old = one.contentDocument;
    one.contentWindow.location.reload();
    until(() => one.contentDocument !== old && $(one, "status") && text(one, "status") !== "idle", () => {
      report.status_after_reload = text(one, "status");
      until(() => text(one, "status") === "done", () => {
        report.first = text(one, "output");
        report.first_status = text(one, "status");
        two.src = $(one, "share").querySelector("a").getAttribute("href");
        until(() => $(two, "status") && text(two, "status") === "done", () => {
          report.joined = text(two, "output");
          report.joined_status = text(two, "status");
          done();
        }, "the second page's answer");
      }, "the answer after the reload");
    }, "the reloaded page");
  }, "the first tokens");
}, "the page");
</script>
"#;
