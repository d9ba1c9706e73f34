//! What tasks call: which shard am I, spawn here, run something there, run
//! something everywhere and gather the answers.
//!
//! Cross-shard calls move a closure over the mesh; it runs as a task on the
//! target and its result comes back through a one-shot channel. A panic on
//! the target is caught and returned as an error to the caller only: the
//! other shards' answers and the target shard itself are unaffected.

use std::future::Future;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::context;
use crate::executor::task::CatchUnwind;
use crate::executor::{JoinError, JoinHandle};
use crate::mesh::Msg;
use crate::sync::oneshot;

/// Why a cross-shard call has no result.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The closure (or the future it returned) panicked on the target.
    #[error("shard {shard} panicked: {message}")]
    Panicked {
        /// The target shard.
        shard: usize,
        /// The panic message.
        message: String,
    },
    /// The target shard dropped the work (it is stopping).
    #[error("shard {shard} is shutting down")]
    ShuttingDown {
        /// The target shard.
        shard: usize,
    },
    /// No such shard.
    #[error("no shard {shard} (the runtime has {count})")]
    NoSuchShard {
        /// The requested shard.
        shard: usize,
        /// How many shards there are.
        count: usize,
    },
    /// The deadline of a broadcast passed before the shard answered.
    #[error("shard {shard} did not answer before the deadline")]
    Timeout {
        /// The slow shard.
        shard: usize,
    },
}

/// This shard's index, `0..shard_count()`.
pub fn shard_id() -> usize {
    context::with(|c| c.id)
}

/// Number of shards in the runtime.
pub fn shard_count() -> usize {
    context::with(|c| c.count)
}

/// Once the runtime is stopping: the instant its grace period ends, when
/// the tasks still running are cancelled. A service budgets its drain
/// against it (stop reading, then flush within what is left). `None`
/// before a stop.
pub fn stop_deadline() -> Option<std::time::Instant> {
    context::with(|c| c.stop_deadline.get())
}

/// Whether the calling thread is a shard.
pub fn on_shard() -> bool {
    context::try_with(|_| ()).is_some()
}

/// Spawns a `!Send` task on this shard.
pub fn spawn_local<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with(|c| c.executor.spawn("", fut))
}

/// Spawns a named task (the name shows in stall reports).
pub fn spawn_local_named<F>(name: &'static str, fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with(|c| c.executor.spawn(name, fut))
}

/// Lets other tasks and I/O run before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Completes once the runtime has been asked to stop (graceful drain: stop
/// accepting, finish what is in flight, return). Cheap to create and drop
/// repeatedly, e.g. inside a `select` per accepted connection.
pub fn stopping() -> Stopping {
    Stopping { key: None }
}

/// Future returned by [`stopping`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Stopping {
    key: Option<u64>,
}

impl Future for Stopping {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let key = self.key;
        let registered = context::with(|c| {
            if c.stopping.get() {
                None
            } else {
                Some(c.stop_waiters.register(key, cx.waker()))
            }
        });
        match registered {
            None => {
                self.key = None;
                std::task::Poll::Ready(())
            }
            Some(k) => {
                self.key = Some(k);
                std::task::Poll::Pending
            }
        }
    }
}

impl Drop for Stopping {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            context::try_with(|c| c.stop_waiters.remove(k));
        }
    }
}

/// Whether this shard has been told the runtime is stopping (the same
/// moment [`stopping`] completes).
pub fn is_stopping() -> bool {
    context::with(|c| c.stopping.get())
}

/// Asks the whole runtime to stop (from any shard).
pub fn request_stop() {
    context::with(|c| c.shared.request_stop());
}

/// Sends `f` to `shard` and returns a receiver for its output, without
/// waiting for the answer (so several requests can be in flight at once).
async fn dispatch<F, Fut, T>(
    shard: usize,
    f: F,
) -> Result<oneshot::Receiver<Result<T, JoinError>>, SubmitError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (me, count) = context::with(|c| (c.id, c.count));
    if shard >= count {
        return Err(SubmitError::NoSuchShard { shard, count });
    }
    let (tx, rx) = oneshot::channel();
    let run = move || {
        let task = async move {
            let out = CatchUnwind::new(async move { f().await }).await;
            let _ = tx.send(out);
        };
        context::with(|c| c.executor.spawn("submit_to", task)).detach();
    };
    if shard == me {
        run();
    } else {
        let ctx = context::current();
        ctx.mesh.send(shard, Msg::Run(Box::new(run))).await;
    }
    Ok(rx)
}

fn flatten<T>(shard: usize, r: Result<Result<T, JoinError>, oneshot::Canceled>) -> Result<T, SubmitError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(JoinError::Panicked(message))) => Err(SubmitError::Panicked { shard, message }),
        Ok(Err(JoinError::Cancelled)) | Err(oneshot::Canceled) => Err(SubmitError::ShuttingDown { shard }),
    }
}

/// Runs `f` on `shard` (as a task there) and returns its output.
pub async fn submit_to<F, Fut, T>(shard: usize, f: F) -> Result<T, SubmitError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let rx = dispatch(shard, f).await?;
    flatten(shard, rx.await)
}

/// Runs `f` on every shard in parallel; each shard's result in shard order.
pub async fn invoke_on_all<F, Fut, T>(f: F) -> Vec<Result<T, SubmitError>>
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    gather(f, None).await
}

/// Runs `map` on every shard in parallel and folds the outputs with
/// `reduce`, starting from `init`, in shard order. Fails with the first
/// shard's error if any shard failed.
pub async fn map_reduce<M, Fut, T, R>(
    map: M,
    init: R,
    reduce: impl FnMut(R, T) -> R,
) -> Result<R, SubmitError>
where
    M: Fn() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    fold(gather(map, None).await, init, reduce)
}

/// Folds gathered answers in order; the first error wins.
pub(crate) fn fold<T, R>(
    answers: Vec<Result<T, SubmitError>>,
    init: R,
    mut reduce: impl FnMut(R, T) -> R,
) -> Result<R, SubmitError> {
    let mut acc = init;
    for r in answers {
        acc = reduce(acc, r?);
    }
    Ok(acc)
}

/// Runs `f` on every shard in parallel and gathers each shard's answer or
/// error separately; a shard that has not answered by `deadline` gets
/// [`SubmitError::Timeout`] while the others' answers are kept.
pub async fn broadcast<F, Fut, T>(f: F, deadline: Duration) -> Vec<Result<T, SubmitError>>
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    gather(f, Some(Instant::now() + deadline)).await
}

async fn gather<F, Fut, T>(f: F, deadline: Option<Instant>) -> Vec<Result<T, SubmitError>>
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    gather_on(0..shard_count(), f, deadline).await
}

/// [`gather`] over `shards`, answers in that order.
pub(crate) async fn gather_on<F, Fut, T>(
    shards: impl Iterator<Item = usize>,
    f: F,
    deadline: Option<Instant>,
) -> Vec<Result<T, SubmitError>>
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let mut pending = Vec::new();
    // Dispatch to everyone first, so all shards work in parallel.
    for shard in shards {
        let f = f.clone();
        pending.push((shard, dispatch(shard, f).await));
    }
    let mut out = Vec::with_capacity(pending.len());
    for (shard, rx) in pending {
        let r = match (rx, deadline) {
            (Err(e), _) => Err(e),
            (Ok(rx), None) => flatten(shard, rx.await),
            (Ok(rx), Some(d)) => match crate::time::timeout_at(d, rx).await {
                Ok(r) => flatten(shard, r),
                Err(_) => Err(SubmitError::Timeout { shard }),
            },
        };
        out.push(r);
    }
    out
}
