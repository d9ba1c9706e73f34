//! Operation futures. An [`Op`] owns everything the kernel may touch (buffers,
//! address storage, the fd) until its final completion; a [`MultiOp`] is a
//! stream of completions from one multishot submission.
//!
//! Dropping either while the kernel still holds the operation parks its
//! memory in the reactor and submits a cancel: see `slab.rs`.
//!
//! An operation holds its shard's context (weakly), the way monoio's ops
//! hold their driver: a slot index only means something on the ring that
//! issued it, so an operation is `!Send` by construction and polls and
//! drops through its own reactor, never through whatever shard the
//! current thread happens to be. The reference is weak because the
//! context (through its slab's wakers) holds the tasks that hold the
//! operations: a strong one would be a cycle that keeps a finished shard's
//! ring alive.
//!
//! ```compile_fail,E0277
//! // An operation cannot leave the shard that issued it.
//! fn needs_send<T: Send>(_: T) {}
//! needs_send(shard::ops::recv(0, Vec::with_capacity(16)));
//! ```
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>(_: T) {}
//! needs_send(shard::ops::accept_multi(0));
//! ```

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use super::bufring::ProvidedBuf;
use super::slab::Completion;
use crate::context::Context as Shard;

/// The shard an operation was issued on.
type Home = Weak<Shard>;

/// The issuing shard, for a poll. Polling happens only from that shard's
/// executor (an operation is `!Send`), which runs inside the shard's
/// context: it cannot be gone while one of its tasks is being polled.
fn alive(home: &Home) -> Rc<Shard> {
    match home.upgrade() {
        Some(ctx) => ctx,
        None => panic!("an operation was polled after its shard's runtime was torn down"),
    }
}

/// A single-shot operation in flight. Resolves to the completion and the
/// owned data handed in when it was started (buffers come back this way).
#[must_use = "an operation does nothing useful unless awaited"]
pub struct Op<T: 'static> {
    home: Home,
    idx: u32,
    data: Option<T>,
}

impl<T: 'static> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("slot", &self.idx).field("done", &self.data.is_none()).finish()
    }
}

impl<T: 'static> Op<T> {
    pub(crate) fn new(home: Home, idx: u32, data: T) -> Op<T> {
        Op { home, idx, data: Some(data) }
    }
}

// An Op is never structurally pinned: `data` holds heap pointers the kernel
// uses, never pointers into the Op itself.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let done = alive(&self.home).reactor.slab_mut().take_final(self.idx, cx.waker());
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
            abandon(&self.home, self.idx, Some(Box::new(data)));
        }
    }
}

/// A multishot operation: each completion is one item, `None` ends it.
#[must_use = "a multishot operation does nothing useful unless polled"]
pub struct MultiOp<T: 'static> {
    home: Home,
    idx: u32,
    data: Option<T>,
    ended: bool,
    stopped_at_limit: bool,
}

impl<T: 'static> std::fmt::Debug for MultiOp<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiOp").field("slot", &self.idx).field("ended", &self.ended).finish()
    }
}

impl<T: 'static> Unpin for MultiOp<T> {}

impl<T: 'static> MultiOp<T> {
    pub(crate) fn new(home: Home, idx: u32, data: T) -> MultiOp<T> {
        MultiOp { home, idx, data: Some(data), ended: false, stopped_at_limit: false }
    }

    /// Has the reactor cancel this operation once `limit` of its
    /// completions wait unconsumed, which bounds what it holds (buffers,
    /// for a receive) while its owner is busy elsewhere.
    pub(crate) fn set_hold_limit(&self, limit: usize) {
        alive(&self.home).reactor.slab_mut().set_hold_limit(self.idx, limit);
    }

    /// Whether the operation ended because the reactor cancelled it at its
    /// hold limit (its final completion is then `-ECANCELED`): the owner
    /// has caught up and may re-arm.
    pub fn stopped_at_limit(&self) -> bool {
        self.stopped_at_limit
    }

    fn note_final(&mut self, c: &Completion) {
        if !io_uring::cqueue::more(c.flags) {
            self.stopped_at_limit = alive(&self.home).reactor.slab_mut().stopped_at_limit(self.idx);
        }
    }

    /// Polls for the next completion; `Ready(None)` once the kernel posted
    /// the final one (a completion without the MORE flag was already
    /// returned before that).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = alive(&self.home).reactor.slab_mut().take_next(self.idx, cx.waker());
        match next {
            Ok(Some(c)) => {
                self.note_final(&c);
                Poll::Ready(Some(c))
            }
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
        // A no-op waker: whoever waits next polls with its own waker, and
        // that poll looks at the queue before sleeping, so nothing is missed.
        let next = alive(&self.home).reactor.slab_mut().take_next(self.idx, std::task::Waker::noop());
        match next {
            Ok(Some(c)) => {
                self.note_final(&c);
                Some(c)
            }
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

    /// Asks the kernel to end the operation, keeping it: every completion
    /// it posts until then (a connection a multishot accept took just
    /// before the cancel landed, say) still comes out of
    /// [`next`](Self::next), which returns `None` after the final one.
    /// Dropping instead would let the reactor discard those completions
    /// (closing their descriptors). Cancelling an ended operation, or twice,
    /// does nothing.
    pub fn cancel(&mut self) -> std::io::Result<()> {
        if self.ended {
            return Ok(());
        }
        alive(&self.home).reactor.cancel(self.idx)
    }
}

impl<T: 'static> Drop for MultiOp<T> {
    fn drop(&mut self) {
        if !self.ended {
            let data = self.data.take().map(|d| Box::new(d) as Box<dyn Any>);
            abandon(&self.home, self.idx, data);
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

/// A quiet send in flight ([`crate::ops::send_quiet`]): it completes
/// without a completion when it sent everything, so its owner usually does
/// not wait for it at all. [`poll_outcome`](Self::poll_outcome) watches it
/// without asking to be woken for success; [`settled`](Self::settled)
/// waits for it.
#[must_use = "a quiet send's failure is only seen by polling it"]
pub struct QuietSend {
    home: Home,
    idx: u32,
    len: usize,
    done: bool,
}

/// What became of a quiet send: the count sent (all of it, or what fitted
/// before the socket filled) or the error, and the buffer unless it was
/// all sent (then it went back to its group).
pub type QuietOutcome = (std::io::Result<usize>, Option<ProvidedBuf>);

impl std::fmt::Debug for QuietSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuietSend").field("slot", &self.idx).field("len", &self.len).finish()
    }
}

impl QuietSend {
    pub(crate) fn new(home: Home, idx: u32, len: usize) -> QuietSend {
        QuietSend { home, idx, len, done: false }
    }

    /// Bytes handed to the send.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the send carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The outcome once the send is settled. Until then the task is woken
    /// if the send fails, and also when it succeeds if `urgent` (a task
    /// that cannot go on without the outcome; the shard then does not
    /// sleep before settling it).
    pub fn poll_outcome(&mut self, cx: &mut Context<'_>, urgent: bool) -> Poll<QuietOutcome> {
        if self.done {
            panic!("quiet send polled after its outcome");
        }
        let taken = alive(&self.home).reactor.slab_mut().take_quiet(self.idx, cx.waker(), urgent);
        let Some((result, buf)) = taken else {
            return Poll::Pending;
        };
        self.done = true;
        let res =
            if result < 0 { Err(std::io::Error::from_raw_os_error(-result)) } else { Ok(result as usize) };
        // All sent (a completion says so where the kernel posts one for
        // success too): the buffer goes back to its group.
        let buf = buf.filter(|_| !matches!(res, Ok(n) if n >= self.len));
        Poll::Ready((res, buf))
    }

    /// Waits for the outcome.
    pub async fn settled(&mut self) -> QuietOutcome {
        std::future::poll_fn(|cx| self.poll_outcome(cx, true)).await
    }
}

impl Drop for QuietSend {
    fn drop(&mut self) {
        if !self.done {
            abandon(&self.home, self.idx, None);
        }
    }
}

/// The owner of slot `idx` went away: hand its memory to the reactor, which
/// keeps it until the kernel's final completion.
fn abandon(home: &Home, idx: u32, data: Option<Box<dyn Any>>) {
    match home.upgrade() {
        Some(ctx) => {
            let leftovers = ctx.reactor.abandon(idx, data);
            drop(leftovers);
        }
        // The shard is gone. Its teardown cancelled every operation and
        // waited for their completions, but gave up after a bound; if this
        // one was still in flight then, the kernel may yet write into
        // `data`, so it is leaked, never freed.
        None => std::mem::forget(data),
    }
}
