//! The handle pool: one fair semaphore whose permits are file descriptors and mappings.
//!
//! Every open descriptor on a segment file (a slot's temporary file, a file being mapped) and
//! every live mapping holds one permit, so `max_handles` bounds the two together. Waiting is
//! `tokio::sync::Semaphore`'s: first come, first served (a request for two permits at the head of
//! the queue is not overtaken by later requests for one), and cancellable by dropping the future.
//!
//! Idle mappings keep their permits until the pool runs short. A task that cannot get permits
//! at once registers as a waiter and asks the cache to unmap idle mappings (least recently used
//! first); a `SegmentRef` that drops while someone waits does the same, which closes the window
//! where a mapping becomes idle after the waiter last looked. The two sides are ordered by
//! sequentially consistent fences (see [`Pool::register_waiter`] and [`Pool::has_waiters`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sync::{AtomicUsize, fence};

/// The pool.
#[derive(Debug)]
pub(crate) struct Pool {
    sem: Arc<Semaphore>,
    max: usize,
    /// Tasks between `register_waiter` and getting their permits (or giving up).
    waiting: AtomicUsize,
}

/// Permits drawn from the pool; dropping them returns them (to the first waiter, if any).
#[derive(Debug)]
pub(crate) struct Handles(OwnedSemaphorePermit);

impl Handles {
    /// Splits one permit off into its own `Handles`. `None` if this holds only one.
    pub(crate) fn split_one(&mut self) -> Option<Handles> {
        if self.0.num_permits() < 2 {
            return None;
        }
        self.0.split(1).map(Handles)
    }

    /// How many permits this holds.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.0.num_permits()
    }
}

/// Registration as a waiter; unregisters on drop (also when the waiting future is dropped).
pub(crate) struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// A pool of `max` permits. The caller has checked `2 <= max <= u32::MAX`.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(max)),
            max,
            waiting: AtomicUsize::new(0),
        }
    }

    /// `n` permits if they are free now and nobody is queued for them.
    pub(crate) fn try_acquire(&self, n: u32) -> Option<Handles> {
        Arc::clone(&self.sem)
            .try_acquire_many_owned(n)
            .ok()
            .map(Handles)
    }

    /// Waits, in FIFO order, for `n` permits. Cancellable: dropping the future leaves the queue
    /// and returns any permits already assigned to it.
    pub(crate) async fn acquire(&self, n: u32) -> Handles {
        match Arc::clone(&self.sem).acquire_many_owned(n).await {
            Ok(permit) => Handles(permit),
            // The semaphore is owned by the pool and never closed.
            Err(_) => unreachable!("the handle pool's semaphore is never closed"),
        }
    }

    /// Marks the caller as waiting for permits, until the guard drops.
    ///
    /// The fence after the increment pairs with the one in [`has_waiters`](Self::has_waiters):
    /// either the waiter's following look at the idle mappings sees a mapping released before
    /// that fence, or the releaser sees the waiter and unmaps for it.
    pub(crate) fn register_waiter(&self) -> WaiterGuard<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        WaiterGuard(&self.waiting)
    }

    /// Whether a task is waiting for permits. Called right after a mapping reference is
    /// released; see [`register_waiter`](Self::register_waiter).
    pub(crate) fn has_waiters(&self) -> bool {
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Tasks waiting now.
    pub(crate) fn waiters(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Permits free now.
    pub(crate) fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Permits in use now.
    pub(crate) fn in_use(&self) -> usize {
        self.max.saturating_sub(self.sem.available_permits())
    }

    /// The pool's size.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Waker};

    use super::*;

    #[test]
    fn split_counts_and_cancelled_waits_give_back_permits() {
        let pool = Pool::new(3);
        let mut two = pool.try_acquire(2).expect("free");
        assert_eq!((two.count(), pool.in_use()), (2, 2));
        let one = two.split_one().expect("two permits");
        assert_eq!((one.count(), two.count()), (1, 1));
        assert!(two.split_one().is_none());
        assert_eq!(pool.in_use(), 2);
        drop(one);
        assert_eq!(pool.in_use(), 1);
        let more = pool.try_acquire(2).expect("free");
        assert_eq!(pool.in_use(), 3);

        // A queued request for two is assigned the one permit freed, keeping it from others;
        // dropping the request (cancellation) gives it back.
        let mut waiting = Box::pin(pool.acquire(2));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(two);
        assert_eq!(
            pool.in_use(),
            3,
            "the freed permit went to the queued request"
        );
        assert!(pool.try_acquire(1).is_none(), "no overtaking the queue");
        drop(waiting);
        assert_eq!(pool.in_use(), 2);
        drop(more);
        assert_eq!(pool.in_use(), 0);

        let guard = pool.register_waiter();
        assert!(pool.has_waiters());
        assert_eq!(pool.waiters(), 1);
        drop(guard);
        assert!(!pool.has_waiters());
        assert_eq!(pool.max(), 3);
    }
}
