//! The in-process window of ids forwarded on one stream.
//!
//! A [`Tracker`] is what the body checks each block against: a bounded,
//! ordered window of the ids this layer forwarded, shared by every stream of
//! one key in this process, so that check-and-record is atomic per key.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use any::AnyIds;
use rising::{RisingIds, decimal};

mod any;
mod ring;
mod rising;

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
///
/// Ids are compared as bytes. While every id is a decimal number greater
/// than the one before, as many servers number their events, the window
/// keeps them as numbers, which costs next to nothing to check; the first
/// id that is not moves it for good to a general form: the ids back to back
/// in one byte ring with a hash index, allocating nothing per id once warm.
#[derive(Clone)]
pub struct Window {
    /// `Some` while the ids rise; `any` is empty meanwhile.
    rising: Option<RisingIds>,
    any: AnyIds,
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
    pub fn last_id(&self) -> Option<String> {
        self.lock().last_id()
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
        let capacity = capacity.max(1);
        Self {
            rising: Some(RisingIds::default()),
            any: AnyIds::new(capacity),
            capacity,
        }
    }

    /// A window holding `ids`, oldest first; the oldest go when there are
    /// more than `capacity`. Repeated ids keep their first place.
    pub fn from_ids<I>(capacity: usize, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut window = Self::new(capacity);
        for id in ids {
            window.check_and_record(id.as_ref());
        }
        window
    }

    /// Records `id` unless the window has it already. Returns whether it was
    /// new, that is whether the block carrying it should be forwarded.
    /// Ids longer than `u32::MAX` bytes are never recorded and always new.
    pub fn check_and_record(&mut self, id: impl AsRef<[u8]>) -> bool {
        let id = id.as_ref();
        if let Some(rising) = &mut self.rising {
            let checked = decimal(id).and_then(|n| rising.check_and_record(n, self.capacity));
            if let Some(new) = checked {
                return new;
            }
            // Not a number above the others: ids in general from now on.
            for number in rising.numbers() {
                self.any.check_and_record(number.to_string().as_bytes());
            }
            self.rising = None;
        }
        self.any.check_and_record(id)
    }

    /// Whether the window holds `id`.
    pub fn contains(&self, id: impl AsRef<[u8]>) -> bool {
        let id = id.as_ref();
        match &self.rising {
            Some(rising) => decimal(id).is_some_and(|n| rising.contains(n)),
            None => self.any.contains(id),
        }
    }

    /// Applies a client's cursor: the client has every event up to `id`.
    ///
    /// The ids recorded after it were forwarded but maybe never delivered,
    /// so they are forgotten and a replay of them goes through. When the
    /// window does not know `id` at all it is cleared: a duplicate is better
    /// than a loss. Returns whether the cursor was known.
    pub fn apply_cursor(&mut self, id: impl AsRef<[u8]>) -> bool {
        let id = id.as_ref();
        let known = match &mut self.rising {
            Some(rising) => decimal(id).is_some_and(|n| rising.cut_after(n)),
            None => self.any.apply_cursor(id),
        };
        if !known {
            self.clear();
        }
        known
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.any.clear();
        self.rising = Some(RisingIds::default());
    }

    /// The newest id, decoded lossily from UTF-8.
    pub fn last_id(&self) -> Option<String> {
        match &self.rising {
            Some(rising) => rising.last().map(|n| n.to_string()),
            None => self.any.last_id(),
        }
    }

    /// The ids, oldest first, decoded lossily from UTF-8.
    pub fn ids(&self) -> impl Iterator<Item = String> + '_ {
        let rising = self.rising.iter().flat_map(RisingIds::numbers);
        rising.map(|n| n.to_string()).chain(self.any.ids())
    }

    /// The number of ids held.
    pub fn len(&self) -> usize {
        self.rising
            .as_ref()
            .map_or_else(|| self.any.len(), RisingIds::len)
    }

    /// Whether the window holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most ids the window holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("rising", &self.rising.is_some())
            .field("last_id", &self.last_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(window: &Window) -> Vec<String> {
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

    #[test]
    fn rising_numbers_then_anything() {
        let mut window = Window::new(4);
        for id in ["1", "2", "3"] {
            assert!(window.check_and_record(id));
        }
        assert!(window.rising.is_some());
        assert!(!window.check_and_record("2"), "a replay of a number it has");
        assert!(
            window.check_and_record("05"),
            "not a plain number: ids in general"
        );
        assert!(window.rising.is_none());
        assert!(!window.check_and_record("3"), "what it had is kept");
        assert!(window.check_and_record("5"), "\"05\" is not \"5\"");
        assert_eq!(ids(&window), ["2", "3", "05", "5"]);
    }

    #[test]
    fn a_number_below_the_others_that_it_lacks_is_new() {
        let mut window = Window::from_ids(8, ["10", "20"]);
        assert!(window.check_and_record("15"));
        assert!(!window.check_and_record("15"));
        assert!(!window.check_and_record("20"));
        assert_eq!(ids(&window), ["10", "20", "15"]);
    }

    #[test]
    fn cursors_on_rising_numbers() {
        let mut window = Window::from_ids(3, ["1", "2", "3", "4"]);
        assert!(!window.check_and_record("4"));
        assert!(window.check_and_record("1"), "evicted, so new again");
        let mut window = Window::from_ids(8, ["1", "2", "3"]);
        assert!(window.apply_cursor("2"));
        assert_eq!(ids(&window), ["1", "2"]);
        assert!(!window.apply_cursor("x"));
        assert!(window.is_empty());
    }
}
