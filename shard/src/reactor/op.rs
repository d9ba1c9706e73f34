//! Operation futures. An [`Op`] owns everything the kernel may touch (buffers,
//! address storage, the fd) until its final completion; a [`MultiOp`] is a
//! stream of completions from one multishot submission.
//!
//! Dropping either while the kernel still holds the operation parks its
//! memory in the reactor and submits a cancel: see `slab.rs`.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::slab::Completion;
use crate::context;

/// A single-shot operation in flight. Resolves to the completion and the
/// owned data handed in when it was started (buffers come back this way).
#[must_use = "an operation does nothing useful unless awaited"]
pub struct Op<T: 'static> {
    idx: u32,
    data: Option<T>,
}

impl<T: 'static> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("slot", &self.idx).field("done", &self.data.is_none()).finish()
    }
}

impl<T: 'static> Op<T> {
    pub(crate) fn new(idx: u32, data: T) -> Op<T> {
        Op { idx, data: Some(data) }
    }
}

// An Op is never structurally pinned: `data` holds heap pointers the kernel
// uses, never pointers into the Op itself.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let idx = self.idx;
        let done = context::with(|c| c.reactor.slab_mut().take_final(idx, cx.waker()));
        match done {
            Some(completion) => match self.data.take() {
                Some(data) => Poll::Ready((completion, data)),
                None => panic!("operation polled after completion"),
            },
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            abandon(self.idx, Box::new(data));
        }
    }
}

/// A multishot operation: each completion is one item, `None` ends it.
#[must_use = "a multishot operation does nothing useful unless polled"]
pub struct MultiOp<T: 'static> {
    idx: u32,
    data: Option<T>,
    ended: bool,
}

impl<T: 'static> std::fmt::Debug for MultiOp<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiOp").field("slot", &self.idx).field("ended", &self.ended).finish()
    }
}

impl<T: 'static> Unpin for MultiOp<T> {}

impl<T: 'static> MultiOp<T> {
    pub(crate) fn new(idx: u32, data: T) -> MultiOp<T> {
        MultiOp { idx, data: Some(data), ended: false }
    }

    /// Polls for the next completion; `Ready(None)` once the kernel posted
    /// the final one (a completion without the MORE flag was already
    /// returned before that).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let idx = self.idx;
        match context::with(|c| c.reactor.slab_mut().take_next(idx, cx.waker())) {
            Ok(Some(c)) => Poll::Ready(Some(c)),
            Ok(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(()) => Poll::Pending,
        }
    }

    /// The next completion, or `None` when the operation has ended.
    #[allow(clippy::should_implement_trait)] // async: not an Iterator
    pub fn next(&mut self) -> NextCompletion<'_, T> {
        NextCompletion { op: self }
    }

    /// The next completion if one has already arrived, without waiting.
    /// `None` means nothing is queued right now (or the operation ended).
    pub fn try_next(&mut self) -> Option<Completion> {
        if self.ended {
            return None;
        }
        let idx = self.idx;
        // A no-op waker: whoever waits next polls with its own waker, and
        // that poll looks at the queue before sleeping, so nothing is missed.
        match context::with(|c| c.reactor.slab_mut().take_next(idx, std::task::Waker::noop())) {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(()) => None,
        }
    }

    /// Whether the operation has ended (final completion consumed).
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

impl<T: 'static> Drop for MultiOp<T> {
    fn drop(&mut self) {
        if !self.ended {
            let data = self.data.take().map(|d| Box::new(d) as Box<dyn Any>);
            abandon_boxed(self.idx, data);
        }
    }
}

/// Future returned by [`MultiOp::next`].
#[derive(Debug)]
pub struct NextCompletion<'a, T: 'static> {
    op: &'a mut MultiOp<T>,
}

impl<T: 'static> Future for NextCompletion<'_, T> {
    type Output = Option<Completion>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.op.poll_next(cx)
    }
}

fn abandon<T: 'static>(idx: u32, data: Box<T>) {
    abandon_boxed(idx, Some(data as Box<dyn Any>));
}

fn abandon_boxed(idx: u32, data: Option<Box<dyn Any>>) {
    // Off a shard (the runtime already tore down) nothing can be in flight:
    // teardown waits for every operation before dropping the ring.
    let leftovers = context::try_with(|c| c.reactor.abandon(idx, data));
    drop(leftovers);
}
