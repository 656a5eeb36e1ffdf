//! A window of ids that are decimal numbers, each above the one before.

/// Rising numbers, oldest first: `numbers[head..]`, then `numbers[..head]`.
/// They wrap around only once they fill the window, which they then keep
/// full: recording one moves nothing.
#[derive(Clone, Default)]
pub(super) struct RisingIds {
    numbers: Vec<u64>,
    /// Where the oldest number is; 0 until the window is full.
    head: usize,
}

impl RisingIds {
    /// Records `n` when it is above every number held, or tells whether it
    /// is held already; `None` when it is neither, which rising numbers
    /// cannot represent.
    pub(super) fn check_and_record(&mut self, n: u64, capacity: usize) -> Option<bool> {
        if self.last().is_none_or(|newest| n > newest) {
            if self.numbers.len() < capacity {
                self.numbers.push(n);
            } else {
                self.numbers[self.head] = n;
                self.head += 1;
                if self.head == self.numbers.len() {
                    self.head = 0;
                }
            }
            return Some(true);
        }
        self.contains(n).then_some(false)
    }

    pub(super) fn contains(&self, n: u64) -> bool {
        // A replay of the newest number is the commonest duplicate.
        let (older, newer) = self.halves();
        self.last() == Some(n) || older.binary_search(&n).is_ok() || newer.binary_search(&n).is_ok()
    }

    /// Forgets the numbers after `n`; returns whether `n` was held.
    pub(super) fn cut_after(&mut self, n: u64) -> bool {
        self.numbers.rotate_left(self.head);
        self.head = 0;
        let Ok(at) = self.numbers.binary_search(&n) else {
            return false;
        };
        self.numbers.truncate(at + 1);
        true
    }

    /// The newest number: just before the oldest, or last while nothing
    /// wrapped around.
    #[inline]
    pub(super) fn last(&self) -> Option<u64> {
        match self.head {
            0 => self.numbers.last().copied(),
            head => Some(self.numbers[head - 1]),
        }
    }

    pub(super) fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        let (older, newer) = self.halves();
        older.iter().chain(newer).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.numbers.len()
    }

    /// The numbers in two sorted runs, the older first.
    fn halves(&self) -> (&[u64], &[u64]) {
        let (newer, older) = self.numbers.split_at(self.head);
        (older, newer)
    }
}

/// The value of an id written as a plain decimal number: digits only, no
/// leading zero (so that each number has one spelling), and small enough
/// for a `u64`.
pub(super) fn decimal(id: &[u8]) -> Option<u64> {
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
            assert_eq!(ids.check_and_record(n, 4), Some(true));
        }
        assert_eq!(ids.numbers().collect::<Vec<_>>(), [3, 4, 5, 6]);
        assert_eq!(ids.last(), Some(6));
        assert_eq!(ids.check_and_record(6, 4), Some(false));
        assert_eq!(ids.check_and_record(3, 4), Some(false));
        assert_eq!(ids.check_and_record(2, 4), None, "fell out of the window");
        assert!(!ids.contains(7));

        assert!(ids.cut_after(4));
        assert_eq!(ids.numbers().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(ids.last(), Some(4));
        assert_eq!(ids.check_and_record(5, 4), Some(true), "5 is new again");
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
