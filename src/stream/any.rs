//! A window of any ids: bytes in a ring, with a hash index.

use std::collections::{HashMap, VecDeque, hash_map};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use super::ring::ByteRing;

/// Any ids, oldest first, at most `capacity` of them: kept back to back in
/// one byte ring, with a hash index, so that recording one allocates
/// nothing once the window is warm.
#[derive(Clone)]
pub(super) struct AnyIds {
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
    /// The fingerprint of the event the id came with.
    content: u64,
    hash: u32,
    len: u32,
}

impl AnyIds {
    /// An empty window of `capacity` ids (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            first_seq: 0,
            bytes: ByteRing::default(),
            index: HashMap::default(),
            seed: RandomState::new().hash_one(0x5ee_u64),
            capacity: capacity.max(1),
        }
    }

    /// The fingerprint `id` was recorded with, or `None` after recording it
    /// with `content`. Ids are compared as bytes. Ids longer than
    /// `u32::MAX` bytes are never recorded and always new.
    pub(super) fn find_or_push(&mut self, id: &[u8], content: u64) -> Option<u64> {
        let Ok(len) = u32::try_from(id.len()) else {
            return None;
        };
        let hash = hash_id(self.seed, id);
        if let Some(seq) = self.find(hash, id) {
            return Some(self.entries[(seq - self.first_seq) as usize].content);
        }
        if self.entries.len() == self.capacity {
            self.pop_oldest();
        }
        let seq = self.first_seq + self.entries.len() as u64;
        let start = self.bytes.push(id);
        self.entries.push_back(Entry {
            start,
            content,
            hash,
            len,
        });
        // A colliding older id loses its place in the index: see `index`.
        self.index.insert(hash, seq as u32);
        None
    }

    /// Whether the window holds `id`.
    pub(super) fn contains(&self, id: &[u8]) -> bool {
        self.find(hash_id(self.seed, id), id).is_some()
    }

    /// Applies a client's cursor: the client has every event up to `id`.
    ///
    /// The ids recorded after it were forwarded but maybe never delivered,
    /// so they are forgotten and a replay of them goes through. When the
    /// window does not know `id` at all it is cleared: a duplicate is better
    /// than a loss. Returns whether the cursor was known.
    pub(super) fn apply_cursor(&mut self, id: &[u8]) -> bool {
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
    pub(super) fn clear(&mut self) {
        self.first_seq += self.entries.len() as u64;
        self.entries.clear();
        self.bytes.clear();
        self.index.clear();
    }

    /// The newest id, decoded lossily from UTF-8.
    pub(super) fn last_id(&self) -> Option<String> {
        self.entries.back().map(|entry| self.id_of(entry))
    }

    /// The ids with their fingerprints, oldest first.
    pub(super) fn entries(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.entries
            .iter()
            .map(|entry| (self.id_of(entry), entry.content))
    }

    /// The number of ids held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(any: &AnyIds) -> Vec<String> {
        any.entries().map(|(id, _)| id).collect()
    }

    #[test]
    fn colliding_hashes_never_drop_a_new_id() {
        let mut any = AnyIds::new(8);
        assert_eq!(any.find_or_push(b"a", 1), None);
        // Make "b" collide with "a": its hash now leads to a's entry.
        any.index.insert(hash_id(any.seed, b"b"), 0);
        assert_eq!(
            any.find_or_push(b"b", 2),
            None,
            "a collision makes an id new, never a duplicate"
        );
        assert_eq!(any.find_or_push(b"b", 0), Some(2));
        assert_eq!(any.find_or_push(b"a", 0), Some(1));
    }

    #[test]
    fn many_ids_wrap_the_byte_ring() {
        let mut any = AnyIds::new(3);
        for i in 0..1000 {
            assert_eq!(any.find_or_push(format!("id-{i}").as_bytes(), i), None);
            assert_eq!(any.find_or_push(format!("id-{i}").as_bytes(), 0), Some(i));
        }
        assert_eq!(ids(&any), ["id-997", "id-998", "id-999"]);
        assert_eq!(any.find_or_push(b"id-996", 0), None, "evicted long ago");
        assert!(any.apply_cursor(b"id-998"));
        assert_eq!(ids(&any), ["id-998"]);
        assert_eq!(any.bytes.len(), "id-998".len());
    }
}
