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
