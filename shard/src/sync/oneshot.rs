//! A one-shot channel usable across shards: the reply path of `submit_to`.
//!
//! The sender completes it on the target shard; waking the receiver routes
//! the receiving task home over the mesh like any cross-shard wake.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use thiserror::Error;

/// The sender was dropped without sending.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("the sending side was dropped")]
pub struct Canceled;

#[derive(Debug)]
struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// Sends one value.
#[derive(Debug)]
pub struct Sender<T> {
    inner: Option<Arc<Mutex<State<T>>>>,
}

/// Receives the value; a future.
#[derive(Debug)]
pub struct Receiver<T> {
    inner: Arc<Mutex<State<T>>>,
}

/// Creates a connected pair.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Mutex::new(State { value: None, waker: None, closed: false }));
    (Sender { inner: Some(inner.clone()) }, Receiver { inner })
}

fn lock<T>(m: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Nothing panics while holding this lock, but a poisoned lock still
    // holds consistent data: take it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Sender<T> {
    /// Delivers the value; gives it back if the receiver is gone.
    pub fn send(mut self, value: T) -> Result<(), T> {
        let Some(inner) = self.inner.take() else { return Err(value) };
        let waker = {
            let mut st = lock(&inner);
            if st.closed {
                return Err(value);
            }
            st.value = Some(value);
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let waker = {
                let mut st = lock(&inner);
                st.closed = true;
                st.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        lock(&self.inner).closed = true;
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.inner);
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if st.closed {
            return Poll::Ready(Err(Canceled));
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
