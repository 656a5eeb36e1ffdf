//! A window of ids that are decimal numbers, each above the one before.

/// Rising numbers, oldest first: `entries[head..]`, then `entries[..head]`,
/// each with the fingerprint of its event beside it, so that recording one
/// writes one place on the heap. They wrap around only once they fill the
/// window, which they then keep full: recording one moves nothing.
#[derive(Clone, Default)]
pub(super) struct RisingIds {
    entries: Vec<Entry>,
    /// Where the oldest number is; 0 until the window is full.
    head: usize,
    /// The newest number, while there is one. Kept here too, so that the
    /// common check (a number above every one held) reads only this
    /// struct: the numbers are elsewhere on the heap, and seldom still in
    /// the cache when a quiet stream's next event comes.
    newest: u64,
}

/// A number held, and the fingerprint of its event.
#[derive(Clone, Copy)]
struct Entry {
    number: u64,
    content: u64,
}

/// What [`RisingIds::find_or_push`] made of a number.
pub(super) enum Rising {
    /// Above every number held: recorded.
    Pushed,
    /// Held already, with this fingerprint.
    Held(u64),
    /// Neither, which rising numbers cannot represent.
    Other,
}

impl RisingIds {
    /// Records `n` with `content` when it is above every number held, or
    /// finds it among them.
    #[inline]
    pub(super) fn find_or_push(&mut self, n: u64, content: u64, capacity: usize) -> Rising {
        if self.last().is_none_or(|newest| n > newest) {
            self.newest = n;
            let entry = Entry { number: n, content };
            if self.entries.len() < capacity {
                self.entries.push(entry);
            } else {
                self.entries[self.head] = entry;
                self.head += 1;
                if self.head == self.entries.len() {
                    self.head = 0;
                }
            }
            return Rising::Pushed;
        }
        match self.position(n) {
            Some(at) => Rising::Held(self.entries[at].content),
            None => Rising::Other,
        }
    }

    pub(super) fn contains(&self, n: u64) -> bool {
        self.position(n).is_some()
    }

    /// Where `n` is in `entries`.
    #[inline]
    fn position(&self, n: u64) -> Option<usize> {
        // A replay of the newest number is the commonest duplicate.
        let newest = match self.head {
            0 => self.entries.len().checked_sub(1)?,
            head => head - 1,
        };
        if self.newest == n {
            return Some(newest);
        }
        let (older, newer) = self.halves();
        match older.binary_search_by_key(&n, |entry| entry.number) {
            Ok(at) => Some(self.head + at),
            Err(_) => newer.binary_search_by_key(&n, |entry| entry.number).ok(),
        }
    }

    /// Forgets the numbers after `n`; returns whether `n` was held.
    pub(super) fn cut_after(&mut self, n: u64) -> bool {
        self.entries.rotate_left(self.head);
        self.head = 0;
        let Ok(at) = self.entries.binary_search_by_key(&n, |entry| entry.number) else {
            return false;
        };
        self.entries.truncate(at + 1);
        self.newest = n;
        true
    }

    /// The newest number.
    #[inline]
    pub(super) fn last(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.newest)
    }

    #[cfg(test)]
    fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries().map(|(number, _)| number)
    }

    /// The numbers with their fingerprints, oldest first.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (older, newer) = self.halves();
        (older.iter().chain(newer)).map(|entry| (entry.number, entry.content))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries in two runs of rising numbers, the older first.
    fn halves(&self) -> (&[Entry], &[Entry]) {
        let (newer, older) = self.entries.split_at(self.head);
        (older, newer)
    }
}

/// The value of an id written as a plain decimal number: digits only, no
/// leading zero (so that each number has one spelling), and small enough
/// for a `u64`.
pub(crate) fn decimal(id: &[u8]) -> Option<u64> {
    // At most 19 digits: 19 nines are below `u64::MAX`, so nothing overflows.
    if id.is_empty() || id.len() > 19 || (id[0] == b'0' && id.len() > 1) {
        return None;
    }
    let mut n = 0;
    for &byte in id {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n = n * 10 + u64::from(digit);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_wraps_around_and_cuts_in_order() {
        let mut ids = RisingIds::default();
        for n in 1..=6 {
            assert!(matches!(ids.find_or_push(n, n * 10, 4), Rising::Pushed));
        }
        assert_eq!(ids.numbers().collect::<Vec<_>>(), [3, 4, 5, 6]);
        assert_eq!(ids.last(), Some(6));
        assert!(matches!(ids.find_or_push(6, 0, 4), Rising::Held(60)));
        assert!(matches!(ids.find_or_push(3, 0, 4), Rising::Held(30)));
        assert!(
            matches!(ids.find_or_push(2, 0, 4), Rising::Other),
            "fell out of the window"
        );
        assert!(!ids.contains(7));

        assert!(ids.cut_after(4));
        assert_eq!(ids.entries().collect::<Vec<_>>(), [(3, 30), (4, 40)]);
        assert_eq!(ids.last(), Some(4));
        assert!(
            matches!(ids.find_or_push(5, 0, 4), Rising::Pushed),
            "5 is new again"
        );
        assert!(!ids.cut_after(9));
    }

    #[test]
    fn plain_decimals_only() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"42"), Some(42));
        assert_eq!(
            decimal(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for not in [
            &b""[..],
            b"00",
            b"042",
            b"4a",
            b"-1",
            b"+1",
            b" 1",
            b"99999999999999999999",
        ] {
            assert_eq!(decimal(not), None, "{:?}", String::from_utf8_lossy(not));
        }
    }
}
