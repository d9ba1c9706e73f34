//! The shard's io_uring instance: setup with the best flags the kernel takes,
//! pushing entries, and the one `io_uring_enter` per loop turn.
//!
//! This is one of the few places that talk to the kernel directly, so the
//! unsafe code of the reactor's submission side lives here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, squeue, types, IoUring};

/// `IORING_ENTER_GETEVENTS` (linux/io_uring.h).
const ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_EXT_ARG` (linux/io_uring.h).
const ENTER_EXT_ARG: u32 = 1 << 3;
/// `IORING_ENTER_REGISTERED_RING` (linux/io_uring.h): the fd argument is an
/// index into the task's registered ring table.
const ENTER_REGISTERED_RING: u32 = 1 << 4;
/// `IORING_REGISTER_RING_FDS` (linux/io_uring.h).
const REGISTER_RING_FDS: libc::c_uint = 20;
/// `IORING_UNREGISTER_RING_FDS` (linux/io_uring.h).
const UNREGISTER_RING_FDS: libc::c_uint = 21;

/// `struct io_uring_rsrc_update` (linux/io_uring.h).
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// Registers `fd` in the calling thread's ring table; `None` if refused.
/// The table is per thread, so this must run on the shard that enters.
fn register_ring_fd(fd: RawFd) -> Option<u32> {
    // offset u32::MAX: let the kernel pick a free slot and write it back.
    let mut up = RsrcUpdate { offset: u32::MAX, resv: 0, data: fd as u64 };
    // SAFETY: `up` is a valid io_uring_rsrc_update the kernel reads and writes during the call only; nr_args is 1.
    let r = unsafe {
        libc::syscall(libc::SYS_io_uring_register, fd, REGISTER_RING_FDS, std::ptr::from_mut(&mut up), 1)
    };
    (r == 1).then_some(up.offset)
}

impl Drop for Uring {
    /// The table holds a reference to the ring: give it back, or the ring
    /// would outlive its descriptor until the thread exits.
    fn drop(&mut self) {
        if let Some(index) = self.registered.take() {
            let mut up = RsrcUpdate { offset: index, resv: 0, data: 0 };
            // SAFETY: as in `register_ring_fd`; unregistering an index we registered on this thread (a failure only leaks until exit).
            let _ = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.ring.as_raw_fd(),
                    UNREGISTER_RING_FDS,
                    std::ptr::from_mut(&mut up),
                    1,
                )
            };
        }
    }
}

/// Setup flags the ring was created with, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetupFlags {
    /// IORING_SETUP_SINGLE_ISSUER: only the shard thread submits.
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN: completion work runs only when we enter.
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN: no IPI to interrupt the thread for task work.
    pub coop_taskrun: bool,
}

/// A ring and how it was set up.
pub(crate) struct Uring {
    ring: IoUring,
    flags: SetupFlags,
    /// Our ring in the thread's registered ring table (5.18+): `enter`
    /// passes this index instead of the fd, which spares the kernel an fd
    /// lookup and reference per call (fget/fput were ~4% of a proxy shard's
    /// CPU). `None` when the kernel refused; we then pass the fd.
    registered: Option<u32>,
}

/// One completion, copied out of the completion queue so the queue can be
/// released before any waker runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawCqe {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Uring {
    /// Creates a ring with `entries` submission slots, trying the strongest
    /// set of setup flags first and falling back when the kernel refuses.
    pub(crate) fn new(entries: u32) -> io::Result<Uring> {
        let attempts = [
            SetupFlags { single_issuer: true, defer_taskrun: true, coop_taskrun: false },
            SetupFlags { single_issuer: true, defer_taskrun: false, coop_taskrun: true },
            SetupFlags { single_issuer: false, defer_taskrun: false, coop_taskrun: true },
            SetupFlags::default(),
        ];
        let mut last_err = None;
        for flags in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(entries * 4).setup_clamp();
            if flags.single_issuer {
                builder.setup_single_issuer();
            }
            if flags.defer_taskrun {
                builder.setup_defer_taskrun();
            }
            if flags.coop_taskrun {
                builder.setup_coop_taskrun();
            }
            match builder.build(entries) {
                Ok(ring) => {
                    let registered = register_ring_fd(ring.as_raw_fd());
                    return Ok(Uring { ring, flags, registered });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    pub(crate) fn flags(&self) -> SetupFlags {
        self.flags
    }

    pub(crate) fn params(&self) -> &io_uring::Parameters {
        self.ring.params()
    }

    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Number of entries pushed but not yet handed to the kernel.
    pub(crate) fn pending(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Queues an entry; when the submission queue is full it is flushed to
    /// the kernel first, so a push never fails for lack of room.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid (and every buffer untouched by
    /// Rust code where the kernel writes) until the completion for it has
    /// been reaped. The reactor's operation slots guarantee this by owning
    /// the memory until then.
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the entry's memory outlives the operation, which is the only requirement of `push`.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.enter(0, None)?;
        }
    }

    /// Submits everything queued and processes completions. Waits for at
    /// least `wait_for` completions, but never longer than `timeout`
    /// (EXT_ARG), so a parked shard still wakes for its next timer.
    pub(crate) fn enter(&mut self, wait_for: u32, timeout: Option<Duration>) -> io::Result<usize> {
        let to_submit = self.ring.submission().len() as u32;
        // GETEVENTS always: with DEFER_TASKRUN the kernel only posts
        // completions when asked to, even when we do not want to wait.
        let mut flags = ENTER_GETEVENTS;
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                flags |= ENTER_EXT_ARG;
                self.raw_enter(
                    to_submit,
                    wait_for,
                    flags,
                    std::ptr::from_ref(&args).cast(),
                    size_of_val(&args),
                )
            }
            None => self.raw_enter(to_submit, wait_for, flags, std::ptr::null(), 0),
        };
        match result {
            Ok(n) => Ok(n),
            // ETIME: the park timeout expired; EINTR: a signal. EBUSY/EAGAIN:
            // the completion queue is full, the caller reaps and retries.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(0),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// `io_uring_enter(2)` through the registered ring index when we have one.
    fn raw_enter(
        &self,
        to_submit: u32,
        wait_for: u32,
        flags: u32,
        arg: *const libc::c_void,
        arg_size: usize,
    ) -> io::Result<usize> {
        let (fd, flags) = match self.registered {
            Some(index) => (index as libc::c_long, flags | ENTER_REGISTERED_RING),
            None => (self.ring.as_raw_fd() as libc::c_long, flags),
        };
        let r = {
            // SAFETY: `fd` names our ring (by index or descriptor), and `arg` is null or points at `arg_size` bytes of a valid io_uring_getevents_arg (EXT_ARG is set exactly when it is) that outlives the call.
            unsafe { libc::syscall(libc::SYS_io_uring_enter, fd, to_submit, wait_for, flags, arg, arg_size) }
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Copies up to `out.capacity()` completions out of the queue.
    pub(crate) fn reap(&mut self, out: &mut Vec<RawCqe>, max: usize) {
        let cq = self.ring.completion();
        for cqe in cq.take(max) {
            out.push(RawCqe { user_data: cqe.user_data(), result: cqe.result(), flags: cqe.flags() });
        }
    }

    /// Completions wait in the kernel's overflow list (the queue was full).
    pub(crate) fn cq_overflow(&mut self) -> bool {
        self.ring.submission().cq_overflow()
    }

    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Registers a provided-buffer ring with the kernel.
    ///
    /// # Safety
    /// `addr` must point at `entries` page-aligned `io_uring_buf` entries that
    /// stay valid until the group is unregistered or the ring is dropped.
    pub(crate) unsafe fn register_buf_ring(&self, addr: u64, entries: u16, bgid: u16) -> io::Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.ring.submitter().register_buf_ring_with_flags(addr, entries, bgid, 0) }
    }

    pub(crate) fn unregister_buf_ring(&self, bgid: u16) -> io::Result<()> {
        self.ring.submitter().unregister_buf_ring(bgid)
    }

    /// Whether the last completion flags say more completions follow.
    pub(crate) fn more(flags: u32) -> bool {
        cqueue::more(flags)
    }
}
