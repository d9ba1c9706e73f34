//! Operation slots: where an in-flight operation's completions, waker and
//! (once its future is gone) its memory wait for the kernel.
//!
//! The lifecycle of a slot, after monoio's:
//! - *submitted*: the future is alive; completions queue here and wake it.
//! - *ignored*: the future was dropped before the final completion. Its
//!   buffers and fds are parked in `keep`, a cancel was submitted, and the
//!   slot is freed only when the final completion (no `MORE` flag) arrives.
//!   Only then is `keep` dropped, so the kernel never writes freed memory.
//! - *done*: the final completion arrived; the slot is freed as soon as the
//!   future has taken what it wants (or immediately if ignored).
//!
//! What the kernel hands back is owned from the moment its completion is
//! recorded: a picked buffer becomes a [`ProvidedBuf`], a new descriptor
//! (accept) an `OwnedFd`. So a completion nobody takes (the operation was
//! dropped, or ended with completions still queued) returns the buffer to
//! its ring and closes the descriptor instead of leaking them.
#![allow(unsafe_code)]

use std::any::Any;
use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::task::Waker;

use super::bufring::{BufRing, ProvidedBuf};

/// A completion as the owner of an operation sees it.
#[derive(Debug)]
pub struct Completion {
    /// The CQE result: >= 0 on success, `-errno` on failure.
    pub result: i32,
    /// The CQE flags.
    pub flags: u32,
    /// The buffer the kernel picked, for buffer-select operations.
    pub buf: Option<ProvidedBuf>,
    /// The descriptor the kernel created, for operations that make one
    /// (accept): closed when the completion is dropped unless taken.
    fd: Option<OwnedFd>,
}

impl Completion {
    /// Takes the descriptor this completion carries (an accepted
    /// connection), if any; otherwise it is closed with the completion.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// Whether this is the operation's last completion (no `MORE` flag).
    pub fn is_final(&self) -> bool {
        !io_uring::cqueue::more(self.flags)
    }

    /// The result as `io::Result`, with `-errno` turned into an error.
    pub fn io_result(&self) -> std::io::Result<u32> {
        if self.result < 0 {
            Err(std::io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as u32)
        }
    }
}

#[derive(Default)]
pub(crate) struct Slot {
    waker: Option<Waker>,
    first: Option<Completion>,
    more: VecDeque<Completion>,
    done: bool,
    ignored: bool,
    keep: Option<Box<dyn Any>>,
    group: Option<BufRing>,
    /// Successful results are new descriptors, owned by the completion.
    yields_fd: bool,
    in_use: bool,
    /// A multishot operation is cancelled once this many of its
    /// completions wait for their owner (0: no limit).
    hold_limit: usize,
    /// The limit was reached and a cancel asked for.
    stopped_at_limit: bool,
    /// A quiet send's buffer (see `Reactor::start_quiet`), lent to the
    /// kernel until the send is settled; the owner gets it back only if
    /// the send did not take all of it.
    lent: Option<ProvidedBuf>,
    /// The owner of a quiet send waits for it to settle: wake it then
    /// (otherwise only a completion, a failure, wakes it).
    urgent: bool,
}

/// What the dispatcher must do after the slab borrow ends: wake a task and
/// drop memory whose drop might re-enter the runtime.
#[derive(Default)]
pub(crate) struct Aftermath {
    pub waker: Option<Waker>,
    pub garbage: Option<Box<dyn Any>>,
    pub dropped: Option<Completion>,
    /// The operation reached its hold limit: submit a cancel for it.
    pub cancel: bool,
    /// A settled quiet send's buffer, back to its group.
    pub lent: Option<ProvidedBuf>,
}

#[derive(Default)]
pub(crate) struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Slab {
    pub(crate) fn insert(&mut self, group: Option<BufRing>, yields_fd: bool) -> u32 {
        self.live += 1;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.in_use = true;
        slot.group = group;
        slot.yields_fd = yields_fd;
        idx
    }

    /// Cancels the multishot operation in slot `idx` once `limit` of its
    /// completions wait unconsumed (see [`Aftermath::cancel`]).
    pub(crate) fn set_hold_limit(&mut self, idx: u32, limit: usize) {
        if let Some(slot) = self.slots.get_mut(idx as usize).filter(|s| s.in_use) {
            slot.hold_limit = limit;
        }
    }

    /// Whether the operation in slot `idx` was cancelled for reaching its
    /// hold limit (asked before its final completion is taken).
    pub(crate) fn stopped_at_limit(&self, idx: u32) -> bool {
        self.slots.get(idx as usize).is_some_and(|s| s.in_use && s.stopped_at_limit)
    }

    /// Operations whose final completion has not arrived yet.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    fn release(&mut self, idx: u32) -> Slot {
        self.live -= 1;
        self.free.push(idx);
        std::mem::take(&mut self.slots[idx as usize])
    }

    /// Records a completion for slot `idx`.
    pub(crate) fn complete(&mut self, idx: u32, result: i32, flags: u32, more: bool) -> Aftermath {
        let Some(slot) = self.slots.get_mut(idx as usize).filter(|s| s.in_use) else {
            return Aftermath::default();
        };
        let buf = match (&slot.group, io_uring::cqueue::buffer_select(flags)) {
            (Some(g), Some(bid)) => g.take(bid, result.max(0) as usize),
            _ => None,
        };
        let fd = if slot.yields_fd && result >= 0 {
            // SAFETY: for an operation that creates descriptors, a non-negative result is a descriptor the kernel just installed in our table for this completion alone; nothing else knows its number yet.
            Some(unsafe { OwnedFd::from_raw_fd(result) })
        } else {
            None
        };
        let completion = Completion { result, flags, buf, fd };
        if slot.ignored {
            let mut after = Aftermath { dropped: Some(completion), ..Aftermath::default() };
            if !more {
                let old = self.release(idx);
                after.garbage = old.keep;
                after.lent = old.lent;
            }
            return after;
        }
        // `first` keeps single-shot operations allocation-free; once a
        // multishot backlog exists, order is kept by queueing behind it.
        if slot.first.is_none() && slot.more.is_empty() {
            slot.first = Some(completion);
        } else {
            slot.more.push_back(completion);
        }
        slot.done = !more;
        let held = usize::from(slot.first.is_some()) + slot.more.len();
        let cancel = more && slot.hold_limit > 0 && !slot.stopped_at_limit && held >= slot.hold_limit;
        slot.stopped_at_limit |= cancel;
        Aftermath { waker: slot.waker.take(), cancel, ..Aftermath::default() }
    }

    /// Starts a slot for a quiet send of `buf`, which the slot holds until
    /// the send is settled.
    pub(crate) fn insert_quiet(&mut self, buf: ProvidedBuf) -> u32 {
        let idx = self.insert(None, false);
        self.slots[idx as usize].lent = Some(buf);
        idx
    }

    /// The kernel consumed quiet send `idx` and posted no completion for
    /// it: it sent all `len` bytes. Its buffer goes back to the group (in
    /// the aftermath); the owner is woken only if it waits for this.
    pub(crate) fn settle(&mut self, idx: u32, len: u32) -> Aftermath {
        let Some(slot) = self.slots.get_mut(idx as usize).filter(|s| s.in_use && !s.done) else {
            // Its completion (a failure) came first.
            return Aftermath::default();
        };
        if slot.ignored {
            return Aftermath { lent: self.release(idx).lent, ..Aftermath::default() };
        }
        slot.first = Some(Completion { result: len as i32, flags: 0, buf: None, fd: None });
        slot.done = true;
        let waker = if slot.urgent { slot.waker.take() } else { None };
        Aftermath { waker, lent: slot.lent.take(), ..Aftermath::default() }
    }

    /// Whether the owner of quiet send `idx` waits for it to settle.
    pub(crate) fn is_urgent(&self, idx: u32) -> bool {
        self.slots.get(idx as usize).is_some_and(|s| s.in_use && !s.done && s.urgent)
    }

    /// Polls quiet send `idx`: once settled, its result and the buffer if
    /// the send did not take all of it (frees the slot). Until then the
    /// owner is woken by a failure, and also by success when `urgent`.
    pub(crate) fn take_quiet(
        &mut self,
        idx: u32,
        waker: &Waker,
        urgent: bool,
    ) -> Option<(i32, Option<ProvidedBuf>)> {
        let slot = &mut self.slots[idx as usize];
        if !slot.done {
            set_waker(&mut slot.waker, waker);
            slot.urgent |= urgent;
            return None;
        }
        let old = self.release(idx);
        Some((old.first.map_or(0, |c| c.result), old.lent))
    }

    /// Single-shot poll: the first completion once the operation is done.
    /// Frees the slot when it returns `Some`.
    pub(crate) fn take_final(&mut self, idx: u32, waker: &Waker) -> Option<Completion> {
        let slot = &mut self.slots[idx as usize];
        if !slot.done {
            set_waker(&mut slot.waker, waker);
            return None;
        }
        self.release(idx).first
    }

    /// Multishot poll: the next completion, or `Ok(None)` when the
    /// operation has ended (and the slot is freed).
    pub(crate) fn take_next(&mut self, idx: u32, waker: &Waker) -> Result<Option<Completion>, ()> {
        let slot = &mut self.slots[idx as usize];
        if let Some(c) = slot.first.take() {
            return Ok(Some(c));
        }
        if let Some(c) = slot.more.pop_front() {
            return Ok(Some(c));
        }
        if slot.done {
            self.release(idx);
            return Ok(None);
        }
        set_waker(&mut slot.waker, waker);
        Err(())
    }

    /// The owner went away. Returns `true` if the operation is still in
    /// flight (the caller must submit a cancel), in which case `keep` is
    /// parked in the slot until the final completion; otherwise the slot is
    /// freed and `keep` handed back to be dropped by the caller.
    pub(crate) fn abandon(
        &mut self,
        idx: u32,
        keep: Option<Box<dyn Any>>,
    ) -> (bool, Option<Box<dyn Any>>, Slot) {
        let slot = &mut self.slots[idx as usize];
        if slot.done {
            let old = self.release(idx);
            return (false, keep, old);
        }
        slot.ignored = true;
        slot.keep = keep;
        slot.waker = None;
        let leftovers =
            Slot { first: slot.first.take(), more: std::mem::take(&mut slot.more), ..Slot::default() };
        (true, None, leftovers)
    }
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(slab: &mut Slab, idx: u32) -> Vec<i32> {
        let mut out = Vec::new();
        while let Ok(Some(c)) = slab.take_next(idx, Waker::noop()) {
            out.push(c.result);
        }
        out
    }

    /// Completions of a multishot operation come out in arrival order even
    /// when some are taken between arrivals (a regression: a completion
    /// landing in the emptied `first` slot jumped the queue).
    #[test]
    fn multishot_completions_keep_arrival_order() {
        let mut slab = Slab::default();
        let idx = slab.insert(None, false);
        for r in [1, 2, 3] {
            drop(slab.complete(idx, r, 0, true));
        }
        assert_eq!(slab.take_next(idx, Waker::noop()).ok().flatten().map(|c| c.result), Some(1));
        drop(slab.complete(idx, 4, 0, true));
        drop(slab.complete(idx, 5, 0, false));
        assert_eq!(results(&mut slab, idx), vec![2, 3, 4, 5]);
        assert_eq!(slab.live(), 0, "the final completion frees the slot");
    }

    #[test]
    fn abandoned_slot_keeps_memory_until_the_final_completion() {
        let mut slab = Slab::default();
        let idx = slab.insert(None, false);
        let keep: Box<dyn Any> = Box::new(vec![0u8; 16]);
        let (in_flight, back, _) = slab.abandon(idx, Some(keep));
        assert!(in_flight && back.is_none(), "memory stays parked while in flight");
        assert_eq!(slab.live(), 1);
        let after = slab.complete(idx, -libc::ECANCELED, 0, false);
        assert!(after.garbage.is_some(), "released with the final completion");
        assert_eq!(slab.live(), 0);
    }

    /// The hold limit asks for one cancel when that many completions wait,
    /// counts only what the owner has not taken, and never fires for a
    /// final completion (nothing left to cancel).
    #[test]
    fn hold_limit_asks_for_one_cancel_when_reached() {
        let mut slab = Slab::default();
        let idx = slab.insert(None, false);
        slab.set_hold_limit(idx, 2);
        assert!(!slab.complete(idx, 1, 0, true).cancel);
        assert_eq!(slab.take_next(idx, Waker::noop()).ok().flatten().map(|c| c.result), Some(1));
        assert!(!slab.complete(idx, 2, 0, true).cancel, "one waiting: below the limit");
        assert!(slab.complete(idx, 3, 0, true).cancel, "two waiting: stop it");
        assert!(!slab.complete(idx, 4, 0, true).cancel, "asked once");
        assert!(slab.stopped_at_limit(idx));
        assert!(!slab.complete(idx, -libc::ECANCELED, 0, false).cancel);
        assert_eq!(results(&mut slab, idx), vec![2, 3, 4, -libc::ECANCELED]);

        let other = slab.insert(None, false);
        slab.set_hold_limit(other, 1);
        assert!(!slab.complete(other, 5, 0, false).cancel, "a final completion needs no cancel");
    }
}
