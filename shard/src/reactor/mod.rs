//! The reactor: one io_uring per shard.
//!
//! Tasks start operations ([`ops`]) that push a submission entry and return a
//! future owning the operation's memory. Nothing is handed to the kernel at
//! that point: the shard loop calls `Reactor::turn` once per loop turn,
//! which submits everything queued in a single `io_uring_enter`, collects the
//! completions and wakes their tasks. When the shard has nothing to run it
//! parks in that same call, with a timeout for its next timer (EXT_ARG).
//!
//! Three kinds of completions do not belong to an operation slot: wake-ups
//! sent by other shards (MSG_RING), the shard's eventfd (wake-ups from
//! foreign threads) and entries whose result nobody wants (cancels).
#![allow(unsafe_code)]

pub mod bufring;
pub mod iobuf;
pub mod op;
pub mod ops;
pub mod probe;
pub(crate) mod slab;
mod uring;

use std::any::Any;
use std::cell::{Cell, RefCell, RefMut};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types};

pub use bufring::{BufRing, ProvidedBuf};
pub use op::{MultiOp, NextCompletion, Op, QuietOutcome, QuietSend};
pub use slab::Completion;
pub use uring::SetupFlags;

use slab::{Aftermath, Slab, Slot};
use uring::{RawCqe, Uring};

/// Completions with this tag are dropped without looking.
pub(crate) const TAG_IGNORE: u64 = u64::MAX;
/// A wake-up from another shard (MSG_RING).
pub(crate) const TAG_WAKE: u64 = u64::MAX - 1;
/// The shard's eventfd was written by a foreign thread.
pub(crate) const TAG_EVENTFD: u64 = u64::MAX - 2;
/// A MSG_RING wake-up we sent failed; low bits name the target shard.
pub(crate) const TAG_MSG_RING_FAILED: u64 = 0xFFFF_0000_0000_0000;

/// Counters the reactor keeps for the runtime's stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReactorStats {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Entries submitted.
    pub submitted: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Wake-ups received from other shards via MSG_RING.
    pub ring_wakes: u64,
    /// Wake-ups received through the eventfd.
    pub eventfd_wakes: u64,
    /// Bounded multishot operations cancelled because their owner had
    /// their hold limit of completions waiting (it re-arms when it has
    /// caught up).
    pub hold_stops: u64,
}

pub(crate) struct Reactor {
    uring: RefCell<Uring>,
    slab: RefCell<Slab>,
    next_bgid: Cell<u16>,
    /// Owned by the runtime, which outlives every shard.
    eventfd: RawFd,
    eventfd_buf: Box<Cell<u64>>,
    eventfd_armed: Cell<bool>,
    stats: Cell<ReactorStats>,
    cqes: RefCell<Vec<RawCqe>>,
    /// Targets of MSG_RING wake-ups that failed (fall back to eventfd).
    failed_wakes: RefCell<Vec<usize>>,
    /// Entries pushed since the ring was made: with the kernel's count of
    /// those not yet consumed, tells which quiet sends it has issued.
    pushed: Cell<u64>,
    /// Quiet sends not settled yet, in push order: (push sequence, slot,
    /// length).
    quiet: RefCell<std::collections::VecDeque<(u64, u32, u32)>>,
}

impl Reactor {
    pub(crate) fn new(entries: u32, eventfd: RawFd) -> io::Result<Reactor> {
        let uring = Uring::new(entries)?;
        Ok(Reactor {
            uring: RefCell::new(uring),
            slab: RefCell::new(Slab::default()),
            next_bgid: Cell::new(0),
            eventfd,
            eventfd_buf: Box::new(Cell::new(0)),
            eventfd_armed: Cell::new(false),
            stats: Cell::new(ReactorStats::default()),
            cqes: RefCell::new(Vec::with_capacity(256)),
            failed_wakes: RefCell::new(Vec::new()),
            pushed: Cell::new(0),
            quiet: RefCell::new(std::collections::VecDeque::new()),
        })
    }

    pub(crate) fn ring_fd(&self) -> RawFd {
        self.uring.borrow().fd()
    }

    /// The setup flags the kernel accepted for this shard's ring.
    pub(crate) fn setup_flags(&self) -> SetupFlags {
        self.uring.borrow().flags()
    }

    pub(crate) fn stats(&self) -> ReactorStats {
        self.stats.get()
    }

    pub(crate) fn slab_mut(&self) -> RefMut<'_, Slab> {
        self.slab.borrow_mut()
    }

    pub(crate) fn live_ops(&self) -> usize {
        self.slab.borrow().live()
    }

    pub(crate) fn alloc_bgid(&self) -> u16 {
        let id = self.next_bgid.get();
        self.next_bgid.set(id.wrapping_add(1));
        id
    }

    /// # Safety
    /// As [`Uring::register_buf_ring`].
    pub(crate) unsafe fn register_buf_ring(&self, addr: u64, entries: u16, bgid: u16) -> io::Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.uring.borrow().register_buf_ring(addr, entries, bgid) }
    }

    pub(crate) fn unregister_buf_ring(&self, bgid: u16) -> io::Result<()> {
        self.uring.borrow().unregister_buf_ring(bgid)
    }

    /// Starts an operation: allocates a slot, builds the entry from the data
    /// the operation will own and queues it for the next submission.
    /// `yields_fd`: a successful result is a new descriptor (see `slab`).
    ///
    /// # Safety
    /// The entry returned by `build` may only point into heap memory owned
    /// by `data` (or memory that outlives the operation): `data` moves into
    /// the returned future, and from there into the slot if the future is
    /// dropped early, so such memory stays put until the final completion.
    pub(crate) unsafe fn start<T: 'static>(
        &self,
        mut data: T,
        group: Option<BufRing>,
        yields_fd: bool,
        build: impl FnOnce(&mut T) -> squeue::Entry,
    ) -> (u32, T) {
        let idx = self.slab.borrow_mut().insert(group, yields_fd);
        let entry = build(&mut data).user_data(u64::from(idx));
        // SAFETY: the caller guarantees the entry only points at memory kept alive by `data` until the final completion.
        if let Err(e) = unsafe { self.push(&entry) } {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            let after = self.slab.borrow_mut().complete(idx, -errno, 0, false);
            drop(after);
        }
        (idx, data)
    }

    /// # Safety
    /// See [`Uring::push`].
    pub(crate) unsafe fn push(&self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.uring.borrow_mut().push(entry) }?;
        self.pushed.set(self.pushed.get() + 1);
        Ok(())
    }

    /// Starts a quiet send of `buf` on `fd`: a send that never waits
    /// (`MSG_DONTWAIT`), so the kernel issues it within the enter that
    /// submits it, and that posts a completion only when it fails to send
    /// everything (`IOSQE_CQE_SKIP_SUCCESS` with `MSG_WAITALL`: a short
    /// send fails, with the count sent as its result). After that enter a
    /// consumed quiet send without a completion is settled as complete
    /// (see [`settle_quiet`](Self::settle_quiet)): the common case costs
    /// no completion, and no loop turn to take it.
    ///
    /// Without `skip` (kernels that do not report a short send's count with
    /// its failure, see [`probe::quiet_send`]) it is a plain send that never
    /// waits: it always completes, and its owner sees the same outcomes.
    pub(crate) fn start_quiet(&self, fd: RawFd, buf: ProvidedBuf, skip: bool) -> u32 {
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        let idx = self.slab.borrow_mut().insert_quiet(buf);
        let entry = if skip {
            opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | libc::MSG_WAITALL)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
        } else {
            opcode::Send::new(types::Fd(fd), ptr, len).flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT).build()
        };
        // SAFETY: the entry points into the group buffer the slot holds (lent) until the send is settled or its completion arrives; the group's memory is mapped for as long as any of its buffers is out.
        match unsafe { self.push(&entry.user_data(u64::from(idx))) } {
            Ok(()) if skip => self.quiet.borrow_mut().push_back((self.pushed.get() - 1, idx, len)),
            Ok(()) => {}
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                drop(self.slab.borrow_mut().complete(idx, -errno, 0, false));
            }
        }
        idx
    }

    /// Settles the quiet sends the kernel has consumed and posted no
    /// completion for, after the completions were dispatched: each sent
    /// everything. Not while completions wait in the kernel's overflow
    /// list, where a quiet send's failure could be.
    fn settle_quiet(&self) {
        if self.quiet.borrow().is_empty() {
            return;
        }
        let consumed = {
            let mut uring = self.uring.borrow_mut();
            if uring.cq_overflow() {
                return;
            }
            self.pushed.get() - uring.pending() as u64
        };
        loop {
            let next = {
                let mut quiet = self.quiet.borrow_mut();
                match quiet.front() {
                    Some(&(seq, idx, len)) if seq < consumed => {
                        quiet.pop_front();
                        Some((idx, len))
                    }
                    _ => None,
                }
            };
            let Some((idx, len)) = next else { return };
            let after = self.slab.borrow_mut().settle(idx, len);
            if let Some(w) = after.waker {
                w.wake();
            }
            drop(after.lent);
        }
    }

    /// Whether an owner waits for a quiet send to settle (the next enter
    /// must not sleep before it is).
    fn quiet_waited_for(&self) -> bool {
        let quiet = self.quiet.borrow();
        if quiet.is_empty() {
            return false;
        }
        let slab = self.slab.borrow();
        quiet.iter().any(|&(_, idx, _)| slab.is_urgent(idx))
    }

    /// The owner of slot `idx` is gone. Parks `keep` until the kernel is
    /// done and submits a cancel; returns what may be dropped right away.
    pub(crate) fn abandon(&self, idx: u32, keep: Option<Box<dyn Any>>) -> (Option<Box<dyn Any>>, Slot) {
        let (in_flight, keep, leftovers) = self.slab.borrow_mut().abandon(idx, keep);
        if in_flight {
            let cancel = opcode::AsyncCancel::new(u64::from(idx)).build().user_data(TAG_IGNORE);
            // SAFETY: a cancel entry carries no pointers.
            let _ = unsafe { self.push(&cancel) };
        }
        (keep, leftovers)
    }

    /// Submits a cancel for the operation in slot `idx`, which keeps its
    /// owner: its completions, the final `ECANCELED` one included, arrive
    /// as usual.
    pub(crate) fn cancel(&self, idx: u32) -> io::Result<()> {
        let cancel = opcode::AsyncCancel::new(u64::from(idx)).build().user_data(TAG_IGNORE);
        // SAFETY: a cancel entry carries no pointers.
        unsafe { self.push(&cancel) }
    }

    /// Closes `fd` through the ring, after every entry queued before it (so
    /// the number cannot be reused under an operation still queued), without
    /// waiting for the result.
    pub(crate) fn close_detached(&self, fd: RawFd) {
        let entry = opcode::Close::new(types::Fd(fd)).build().user_data(TAG_IGNORE);
        // SAFETY: a close entry carries no pointers.
        if unsafe { self.push(&entry) }.is_err() {
            // SAFETY: the caller gave up the descriptor; closing it directly is the fallback when the ring cannot take the entry.
            unsafe { libc::close(fd) };
        }
    }

    /// Queues a MSG_RING wake-up for the shard whose ring is `target_fd`.
    /// Our own completion is skipped unless it fails.
    pub(crate) fn wake_ring(&self, target_fd: RawFd, target_shard: usize) {
        let entry = opcode::MsgRingData::new(types::Fd(target_fd), 0, TAG_WAKE, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(TAG_MSG_RING_FAILED | target_shard as u64);
        // SAFETY: a MSG_RING data entry carries no pointers into our memory.
        if unsafe { self.push(&entry) }.is_err() {
            self.failed_wakes.borrow_mut().push(target_shard);
        }
    }

    /// Targets whose MSG_RING wake-up failed since the last call.
    pub(crate) fn take_failed_wakes(&self) -> Vec<usize> {
        std::mem::take(&mut *self.failed_wakes.borrow_mut())
    }

    /// Keeps a read pending on the eventfd so foreign threads can wake a
    /// parked shard.
    pub(crate) fn arm_eventfd(&self) {
        if self.eventfd_armed.get() {
            return;
        }
        let entry = opcode::Read::new(types::Fd(self.eventfd), self.eventfd_buf.as_ptr().cast(), 8)
            .build()
            .user_data(TAG_EVENTFD);
        // SAFETY: the read targets `eventfd_buf`, a heap cell owned by the reactor; teardown cancels this read and waits for its completion (`quiesce`) before the reactor is dropped.
        if unsafe { self.push(&entry) }.is_ok() {
            self.eventfd_armed.set(true);
        }
    }

    /// One loop turn of I/O: submit what is queued, wait for at least one
    /// completion when `park` (bounded by `timeout`), then dispatch.
    pub(crate) fn turn(&self, park: bool, timeout: Option<Duration>) -> io::Result<usize> {
        let (submitted, wait) = {
            let mut uring = self.uring.borrow_mut();
            let pending = uring.pending();
            let wait = park && !uring.has_completions() && !self.quiet_waited_for();
            uring.enter(u32::from(wait), if wait { timeout } else { None })?;
            (pending, wait)
        };
        let mut s = self.stats.get();
        s.enters += 1;
        s.submitted += submitted as u64;
        self.stats.set(s);
        let _ = wait;
        let n = self.dispatch();
        self.settle_quiet();
        Ok(n)
    }

    /// Drains the completion queue, waking tasks outside any borrow.
    fn dispatch(&self) -> usize {
        let mut total = 0;
        loop {
            let mut batch = std::mem::take(&mut *self.cqes.borrow_mut());
            batch.clear();
            self.uring.borrow_mut().reap(&mut batch, 256);
            let n = batch.len();
            for cqe in batch.drain(..) {
                self.dispatch_one(cqe);
            }
            *self.cqes.borrow_mut() = batch;
            total += n;
            if n < 256 {
                break;
            }
        }
        let mut s = self.stats.get();
        s.completions += total as u64;
        self.stats.set(s);
        total
    }

    fn dispatch_one(&self, cqe: RawCqe) {
        match cqe.user_data {
            TAG_IGNORE => {}
            TAG_WAKE => self.bump(|s| s.ring_wakes += 1),
            TAG_EVENTFD => {
                self.eventfd_armed.set(false);
                self.bump(|s| s.eventfd_wakes += 1);
            }
            tag if tag & TAG_MSG_RING_FAILED == TAG_MSG_RING_FAILED => {
                self.failed_wakes.borrow_mut().push((tag & 0xFFFF_FFFF) as usize);
            }
            idx => {
                let more = Uring::more(cqe.flags);
                let after: Aftermath =
                    self.slab.borrow_mut().complete(idx as u32, cqe.result, cqe.flags, more);
                if after.cancel {
                    // Submitted with the next enter, before that enter runs
                    // the kernel's deferred completion work (DEFER_TASKRUN):
                    // the operation posts at most what that one pass had
                    // in progress after this.
                    let _ = self.cancel(idx as u32);
                    self.bump(|s| s.hold_stops += 1);
                }
                if let Some(w) = after.waker {
                    w.wake();
                }
                drop(after.garbage);
                drop(after.dropped);
            }
        }
    }

    fn bump(&self, f: impl FnOnce(&mut ReactorStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Cancels every operation still in flight and waits (up to `limit`) for
    /// their final completions, so no memory the kernel may write is freed.
    /// `after_turn` runs after each wait: the caller drops the tasks the
    /// completions woke, whose operations hold their slots until dropped.
    /// Returns how many operations were still in flight when time ran out.
    pub(crate) fn quiesce(&self, limit: Duration, mut after_turn: impl FnMut()) -> usize {
        let deadline = std::time::Instant::now() + limit;
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(TAG_IGNORE);
        // SAFETY: a cancel entry carries no pointers.
        let _ = unsafe { self.push(&cancel_all) };
        loop {
            let pending = self.live_ops() + usize::from(self.eventfd_armed.get());
            let now = std::time::Instant::now();
            if pending == 0 || now >= deadline {
                return pending;
            }
            if self.turn(true, Some((deadline - now).min(Duration::from_millis(50)))).is_err() {
                return pending;
            }
            after_turn();
            // Operations started while we were waiting (a dropped future's
            // cleanup, say) need cancelling too.
            // SAFETY: as above.
            let _ = unsafe { self.push(&cancel_all) };
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        let left = self.slab.borrow().live() + usize::from(self.eventfd_armed.get());
        if left > 0 {
            // The kernel may still write into memory these operations own:
            // leak it rather than free it under the kernel's feet.
            let slab = std::mem::take(&mut *self.slab.borrow_mut());
            std::mem::forget(slab);
            let buf = std::mem::replace(&mut self.eventfd_buf, Box::new(Cell::new(0)));
            std::mem::forget(buf);
            tracing::warn!(
                operations = left,
                "io_uring torn down with operations in flight; their memory is leaked"
            );
        }
    }
}

pub(crate) fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; a negative return is an error. It stays blocking: io_uring reads of a non-blocking fd would fail with EAGAIN instead of waiting.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes the eventfd of another shard (or our own) to wake it.
pub(crate) fn write_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor; a failure (EAGAIN on counter overflow) means the target is already awake.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), 8);
    }
}
