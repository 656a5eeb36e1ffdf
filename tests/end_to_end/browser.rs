//! A real browser end to end: headless Chromium's `EventSource` through the
//! proxy, against an upstream that drops the connection mid-stream and
//! replays from earlier than asked.
//!
//! Needs Debian's `chromium` at `/usr/bin/chromium`. Without it the test is
//! skipped with a message, unless `TOWER_SSE_RESUME_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), which makes it fail instead.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::{CuttingRelay, Proxy, Script, Upstream, parse_data};
use serde_json::Value;
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// From launching the browser to its report, chromium's start included.
const DEADLINE: Duration = Duration::from_secs(60);
/// No event takes longer than this from the upstream to the page.
const MAX_DELAY_MS: u64 = 1000;

/// One browser at a time: the delays measured are the proxy's, not those of
/// two browsers starting on the same cores.
pub(crate) static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_every_event_once_in_order_as_it_is_sent() {
    let layer = SseResumeLayer::new();
    let Some(run) = run(Some(layer.clone())).await else {
        return;
    };
    let total = run.script.total;
    let reconnects = run.script.cuts.len();

    assert_eq!(run.ids, (1..=total).collect::<Vec<_>>(), "once, in order");

    // The browser's own Last-Event-ID reached the upstream on each
    // reconnect: the layer injected none.
    assert!(run.asked.len() > reconnects, "{:?}", run.asked);
    assert_eq!(
        run.asked, run.cursors,
        "the upstream got the browser's cursor"
    );
    let stats = layer.stats().snapshot();
    assert_eq!(stats.cursors_injected, 0, "{stats:?}");
    assert!(
        stats.duplicates_dropped >= 3 * reconnects as u64,
        "{stats:?}"
    );

    // Nothing held back: each event reached the page as it was sent, not
    // when its connection ended (about 0.5 s later) nor when the next event
    // came (an interval later). The bounds are what holding back would
    // break, not what a quiet machine measures: a loaded one must not fail
    // them by accident. `tests/layer.rs` shows it exactly, and the load run
    // (`examples/load.rs`) gives the fine figures.
    let mut delays: Vec<u64> = run.delays.iter().map(|&(_, delay)| delay).collect();
    delays.sort_unstable();
    let (median, slowest) = (delays[delays.len() / 2], delays[delays.len() - 1]);
    eprintln!(
        "{} events, {} reconnects, from upstream to page: median {median} ms, slowest {slowest} ms",
        run.ids.len(),
        run.asked.len() - 1,
    );
    let interval = u64::try_from(run.script.interval.as_millis()).unwrap();
    assert!(median < interval, "held back: {:?}", run.delays);
    assert!(slowest < MAX_DELAY_MS, "held back: {:?}", run.delays);
}

/// With a replay history too short to reach back to the browser's cursor
/// (its blocks expire in a millisecond), each reconnect starts with the
/// gap event, which the page sees through `addEventListener`; the stream
/// goes on with every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_the_gap_event_when_its_cursor_left_the_history() {
    let limits = HistoryLimits::new().max_age(Duration::from_millis(1));
    let layer = SseResumeLayer::new().history(limits);
    let Some(run) = run(Some(layer.clone())).await else {
        return;
    };
    assert_eq!(
        run.ids,
        (1..=run.script.total).collect::<Vec<_>>(),
        "once, in order"
    );
    let reconnects: Vec<String> = run.cursors.iter().flatten().map(u64::to_string).collect();
    assert_eq!(
        run.gaps, reconnects,
        "one gap event per reconnect, carrying the page's cursor"
    );
    assert_eq!(layer.stats().snapshot().gaps, reconnects.len() as u64);
}

/// The control: without the layer the same page sees the upstream's
/// replays, so the test above would catch a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_chromium_sees_duplicates() {
    let Some(run) = run(None).await else {
        return;
    };
    let mut unique = run.ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert!(
        unique.len() < run.ids.len(),
        "no replay seen: {:?}",
        run.ids
    );
}

/// How long each of the browser's `/events` connections lasts in the
/// linger tests before the relay cuts it.
const CUT: Duration = Duration::from_millis(600);

/// The browser's connection to the proxy is cut every 600 ms while a
/// live-only upstream goes on: with linger, each reconnect takes the held
/// upstream over, and the page gets every event once, in order, from one
/// upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_cut_off_from_a_live_upstream_loses_nothing_with_linger() {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(10));
    let Some(run) = run_with(Some(layer.clone()), Script::live(), Some(CUT)).await else {
        return;
    };
    let first = run.ids[0];
    assert_eq!(
        run.ids,
        (first..first + run.script.total).collect::<Vec<_>>(),
        "once, in order"
    );
    assert!(run.cuts >= 2, "{} cuts", run.cuts);
    assert!(
        run.cursors.len() > run.cuts,
        "the page reconnected each time"
    );
    assert_eq!(run.asked.len(), 1, "one upstream request: {:?}", run.asked);
    let stats = layer.stats().snapshot();
    eprintln!(
        "{} events, {} cuts, {} takeovers, {} events recorded while held",
        run.ids.len(),
        run.cuts,
        stats.takeovers,
        stats.events_held
    );
    assert!(stats.takeovers >= run.cuts as u64 - 1, "{stats:?}");
}

/// The control: without linger, each cut loses what the live upstream
/// sent while the page reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_linger_chromium_cut_off_from_a_live_upstream_loses_events() {
    let layer = SseResumeLayer::new().history(HistoryLimits::new());
    let Some(run) = run_with(Some(layer), Script::live(), Some(CUT)).await else {
        return;
    };
    let skipped = run
        .ids
        .windows(2)
        .filter(|pair| pair[1] != pair[0] + 1)
        .count();
    assert!(skipped > 0, "no loss seen: {:?}", run.ids);
    assert!(run.asked.len() > 1, "{:?}", run.asked);
}

/// A complete stream (a call that ended) resumed by an `EventSource`: it
/// gets the rest and the end, reconnects once with the last id, gets
/// `204 No Content` and stops. With an empty `200` it would reconnect
/// every `retry` (100 ms here) for as long as the page lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_stops_reconnecting_once_it_has_all_of_a_complete_stream() {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(30));
    let script = Script {
        total: 5,
        page: Some(complete_page().to_owned()),
        ..Script::flaky()
    };
    let Some(run) = run_with(Some(layer.clone()), script, None).await else {
        return;
    };
    assert_eq!(run.ids, vec![4, 5], "the rest of the call, once");
    assert_eq!(run.final_state, Some(2), "the EventSource is CLOSED");
    let resumes = layer.stats().snapshot().completes_replayed;
    assert_eq!(resumes, 2, "the resume, and one more request: the 204");
    assert_eq!(run.errors, 2, "the end of the rest, and the 204");
    assert_eq!(run.asked.len(), 1, "the upstream saw the call only");
}

/// MCP priming: the proxy starts each stream with a stamped id and empty
/// data. The upstream sends nothing on the first connection, which the
/// relay cuts: the browser reconnects with the priming id as its
/// `Last-Event-ID`, which the layer knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_resumes_from_the_priming_event_before_any_other() {
    let layer = SseResumeLayer::new()
        .history(HistoryLimits::new())
        .stamp_ids(true)
        .prime(true)
        .prime_retry(Duration::from_millis(100));
    let script = Script {
        total: 10,
        quiet_first: true,
        ..Script::live()
    };
    let Some(run) = run_with(Some(layer.clone()), script, Some(CUT)).await else {
        return;
    };
    let first = run.relayed_cursors.first().cloned().flatten();
    assert_eq!(first, None, "the first request has no cursor");
    let cursor = run.relayed_cursors[1]
        .clone()
        .expect("a cursor on reconnect");
    assert_eq!(
        cursor, run.primes[0],
        "the browser resumed from the first priming event's id"
    );
    let (epoch, count) = cursor.split_once('-').expect("a stamped id");
    assert!(epoch.parse::<u64>().is_ok() && count == "1", "{cursor}");

    // Each connection of the page is one request upstream. The first got
    // nothing but its priming event; each later one got the events its
    // upstream request sent, from the first, with no gap and no
    // duplicate. (This upstream cannot resume: were the relay to cut the
    // second connection too, what happened before the third would be
    // lost, as without linger it is.)
    assert_eq!(run.connections.len(), run.starts.len(), "{run:?}");
    assert_eq!(run.starts[0], None, "the first connection is quiet");
    assert_eq!(run.connections[0], Vec::<u64>::new(), "{run:?}");
    assert!(run.connections.len() >= 2, "{run:?}");
    for (n, (got, start)) in run.connections.iter().zip(&run.starts).enumerate().skip(1) {
        let start = start.expect("a live connection");
        let sent: Vec<u64> = (start..).take(got.len()).collect();
        assert_eq!(
            got, &sent,
            "connection {n}: from its first event, once, in order"
        );
    }
    assert!(!run.ids.is_empty(), "the stream went on: {run:?}");
    assert!(
        run.ids.windows(2).all(|pair| pair[0] < pair[1]),
        "no event twice: {:?}",
        run.ids
    );
    // The cursor is known, but nobody read the upstream between two
    // connections, and it cannot resume: each later connection starts with
    // the gap signal, carrying the cursor it follows.
    let stats = layer.stats().snapshot();
    let reconnects = run.connections.len() - 1;
    assert_eq!(run.gaps.len(), reconnects, "{run:?}");
    assert_eq!(run.gaps[0], run.primes[0], "{run:?}");
    assert_eq!(
        (stats.gaps, stats.unknown_cursors),
        (reconnects as u64, 0),
        "{stats:?}"
    );
}

/// What one page saw.
#[derive(Debug)]
struct Run {
    script: Script,
    /// The id of every event, in order.
    ids: Vec<u64>,
    /// The id of every event, by the connection of the page it came on.
    connections: Vec<Vec<u64>>,
    /// The last id the page had when each connection opened.
    cursors: Vec<Option<u64>>,
    /// The `Last-Event-ID` of each request, as the upstream saw it.
    asked: Vec<Option<u64>>,
    /// The id each request's events started from, as the upstream sent
    /// them.
    starts: Vec<Option<u64>>,
    /// Each event's id and milliseconds from the upstream to the page.
    delays: Vec<(u64, u64)>,
    /// The cursor each gap event carried, in order.
    /// The data of each gap event: the cursor it follows.
    gaps: Vec<String>,
    /// The browser's connections the relay cut.
    cuts: usize,
    /// The `Last-Event-ID` of each `/events` request the relay saw.
    relayed_cursors: Vec<Option<String>>,
    /// The id of each priming event, in order.
    primes: Vec<String>,
    /// The `EventSource`'s errors: each time a connection ended or failed.
    errors: usize,
    /// Its `readyState` when the page reported, if the page says.
    final_state: Option<u64>,
}

/// Whether Chromium is there to run; without it, says the test is
/// skipped, or fails when `TOWER_SSE_RESUME_REQUIRE_BROWSER=1`.
pub(crate) fn have_chromium() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let required = std::env::var("TOWER_SSE_RESUME_REQUIRE_BROWSER").as_deref() == Ok("1");
    assert!(!required, "{CHROMIUM} is missing: apt-get install chromium");
    tower_sse_resume_support::skipped(&format!("{CHROMIUM} is missing (apt-get install chromium)"));
    false
}

/// Opens the page in Chromium through the proxy, with `layer` or without
/// any, against the flaky upstream, and reads its report. `None` when the
/// browser is missing.
async fn run(layer: Option<SseResumeLayer>) -> Option<Run> {
    run_with(layer, Script::flaky(), None).await
}

/// Like [`run`], against the upstream of `script`, with the browser's
/// connections cut `cut` after each `GET /events` when given.
async fn run_with(
    layer: Option<SseResumeLayer>,
    mut script: Script,
    cut: Option<Duration>,
) -> Option<Run> {
    if !have_chromium() {
        return None;
    }
    let _one = ONE_BROWSER.lock().await;
    if script.page.is_none() {
        script.page = Some(page(script.total));
    }
    let mut upstream = Upstream::start(script.clone()).await;
    let proxy = match layer {
        Some(layer) => Proxy::start(upstream.addr, layer).await,
        None => Proxy::without_layer(upstream.addr).await,
    };

    let relay = match cut {
        Some(after) => Some(CuttingRelay::start(proxy.addr, after).await),
        None => None,
    };
    let front = relay.as_ref().map_or(proxy.addr, |relay| relay.addr);
    let mut browser = Browser::launch(&format!("http://{front}/"));
    let report = loop {
        if let Some(report) = upstream.report(Duration::from_millis(250)).await {
            break report;
        }
        if let Some(problem) = browser.problem() {
            panic!("{problem}");
        }
    };
    drop(browser);

    let log: Vec<Value> = serde_json::from_slice(&report).expect("the page's report");
    let mut run = Run {
        script,
        ids: Vec::new(),
        connections: Vec::new(),
        cursors: Vec::new(),
        asked: Vec::new(),
        starts: Vec::new(),
        delays: Vec::new(),
        gaps: Vec::new(),
        cuts: relay.as_ref().map_or(0, CuttingRelay::cuts),
        relayed_cursors: relay.as_ref().map_or_else(Vec::new, CuttingRelay::cursors),
        primes: Vec::new(),
        errors: 0,
        final_state: None,
    };
    for entry in &log {
        match entry["kind"].as_str() {
            Some("open") => {
                run.cursors.push(run.ids.last().copied());
                run.connections.push(Vec::new());
            }
            Some("error") => run.errors += 1,
            Some("state") => run.final_state = entry["state"].as_u64(),
            Some("gap") => run.gaps.push(entry["data"].as_str().unwrap().to_owned()),
            // A priming event: an id and empty data, which `EventSource`
            // dispatches as an empty message.
            Some("message") if entry["data"] == "" => {
                run.primes.push(entry["id"].as_str().unwrap().to_owned());
            }
            Some("message") => {
                let id: u64 = entry["id"].as_str().unwrap().parse().unwrap();
                let (data_id, sent) = parse_data(entry["data"].as_str().unwrap()).unwrap();
                assert_eq!(data_id, id, "the data belongs to its id");
                let arrived = entry["t"].as_u64().unwrap();
                run.ids.push(id);
                (run.connections.last_mut())
                    .expect("an event after an open")
                    .push(id);
                run.delays.push((id, arrived.saturating_sub(sent)));
            }
            _ => {}
        }
    }
    let seen = upstream.seen();
    for request in &seen {
        let path = &request.path_and_query;
        assert!(path.starts_with("/events?session=browser-"), "{path}");
    }
    run.asked = seen
        .iter()
        .map(|seen| seen.last_event_id.as_deref().and_then(|id| id.parse().ok()))
        .collect();
    run.starts = seen.iter().map(|seen| seen.first).collect();
    Some(run)
}

/// The page: an `EventSource` scoped by `?session=`, a log of every event
/// with its arrival time, posted to `/report` after `total` events, or
/// after 30 s with what came.
fn page(total: u64) -> String {
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse-resume browser test</title>
<script>
const log = [];
let received = 0, reported = false;
const source = new EventSource("/events?session=browser-" + Math.random().toString(36).slice(2));
function report() {{
  if (reported) return;
  reported = true;
  source.close();
  fetch("/report", {{ method: "POST", body: JSON.stringify(log) }});
}}
source.onopen = () => log.push({{ kind: "open", t: Date.now() }});
source.onerror = () => log.push({{ kind: "error", t: Date.now() }});
source.addEventListener("sse-resume-gap", (event) =>
  log.push({{ kind: "gap", data: event.data, t: Date.now() }}));
source.onmessage = (event) => {{
  log.push({{ kind: "message", id: event.lastEventId, data: event.data, t: Date.now() }});
  if (++received >= {total}) report();
}};
setTimeout(report, 30000);
</script>
"#
    )
}

/// A page that makes a call (`POST /events`, an MCP tool call's stream),
/// then resumes it with an `EventSource` from its third event, and reports
/// after 10 s what came and whether the `EventSource` stopped.
fn complete_page() -> &'static str {
    r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse-resume: a complete stream</title>
<script>
const log = [];
const url = "/events?session=browser-" + Math.random().toString(36).slice(2);
fetch(url, { method: "POST" }).then((response) => response.text()).then(() => {
  const source = new EventSource(url + "&last_event_id=3");
  source.onopen = () => log.push({ kind: "open", t: Date.now() });
  source.onerror = () => log.push({ kind: "error", t: Date.now() });
  source.onmessage = (event) =>
    log.push({ kind: "message", id: event.lastEventId, data: event.data, t: Date.now() });
  setTimeout(() => {
    log.push({ kind: "state", state: source.readyState });
    source.close();
    fetch("/report", { method: "POST", body: JSON.stringify(log) });
  }, 10000);
});
</script>
"#
}

/// Headless Chromium with a fresh profile, killed with its whole process
/// group and its profile removed when dropped.
pub(crate) struct Browser {
    child: Child,
    dir: PathBuf,
    started: Instant,
}

impl Browser {
    pub(crate) fn launch(url: &str) -> Self {
        use std::os::unix::process::CommandExt;

        let dir = std::env::temp_dir().join(format!(
            "tower-sse-resume-browser-{}-{}",
            std::process::id(),
            crate::proxy::now_ms()
        ));
        fs::create_dir_all(&dir).unwrap();
        let log = File::create(dir.join("chromium.log")).unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own group, so that its helpers go with it.
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        Self {
            child,
            dir,
            started: Instant::now(),
        }
    }

    /// The first report that comes on `reports`; panics, saying why,
    /// when none will.
    pub(crate) async fn report(
        &mut self,
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
    ) -> bytes::Bytes {
        loop {
            match tokio::time::timeout(Duration::from_millis(250), reports.recv()).await {
                Ok(Some(report)) => return report,
                Ok(None) => panic!("nothing left to send a report"),
                Err(_) => {
                    if let Some(problem) = self.problem() {
                        panic!("{problem}");
                    }
                }
            }
        }
    }

    /// Why no report will come, if that is already known.
    pub(crate) fn problem(&mut self) -> Option<String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(format!(
                "chromium exited ({status}) before the page reported\n{}",
                self.log_tail()
            ));
        }
        if self.started.elapsed() > DEADLINE {
            return Some(format!(
                "no report from the page within {DEADLINE:?}\n{}",
                self.log_tail()
            ));
        }
        None
    }

    /// The end of chromium's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!("chromium's log ends with:\n{}", &log[start..])
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group's id is chromium's pid: kill the browser and its
        // helpers, then reap it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helpers may still be closing files in the profile for a moment.
        for _ in 0..20 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
