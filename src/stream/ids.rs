//! An ordered, bounded set of event ids, each with the fingerprint of the
//! event it came with.

use std::fmt;

use super::any::AnyIds;
use super::rising::{Rising, RisingIds, decimal};

/// The ids forwarded to one client, or on one stream, oldest first, at most
/// `capacity` of them.
///
/// Ids are compared as bytes. While every id is a decimal number greater
/// than the one before, as many servers number their events, they are kept
/// as numbers, which costs next to nothing to check; the first id that is
/// not moves them for good to a general form: the ids back to back in one
/// byte ring with a hash index, allocating nothing per id once warm.
#[derive(Clone)]
pub(crate) struct Ids {
    /// `Some` while the ids rise; `any` is empty meanwhile.
    rising: Option<RisingIds>,
    /// Made when the ids first stop rising: boxed, so that the many windows
    /// of rising numbers carry a pointer rather than an empty ring and index.
    any: Option<Box<AnyIds>>,
    capacity: usize,
}

/// What [`Ids::observe`] found of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not held: recorded now.
    New,
    /// Held, with the same event: a duplicate.
    Same,
    /// Held, with another event: the upstream numbers anew (it restarted,
    /// or numbers each connection from 1). The ids start over from this one.
    Changed,
}

impl Ids {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            rising: Some(RisingIds::default()),
            any: None,
            capacity,
        }
    }

    /// Looks `id` up and records it when it is not held. `content` is the
    /// fingerprint of the event it comes with; `None` trusts the id alone.
    #[inline]
    pub(crate) fn observe(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        if let (Some(rising), Some(n)) = (&mut self.rising, decimal(id)) {
            match rising.find_or_push(n, content.unwrap_or(0), self.capacity) {
                Rising::Pushed => return Seen::New,
                Rising::Held(held) => return self.compare(id, content, held),
                Rising::Other => {}
            }
        }
        self.observe_any(id, content)
    }

    /// [`observe`](Self::observe) for ids that are not rising numbers.
    #[inline(never)]
    fn observe_any(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        if self.rising.is_some() {
            self.leave_rising();
        }
        // Made when the ids left rising numbers.
        let Some(any) = self.any.as_deref_mut() else {
            return Seen::New;
        };
        match any.find_or_push(id, content.unwrap_or(0)) {
            None => Seen::New,
            Some(held) => self.compare(id, content, held),
        }
    }

    /// Whether `id`, held with the fingerprint `held`, comes back with the
    /// same event.
    #[inline]
    fn compare(&mut self, id: &[u8], content: Option<u64>, held: u64) -> Seen {
        if content.is_none_or(|content| content == held) {
            return Seen::Same;
        }
        self.start_over(id, content);
        Seen::Changed
    }

    /// The upstream numbers anew from `id`: the ids start over from it.
    #[cold]
    #[inline(never)]
    fn start_over(&mut self, id: &[u8], content: Option<u64>) {
        self.clear();
        self.observe(id, content);
    }

    /// Like [`observe`](Self::observe), for a stream that another response
    /// may be ahead on: a rising number below the newest that is not held
    /// is an event the stream went past (it fell out of the window), and
    /// is not recorded again, so that the newest id only moves forward.
    #[inline]
    pub(crate) fn observe_in_order(&mut self, id: &[u8], content: Option<u64>) -> Seen {
        if let (Some(rising), Some(n)) = (&self.rising, decimal(id)) {
            if rising.last().is_some_and(|newest| n < newest) && !rising.contains(n) {
                return Seen::Same;
            }
        }
        self.observe(id, content)
    }

    /// Moves the numbers to the general form, for ids that are not a number
    /// above the others: ids in general from now on.
    #[cold]
    #[inline(never)]
    fn leave_rising(&mut self) {
        let capacity = self.capacity;
        let any = self
            .any
            .get_or_insert_with(|| Box::new(AnyIds::new(capacity)));
        if let Some(rising) = self.rising.take() {
            for (number, content) in rising.entries() {
                any.find_or_push(number.to_string().as_bytes(), content);
            }
        }
    }

    /// The general form, once made; empty while the ids rise.
    fn any(&self) -> Option<&AnyIds> {
        self.any.as_deref()
    }

    pub(crate) fn contains(&self, id: &[u8]) -> bool {
        match &self.rising {
            Some(rising) => decimal(id).is_some_and(|n| rising.contains(n)),
            None => self.any().is_some_and(|any| any.contains(id)),
        }
    }

    /// Forgets the ids after `id`; when `id` is not held, forgets every id.
    /// Returns whether it was held.
    pub(crate) fn cut_after(&mut self, id: &[u8]) -> bool {
        let known = match &mut self.rising {
            Some(rising) => decimal(id).is_some_and(|n| rising.cut_after(n)),
            None => (self.any.as_deref_mut()).is_some_and(|any| any.apply_cursor(id)),
        };
        if !known {
            self.clear();
        }
        known
    }

    pub(crate) fn clear(&mut self) {
        // Kept, once made: an upstream whose ids do not rise leaves rising
        // numbers again at its next id.
        if let Some(any) = &mut self.any {
            any.clear();
        }
        self.rising = Some(RisingIds::default());
    }

    /// The newest id, decoded lossily from UTF-8.
    pub(crate) fn last_id(&self) -> Option<String> {
        match &self.rising {
            Some(rising) => rising.last().map(|n| n.to_string()),
            None => self.any().and_then(AnyIds::last_id),
        }
    }

    /// The ids with their fingerprints, oldest first, decoded lossily.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        // `any` is empty while the ids rise.
        let rising = self.rising.iter().flat_map(RisingIds::entries);
        rising
            .map(|(n, content)| (n.to_string(), content))
            .chain(self.any().into_iter().flat_map(AnyIds::entries))
    }

    pub(crate) fn len(&self) -> usize {
        self.rising
            .as_ref()
            .map_or_else(|| self.any().map_or(0, AnyIds::len), RisingIds::len)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn is_rising(&self) -> bool {
        self.rising.is_some()
    }
}

impl fmt::Debug for Ids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ids")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("rising", &self.is_rising())
            .field("last_id", &self.last_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_with_other_content_starts_the_ids_over() {
        for ids in [["1", "2", "3"], ["a", "b", "c"]] {
            let mut window = Ids::new(8);
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(window.observe(id.as_bytes(), Some(i as u64)), Seen::New);
            }
            let second = ids[1].as_bytes();
            assert_eq!(window.observe(second, None), Seen::Same, "trusting the id");
            assert_eq!(window.observe(second, Some(1)), Seen::Same);
            assert_eq!(window.observe(second, Some(9)), Seen::Changed);
            let kept: Vec<_> = window.entries().collect();
            assert_eq!(kept, [(ids[1].to_owned(), 9)]);
            assert_eq!(
                window.observe(ids[2].as_bytes(), Some(2)),
                Seen::New,
                "what came after it is new again"
            );
        }
    }

    #[test]
    fn moving_to_any_ids_keeps_the_fingerprints() {
        let mut window = Ids::new(8);
        window.observe(b"1", Some(10));
        window.observe(b"2", Some(20));
        assert_eq!(window.observe(b"x", Some(0)), Seen::New);
        assert!(!window.is_rising());
        assert_eq!(window.observe(b"2", Some(20)), Seen::Same);
        assert_eq!(window.observe(b"1", Some(11)), Seen::Changed);
    }
}
