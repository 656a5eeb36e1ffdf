//! An LLM gateway whose streamed completions survive a page reload.
//!
//! An axum gateway in front of an OpenAI-compatible streaming endpoint
//! (`POST /v1/chat/completions` with `"stream": true`). Such an endpoint
//! sends `data: {json}` chunks without ids, then `data: [DONE]`, and cannot
//! resume: a reload or a network switch mid-answer loses the rest, or
//! costs a second completion. With the layer in front:
//!
//! - `stamp_ids` gives every chunk an id, and `prime` one more before the
//!   first token, so a client can resume from anywhere, even from the
//!   start;
//! - `history` keeps the chunks, and `linger` reads the upstream on while
//!   the page is away, so nothing it sends meanwhile is lost;
//! - the cursor in the URL (`?last_event_id=`, the default `cursor_query`)
//!   lets the browser's own `EventSource` resume after a reload, when it
//!   has no `Last-Event-ID` of its own.
//!
//! A completion is a `POST`, so it is a stream of its own (per-request),
//! and a later `GET` with one of its ids resumes it: the page keeps the
//! last id it got, and after a reload opens
//! `EventSource("/v1/chat/completions?last_event_id=…")`. The gateway
//! answers it from the held upstream or, once the completion is over, from
//! its history alone: one upstream request per completion, however many
//! reloads. Another tab joins a finished completion from its first id and
//! gets all of it.
//!
//! Here the upstream is a small fake one on loopback.
//!
//! ```text
//! cargo run --example llm_gateway                    # http://127.0.0.1:3000/
//! cargo run --example llm_gateway -- --listen 127.0.0.1:3001
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_sse_resume::key::{Cookie, KeyExtractor};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

/// The cookie that scopes a browser's completions.
const SESSION_COOKIE: &str = "chat_session";

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => {
                listen = addr
                    .parse()
                    .map_err(|_| format!("not an address: {addr}"))?;
            }
            _ => return Err("usage: llm_gateway [--listen ADDR]".into()),
        }
    }
    let upstream = fake_upstream::start()
        .await
        .map_err(|error| format!("fake upstream: {error}"))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let (gateway, layer) = gateway(upstream.url());
    println!(
        "LLM gateway on http://{listen}/ in front of {}",
        upstream.url()
    );
    println!("open it, send, reload the page mid-answer: the answer goes on, whole");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut last = None;
        loop {
            tick.tick().await;
            let now = layer.stats().snapshot();
            let line = format!(
                "upstream requests {}  takeovers {}  completes replayed {}  events replayed {}",
                upstream.requests(),
                now.takeovers,
                now.completes_replayed,
                now.events_replayed,
            );
            if last.as_ref() != Some(&line) {
                println!("{line}");
                last = Some(line);
            }
        }
    });
    axum::serve(listener, gateway)
        .await
        .map_err(|error| error.to_string())
}

/// The gateway in front of the OpenAI-compatible endpoint at `upstream`:
/// the page at `/`, completions at `/v1/chat/completions` through the
/// layer. Returns the layer too, for its counters.
pub(crate) fn gateway(upstream: Uri) -> (Router, SseResumeLayer) {
    let layer = SseResumeLayer::new()
        // Whose completions: a browser's, by a random cookie the page sets.
        // A real gateway scopes by its own session, and binds streams to
        // the user its authentication resolved (`.credentials(..)`).
        .scope(Cookie::new(SESSION_COOKIE))
        // The chunks come without ids: the layer stamps them, and primes
        // each completion with an id before its first token.
        .stamp_ids(true)
        .prime(true)
        // It keeps them, and reads the upstream on while the page reloads.
        .history(HistoryLimits::new())
        .linger(Duration::from_secs(60))
        // The browser's cursor after a reload, in the URL (the default).
        .cursor_query(Some("last_event_id"));
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let router = Router::new()
        .route("/v1/chat/completions", post(forward).get(nothing_to_resume))
        .layer(layer.clone())
        .route("/", get(page))
        .with_state(Upstream { client, upstream });
    (router, layer)
}

#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Body>,
    upstream: Uri,
}

/// Sends a completion request on to the upstream, streaming both ways.
async fn forward(State(to): State<Upstream>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", to.upstream.to_string().trim_end_matches('/')).parse() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    parts.uri = uri;
    // The upstream has no business with the browser's cookies.
    parts.headers.remove(header::COOKIE);
    parts.headers.remove(header::HOST);
    match to.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new),
        Err(error) => (StatusCode::BAD_GATEWAY, format!("upstream: {error}\n")).into_response(),
    }
}

/// A `GET` the layer could not answer from what it keeps: a completion
/// that is unknown or gone, or one another page of this browser is still
/// reading. `204` stops the `EventSource`; a completion is never started
/// again by a resume.
async fn nothing_to_resume() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The page, with a session cookie when the browser has none.
async fn page(request: Parts) -> Response {
    let mut response = Html(PAGE).into_response();
    if Cookie::new(SESSION_COOKIE).extract(&request).is_none() {
        let cookie = format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            random_id()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// 128 random bits, as hex, from the standard library's random hash keys:
/// enough to tell the demo's browsers apart, not a secret for production,
/// where the session is the gateway's own.
fn random_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let (a, b) = (RandomState::new(), RandomState::new());
    format!("{:016x}{:016x}", a.hash_one(0u8), b.hash_one(1u8))
}

/// A small OpenAI-compatible streaming endpoint: it answers every
/// completion with the same words, a chunk each, then `data: [DONE]`, and
/// counts the requests it gets.
pub(crate) mod fake_upstream {
    use super::*;

    use axum::response::sse::{Event, Sse};
    use futures_util::StreamExt;
    use futures_util::stream::{self, Stream};

    /// The answer, one token a chunk.
    pub(crate) const ANSWER: &str = "A resumable stream keeps every token of an answer: \
        the gateway stamps each chunk with an id, keeps it, and reads the model on while \
        the page reloads, so the page picks up exactly where it stopped, with no token \
        lost or repeated and no second request to the model.";
    /// The pause before each chunk.
    pub(crate) const INTERVAL: Duration = Duration::from_millis(60);

    /// The running fake: where it is and what it was asked.
    #[derive(Clone)]
    pub(crate) struct Running {
        addr: SocketAddr,
        requests: Arc<AtomicUsize>,
    }

    impl Running {
        pub(crate) fn url(&self) -> Uri {
            format!("http://{}", self.addr).parse().expect("a URL")
        }

        /// The completions requested so far.
        pub(crate) fn requests(&self) -> usize {
            self.requests.load(Ordering::Relaxed)
        }
    }

    pub(crate) async fn start() -> std::io::Result<Running> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(Arc::clone(&requests));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Running { addr, requests })
    }

    /// The tokens of [`ANSWER`]: each word with the space before it.
    pub(crate) fn tokens() -> Vec<String> {
        ANSWER
            .split(' ')
            .enumerate()
            .map(|(n, word)| {
                if n == 0 {
                    word.into()
                } else {
                    format!(" {word}")
                }
            })
            .collect()
    }

    async fn complete(
        State(requests): State<Arc<AtomicUsize>>,
    ) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
        let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("chatcmpl-{n}");
        let mut chunks: Vec<String> = tokens()
            .into_iter()
            .map(|token| chunk(&id, serde_json::json!({ "content": token }), None))
            .collect();
        chunks.push(chunk(&id, serde_json::json!({}), Some("stop")));
        chunks.push("[DONE]".into());
        let events = stream::iter(chunks).then(|data| async move {
            tokio::time::sleep(INTERVAL).await;
            Ok(Event::default().data(data))
        });
        Sse::new(events)
    }

    fn chunk(id: &str, delta: serde_json::Value, finish: Option<&str>) -> String {
        serde_json::json!({
            "id": id,
            "object": "chat.completion.chunk",
            "model": "fake",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
        .to_string()
    }
}

/// The chat page. A completion starts with a `POST` read by `fetch` (an
/// `EventSource` cannot `POST`); every block's id, stamped by the layer,
/// is kept in `localStorage` with the text so far. After a reload the page
/// resumes with the browser's own `EventSource` and `?last_event_id=`; a
/// page opened with `?completion=ID` joins the completion from that id.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>LLM gateway: a completion that survives a reload</title>
<style>
body { font: 16px system-ui, sans-serif; margin: 2em auto; max-width: 46em; color: #222 }
form { display: flex; gap: .5em } input { flex: 1; font: inherit; padding: .3em }
#output { white-space: pre-wrap; min-height: 6em; border: 1px solid #ccc; border-radius: 6px; padding: .8em; margin: 1em 0 }
#meta { color: #666; font-size: .9em }
</style>
<h1>A completion that survives a reload</h1>
<p>Send, then reload the page while the answer streams: it goes on where
it stopped, each token once, from the same upstream request.</p>
<form id="ask"><input id="prompt" value="What is a resumable stream?"><button id="send">Send</button></form>
<div id="output"></div>
<p id="meta">status <b id="status">idle</b> · last id <code id="cursor">-</code> · <span id="share"></span></p>
<script>
const url = "/v1/chat/completions";
const joining = new URLSearchParams(location.search).get("completion");
let state = null;

function save() { if (!joining) localStorage.setItem("completion", JSON.stringify(state)); }
function status(text) { document.getElementById("status").textContent = text; }
function render() {
  document.getElementById("output").textContent = state.text;
  document.getElementById("cursor").textContent = state.last || "-";
  if (state.first) {
    const link = document.createElement("a");
    link.href = "/?completion=" + encodeURIComponent(state.first);
    link.textContent = "open this completion in another tab";
    document.getElementById("share").replaceChildren(link);
  }
}

// One event of the completion: its id (stamped by the gateway) and data.
// Returns true at the end.
function handle(id, data) {
  if (id) state.last = id;
  if (data === "") {
    // The priming event: an id before any token, to resume or join from.
    state.first = state.first || id;
  } else if (data === "[DONE]") {
    state.done = true;
    status("done");
  } else {
    const delta = JSON.parse(data).choices[0].delta;
    state.text += delta.content || "";
  }
  save();
  render();
  return state.done;
}

// Starts a completion: a POST whose event stream fetch reads block by block.
async function send(prompt) {
  state = { first: null, last: null, text: "", done: false };
  save(); render(); status("streaming");
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "fake", stream: true, messages: [{ role: "user", content: prompt }] }),
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = null, data = null;
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = value;
        if (field === "data") data = data === null ? value : data + "\n" + value;
      }
      if (data !== null && handle(id, data)) return;
      if (data === null && id) { state.last = id; save(); }
    }
  }
}

// Resumes (or joins) a completion after `cursor` with the browser's own
// EventSource: the cursor goes in the URL, as a fresh page has no
// Last-Event-ID to send.
function resume(cursor) {
  status(joining ? "joining" : "resuming");
  const source = new EventSource(url + "?last_event_id=" + encodeURIComponent(cursor));
  source.onmessage = (event) => { status("streaming"); if (handle(event.lastEventId, event.data)) source.close(); };
  // The gateway no longer has what came after the cursor: say so, rather
  // than show an answer with a hole in it.
  source.addEventListener("sse-resume-gap", () => { source.close(); status("lost: the gateway no longer has this completion"); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && !state.done) status("nothing to resume");
  };
}

document.getElementById("ask").onsubmit = (event) => {
  event.preventDefault();
  send(document.getElementById("prompt").value);
};
const saved = JSON.parse(localStorage.getItem("completion") || "null");
if (joining) {
  state = { first: joining, last: joining, text: "", done: false };
  resume(joining);
} else if (saved) {
  state = saved;
  render();
  if (saved.done) status("done"); else if (saved.last) resume(saved.last);
}
</script>
"#;
