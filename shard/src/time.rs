//! Timers without a syscall per timer.
//!
//! Each shard keeps its timers in an ordered map keyed by deadline. The
//! shard loop fires expired timers once per turn and, when it parks, passes
//! the nearest deadline as the `io_uring_enter` timeout (EXT_ARG). A sleep
//! therefore costs a map insert and remove, never a kernel timer.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::context;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    map: RefCell<BTreeMap<(Instant, u64), Waker>>,
    seq: Cell<u64>,
    /// Bumped whenever entries leave the map other than by their own
    /// [`Sleep`] (fired, or cleared): a sleep registered at an unchanged
    /// epoch is still in the map without looking.
    epoch: Cell<u64>,
}

impl Timers {
    fn insert(&self, deadline: Instant, waker: Waker) -> (Instant, u64) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.map.borrow_mut().insert((deadline, seq), waker);
        (deadline, seq)
    }

    fn update(&self, key: (Instant, u64), waker: &Waker) -> bool {
        match self.map.borrow_mut().get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&self, key: (Instant, u64)) {
        self.map.borrow_mut().remove(&key);
    }

    /// The nearest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.borrow().first_key_value().map(|(k, _)| k.0)
    }

    /// Wakes every timer due at `now`, in deadline order; returns how many.
    pub(crate) fn fire(&self, now: Instant) -> usize {
        self.epoch.set(self.epoch.get() + 1);
        let mut fired = 0;
        loop {
            let due = {
                let mut map = self.map.borrow_mut();
                match map.first_entry() {
                    Some(e) if e.key().0 <= now => Some(e.remove()),
                    _ => None,
                }
            };
            match due {
                Some(w) => {
                    w.wake();
                    fired += 1;
                }
                None => return fired,
            }
        }
    }

    /// Drops every pending timer's waker (shutdown).
    pub(crate) fn clear(&self) {
        self.epoch.set(self.epoch.get() + 1);
        let map = std::mem::take(&mut *self.map.borrow_mut());
        drop(map);
    }
}

/// A future that completes at a deadline. See [`sleep`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    /// Where it waits in the timer map, once polled.
    registered: Option<Registered>,
}

/// A sleep's entry in the timer map, and the timers' epoch and the waker
/// (its identity) when it was last put there or updated: polled again by
/// the same task before any timer fired, the sleep is pending without a
/// clock read or a map lookup. A task that polls a timer on every wake (a
/// connection's idle watchdog) pays nothing for it until timers fire. An
/// identity, not a clone: a sleep holding its own task's waker would keep
/// the task alive through its own future (a cycle nothing breaks at
/// shutdown); while the sleep is registered the timer map holds a clone,
/// so the task it names cannot be freed and its address reused.
#[derive(Debug, Clone, Copy)]
struct Registered {
    key: (Instant, u64),
    epoch: u64,
    waker: WakerId,
}

/// What `Waker::will_wake` compares (the data and vtable addresses),
/// without owning the waker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WakerId(usize, usize);

impl WakerId {
    fn of(w: &Waker) -> WakerId {
        WakerId(w.data() as usize, std::ptr::from_ref(w.vtable()) as usize)
    }
}

/// A monotonic timestamp at scheduler-tick resolution (1-4 ms), far cheaper
/// than `Instant::now()` in a VM: for marking activity on hot paths whose
/// timeouts are seconds long (idle connections, say).
pub fn coarse_now() -> Duration {
    Duration::from_nanos(crate::clock::coarse_ns())
}

/// Completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registered: None }
}

impl Sleep {
    /// The instant this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (re-registers on the next poll).
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some(r) = self.registered.take() {
            context::try_with(|c| c.timers.remove(r.key));
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered, and no entry has left the map since: still waiting
        // (a due timer is fired by the shard loop within a turn).
        let epoch = context::with(|c| c.timers.epoch.get());
        let waker = WakerId::of(cx.waker());
        if let Some(r) = self.registered {
            if r.epoch == epoch && r.waker == waker {
                return Poll::Pending;
            }
            if context::with(|c| c.timers.update(r.key, cx.waker())) {
                self.registered = Some(Registered { epoch, waker, ..r });
                return Poll::Pending;
            }
        }
        if Instant::now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let key = context::with(|c| c.timers.insert(deadline, cx.waker().clone()));
        self.registered = Some(Registered { key, epoch, waker });
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The deadline passed before the future completed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Runs `fut` until it completes or `duration` passes.
pub async fn timeout<F: Future>(duration: Duration, fut: F) -> Result<F::Output, Elapsed> {
    timeout_at(Instant::now() + duration, fut).await
}

/// Runs `fut` until it completes or `deadline` passes.
pub async fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A periodic timer that does not drift: each tick is scheduled from the
/// previous deadline, and missed ticks are skipped rather than bunched.
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    next: Instant,
}

/// Ticks every `period`, the first tick immediately.
pub fn interval(period: Duration) -> Interval {
    Interval { period: period.max(Duration::from_micros(1)), next: Instant::now() }
}

impl Interval {
    /// Waits for the next tick; returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        let at = self.next;
        sleep_until(at).await;
        let now = Instant::now();
        self.next = at + self.period;
        if self.next <= now {
            let behind = now.duration_since(at).as_nanos() / self.period.as_nanos().max(1);
            self.next = at + self.period * (behind as u32 + 1);
        }
        at
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}
