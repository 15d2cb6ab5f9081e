//! The locks and atomics the cache and the handle pool are built on.
//!
//! Normally these are `parking_lot`'s locks and `std`'s atomics. Built with `--cfg shuttle` (in
//! `RUSTFLAGS`) they are shuttle's, so `tests/shuttle_model.rs` can explore the thread
//! interleavings of the pin / evict / remove / map protocol. Both sides expose the same small API:
//! `Mutex::lock` returns a guard directly and `Condvar::wait` takes `&mut` guard, as in
//! `parking_lot`.
//!
//! `fence` is shuttle's too: it is not a scheduling point, and shuttle runs every atomic access as
//! `SeqCst` (one interleaving of whole operations, no weaker reordering), so the `SeqCst` fences
//! of the release / waiter protocol hold trivially in the model. The model checks the protocol's
//! interleavings (a release between a waiter's registration and its look at the idle mappings,
//! and the like), not the memory ordering the fences provide.

#[cfg(not(shuttle))]
pub(crate) use parking_lot::{Condvar, Mutex};
#[cfg(not(shuttle))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, fence};

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicUsize, fence};
#[cfg(shuttle)]
pub(crate) use shuttle_locks::{Condvar, Mutex};

#[cfg(shuttle)]
mod shuttle_locks {
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;

    /// shuttle's mutex with `parking_lot`'s signature. A panic in a model test fails the test
    /// anyway, so poisoning is ignored.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    /// A guard of [`Mutex`]. The `Option` is `None` only inside [`Condvar::wait`], which takes
    /// the inner guard out to hand it to shuttle's by-value `wait` and puts the new one back.
    pub(crate) struct MutexGuard<'a, T>(Option<shuttle::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(shuttle::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            self.0
                .as_ref()
                .expect("guard taken only inside Condvar::wait")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0
                .as_mut()
                .expect("guard taken only inside Condvar::wait")
        }
    }

    /// shuttle's condition variable with `parking_lot`'s signature.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(shuttle::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(shuttle::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard
                .0
                .take()
                .expect("guard taken only inside Condvar::wait");
            guard.0 = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
