//! Linger: when a client goes away before its upstream ends, the upstream
//! is read on in the background for a while, every block recorded into the
//! stream's history and window as if forwarded. The client that comes back
//! takes the upstream over (see `Streams::open`): the lingering task hands
//! it the body, with the bytes it read but had not yet recorded.
//!
//! While a client is attached, nothing here runs: its response reads the
//! upstream itself, as without linger. Only the body is boxed, so that it
//! can be handed on.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body::Body;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::{Dedup, into_bytes};
use crate::stats::Stats;
use crate::stream::{Claimed, Handover, Holds, Leftover, claim};

/// What a response needs to linger once its client is gone.
#[derive(Debug, Clone)]
pub(crate) struct LingerConfig {
    /// How long the upstream is read on with no client.
    pub(crate) time: Duration,
    pub(crate) holds: Arc<Holds>,
    pub(crate) stats: Stats,
}

/// How the body of one response starts lingering: a function of the
/// service's body type, made where its `Send + 'static` bounds are known,
/// so that the body itself needs none.
pub(crate) struct Linger<B> {
    start: fn(Pin<Box<B>>, Box<Dedup>, LingerConfig),
    hand_over: fn(Pin<Box<B>>, &mut Dedup, oneshot::Sender<Handover>),
    config: LingerConfig,
}

impl<B> Linger<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    pub(crate) fn new(config: LingerConfig) -> Self {
        Self {
            start: start::<B>,
            hand_over: hand_over::<B>,
            config,
        }
    }
}

impl<B> Linger<B> {
    /// The client went away: reads on for the stream, if it may.
    pub(crate) fn start(self, body: Pin<Box<B>>, dedup: Box<Dedup>) {
        (self.start)(body, dedup, self.config);
    }

    /// A reconnect of the same client asked on `reply` for the upstream of
    /// this attached response, which ends.
    pub(crate) fn hand_over(
        &self,
        body: Pin<Box<B>>,
        dedup: &mut Dedup,
        reply: oneshot::Sender<Handover>,
    ) {
        (self.hand_over)(body, dedup, reply);
    }
}

impl<B> std::fmt::Debug for Linger<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linger")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn hand_over<B>(body: Pin<Box<B>>, dedup: &mut Dedup, reply: oneshot::Sender<Handover>)
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let head = dedup.stream().lock().head().cloned();
    send_upstream(body, dedup, Leftover::Nothing, head, reply);
}

/// Sends the upstream `body` to the response that asked on `reply`, with
/// the bytes not yet part of a whole block and what came after them. A
/// stream without a `head` started no response to copy: the asker goes to
/// the inner service instead.
fn send_upstream<B>(
    body: Pin<Box<B>>,
    dedup: &mut Dedup,
    leftover: Leftover,
    head: Option<Arc<crate::stream::Head>>,
    reply: oneshot::Sender<Handover>,
) where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let Some(head) = head else {
        return;
    };
    let handover = Handover {
        body: Box::new(body),
        pending: dedup.take_pending(),
        leftover,
        head,
    };
    let _ = reply.send(handover);
}

fn start<B>(body: Pin<Box<B>>, mut dedup: Box<Dedup>, config: LingerConfig)
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    // Dropped outside a runtime: nothing can read on.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let id = config.holds.next_id();
    let (asks, asked) = claim();
    let stream = dedup.stream().clone();
    {
        let mut state = stream.lock();
        if !dedup.may_hold(&state) || !state.start_hold(id, asks, dedup.sent_ids()) {
            return;
        }
    }
    dedup.hold(id);
    // What the client got last may still wait for the next chunk; then
    // where the client went away, for the other replicas.
    dedup.recorder.client_away(true, dedup.sent_ids());
    dedup.recorder.flush();
    config.holds.add(id, stream.downgrade());
    tracing::debug!(hold = id, linger = ?config.time, "client gone: reading on");
    runtime.spawn(read_on(body, dedup, asked, id, config));
}

/// Reads the upstream for the hold `id` until it ends, the time runs out,
/// the hold is ended, or a client asks for the upstream.
async fn read_on<B>(
    mut body: Pin<Box<B>>,
    mut dedup: Box<Dedup>,
    mut asked: Claimed,
    id: u64,
    config: LingerConfig,
) where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let stream = dedup.stream().clone();
    let expiry = tokio::time::sleep_until(Instant::now() + config.time);
    tokio::pin!(expiry);
    let mut leftover = Leftover::Nothing;
    // Set once the hold is taken: the client that took it asks next.
    let mut taken = false;
    let ask = loop {
        tokio::select! {
            biased;
            ask = &mut asked => break ask,
            () = &mut expiry, if !taken => {
                if dedup.recorder.is_followed() {
                    // A client follows the stream on another replica.
                    expiry.as_mut().reset(Instant::now() + config.time);
                    continue;
                }
                if stream.lock().take_hold(id).is_some() {
                    config.stats.linger_expired();
                    tracing::debug!(hold = id, "no client came back: upstream let go");
                    break None;
                }
                taken = true;
            }
            frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)), if !taken => match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        taken = !dedup.push(into_bytes(data));
                        // Nobody waits on this stream: its store may as
                        // well have each chunk's ids at once.
                        dedup.recorder.flush();
                        if !taken && dedup.recorder.is_lost() {
                            // Another replica reads and records it now.
                            if stream.lock().take_hold(id).is_some() {
                                tracing::debug!(hold = id, "held on another replica: upstream let go");
                                break None;
                            }
                            taken = true;
                        }
                    }
                    Err(frame) => {
                        if dedup.end() {
                            break None;
                        }
                        leftover = frame.into_trailers().map_or(Leftover::End, Leftover::Trailers);
                        taken = true;
                    }
                },
                // A client taking over gets a fresh upstream request.
                Some(Err(_)) => break None,
                None => {
                    if dedup.end() {
                        break None;
                    }
                    leftover = Leftover::End;
                    taken = true;
                }
            },
        }
    };
    let head = {
        let mut state = stream.lock();
        state.take_hold(id);
        state.head().cloned()
    };
    config.holds.remove(id);
    match ask {
        Some(reply) => send_upstream(body, &mut dedup, leftover, head, reply),
        None => dedup.stopped(),
    }
}
