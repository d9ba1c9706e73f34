//! Waiting for a shard-local condition without polling it on a timer: the
//! code that can make the condition true calls [`Notify::notify`], and a
//! waiter re-checks its condition only then. For drains and shutdowns
//! ("every connection has finished", "the queue is empty"), where a
//! sleep-and-look loop would cost wake-ups while idle and add up to its
//! period of latency to every stop.
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use shard::sync::notify::Notify;
//! shard::run_single(|| async {
//!     let (open, done) = (Rc::new(Cell::new(3)), Rc::new(Notify::default()));
//!     let (o, d) = (open.clone(), done.clone());
//!     shard::spawn_local(async move {
//!         while o.get() > 0 {
//!             shard::yield_now().await;
//!             o.set(o.get() - 1);
//!             d.notify();
//!         }
//!     })
//!     .detach();
//!     done.wait_until(|| open.get() == 0).await;
//! })
//! .expect("runtime");
//! ```

use std::cell::Cell;
use std::future::poll_fn;
use std::task::Poll;

use super::waiters::WaiterSet;

/// Wakes the tasks waiting on a shard-local condition. `!Send`: it lives on
/// its shard with the state it guards.
#[derive(Debug, Default)]
pub struct Notify {
    waiters: WaiterSet,
    _shard: std::marker::PhantomData<std::rc::Rc<()>>,
}

impl Notify {
    /// Tells every waiter to look at its condition again.
    pub fn notify(&self) {
        if !self.waiters.is_empty() {
            self.waiters.wake_all();
        }
    }

    /// Completes once `ready()` holds: checked now and after each
    /// [`Notify::notify`], never on a timer. Dropping the future forgets
    /// its registration.
    pub async fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        let guard = Registration { waiters: &self.waiters, key: Cell::new(None) };
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            guard.key.set(Some(self.waiters.register(guard.key.get(), cx.waker())));
            Poll::Pending
        })
        .await;
    }
}

/// A waiter's registration, removed when its future ends or is dropped.
struct Registration<'a> {
    waiters: &'a WaiterSet,
    key: Cell<Option<u64>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.get() {
            self.waiters.remove(k);
        }
    }
}
