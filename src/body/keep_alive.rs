//! Keep-alives: a comment block when the upstream has been quiet for a
//! while, so that load balancers and proxies on the way do not close an
//! idle event stream.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

/// What a keep-alive sends: an empty comment, and the blank line that ends
/// its block. A client ignores it.
pub(super) const KEEP_ALIVE: Bytes = Bytes::from_static(b":\n\n");

/// When the next keep-alive is due: `every` after the upstream's last
/// chunk, or after the last keep-alive.
#[derive(Debug)]
pub(super) struct KeepAlive {
    every: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl KeepAlive {
    /// Keep-alives every `every` of quiet, when a tokio runtime with a
    /// timer runs this; `None` otherwise.
    pub(super) fn new(every: Duration) -> Option<Self> {
        tokio::runtime::Handle::try_current().ok()?;
        let last = Instant::now();
        Some(Self {
            every,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + every)),
        })
    }

    /// The upstream sent something: the quiet starts again.
    pub(super) fn heard(&mut self) {
        self.last = Instant::now();
    }

    /// Whether a keep-alive is due now. Either way the timer is armed for
    /// the next one, with `cx`'s waker.
    pub(super) fn poll_due(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let (now, due) = (Instant::now(), self.last + self.every);
            if now >= due {
                self.last = now;
                self.timer.as_mut().reset(now + self.every);
                // Registers the waker for the next one.
                let _ = self.timer.as_mut().poll(cx);
                return true;
            }
            // The upstream spoke since the timer was set.
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::{Body, Frame};
    use http_body_util::StreamBody;
    use tower::{Layer, ServiceExt};

    use crate::SseResumeLayer;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How often the body of an idle stream through `layer` is woken over
    /// an hour: an upstream that sent one event and then nothing, and
    /// never wakes anyone itself.
    async fn wakes_in_an_hour(layer: SseResumeLayer) -> usize {
        let upstream = tower::service_fn(|_: http::Request<()>| {
            let first = Bytes::from_static(b"id: 1\ndata: one\n\n");
            let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(first))])
                .chain(futures_util::stream::pending());
            let response = http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(frames))
                .expect("a response");
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let request = http::Request::get("/events")
            .header("mcp-session-id", "idle")
            .body(())
            .expect("a request");
        let response = layer
            .layer(upstream)
            .oneshot(request)
            .await
            .expect("infallible");
        let mut body = Box::pin(response.into_body());
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let first = Pin::as_mut(&mut body).poll_frame(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(_)))), "the first event");
        // Polled as a connection would: again whenever woken.
        for _ in 0..4 * 60 {
            while let Poll::Ready(frame) = Pin::as_mut(&mut body).poll_frame(&mut cx) {
                assert!(frame.is_some(), "the stream goes on");
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
        wakes.0.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sets_no_timer_and_is_never_woken_unless_keep_alive_is_on() {
        assert_eq!(wakes_in_an_hour(SseResumeLayer::new()).await, 0);
        let with_history = SseResumeLayer::new().history(crate::HistoryLimits::new());
        assert_eq!(wakes_in_an_hour(with_history).await, 0);
        // One timer, woken once a keep-alive.
        let keep_alive = SseResumeLayer::new().keep_alive(Duration::from_secs(60));
        let wakes = wakes_in_an_hour(keep_alive).await;
        assert!((59..=60).contains(&wakes), "{wakes} wake-ups");
    }
}
