//! The replay history: the last blocks forwarded on a stream, as raw bytes,
//! so that a client can be resumed even by an upstream that cannot.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// The default [`HistoryLimits::max_events`].
pub const DEFAULT_HISTORY_EVENTS: usize = 1024;
/// The default [`HistoryLimits::max_bytes`]: 1 MiB.
pub const DEFAULT_HISTORY_BYTES: usize = 1 << 20;
/// The default [`HistoryLimits::max_age`]: ten minutes.
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(600);

/// How much of each stream a replay history keeps: the newest blocks, at
/// most this many, this many bytes, and this old. Whichever bound is hit
/// first lets the oldest block go.
///
/// Give it to a store, e.g. [`MemoryStore::history`](crate::MemoryStore::history),
/// to turn the history on.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sse_resume::HistoryLimits;
///
/// let limits = HistoryLimits::new()
///     .max_events(500)
///     .max_bytes(256 * 1024)
///     .max_age(Duration::from_secs(120));
/// # let _ = limits;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    max_events: usize,
    max_bytes: usize,
    max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryLimits {
    /// The defaults: 1024 blocks, 1 MiB, ten minutes per stream.
    pub fn new() -> Self {
        Self {
            max_events: DEFAULT_HISTORY_EVENTS,
            max_bytes: DEFAULT_HISTORY_BYTES,
            max_age: DEFAULT_HISTORY_AGE,
        }
    }

    /// The most blocks kept per stream (at least 1).
    pub fn max_events(mut self, max: usize) -> Self {
        self.max_events = max.max(1);
        self
    }

    /// The most bytes of blocks kept per stream (at least 1). A block
    /// larger than this cannot be kept, and the history then starts anew
    /// after it.
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max.max(1);
        self
    }

    /// How long a block is kept (at least 1 ms).
    pub fn max_age(mut self, max: Duration) -> Self {
        self.max_age = max.max(Duration::from_millis(1));
        self
    }

    /// The most blocks kept per stream.
    pub fn events(&self) -> usize {
        self.max_events
    }

    /// The most bytes kept per stream.
    pub fn bytes(&self) -> usize {
        self.max_bytes
    }

    /// How long a block is kept.
    pub fn age(&self) -> Duration {
        self.max_age
    }
}

/// The blocks of one stream, oldest first, within [`HistoryLimits`].
///
/// It holds every event block forwarded since it started, or since the
/// last block it could not keep, so that replaying what follows a cursor
/// never skips an event silently.
#[derive(Debug, Clone)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    limits: HistoryLimits,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The id a client may resume from: the block's own or a stamped one.
    id: Option<Box<str>>,
    block: Bytes,
    at: Instant,
}

impl History {
    pub(crate) fn new(limits: HistoryLimits) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// Keeps `block`, forwarded with `id`, letting the oldest go past the
    /// limits. A block over the byte limit cannot be kept: everything
    /// before it is forgotten too, so that no replay skips it.
    pub(crate) fn push(&mut self, id: Option<&str>, block: &[u8], now: Instant) {
        if block.len() > self.limits.max_bytes {
            self.clear();
            return;
        }
        self.entries.push_back(Entry {
            id: id.map(Box::from),
            block: Bytes::copy_from_slice(block),
            at: now,
        });
        self.bytes += block.len();
        self.prune(now);
    }

    /// The blocks forwarded after the block of `cursor`, oldest first, or
    /// `None` when the history does not hold `cursor` (any more).
    pub(crate) fn after(&mut self, cursor: &str, now: Instant) -> Option<Vec<Bytes>> {
        self.prune(now);
        let at = self
            .entries
            .iter()
            .rposition(|entry| entry.id.as_deref() == Some(cursor))?;
        Some(
            self.entries
                .range(at + 1..)
                .map(|entry| entry.block.clone())
                .collect(),
        )
    }

    /// Whether a block of the history carries `id`.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.id.as_deref() == Some(id))
    }

    /// Forgets every block.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn prune(&mut self, now: Instant) {
        let limits = &self.limits;
        while let Some(oldest) = self.entries.front() {
            let too_old = now.saturating_duration_since(oldest.at) > limits.max_age;
            if !too_old && self.entries.len() <= limits.max_events && self.bytes <= limits.max_bytes
            {
                break;
            }
            self.bytes -= oldest.block.len();
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(limits: HistoryLimits, ids: &[&str]) -> History {
        let mut history = History::new(limits);
        let now = Instant::now();
        for id in ids {
            history.push(Some(id), format!("id: {id}\n\n").as_bytes(), now);
        }
        history
    }

    fn replayed(history: &mut History, cursor: &str) -> Option<Vec<String>> {
        let blocks = history.after(cursor, Instant::now())?;
        Some(
            blocks
                .iter()
                .map(|block| String::from_utf8(block.to_vec()).unwrap())
                .collect(),
        )
    }

    #[test]
    fn replays_what_follows_the_cursor() {
        let mut history = history(HistoryLimits::new(), &["1", "2", "3"]);
        assert_eq!(
            replayed(&mut history, "1").unwrap(),
            ["id: 2\n\n", "id: 3\n\n"]
        );
        assert_eq!(replayed(&mut history, "3").unwrap(), Vec::<String>::new());
        assert_eq!(replayed(&mut history, "9"), None);
    }

    #[test]
    fn keeps_within_count_and_bytes() {
        let mut history = history(HistoryLimits::new().max_events(2), &["1", "2", "3"]);
        assert_eq!(history.len(), 2);
        assert_eq!(replayed(&mut history, "1"), None, "evicted: a gap");
        let history = history_of_bytes(20, &["1", "2", "3"]);
        assert!(history.bytes() <= 20);
        assert_eq!(history.len(), 2, "each block is 8 bytes");
    }

    fn history_of_bytes(max: usize, ids: &[&str]) -> History {
        history(HistoryLimits::new().max_bytes(max), ids)
    }

    #[test]
    fn a_block_it_cannot_keep_starts_it_anew() {
        let mut history = history_of_bytes(20, &["1", "2"]);
        history.push(Some("3"), &[b'x'; 21], Instant::now());
        assert_eq!(history.len(), 0);
        assert_eq!(
            replayed(&mut history, "1"),
            None,
            "never replays across a lost block"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forgets_what_is_too_old() {
        let mut history = history(
            HistoryLimits::new().max_age(Duration::from_secs(10)),
            &["1"],
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        history.push(Some("2"), b"id: 2\n\n", Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(replayed(&mut history, "1"), None);
        assert_eq!(replayed(&mut history, "2").unwrap(), Vec::<String>::new());
        assert!(history.contains("2") && !history.contains("1"));
    }
}
