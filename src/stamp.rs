//! Ids the layer stamps on events that come without one, so that clients
//! of an upstream that numbers nothing can resume against the history.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh epoch from this process's clock: milliseconds since the Unix
/// epoch, above every epoch handed out before in this process. A process
/// started later starts above it too, unless the clock went back.
pub(crate) fn clock_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let mut last = LAST.load(Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Relaxed, Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Stamps the events of one stream: `<epoch>-1`, `<epoch>-2`, ... Each
/// stream opens at an epoch no other stream of its key had, and above the
/// ones before, so the ids are unique and rise, as pairs of numbers.
#[derive(Debug)]
pub(crate) struct Stamper {
    epoch: u64,
    count: u64,
    line: String,
}

/// The line a stamped id goes out in, before the block's own lines.
const FIELD: &str = "id: ";

impl Stamper {
    pub(crate) fn new(epoch: u64) -> Self {
        Self {
            epoch,
            count: 0,
            line: String::new(),
        }
    }

    /// The `id:` line of the next stamped event, LF-terminated, which is a
    /// line end in every event stream whatever the others are.
    pub(crate) fn next_line(&mut self) -> &str {
        self.count += 1;
        self.line.clear();
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.line, "{FIELD}{}-{}", self.epoch, self.count);
        &self.line
    }

    /// The id in the line [`next_line`](Self::next_line) gave last.
    pub(crate) fn last_id(&self) -> &str {
        self.line[FIELD.len()..].trim_end_matches('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_rise() {
        let first = clock_epoch();
        assert!(clock_epoch() > first);
    }

    #[test]
    fn stamps_rise_within_a_stream() {
        let mut stamper = Stamper::new(7);
        assert_eq!(stamper.next_line(), "id: 7-1\n");
        assert_eq!(stamper.last_id(), "7-1");
        assert_eq!(stamper.next_line(), "id: 7-2\n");
        assert_eq!(stamper.last_id(), "7-2");
    }
}
