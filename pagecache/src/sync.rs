//! The locks and atomics the cache is built on.
//!
//! Normally these are `parking_lot`'s locks and `std`'s atomics. Built with `--cfg shuttle` (in
//! `RUSTFLAGS`) they are shuttle's, so `tests/shuttle_model.rs` can explore the thread
//! interleavings of the pin / evict / write-back protocol. Both sides expose the same small API:
//! `lock()`, `read()`, `read_recursive()` and `write()` return guards directly.
//!
//! `read_recursive()` is for a thread that may already hold a read guard of the same lock.
//! `parking_lot`'s `read()` queues behind a waiting writer, so a second `read()` on a thread
//! holding one can deadlock with that writer; its `read_recursive()` is granted whenever the lock
//! is read-locked. shuttle's `read()` never lets a waiting writer hold a reader back (its lock is
//! unfair), so it stands in for `read_recursive()`; but shuttle refuses (panics with "deadlock!")
//! when a task takes a second read guard of a lock it already holds, so a model test cannot run a
//! path that does.

#[cfg(not(shuttle))]
pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(shuttle))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize};

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize};
#[cfg(shuttle)]
pub(crate) use shuttle_locks::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(shuttle)]
mod shuttle_locks {
    use std::sync::PoisonError;

    pub(crate) use shuttle::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

    /// shuttle's mutex with `parking_lot`'s signature. A panic in a model test fails the test
    /// anyway, so poisoning is ignored.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(shuttle::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// shuttle's reader-writer lock with `parking_lot`'s signature.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(shuttle::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(shuttle::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(PoisonError::into_inner)
        }

        /// `parking_lot`'s `read_recursive`: see the module docs.
        pub(crate) fn read_recursive(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(PoisonError::into_inner)
        }
    }
}
