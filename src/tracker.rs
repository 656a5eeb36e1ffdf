//! The in-process window of ids forwarded on one stream.
//!
//! A [`Tracker`] is what the body checks each block against: a bounded,
//! ordered window of the ids this layer forwarded, shared by every stream of
//! one key in this process, so that check-and-record is atomic per key.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The default number of ids a window remembers.
pub const DEFAULT_WINDOW_LEN: usize = 1024;

/// A shared handle on the window of one stream.
///
/// Clones share the window. Every operation takes a short lock; take the
/// lock once for many ids with [`Tracker::lock`].
#[derive(Clone)]
pub struct Tracker {
    window: Arc<Mutex<Window>>,
}

/// The ids forwarded on a stream, oldest first, at most `capacity` of them.
#[derive(Clone)]
pub struct Window {
    order: VecDeque<Arc<str>>,
    members: HashSet<Arc<str>>,
    capacity: usize,
}

impl Tracker {
    /// A tracker with an empty window of `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self::from_window(Window::new(capacity))
    }

    /// A tracker over a window filled elsewhere, for example by a store.
    pub fn from_window(window: Window) -> Self {
        Self {
            window: Arc::new(Mutex::new(window)),
        }
    }

    /// Locks the window, to check and record many ids at once.
    pub fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic elsewhere while the lock was held cannot leave the window
        // half-updated in a way that matters more than losing the window.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest id in the window.
    pub fn last_id(&self) -> Option<Arc<str>> {
        self.lock().last_id().cloned()
    }

    /// Whether a stream holds another handle on this window.
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.window) > 1
    }

    /// Whether two handles share one window.
    pub fn same_window(&self, other: &Tracker) -> bool {
        Arc::ptr_eq(&self.window, &other.window)
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tracker").field(&*self.lock()).finish()
    }
}

impl Window {
    /// An empty window of `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            members: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// A window holding `ids`, oldest first; the oldest go when there are
    /// more than `capacity`. Repeated ids keep their first place.
    pub fn from_ids<I>(capacity: usize, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut window = Self::new(capacity);
        for id in ids {
            window.check_and_record(id.as_ref());
        }
        window
    }

    /// Records `id` unless the window has it already. Returns whether it was
    /// new, that is whether the block carrying it should be forwarded.
    pub fn check_and_record(&mut self, id: &str) -> bool {
        if self.members.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.members.remove(&oldest);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.members.insert(Arc::clone(&id));
        self.order.push_back(id);
        true
    }

    /// Whether the window holds `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.members.contains(id)
    }

    /// Applies a client's cursor: the client has every event up to `id`.
    ///
    /// The ids recorded after it were forwarded but maybe never delivered,
    /// so they are forgotten and a replay of them goes through. When the
    /// window does not know `id` at all it is cleared: a duplicate is better
    /// than a loss. Returns whether the cursor was known.
    pub fn apply_cursor(&mut self, id: &str) -> bool {
        if !self.members.contains(id) {
            self.clear();
            return false;
        }
        while let Some(newest) = self.order.back() {
            if &**newest == id {
                break;
            }
            if let Some(newest) = self.order.pop_back() {
                self.members.remove(&newest);
            }
        }
        true
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.order.clear();
        self.members.clear();
    }

    /// The newest id.
    pub fn last_id(&self) -> Option<&Arc<str>> {
        self.order.back()
    }

    /// The ids, oldest first.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.order.iter().map(|id| &**id)
    }

    /// The number of ids held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window holds no id.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most ids the window holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("len", &self.order.len())
            .field("capacity", &self.capacity)
            .field("last_id", &self.last_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(window: &Window) -> Vec<&str> {
        window.ids().collect()
    }

    #[test]
    fn records_each_id_once() {
        let mut window = Window::new(8);
        assert!(window.check_and_record("1"));
        assert!(window.check_and_record("2"));
        assert!(!window.check_and_record("1"));
        assert_eq!(ids(&window), ["1", "2"]);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut window = Window::from_ids(3, ["1", "2", "3", "4"]);
        assert_eq!(ids(&window), ["2", "3", "4"]);
        assert!(window.check_and_record("1"), "an evicted id is new again");
    }

    #[test]
    fn known_cursor_forgets_what_came_after_it() {
        let mut window = Window::from_ids(8, ["1", "2", "3", "4", "5"]);
        assert!(window.apply_cursor("3"));
        assert_eq!(ids(&window), ["1", "2", "3"]);
        assert!(window.check_and_record("4"));
        assert!(!window.check_and_record("2"));
    }

    #[test]
    fn unknown_cursor_clears_the_window() {
        let mut window = Window::from_ids(8, ["1", "2"]);
        assert!(!window.apply_cursor("9"));
        assert!(window.is_empty());
    }

    #[test]
    fn clones_of_a_tracker_share_one_window() {
        let tracker = Tracker::new(4);
        let other = tracker.clone();
        assert!(tracker.lock().check_and_record("a"));
        assert!(!other.lock().check_and_record("a"));
        assert_eq!(other.last_id().as_deref(), Some("a"));
        assert!(tracker.same_window(&other));
        assert!(!tracker.same_window(&Tracker::new(4)));
    }
}
