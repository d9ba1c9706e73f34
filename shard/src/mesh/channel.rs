//! Typed SPSC channels between two shards, for data-plane records.
//!
//! One bounded ring per channel, no allocation per message. The sender
//! stages records with [`Sender::feed`] and makes a batch visible with
//! [`Sender::flush`] (or does both with [`Sender::send`]); the receiver
//! drains batches. Each side sleeps only after announcing it (an atomic
//! flag, re-checked after setting it), so the other side wakes it at most
//! once per batch and never misses it. The wake travels home over the mesh
//! like any cross-shard wake.
//!
//! The handshake is the mailbox's (see `mail.rs`): the waiter stores
//! `waiting`, then a SeqCst fence, then re-checks the ring; the waker
//! publishes to the ring, then a SeqCst fence, then loads `waiting`. The
//! fences order each side's store before its load, so at least one side
//! sees the other: without them both loads may read stale values and each
//! side sleeps waiting for the other (a lost wake-up that deadlocks a full
//! channel).

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use super::ring::{self, Consumer, Producer};

#[derive(Debug, Default)]
struct Side {
    waiting: AtomicBool,
    waker: Mutex<Option<Waker>>,
    closed: AtomicBool,
}

impl Side {
    /// Records the waker and announces the wait; the caller re-checks its
    /// condition afterwards (Dekker-style handshake with `wake`).
    fn prepare_wait(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        drop(slot);
        self.waiting.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    fn cancel_wait(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }

    fn wake(&self) {
        // Orders the caller's ring publish/release before the load below.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            let w = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    rx: Side,
    tx: Side,
}

/// The sending half; lives on one shard.
pub struct Sender<T: Send> {
    ring: Producer<T>,
    shared: Arc<Shared>,
}

/// The receiving half; lives on one shard.
pub struct Receiver<T: Send> {
    ring: Consumer<T>,
    shared: Arc<Shared>,
    unreleased: usize,
}

impl<T: Send> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("staged", &self.ring.staged()).finish()
    }
}

impl<T: Send> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish()
    }
}

/// The receiver is gone; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

/// A channel holding up to `capacity` records (rounded up to a power of two).
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (p, c) = ring::ring(capacity);
    let shared = Arc::new(Shared::default());
    (Sender { ring: p, shared: shared.clone() }, Receiver { ring: c, shared, unreleased: 0 })
}

impl<T: Send> Sender<T> {
    /// Stages a record without publishing it; gives it back when the ring
    /// is full (after publishing what was staged, so the receiver can make
    /// room).
    pub fn feed(&mut self, value: T) -> Result<(), T> {
        match self.ring.push(value) {
            Ok(()) => Ok(()),
            Err(v) => {
                self.flush();
                self.ring.push(v)
            }
        }
    }

    /// Publishes staged records and wakes the receiver if it sleeps.
    pub fn flush(&mut self) {
        if self.ring.publish() > 0 {
            self.shared.rx.wake();
        }
    }

    /// Stages, publishes, and waits while the ring is full.
    pub async fn send(&mut self, value: T) -> Result<(), Closed<T>> {
        let mut value = Some(value);
        poll_fn(|cx| {
            let Some(v) = value.take() else { return Poll::Ready(Ok(())) };
            if self.shared.rx.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(Closed(v)));
            }
            match self.feed(v) {
                Ok(()) => {
                    self.flush();
                    Poll::Ready(Ok(()))
                }
                Err(v) => {
                    self.shared.tx.prepare_wait(cx.waker());
                    match self.ring.push(v) {
                        Ok(()) => {
                            self.shared.tx.cancel_wait();
                            self.flush();
                            Poll::Ready(Ok(()))
                        }
                        Err(v) => {
                            value = Some(v);
                            Poll::Pending
                        }
                    }
                }
            }
        })
        .await
    }

    /// Whether the receiver was dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.rx.closed.load(Ordering::Acquire)
    }
}

impl<T: Send> Drop for Sender<T> {
    fn drop(&mut self) {
        self.flush();
        self.shared.tx.closed.store(true, Ordering::SeqCst);
        self.shared.rx.waiting.store(true, Ordering::SeqCst);
        self.shared.rx.wake();
    }
}

impl<T: Send> Receiver<T> {
    fn release(&mut self) {
        if self.unreleased > 0 {
            self.ring.release();
            self.unreleased = 0;
            self.shared.tx.wake();
        }
    }

    /// Takes one record if one is visible.
    pub fn try_recv(&mut self) -> Option<T> {
        let v = self.ring.pop();
        if v.is_some() {
            self.unreleased += 1;
            if self.unreleased >= 32 {
                self.release();
            }
        } else {
            self.release();
        }
        v
    }

    /// Waits for a record; `None` once the sender is gone and the ring empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(v) = self.try_recv() {
                return Poll::Ready(Some(v));
            }
            self.shared.rx.prepare_wait(cx.waker());
            if let Some(v) = self.try_recv() {
                self.shared.rx.cancel_wait();
                return Poll::Ready(Some(v));
            }
            if self.shared.tx.closed.load(Ordering::SeqCst) {
                self.shared.rx.cancel_wait();
                return Poll::Ready(self.try_recv());
            }
            Poll::Pending
        })
        .await
    }

    /// Waits for at least one record, then hands up to `max` to `f` and
    /// releases their slots in one go. Returns 0 once the sender is gone
    /// and the ring is empty.
    pub async fn recv_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let Some(first) = self.recv().await else { return 0 };
        f(first);
        // Release in chunks of a quarter ring, so a sender waiting for room
        // refills one part while we drain the rest instead of the two
        // taking turns over the whole ring.
        let chunk = (self.ring.capacity() / 4).max(1);
        let mut n = 1;
        while n < max {
            let got = self.ring.drain(chunk.min(max - n), &mut f);
            self.unreleased = 0;
            self.shared.tx.wake();
            n += got;
            if got == 0 {
                break;
            }
        }
        n
    }
}

impl<T: Send> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.rx.closed.store(true, Ordering::SeqCst);
        self.shared.tx.waiting.store(true, Ordering::SeqCst);
        self.shared.tx.wake();
    }
}
