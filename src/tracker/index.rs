//! An open-addressing index from id hashes to window sequence numbers.
//!
//! Small enough to stay in cache (8 bytes a slot, at most half full), and
//! without a separate heap entry per id. Sequence numbers are kept as their
//! low 32 bits: a window holds far fewer ids than that, so the window can
//! tell which of its ids a slot means.

/// Maps 32-bit id hashes to the (low 32 bits of the) sequence numbers of the
/// window's ids. Several ids may share a hash: lookups offer every
/// candidate, and the window compares the ids themselves.
#[derive(Clone)]
pub(super) struct SeqIndex {
    /// `tag == 0` marks a free slot; tags are odd, so never 0. Empty until
    /// the first insert, then at most half full, up to `max_slots`: an idle
    /// window costs next to nothing.
    slots: Vec<Slot>,
    mask: usize,
    len: usize,
    max_slots: usize,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,
    seq: u32,
}

impl SeqIndex {
    /// An index for at most `capacity` ids.
    pub(super) fn new(capacity: usize) -> Self {
        let max_slots = capacity
            .saturating_mul(2)
            .next_power_of_two()
            .max(MIN_SLOTS);
        Self {
            slots: Vec::new(),
            mask: 0,
            len: 0,
            max_slots,
        }
    }

    /// The first entry for `hash` that `is_it` accepts.
    pub(super) fn find(&self, hash: u32, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mut at = self.home(tag);
        loop {
            let slot = self.slots[at];
            if slot.tag == 0 {
                return None;
            }
            if slot.tag == tag && is_it(slot.seq) {
                return Some(slot.seq);
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Adds an entry. The caller keeps at most `capacity` of them.
    pub(super) fn insert(&mut self, hash: u32, seq: u32) {
        if (self.len + 1) * 2 > self.slots.len() && self.slots.len() < self.max_slots {
            self.grow();
        }
        self.len += 1;
        let tag = tag(hash);
        let mut at = self.home(tag);
        while self.slots[at].tag != 0 {
            at = (at + 1) & self.mask;
        }
        self.slots[at] = Slot { tag, seq };
    }

    /// Removes the entry of `hash` and `seq`, if present.
    pub(super) fn remove(&mut self, hash: u32, seq: u32) {
        if self.slots.is_empty() {
            return;
        }
        let tag = tag(hash);
        let mut at = self.home(tag);
        loop {
            let slot = self.slots[at];
            if slot.tag == 0 {
                return;
            }
            if slot.tag == tag && slot.seq == seq {
                self.len -= 1;
                break;
            }
            at = (at + 1) & self.mask;
        }
        // Shift the entries after the hole back, so probes never stop early.
        let mut hole = at;
        let mut next = at;
        loop {
            next = (next + 1) & self.mask;
            let slot = self.slots[next];
            if slot.tag == 0 {
                break;
            }
            let home = self.home(slot.tag);
            let can_move =
                next.wrapping_sub(home) & self.mask >= next.wrapping_sub(hole) & self.mask;
            if can_move {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = Slot::default();
    }

    pub(super) fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.len = 0;
    }

    /// Doubles the slots and puts every entry back.
    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); len]);
        self.mask = len - 1;
        for slot in old.into_iter().filter(|slot| slot.tag != 0) {
            let mut at = self.home(slot.tag);
            while self.slots[at].tag != 0 {
                at = (at + 1) & self.mask;
            }
            self.slots[at] = slot;
        }
    }

    fn home(&self, tag: u32) -> usize {
        (tag >> 1) as usize & self.mask
    }
}

const MIN_SLOTS: usize = 8;

fn tag(hash: u32) -> u32 {
    hash | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_entry_through_removals() {
        let mut index = SeqIndex::new(8);
        // Hashes with one home, to exercise probing and back-shifting.
        let same_home = [0x10, 0x11, 0x10, 0x30];
        for (seq, &hash) in same_home.iter().enumerate() {
            index.insert(hash, seq as u32);
        }
        index.remove(0x10, 0);
        for (seq, &hash) in same_home.iter().enumerate().skip(1) {
            assert_eq!(
                index.find(hash, |s| s == seq as u32),
                Some(seq as u32),
                "seq {seq}"
            );
        }
        assert_eq!(index.find(0x10, |s| s == 0), None);
        index.clear();
        assert_eq!(index.find(0x11, |_| true), None);
    }

    #[test]
    fn grows_from_nothing() {
        let mut index = SeqIndex::new(1000);
        assert!(index.slots.is_empty());
        assert_eq!(index.find(1, |_| true), None);
        for seq in 0..1000 {
            index.insert(seq * 7, seq);
        }
        assert_eq!(index.slots.len(), 2048);
        assert!((0..1000).all(|seq| index.find(seq * 7, |s| s == seq) == Some(seq)));
    }

    #[test]
    fn stays_consistent_under_churn() {
        let mut index = SeqIndex::new(64);
        let hash = |seq: u32| seq.wrapping_mul(0x9e37_79b9) % 97;
        for seq in 0..10_000u32 {
            index.insert(hash(seq), seq);
            if seq >= 64 {
                index.remove(hash(seq - 64), seq - 64);
            }
            let live = seq.saturating_sub(63)..=seq;
            for probe in [*live.start(), seq / 2 + 32, seq] {
                let expected = live.contains(&probe).then_some(probe);
                assert_eq!(
                    index.find(hash(probe), |s| s == probe),
                    expected,
                    "{seq}/{probe}"
                );
            }
        }
    }
}
