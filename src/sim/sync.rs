//! The simulator's one way to take a mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, shrugging off poisoning: every critical section here leaves its data whole.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
