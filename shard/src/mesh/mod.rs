//! The mesh: how shards talk. An N x N matrix of bounded SPSC rings, one
//! per ordered pair of shards, plus one mailbox per shard saying which
//! rings have something for it.
//!
//! - Sending stages a message on the ring to the target; staged messages
//!   are published in one batch at the end of the loop turn (or earlier if
//!   the ring fills up).
//! - Publishing sets the sender's bit in the target's mailbox. Only if the
//!   target is parked does the sender wake it, and at most once per park:
//!   by default with an IORING_OP_MSG_RING entry on the sender's own ring,
//!   submitted with the rest of its turn (no extra syscall), or with an
//!   eventfd write (`WakeMode::EventFd`).
//! - A receiver reads its mailbox (N/64 words) and drains only the rings
//!   whose bit was set: no N^2 scan on big machines.
//! - A full ring is backpressure: the sending future waits, and the
//!   receiver, after draining, tells the waiting sender through the same
//!   mailbox mechanism. No queue anywhere is unbounded.
//!
//! Messages are closures to run on the target (`submit_to` and friends are
//! built on them) or tasks woken on the "wrong" shard going home.

pub mod channel;
pub mod foreign;
pub mod mail;
pub mod ring;
pub(crate) mod sync;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::thread::ThreadId;

use crate::executor::{Home, Job};
use ring::{Consumer, Producer};

/// How a sender wakes a parked shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WakeMode {
    /// IORING_OP_MSG_RING from the sender's ring (batched with its turn).
    #[default]
    MsgRing,
    /// A write to the target's eventfd (one syscall per wake).
    EventFd,
}

/// A closure run on the target shard.
pub(crate) type RunFn = Box<dyn FnOnce() + Send>;

/// A task woken on another shard, going home. It may only be dropped on its
/// home thread (a `!Send` future lives inside); dropped anywhere else it is
/// leaked rather than dropped.
pub(crate) struct WakeJob {
    job: Option<Job>,
    home: ThreadId,
}

impl WakeJob {
    fn into_job(mut self) -> Option<Job> {
        self.job.take()
    }
}

impl Drop for WakeJob {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            if std::thread::current().id() != self.home {
                std::mem::forget(job);
            }
        }
    }
}

/// A message on a mesh ring.
pub(crate) enum Msg {
    Run(RunFn),
    Wake(WakeJob),
}

/// Counters kept by a shard's mesh endpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct MeshStats {
    /// Messages sent to other shards.
    pub sent: u64,
    /// Messages received from other shards.
    pub received: u64,
    /// Batches published.
    pub batches: u64,
    /// Wake-ups this shard sent to parked shards.
    pub wakes_sent: u64,
    /// Times a sender found a ring full and had to wait.
    pub full_waits: u64,
    /// Messages waiting in this shard's inbound rings when the stats were
    /// taken (ring occupancy; a gauge).
    pub queued_in: u64,
}

/// The runtime-wide part of the mesh.
#[derive(Debug)]
pub(crate) struct MeshShared {
    pub n: usize,
    pub mode: WakeMode,
    pub homes: Vec<Arc<Home>>,
    pub ring_fds: Vec<AtomicI32>,
    /// `[from * n + to]`: the sender `from` waits for room on its ring to `to`.
    pub space_wanted: Vec<AtomicBool>,
}

/// The rings of one shard: producers to every other shard, consumers from
/// every other shard.
pub(crate) struct Endpoint {
    me: usize,
    shared: Arc<MeshShared>,
    out: RefCell<Vec<Option<Producer<Msg>>>>,
    inp: RefCell<Vec<Option<Consumer<Msg>>>>,
    dirty: RefCell<Vec<usize>>,
    is_dirty: RefCell<Vec<bool>>,
    backlog: RefCell<Vec<usize>>,
    space_waiters: RefCell<Vec<(usize, Waker)>>,
    scratch: RefCell<Vec<Msg>>,
    stats: Cell<MeshStats>,
}

/// Builds the N x N matrix: one endpoint per shard.
pub(crate) fn build(shared: &Arc<MeshShared>, capacity: usize) -> Vec<Endpoint> {
    let n = shared.n;
    let mut outs: Vec<Vec<Option<Producer<Msg>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut inps: Vec<Vec<Option<Consumer<Msg>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (p, c) = ring::ring(capacity);
                outs[from][to] = Some(p);
                inps[to][from] = Some(c);
            }
        }
    }
    outs.into_iter()
        .zip(inps)
        .enumerate()
        .map(|(me, (out, inp))| Endpoint {
            me,
            shared: shared.clone(),
            out: RefCell::new(out),
            inp: RefCell::new(inp),
            dirty: RefCell::new(Vec::new()),
            is_dirty: RefCell::new(vec![false; n]),
            backlog: RefCell::new(Vec::new()),
            space_waiters: RefCell::new(Vec::new()),
            scratch: RefCell::new(Vec::new()),
            stats: Cell::new(MeshStats::default()),
        })
        .collect()
}

impl Endpoint {
    pub(crate) fn stats(&self) -> MeshStats {
        let queued = self.inp.borrow_mut().iter_mut().flatten().map(|c| c.len_visible() as u64).sum();
        MeshStats { queued_in: queued, ..self.stats.get() }
    }

    fn bump(&self, f: impl FnOnce(&mut MeshStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Stages `msg` for `target`; hands it back if the ring is full even
    /// after publishing what was staged.
    pub(crate) fn try_push(&self, target: usize, msg: Msg) -> Result<(), Msg> {
        let mut out = self.out.borrow_mut();
        let Some(p) = out.get_mut(target).and_then(Option::as_mut) else {
            return Err(msg);
        };
        let msg = match p.push(msg) {
            Ok(()) => {
                drop(out);
                self.mark_dirty(target);
                self.bump(|s| s.sent += 1);
                return Ok(());
            }
            Err(m) => m,
        };
        // Full counting staged items: publish them so the receiver can
        // start draining, then try once more.
        if p.publish() > 0 {
            drop(out);
            self.bump(|s| s.batches += 1);
            self.notify(target);
            out = self.out.borrow_mut();
        }
        let Some(p) = out.get_mut(target).and_then(Option::as_mut) else {
            return Err(msg);
        };
        let pushed = p.push(msg);
        drop(out);
        if pushed.is_ok() {
            self.mark_dirty(target);
            self.bump(|s| s.sent += 1);
        }
        pushed
    }

    fn mark_dirty(&self, target: usize) {
        let mut flags = self.is_dirty.borrow_mut();
        if !flags[target] {
            flags[target] = true;
            self.dirty.borrow_mut().push(target);
        }
    }

    /// Sends `msg`, waiting while the ring to `target` is full.
    pub(crate) async fn send(&self, target: usize, msg: Msg) {
        let mut msg = Some(msg);
        poll_fn(|cx| {
            let Some(m) = msg.take() else { return Poll::Ready(()) };
            match self.try_push(target, m) {
                Ok(()) => Poll::Ready(()),
                Err(m) => {
                    // Ask the receiver to tell us when it made room, then
                    // re-check so a drain between the two is not missed.
                    let flag = &self.shared.space_wanted[self.me * self.shared.n + target];
                    flag.store(true, Ordering::SeqCst);
                    match self.try_push(target, m) {
                        Ok(()) => Poll::Ready(()),
                        Err(m) => {
                            msg = Some(m);
                            self.bump(|s| s.full_waits += 1);
                            self.space_waiters.borrow_mut().push((target, cx.waker().clone()));
                            Poll::Pending
                        }
                    }
                }
            }
        })
        .await
    }

    /// Routes a task woken on this shard back to shard `home`; hands the
    /// job back when the ring is full (the caller then uses the foreign
    /// queue, which never blocks a waker).
    pub(crate) fn wake_remote(&self, home: usize, job: Job) -> Option<Job> {
        let home_thread = self.shared.homes[home].thread.get().copied();
        let Some(home_thread) = home_thread else { return Some(job) };
        let msg = Msg::Wake(WakeJob { job: Some(job), home: home_thread });
        match self.try_push(home, msg) {
            Ok(()) => {
                // A wake-up is latency-critical: publish it now rather than
                // at the end of the turn, so the home shard can run the task
                // while we go on (a parked home is still woken once, with
                // the rest of our turn's submissions).
                self.publish_to(home);
                None
            }
            Err(Msg::Wake(w)) => w.into_job(),
            Err(Msg::Run(_)) => None,
        }
    }

    /// Publishes every staged batch and wakes the targets that are parked.
    pub(crate) fn flush(&self) {
        let targets = std::mem::take(&mut *self.dirty.borrow_mut());
        if targets.is_empty() {
            return;
        }
        for &t in &targets {
            self.is_dirty.borrow_mut()[t] = false;
            self.publish_to(t);
        }
        let mut dirty = self.dirty.borrow_mut();
        if dirty.is_empty() {
            *dirty = targets;
            dirty.clear();
        }
    }

    /// Publishes what is staged for `target` right away.
    fn publish_to(&self, target: usize) {
        let published = self.out.borrow_mut()[target].as_mut().map_or(0, |p| p.publish());
        if published > 0 {
            self.bump(|s| s.batches += 1);
            self.notify(target);
        }
    }

    /// Tells `target` there is something for it from us; wakes it if parked.
    fn notify(&self, target: usize) {
        if self.shared.homes[target].mailbox.notify(self.me) {
            self.wake(target);
        }
    }

    /// Delivers a wake-up to a parked shard.
    pub(crate) fn wake(&self, target: usize) {
        self.bump(|s| s.wakes_sent += 1);
        let fd = self.shared.ring_fds[target].load(Ordering::Acquire);
        match self.shared.mode {
            WakeMode::MsgRing if fd >= 0 => crate::context::with(|c| c.reactor.wake_ring(fd, target)),
            _ => crate::reactor::write_eventfd(self.shared.homes[target].eventfd),
        }
    }

    /// Drains the rings that have mail for us, running closures and queueing
    /// woken tasks; at most `budget` messages per ring per call.
    pub(crate) fn poll_incoming(&self, budget: usize) -> usize {
        let n = self.shared.n;
        let mut sources = std::mem::take(&mut *self.backlog.borrow_mut());
        self.shared.homes[self.me].mailbox.take(|s| {
            if !sources.contains(&s) {
                sources.push(s)
            }
        });
        let mut handled = 0;
        let mut backlog = Vec::new();
        for src in sources {
            if src == n {
                let jobs = self.shared.homes[self.me].take_foreign();
                handled += jobs.len();
                crate::context::with(|c| jobs.into_iter().for_each(|j| c.executor.enqueue(j)));
                continue;
            }
            handled += self.drain_from(src, budget, &mut backlog);
        }
        *self.backlog.borrow_mut() = backlog;
        self.bump(|s| s.received += handled as u64);
        handled
    }

    fn drain_from(&self, src: usize, budget: usize, backlog: &mut Vec<usize>) -> usize {
        let n = self.shared.n;
        let mut scratch = std::mem::take(&mut *self.scratch.borrow_mut());
        let more = {
            let mut inp = self.inp.borrow_mut();
            let Some(c) = inp.get_mut(src).and_then(Option::as_mut) else { return 0 };
            c.drain(budget, |m| scratch.push(m));
            !c.is_empty()
        };
        if more {
            backlog.push(src);
        }
        // We made room: tell a sender that waits for it.
        if self.shared.space_wanted[src * n + self.me].swap(false, Ordering::SeqCst) {
            self.notify(src);
        }
        let count = scratch.len();
        for msg in scratch.drain(..) {
            match msg {
                Msg::Run(f) => f(),
                Msg::Wake(w) => {
                    if let Some(job) = w.into_job() {
                        crate::context::with(|c| c.executor.enqueue(job));
                    }
                }
            }
        }
        *self.scratch.borrow_mut() = scratch;
        count
    }

    /// Wakes senders that were waiting for room on a ring that has some now.
    pub(crate) fn poll_space_waiters(&self) {
        if self.space_waiters.borrow().is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut *self.space_waiters.borrow_mut());
        let mut still = Vec::new();
        for (t, w) in waiters {
            let free = self.out.borrow_mut()[t].as_mut().map_or(1, |p| p.free());
            if free > 0 {
                w.wake();
            } else {
                still.push((t, w));
            }
        }
        self.space_waiters.borrow_mut().extend(still);
    }

    /// Whether messages are left over from a budget-limited drain.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.borrow().is_empty()
    }

    /// Drops everything queued for us (shutdown): closures are dropped
    /// without running, woken tasks are cancelled.
    pub(crate) fn discard_incoming(&self) -> usize {
        let mut dropped = 0;
        let n = self.shared.n;
        for src in 0..n {
            let mut items = Vec::new();
            if let Some(c) = self.inp.borrow_mut()[src].as_mut() {
                c.drain(usize::MAX, |m| items.push(m));
            }
            dropped += items.len();
            drop(items);
        }
        dropped += self.shared.homes[self.me].take_foreign().len();
        dropped
    }
}
