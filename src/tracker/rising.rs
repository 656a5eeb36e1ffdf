//! A window of ids that are decimal numbers, each above the one before.

use std::collections::VecDeque;

/// Rising numbers, oldest first.
#[derive(Clone, Default)]
pub(super) struct RisingIds {
    numbers: VecDeque<u64>,
}

impl RisingIds {
    /// Records `n` when it is above every number held, or tells whether it
    /// is held already; `None` when it is neither, which rising numbers
    /// cannot represent.
    pub(super) fn check_and_record(&mut self, n: u64, capacity: usize) -> Option<bool> {
        if self.numbers.back().is_none_or(|&last| n > last) {
            if self.numbers.len() >= capacity {
                self.numbers.pop_front();
            }
            self.numbers.push_back(n);
            return Some(true);
        }
        self.contains(n).then_some(false)
    }

    pub(super) fn contains(&self, n: u64) -> bool {
        // A replay of the newest number is the commonest duplicate.
        self.numbers.back() == Some(&n) || self.numbers.binary_search(&n).is_ok()
    }

    /// Forgets the numbers after `n`; returns whether `n` was held.
    pub(super) fn cut_after(&mut self, n: u64) -> bool {
        let Ok(at) = self.numbers.binary_search(&n) else {
            return false;
        };
        self.numbers.truncate(at + 1);
        true
    }

    pub(super) fn last(&self) -> Option<u64> {
        self.numbers.back().copied()
    }

    pub(super) fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.numbers.iter().copied()
    }

    pub(super) fn len(&self) -> usize {
        self.numbers.len()
    }
}

/// The value of an id written as a plain decimal number: digits only, no
/// leading zero (so that each number has one spelling), and small enough
/// for a `u64`.
pub(super) fn decimal(id: &[u8]) -> Option<u64> {
    match id {
        [] | [b'0', _, ..] => None,
        _ if id.len() > 19 => None,
        _ => id.iter().try_fold(0u64, |n, &digit| {
            digit
                .is_ascii_digit()
                .then(|| n * 10 + u64::from(digit - b'0'))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
