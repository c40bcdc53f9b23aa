//! The one way the crate takes a std mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, also when a thread panicked while holding it: every critical
/// section in this crate is a plain read or replace of the value, so a
/// panic elsewhere never leaves it half-changed, and one panic must not
/// take every later caller down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
