//! A fingerprint of what an event carries: its data and its type.
//!
//! The layer tells a replayed event from a new one that reuses its id by
//! this fingerprint, so it must see every byte of the data: an event that
//! differs anywhere is a new one, and dropping it would lose it. It need
//! not resist attack: a collision between two events with the same id, 1 in
//! 2^64, drops the second.

/// Folds the value of one `data` line into `state`.
///
/// The values of a block's data lines hold no line ends, so the sequence of
/// values fed in, each with its length, says exactly what the event's data
/// is.
#[inline]
pub(crate) fn add_data_line(state: u64, value: &[u8]) -> u64 {
    let state = state ^ (value.len() as u64).wrapping_mul(K0);
    if value.len() <= 16 {
        let (a, b) = read_short(value);
        return fold(a ^ K1 ^ state, b ^ K2);
    }
    if value.len() <= 64 {
        return short_lanes(state, value);
    }
    long(state, value)
}

/// The fingerprint of a block from the state its data lines left and its
/// event type (empty for the default).
#[inline]
pub(crate) fn finish(state: u64, event_type: &[u8], data: bool) -> u64 {
    // A block without data lines and one with an empty data line differ.
    let state = state ^ u64::from(data).wrapping_mul(K3);
    match event_type.len() {
        0 => fold(state ^ K1, K2 ^ K0),
        _ => add_data_line(state.rotate_left(23) ^ K3, event_type),
    }
}

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xa076_1d64_78bd_642f;
const K2: u64 = 0xe703_7ed1_a0b4_28db;
const K3: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Multiplies into 128 bits and folds the halves: every input bit moves
/// many output bits.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}

/// Up to 16 bytes as two words, overlapping when there are more than 8 and
/// padded with zeros when fewer (the length is folded in apart).
#[inline(always)]
fn read_short(bytes: &[u8]) -> (u64, u64) {
    let len = bytes.len();
    if len >= 8 {
        return (word(bytes, 0), word(bytes, len - 8));
    }
    if len >= 4 {
        let low = |at: usize| {
            let mut buf = [0; 4];
            buf.copy_from_slice(&bytes[at..at + 4]);
            u64::from(u32::from_le_bytes(buf))
        };
        return (low(0), low(len - 4));
    }
    if len == 0 {
        return (0, 0);
    }
    let spread =
        u64::from(bytes[0]) << 16 | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]);
    (spread, 0)
}

/// 17 to 64 bytes: 16-byte pieces from the front and the back, which
/// overlap in the middle.
#[inline(always)]
fn short_lanes(state: u64, bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let mut acc = fold(word(bytes, 0) ^ K1 ^ state, word(bytes, 8) ^ K2);
    acc ^= fold(word(bytes, len - 16) ^ K3, word(bytes, len - 8) ^ K0);
    if len > 32 {
        acc ^= fold(word(bytes, 16) ^ K2 ^ state, word(bytes, 24) ^ K3).rotate_left(17);
        acc ^= fold(word(bytes, len - 32) ^ K0, word(bytes, len - 24) ^ K1).rotate_left(41);
    }
    acc
}

/// Over 64 bytes: four independent lanes of 16 bytes each, so that the
/// multiplications overlap, then the tail.
#[inline(never)]
fn long(state: u64, bytes: &[u8]) -> u64 {
    let mut lanes = [state ^ K0, state ^ K1, state ^ K2, state ^ K3];
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let at = i * 16;
            *lane = fold(word(block, at) ^ *lane, word(block, at + 8) ^ KEYS[i]);
        }
    }
    let mut acc = lanes[0] ^ lanes[1].rotate_left(17) ^ lanes[2].rotate_left(31);
    acc ^= lanes[3].rotate_left(47);
    // The last 64 bytes again, overlapping what went before: no tail is
    // left out, whatever the length.
    short_lanes(acc, &bytes[bytes.len() - 64..])
}

const KEYS: [u64; 4] = [K2, K3, K0, K1];

#[cfg(test)]
mod tests {
    use super::*;

    fn data(lines: &[&[u8]]) -> u64 {
        let state = lines
            .iter()
            .fold(0, |state, line| add_data_line(state, line));
        finish(state, b"", !lines.is_empty())
    }

    #[test]
    fn every_byte_counts() {
        for len in [
            0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 4096, 4099,
        ] {
            let base: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let whole = data(&[&base]);
            for at in 0..len {
                let mut changed = base.clone();
                changed[at] ^= 1;
                assert_ne!(data(&[&changed]), whole, "len {len}, byte {at}");
            }
            let mut longer = base.clone();
            longer.push(0);
            assert_ne!(data(&[&longer]), whole, "len {len} and one zero more");
        }
    }

    #[test]
    fn lines_and_types_are_told_apart() {
        assert_ne!(data(&[b"ab"]), data(&[b"a", b"b"]));
        assert_ne!(data(&[b""]), data(&[]));
        assert_ne!(data(&[b"", b""]), data(&[b""]));
        let plain = finish(add_data_line(0, b"x"), b"", true);
        let typed = finish(add_data_line(0, b"x"), b"update", true);
        assert_ne!(plain, typed);
        assert_eq!(plain, data(&[b"x"]), "the same event, the same fingerprint");
    }
}
