//! One shard thread: set up, loop, tear down.
//!
//! A loop turn: run up to a budget of ready tasks; fire due timers; drain
//! the mesh rings that have mail; publish our outgoing batches (waking
//! parked peers); then one `io_uring_enter` that submits everything queued
//! this turn and reaps completions. If nothing is ready, that same enter
//! parks until a completion, a wake-up or the next timer.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{RuntimeError, Shared};
use crate::context::{self, Context};
use crate::executor::stall::StallDetector;
use crate::executor::Executor;
use crate::mesh::Endpoint;
use crate::placement::ShardPlacement;
use crate::reactor::Reactor;
use crate::time::Timers;

type MainFn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub(super) struct Start {
    pub shard: usize,
    pub placement: ShardPlacement,
    pub pin: bool,
    pub shared: Arc<Shared>,
    pub endpoint: Endpoint,
    pub main: Option<MainFn>,
}

/// Wraps the user's main so its output lands in `out` and its completion
/// stops the runtime.
pub(super) fn boxed_main<F, Fut, T>(main: F, out: Arc<Mutex<Option<Result<T, RuntimeError>>>>) -> MainFn
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    Box::new(move || {
        Box::pin(async move {
            let result = crate::executor::task::CatchUnwind::new(async move { main().await }).await;
            let result = result.map_err(|e| RuntimeError::MainPanicked(e.to_string()));
            *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            context::with(|c| c.shared.request_stop());
        })
    })
}

/// The shard thread's body.
pub(super) fn run(start: Start) {
    let shared = start.shared.clone();
    let shard = start.shard;
    let mut at_barrier = false;
    let result = catch_unwind(AssertUnwindSafe(|| run_inner(start, &mut at_barrier)));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => shared.fail(e),
        Err(payload) => {
            let message = crate::executor::task::panic_message(&*payload);
            shared.fail(RuntimeError::ShardPanicked { shard, message });
        }
    }
    // Whatever happened, let the others leave the exit barrier.
    if !at_barrier {
        shared.parked_at_exit.fetch_add(1, Ordering::SeqCst);
    }
}

fn run_inner(start: Start, at_barrier: &mut bool) -> Result<(), RuntimeError> {
    let Start { shard, placement, pin, shared, endpoint, main } = start;
    if pin {
        match crate::placement::apply(&placement) {
            Ok(warnings) => warnings.iter().for_each(|w| tracing::debug!(shard, "{w}")),
            Err(e) => tracing::warn!(shard, cpu = placement.cpu, "could not pin shard: {e}"),
        }
    }
    let home = shared.homes[shard].clone();
    let _ = home.thread.set(std::thread::current().id());
    let reactor = Reactor::new(shared.ring_entries, home.eventfd)
        .map_err(|source| RuntimeError::Uring { shard, source })?;
    shared.mesh.ring_fds[shard].store(reactor.ring_fd(), Ordering::Release);
    let ctx = Rc::new(Context {
        id: shard,
        count: shared.n,
        reactor,
        executor: Executor::new(home, StallDetector::new(shard, shared.stall_threshold)),
        timers: Timers::default(),
        mesh: endpoint,
        shared: shared.clone(),
        turns: Default::default(),
        parks: Default::default(),
        poll_window: Cell::new(shared.idle_poll),
        stopping: Default::default(),
        stop_deadline: Default::default(),
        stop_waiters: Default::default(),
        slots: Default::default(),
    });
    context::enter(ctx.clone());
    // Every shard's ring fd must be known before anyone sends a wake-up.
    shared.ready.fetch_add(1, Ordering::SeqCst);
    while shared.ready.load(Ordering::SeqCst) < shared.n && !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_micros(100));
    }
    if let Some(main) = main {
        ctx.executor.spawn("main", main()).detach();
    }
    let result = serve(&ctx);
    *at_barrier = true;
    teardown(&ctx);
    drop(context::leave());
    result
}

/// The loop, until a stop is requested and the grace period is over.
fn serve(ctx: &Context) -> Result<(), RuntimeError> {
    let mut grace_deadline: Option<Instant> = None;
    loop {
        turn(ctx, grace_deadline)?;
        if grace_deadline.is_none() && ctx.shared.stopping.load(Ordering::Relaxed) {
            let deadline = Instant::now() + ctx.shared.grace;
            grace_deadline = Some(deadline);
            begin_stop(ctx, deadline);
        }
        if let Some(deadline) = grace_deadline {
            if ctx.executor.alive() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names = ctx.executor.alive_names(8);
                tracing::info!(
                    shard = ctx.id,
                    tasks = ctx.executor.alive(),
                    ?names,
                    "grace period over: cancelling the tasks left"
                );
                return Ok(());
            }
        }
    }
}

/// One loop turn; see the module docs.
pub(crate) fn turn(ctx: &Context, wake_by: Option<Instant>) -> Result<(), RuntimeError> {
    ctx.turns.set(ctx.turns.get() + 1);
    ctx.executor.run(ctx.shared.budget);
    // One clock read per turn, and none without timers: it also times the
    // park below (a turn is microseconds; timers are not that fine).
    let now = ctx.timers.next_deadline().map(|d| (d, Instant::now()));
    if let Some((_, now)) = now.filter(|(d, now)| d <= now) {
        ctx.timers.fire(now);
    }
    ctx.mesh.poll_incoming(ctx.shared.budget);
    ctx.mesh.poll_space_waiters();
    ctx.mesh.flush();
    for target in ctx.reactor.take_failed_wakes() {
        crate::reactor::write_eventfd(ctx.shared.homes[target].eventfd);
    }
    ctx.reactor.arm_eventfd();
    // A stopping shard whose last task just finished must not park: the
    // loop checks for that right after this turn.
    let finished = ctx.stopping.get() && ctx.executor.alive() == 0;
    let idle = !ctx.executor.has_ready() && !ctx.mesh.has_backlog() && !finished;
    // A stop request arrives by eventfd, so it wakes a parked shard; but
    // once it has arrived the grace deadline bounds every park.
    let stop_seen = ctx.stopping.get() || !ctx.shared.stopping.load(Ordering::Relaxed);
    let result = if idle && stop_seen {
        poll_then_park(ctx, wake_by, now.map(|(_, now)| now))
    } else {
        ctx.reactor.turn(false, None).map(drop)
    };
    result.map(drop).map_err(|source| RuntimeError::Enter { shard: ctx.id, source })
}

/// With nothing to run: keep polling (completions and mail) for a short
/// while before parking. Waking a parked thread on another core costs tens
/// of microseconds; a shard that is about to get more work saves that, and
/// the peer that sends it saves the wake-up.
///
/// The window adapts, like Linux's haltpoll: it grows while work keeps
/// arriving within it (a poll that finds work, or a park that ends sooner
/// than the longest window would have spun) and shrinks when it spins in
/// vain, down to zero. A lightly loaded shard therefore parks at once and
/// burns no CPU polling; a busy one spins across short gaps.
///
/// `now`: the turn's clock reading, if it took one.
fn poll_then_park(ctx: &Context, wake_by: Option<Instant>, now: Option<Instant>) -> std::io::Result<()> {
    let mailbox = &ctx.shared.homes[ctx.id].mailbox;
    let wake_at = match (ctx.timers.next_deadline(), wake_by) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let max = ctx.shared.idle_poll;
    let window = ctx.poll_window.get();
    if !window.is_zero() {
        let start = Instant::now();
        loop {
            if ctx.reactor.turn(false, None)? > 0 || ctx.executor.has_ready() || mailbox.has_mail() {
                ctx.poll_window.set(grow(window, max));
                return Ok(());
            }
            let now = Instant::now();
            if wake_at.is_some_and(|d| d <= now) || now.duration_since(start) >= window {
                break;
            }
            std::hint::spin_loop();
        }
        ctx.poll_window.set(shrink(window, max));
    }
    if !mailbox.prepare_park() {
        return ctx.reactor.turn(false, None).map(drop);
    }
    ctx.parks.set(ctx.parks.get() + 1);
    // The turn's reading serves unless this spun (then it is stale), or
    // the spin window needs the park's length.
    let parked = match now {
        Some(now) if window.is_zero() && max.is_zero() => Some(now),
        _ if wake_at.is_some() || !max.is_zero() => Some(Instant::now()),
        _ => None,
    };
    let timeout = wake_at.zip(parked).map(|(d, parked)| d.saturating_duration_since(parked));
    let r = ctx.reactor.turn(true, timeout);
    mailbox.unparked();
    if !max.is_zero() && parked.is_some_and(|p| p.elapsed() < max) {
        ctx.poll_window.set(grow(ctx.poll_window.get(), max));
    }
    r.map(drop)
}

/// The next poll window after work arrived in time.
fn grow(window: Duration, max: Duration) -> Duration {
    (window * 2).max(max / 8).min(max)
}

/// The next poll window after spinning in vain.
fn shrink(window: Duration, max: Duration) -> Duration {
    let half = window / 2;
    if half < max / 8 {
        Duration::ZERO
    } else {
        half
    }
}

/// Tells local listeners ([`crate::stopping`]) that the runtime is stopping.
fn begin_stop(ctx: &Context, deadline: Instant) {
    ctx.stop_deadline.set(Some(deadline));
    ctx.stopping.set(true);
    ctx.stop_waiters.wake_all();
}

/// Cancels what is left, waits for the kernel to let go of every buffer,
/// and waits for the other shards so no message arrives after we are gone.
fn teardown(ctx: &Context) {
    // Values kept in slots may hold tasks' wakers or handles: let them go
    // with everything else (taken out first: their drops may look again).
    let slots = std::mem::take(&mut *ctx.slots.borrow_mut());
    drop(slots);
    let mut cancelled = ctx.executor.drop_queued();
    ctx.timers.clear();
    cancelled += ctx.mesh.discard_incoming();
    cancelled += ctx.executor.drop_queued();
    // A cancelled operation completes and wakes its task; that task's
    // future (and so the operation's slot) goes only when it is dropped.
    let mut dropped = 0;
    let left = ctx.reactor.quiesce(Duration::from_secs(2), || dropped += ctx.executor.drop_queued());
    cancelled += dropped + ctx.executor.drop_queued();
    ctx.mesh.flush();
    let _ = ctx.reactor.turn(false, None);
    // Exit barrier: after it, nobody sends to anybody.
    let n = ctx.shared.n;
    ctx.shared.parked_at_exit.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(2);
    while ctx.shared.parked_at_exit.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        ctx.mesh.discard_incoming();
        ctx.executor.drop_queued();
        std::thread::sleep(Duration::from_micros(200));
    }
    cancelled += ctx.mesh.discard_incoming() + ctx.executor.drop_queued();
    let alive = ctx.executor.alive();
    if alive > 0 || left > 0 {
        tracing::debug!(shard = ctx.id, cancelled, alive, in_flight = left, "shard stopped with work left");
    }
}

#[cfg(test)]
mod tests {
    use super::{grow, shrink};
    use std::time::Duration;

    #[test]
    fn poll_window_grows_to_the_max_and_shrinks_to_zero() {
        let max = Duration::from_micros(64);
        assert_eq!(grow(Duration::ZERO, max), Duration::from_micros(8));
        assert_eq!(grow(Duration::from_micros(8), max), Duration::from_micros(16));
        assert_eq!(grow(Duration::from_micros(48), max), max);
        assert_eq!(shrink(max, max), Duration::from_micros(32));
        assert_eq!(shrink(Duration::from_micros(16), max), Duration::from_micros(8));
        assert_eq!(shrink(Duration::from_micros(8), max), Duration::ZERO);
        assert_eq!(grow(Duration::ZERO, Duration::ZERO), Duration::ZERO);
    }
}
