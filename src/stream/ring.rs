//! A byte ring for the ids of a window.

/// Bytes added at the back and released from the front of a buffer that
/// wraps around, addressed by absolute offsets: releasing touches no memory.
#[derive(Clone, Default)]
pub(super) struct ByteRing {
    /// Empty, or a power of two long.
    buf: Vec<u8>,
    head: u64,
    tail: u64,
}

impl ByteRing {
    pub(super) fn len(&self) -> usize {
        (self.tail - self.head) as usize
    }

    /// Appends `bytes` and returns where they start.
    pub(super) fn push(&mut self, bytes: &[u8]) -> u64 {
        if self.len() + bytes.len() > self.buf.len() {
            self.grow(self.len() + bytes.len());
        }
        let start = self.tail;
        self.write(start, bytes);
        self.tail += bytes.len() as u64;
        start
    }

    fn write(&mut self, start: u64, bytes: &[u8]) {
        let at = start as usize & (self.buf.len() - 1);
        if let Some(room) = self.buf.get_mut(at..at + bytes.len()) {
            room.copy_from_slice(bytes);
            return;
        }
        let (first, second) = bytes.split_at(self.buf.len() - at);
        self.buf[at..].copy_from_slice(first);
        self.buf[..second.len()].copy_from_slice(second);
    }

    /// The `len` bytes at `start`, in one or two pieces.
    pub(super) fn slices(&self, start: u64, len: usize) -> (&[u8], &[u8]) {
        if len == 0 {
            return (&[], &[]);
        }
        let at = start as usize & (self.buf.len() - 1);
        let first = len.min(self.buf.len() - at);
        (&self.buf[at..at + first], &self.buf[..len - first])
    }

    pub(super) fn release_front(&mut self, len: usize) {
        self.head += len as u64;
    }

    pub(super) fn release_back(&mut self, len: usize) {
        self.tail -= len as u64;
    }

    pub(super) fn clear(&mut self) {
        self.head = self.tail;
    }

    /// Moves the bytes into a buffer that holds at least `need`.
    fn grow(&mut self, need: usize) {
        let mut grown = ByteRing {
            buf: vec![0; need.next_power_of_two().max(64)],
            head: self.head,
            tail: self.tail,
        };
        let (first, second) = self.slices(self.head, self.len());
        grown.write(self.head, first);
        grown.write(self.head + first.len() as u64, second);
        *self = grown;
    }
}
