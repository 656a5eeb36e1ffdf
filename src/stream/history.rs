//! The replay history: the last blocks forwarded on a stream, as raw bytes,
//! so that a client can be resumed even by an upstream that cannot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::stats::Stats;

/// The default [`HistoryLimits::max_events`].
pub(crate) const DEFAULT_HISTORY_EVENTS: usize = 1024;
/// The default [`HistoryLimits::max_bytes`]: 1 MiB.
pub(crate) const DEFAULT_HISTORY_BYTES: usize = 1 << 20;
/// The default [`HistoryLimits::max_age`]: ten minutes.
pub(crate) const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(600);
/// The default [`HistoryLimits::max_total_bytes`]: 64 MiB.
pub(crate) const DEFAULT_HISTORY_TOTAL_BYTES: usize = 64 << 20;

/// How much of each stream a replay history keeps: the newest blocks, at
/// most this many, this many bytes, and this old. Whichever bound is hit
/// first lets the oldest block go.
///
/// Give it to the layer, [`SseResumeLayer::history`](crate::SseResumeLayer::history),
/// or to `RedisStore::history`, to turn the
/// history on.
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
    max_total_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryLimits {
    /// The defaults: 1024 blocks, 1 MiB, ten minutes per stream, and
    /// 64 MiB for all the streams of a layer in process.
    pub fn new() -> Self {
        Self {
            max_events: DEFAULT_HISTORY_EVENTS,
            max_bytes: DEFAULT_HISTORY_BYTES,
            max_age: DEFAULT_HISTORY_AGE,
            max_total_bytes: DEFAULT_HISTORY_TOTAL_BYTES,
        }
    }

    /// The most blocks kept per stream (at least 1): 1024 by default.
    pub fn max_events(mut self, max: usize) -> Self {
        self.max_events = max.max(1);
        self
    }

    /// The most bytes of blocks kept per stream (at least 1): 1 MiB by
    /// default. A block larger than this cannot be kept, and the history
    /// then starts anew after it.
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max.max(1);
        self
    }

    /// How long a block is kept (at least 1 ms): ten minutes by default.
    pub fn max_age(mut self, max: Duration) -> Self {
        self.max_age = max.max(Duration::from_millis(1));
        self
    }

    /// The most bytes of blocks kept by all the streams of a layer in this
    /// process (at least 1): 64 MiB by default, shared equally among them
    /// when it runs short.
    ///
    /// The layer keeps to it this way: a stream
    /// recording past the total lets its own oldest blocks go down to its
    /// share (the total over the number of histories), and a request
    /// opening while the total is exceeded trims every history to a little
    /// under its share. Between two requests the total can pass the limit
    /// by what the live streams record, at most a share and a block each.
    /// `RedisStore` keeps its histories in Redis, bounded per stream and by
    /// Redis's `maxmemory`, and ignores it.
    pub fn max_total_bytes(mut self, max: usize) -> Self {
        self.max_total_bytes = max.max(1);
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

    /// The most bytes kept by all the streams of a layer in process.
    pub fn total_bytes(&self) -> usize {
        self.max_total_bytes
    }
}

/// The blocks of one stream, oldest first, within [`HistoryLimits`].
///
/// It holds every event block forwarded since it started, or since the
/// last block it could not keep, so that replaying what follows a cursor
/// never skips an event silently.
#[derive(Debug)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    limits: HistoryLimits,
    budget: Budget,
    /// Blocks pushed since the history began, kept or not: the newest
    /// block is number `pushed`, and they are numbered without gaps.
    pushed: u64,
    /// Blocks numbered up to this one are gone for good, cleared or too
    /// long to keep: a replay from before it would skip them.
    lost_until: u64,
}

/// The bytes all the histories of a layer hold, shared by them.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    used: Arc<AtomicUsize>,
    histories: Arc<AtomicUsize>,
    max: usize,
    /// Where the bytes held are reported, as a gauge.
    stats: Option<Stats>,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: Arc::default(),
            histories: Arc::default(),
            max,
            stats: None,
        }
    }

    /// A budget of `max` bytes whose use `stats` reports.
    pub(crate) fn reporting(max: usize, stats: Stats) -> Self {
        Self {
            stats: Some(stats),
            ..Self::new(max)
        }
    }

    /// Whether the histories hold more than the budget.
    pub(crate) fn exceeded(&self) -> bool {
        self.used.load(Relaxed) > self.max
    }

    /// An equal share of the budget for each history.
    fn share(&self) -> usize {
        self.max / self.histories.load(Relaxed).max(1)
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Relaxed);
        if let Some(stats) = &self.stats {
            stats.add_history_bytes(bytes as i64);
        }
    }

    fn remove(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Relaxed);
        if let Some(stats) = &self.stats {
            stats.add_history_bytes(-(bytes as i64));
        }
    }

    /// The bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Relaxed)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The id a client may resume from: the block's own or a stamped one.
    id: Option<Box<str>>,
    block: Bytes,
    at: Instant,
}

impl History {
    /// A history of its own, its total bounded like a layer's.
    #[cfg(test)]
    pub(crate) fn new(limits: HistoryLimits) -> Self {
        Self::sharing(limits, Budget::new(limits.max_total_bytes))
    }

    /// A history whose bytes count against a `budget` shared by others.
    pub(crate) fn sharing(limits: HistoryLimits, budget: Budget) -> Self {
        budget.histories.fetch_add(1, Relaxed);
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            limits,
            budget,
            pushed: 0,
            lost_until: 0,
        }
    }

    /// Keeps `block`, forwarded with `id`, letting the oldest go past the
    /// limits. A block over the byte limit cannot be kept: everything
    /// before it is forgotten too, so that no replay skips it.
    pub(crate) fn push(&mut self, id: Option<&str>, block: &[u8], now: Instant) {
        self.pushed += 1;
        if block.len() > self.limits.max_bytes {
            self.clear();
            return;
        }
        if self.entries.len() >= self.limits.max_events {
            // Before the push, so the queue never grows past the limit.
            self.pop_oldest();
        }
        self.entries.push_back(Entry {
            id: id.map(Box::from),
            block: Bytes::copy_from_slice(block),
            at: now,
        });
        self.bytes += block.len();
        self.budget.add(block.len());
        self.prune(now);
        // Past the store's budget, this stream gives up what it holds
        // beyond its share; the store trims the others (`trim_to_share`).
        if self.budget.exceeded() {
            self.shrink_to(self.budget.share());
        }
    }

    /// Lets the oldest blocks go down to a little under this history's
    /// share of the budget, when the budget is exceeded: the little under
    /// keeps a store from trimming on every request.
    pub(crate) fn trim_to_share(&mut self) {
        if self.budget.exceeded() {
            self.shrink_to(self.budget.share() / 4 * 3);
        }
    }

    fn shrink_to(&mut self, bytes: usize) {
        while self.bytes > bytes && self.pop_oldest() {}
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

    /// Where the history stands now: [`after_mark`](Self::after_mark) of it
    /// later gives what was pushed in between.
    pub(crate) fn mark(&self) -> u64 {
        self.pushed
    }

    /// The blocks pushed after `mark`, oldest first, or `None` when some of
    /// them are gone (evicted, cleared, or never kept).
    pub(crate) fn after_mark(&mut self, mark: u64, now: Instant) -> Option<Vec<Bytes>> {
        self.prune(now);
        let oldest = self.pushed + 1 - self.entries.len() as u64;
        if mark < self.lost_until || mark + 1 < oldest {
            return None;
        }
        let skip = usize::try_from(mark + 1 - oldest).unwrap_or(usize::MAX);
        Some(
            self.entries
                .iter()
                .skip(skip)
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
        self.lost_until = self.pushed;
        self.entries.clear();
        self.budget.remove(self.bytes);
        self.bytes = 0;
    }

    /// Forgets the oldest block; `false` when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some(oldest) = self.entries.pop_front() else {
            return false;
        };
        self.bytes -= oldest.block.len();
        self.budget.remove(oldest.block.len());
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            let limits = &self.limits;
            let too_old = now.saturating_duration_since(oldest.at) > limits.max_age;
            if !too_old && self.entries.len() <= limits.max_events && self.bytes <= limits.max_bytes
            {
                break;
            }
            self.pop_oldest();
        }
    }
}

impl Clone for History {
    fn clone(&self) -> Self {
        self.budget.add(self.bytes);
        self.budget.histories.fetch_add(1, Relaxed);
        Self {
            entries: self.entries.clone(),
            bytes: self.bytes,
            limits: self.limits,
            budget: self.budget.clone(),
            pushed: self.pushed,
            lost_until: self.lost_until,
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.budget.remove(self.bytes);
        self.budget.histories.fetch_sub(1, Relaxed);
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

    #[test]
    fn histories_sharing_a_budget_stay_within_it() {
        let limits = HistoryLimits::new().max_total_bytes(100);
        let budget = Budget::new(100);
        let mut histories: Vec<History> = (0..4)
            .map(|_| History::sharing(limits, budget.clone()))
            .collect();
        let now = Instant::now();
        for round in 0..10 {
            for history in &mut histories {
                history.push(Some(&round.to_string()), &[b'x'; 10], now);
                assert!(budget.used() <= 100 + 10, "{}", budget.used());
            }
        }
        for history in &mut histories {
            history.trim_to_share();
        }
        assert!(budget.used() <= 100, "{}", budget.used());
        let kept: usize = histories.iter().map(History::bytes).sum();
        assert_eq!(kept, budget.used());
        assert!(
            histories[3].contains("9"),
            "the newest block of the stream that pushed last is kept"
        );
        drop(histories);
        assert_eq!(budget.used(), 0, "dropped histories give their bytes back");
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

    #[test]
    fn after_a_mark_come_the_blocks_pushed_since() {
        let now = Instant::now();
        let mut history = History::new(HistoryLimits::new().max_events(3).max_bytes(100));
        history.push(Some("1"), b"one", now);
        let mark = history.mark();
        assert_eq!(history.after_mark(mark, now), Some(vec![]));
        history.push(Some("2"), b"two", now);
        history.push(None, b"three", now);
        assert_eq!(
            history.after_mark(mark, now),
            Some(vec![Bytes::from("two"), Bytes::from("three")])
        );
        history.push(Some("4"), b"four", now);
        history.push(Some("5"), b"five", now);
        assert_eq!(history.after_mark(mark, now), None, "2 was evicted");
        let mark = history.mark();
        history.push(Some("6"), &[b'x'; 101], now);
        history.push(Some("7"), b"seven", now);
        assert_eq!(history.after_mark(mark, now), None, "6 could not be kept");
        assert_eq!(
            history.after_mark(history.mark() - 1, now),
            Some(vec![Bytes::from("seven")])
        );
    }
}
