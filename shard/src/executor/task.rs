//! Task plumbing: metadata, panic capture and join handles.
#![allow(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use thiserror::Error;

/// Metadata carried by every task, for stall reports.
#[derive(Debug)]
pub struct TaskMeta {
    /// Shard-unique task id.
    pub id: u64,
    /// Optional name given at spawn.
    pub name: &'static str,
}

/// Why a task did not produce its output.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked; the message is the panic payload if it was a string.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// The task was cancelled (aborted, or dropped at shutdown).
    #[error("task was cancelled")]
    Cancelled,
}

/// Turns a panic payload into a message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Wraps a future so a panic while polling it becomes an `Err` output
/// instead of unwinding through the shard loop.
pub(crate) struct CatchUnwind<F> {
    inner: F,
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and CatchUnwind has no Drop impl or Unpin impl of its own that could move it.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner) };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(panic = %msg, "task panicked");
                Poll::Ready(Err(JoinError::Panicked(msg)))
            }
        }
    }
}

/// Owned permission to await a task's output. Dropping it detaches the
/// task (it keeps running); [`JoinHandle::abort`] cancels it.
pub struct JoinHandle<T> {
    task: Option<async_task::FallibleTask<Result<T, JoinError>, TaskMeta>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: async_task::Task<Result<T, JoinError>, TaskMeta>) -> Self {
        JoinHandle { task: Some(task.fallible()) }
    }

    /// Cancels the task: its future is dropped the next time the shard
    /// would have run it (or now, if it is idle).
    pub fn abort(mut self) {
        drop(self.task.take());
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Lets the task run on without anyone awaiting it.
    pub fn detach(mut self) {
        if let Some(t) = self.task.take() {
            t.detach();
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.detach();
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Err(JoinError::Cancelled));
        };
        match Pin::new(task).poll(cx) {
            Poll::Ready(out) => {
                self.task = None;
                // `None`: the task was cancelled before it finished.
                Poll::Ready(out.unwrap_or(Err(JoinError::Cancelled)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
