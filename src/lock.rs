//! The crate's one way to take a lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, even when a panic elsewhere poisoned it while holding it.
///
/// Every lock of this crate guards state that a panic cannot leave
/// half-updated in a way that matters more than failing every request
/// after it: a stream's window, a store's queue, a table of leases. So a
/// poisoned lock is taken as it is, never unwrapped into a panic.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
