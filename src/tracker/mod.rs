//! The in-process window of ids forwarded on one stream.
//!
//! A [`Tracker`] is what the body checks each block against: a bounded,
//! ordered window of the ids this layer forwarded, shared by every stream of
//! one key in this process, so that check-and-record is atomic per key.

use std::collections::{HashMap, VecDeque, hash_map};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ring::ByteRing;

mod ring;

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
/// Ids are kept back to back in one byte ring, with a hash index, so that
/// recording one allocates nothing once the window is warm.
#[derive(Clone)]
pub struct Window {
    /// One per id, oldest first; `entries[i]` has sequence number
    /// `first_seq + i`.
    entries: VecDeque<Entry>,
    first_seq: u64,
    /// The ids' bytes, back to back in the order of `entries`.
    bytes: ByteRing,
    /// From an id's hash to the sequence number of the newest entry with
    /// that hash. A collision can only make an id look new: a duplicate may
    /// then pass, but nothing is ever dropped that was not forwarded.
    index: HashMap<u32, u32, BuildHasherDefault<SpreadHash>>,
    seed: u64,
    capacity: usize,
}

/// Kept small, as the window's footprint is what makes it fast: sequence
/// numbers and hashes go in 32 bits (a window holds far fewer ids).
#[derive(Clone, Copy)]
struct Entry {
    start: u64,
    hash: u32,
    len: u32,
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
        Self {
            entries: VecDeque::new(),
            first_seq: 0,
            bytes: ByteRing::default(),
            index: HashMap::default(),
            seed: RandomState::new().hash_one(0x5ee_u64),
            capacity: capacity.max(1),
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
    /// Ids are compared as bytes. Ids longer than `u32::MAX` bytes are never
    /// recorded and always new.
    pub fn check_and_record(&mut self, id: impl AsRef<[u8]>) -> bool {
        let id = id.as_ref();
        let Ok(len) = u32::try_from(id.len()) else {
            return true;
        };
        let hash = hash_id(self.seed, id);
        if self.find(hash, id).is_some() {
            return false;
        }
        if self.entries.len() == self.capacity {
            self.pop_oldest();
        }
        let seq = self.first_seq + self.entries.len() as u64;
        let start = self.bytes.push(id);
        self.entries.push_back(Entry { start, hash, len });
        // A colliding older id loses its place in the index: see `index`.
        self.index.insert(hash, seq as u32);
        true
    }

    /// Whether the window holds `id`.
    pub fn contains(&self, id: impl AsRef<[u8]>) -> bool {
        let id = id.as_ref();
        self.find(hash_id(self.seed, id), id).is_some()
    }

    /// Applies a client's cursor: the client has every event up to `id`.
    ///
    /// The ids recorded after it were forwarded but maybe never delivered,
    /// so they are forgotten and a replay of them goes through. When the
    /// window does not know `id` at all it is cleared: a duplicate is better
    /// than a loss. Returns whether the cursor was known.
    pub fn apply_cursor(&mut self, id: impl AsRef<[u8]>) -> bool {
        let id = id.as_ref();
        let Some(seq) = self.find(hash_id(self.seed, id), id) else {
            self.clear();
            return false;
        };
        while self.first_seq + self.entries.len() as u64 > seq + 1 {
            self.pop_newest();
        }
        true
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.first_seq += self.entries.len() as u64;
        self.entries.clear();
        self.bytes.clear();
        self.index.clear();
    }

    /// The newest id, decoded lossily from UTF-8.
    pub fn last_id(&self) -> Option<String> {
        self.entries.back().map(|entry| self.id_of(entry))
    }

    /// The ids, oldest first, decoded lossily from UTF-8.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = String> + ExactSizeIterator + '_ {
        self.entries.iter().map(|entry| self.id_of(entry))
    }

    /// The number of ids held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds no id.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most ids the window holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The sequence number of `id`, if the window holds it.
    fn find(&self, hash: u32, id: &[u8]) -> Option<u64> {
        let position = self.position(*self.index.get(&hash)?);
        let (first, second) = self.slices_of(self.entries.get(position)?);
        let same = id.len() == first.len() + second.len()
            && id[..first.len()] == *first
            && id[first.len()..] == *second;
        same.then_some(self.first_seq + position as u64)
    }

    /// Where the entry of a sequence number's low 32 bits is in `entries`.
    fn position(&self, seq: u32) -> usize {
        seq.wrapping_sub(self.first_seq as u32) as usize
    }

    /// The bytes of `entry`, in one or two pieces where the ring wraps.
    fn slices_of(&self, entry: &Entry) -> (&[u8], &[u8]) {
        self.bytes.slices(entry.start, entry.len as usize)
    }

    fn id_of(&self, entry: &Entry) -> String {
        let (first, second) = self.slices_of(entry);
        String::from_utf8_lossy(&[first, second].concat()).into_owned()
    }

    fn pop_oldest(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        self.unindex(entry, self.first_seq);
        self.first_seq += 1;
        self.bytes.release_front(entry.len as usize);
    }

    fn pop_newest(&mut self) {
        let Some(entry) = self.entries.pop_back() else {
            return;
        };
        self.unindex(entry, self.first_seq + self.entries.len() as u64);
        self.bytes.release_back(entry.len as usize);
    }

    /// Removes the index entry of `entry` unless a newer id with the same
    /// hash took it over.
    fn unindex(&mut self, entry: Entry, seq: u64) {
        if let hash_map::Entry::Occupied(slot) = self.index.entry(entry.hash) {
            if *slot.get() == seq as u32 {
                slot.remove();
            }
        }
    }
}

/// A fast keyed hash of an id. It need not resist attack: a collision only
/// lets a duplicate through, and the window's size bounds any probing.
fn hash_id(seed: u64, id: &[u8]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hash = seed ^ id.len() as u64;
    let mut words = id.chunks_exact(8);
    for word in &mut words {
        let mut buf = [0; 8];
        buf.copy_from_slice(word);
        hash = (hash ^ u64::from_le_bytes(buf))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    let tail = words
        .remainder()
        .iter()
        .fold(0, |tail, &byte| tail << 8 | u64::from(byte));
    hash = (hash ^ tail).wrapping_mul(K);
    (hash >> 32) as u32
}

/// Hashes a `u32` that is already a hash, spreading it over 64 bits so
/// that the table's tag bits (the top ones) vary too.
#[derive(Default, Clone, Copy)]
struct SpreadHash(u64);

impl Hasher for SpreadHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u32` keys are hashed; fold anything else in all the same.
        for &byte in bytes {
            self.write_u32(self.0 as u32 ^ u32::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
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
    fn colliding_hashes_never_drop_a_new_id() {
        let mut window = Window::new(8);
        assert!(window.check_and_record("a"));
        // Make "b" collide with "a": its hash now leads to a's entry.
        window.index.insert(hash_id(window.seed, b"b"), 0);
        assert!(
            window.check_and_record("b"),
            "a collision makes an id new, never a duplicate"
        );
        assert!(!window.check_and_record("b"));
        assert!(!window.check_and_record("a"));
    }

    #[test]
    fn many_ids_wrap_the_byte_ring() {
        let mut window = Window::new(3);
        for i in 0..1000 {
            assert!(window.check_and_record(format!("id-{i}")));
            assert!(!window.check_and_record(format!("id-{i}")));
        }
        assert_eq!(ids(&window), ["id-997", "id-998", "id-999"]);
        assert!(window.check_and_record("id-996"), "evicted long ago");
        assert!(window.apply_cursor("id-998"));
        assert_eq!(ids(&window), ["id-998"]);
        assert_eq!(window.bytes.len(), "id-998".len());
    }
}
