//! An AF_XDP socket bound to one receive queue, with its own UMEM.
//!
//! The XDP program ([`super::program`]) redirects matching packets into
//! the socket of the queue they arrived on; the kernel copies each (or, in
//! zero-copy mode, the NIC writes it) into a frame the socket gave it on the
//! fill ring and posts it on the RX ring. [`XskSocket::try_recv`] turns RX
//! entries into [`XskFrame`]s, which borrow nothing: the service keeps a
//! frame as long as it likes, and dropping it puts the frame on the socket's
//! free list, which the next `try_recv` hands back to the fill ring.
//!
//! Frames held by the service are frames the kernel cannot use; holding all
//! of them makes the kernel drop packets (counted in [`XskStats`]), nothing
//! worse. Dropping the socket closes it at once; its memory stays mapped
//! until the last frame is dropped.
//!
//! All memory shared with the kernel is handled by [`super::ring`]; this
//! module is safe code over it.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use super::ring::{self, Chunk, Rings, Umem};

/// The size of a socket's UMEM and rings.
///
/// Without `CAP_IPC_LOCK`, the kernel charges every UMEM page against
/// `RLIMIT_MEMLOCK` (net/xdp/xdp_umem.c, `xdp_umem_account_pages`), per
/// user and across all of that user's processes; root has the capability
/// and is exempt. The AF_XDP rings are not charged, but each shard's
/// io_uring is: measured on Linux 6.18, 136 KiB per shard. The default,
/// 512 frames of 2 KiB, is 1 MiB per socket: four queues with four shards
/// take about 4.5 MiB of the common 8 MiB limit, leaving room for buffer
/// rings and for a restarting process (the kernel releases a closed
/// socket's UMEM asynchronously). 1024 frames would not fit four queues:
/// 4 x 2 MiB plus the shards' rings is over 8 MiB. Larger UMEMs need
/// `CAP_IPC_LOCK` or a higher limit; [`XskSocket::bind`] then fails with
/// `ENOBUFS`, named in its message.
#[derive(Clone, Debug)]
pub struct UmemConfig {
    /// Frames in the UMEM: the packets the kernel and the service can hold
    /// between them.
    pub frames: u32,
    /// Bytes per frame: a power of two from 2048 to the page size. The
    /// kernel keeps 256 bytes of headroom, so 2048 carries 1792-byte frames
    /// (enough for a 1500-byte MTU).
    pub frame_size: u32,
    /// Entries in the fill and RX rings: a power of two. At least `frames`
    /// lets every frame wait on the fill ring at once.
    pub ring_size: u32,
}

impl Default for UmemConfig {
    fn default() -> UmemConfig {
        UmemConfig { frames: 512, frame_size: 2048, ring_size: 512 }
    }
}

/// Copy or zero-copy: whether the kernel copies packets into the UMEM or
/// the driver receives straight into it (drivers that support it only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`: works on every interface, XDP native or generic.
    Copy,
    /// `XDP_ZEROCOPY`: fails with `Unsupported` where the driver lacks it.
    ZeroCopy,
}

/// Counters of one socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames received by `try_recv`.
    pub frames: u64,
    /// Times `try_recv` had no frame to give the fill ring while the
    /// kernel's fill ring was empty: the service held every frame.
    pub fill_starved: u64,
    /// Packets the kernel dropped for this socket (no frame, too long).
    pub rx_dropped: u64,
    /// Packets dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty: u64,
    /// Invalid descriptors on the RX side.
    pub rx_invalid_descs: u64,
}

/// What a socket's frames need after the socket is gone: the UMEM, and the
/// free list their drops return to.
#[derive(Debug)]
struct Shared {
    umem: Umem,
    free: RefCell<Vec<Chunk>>,
}

/// An AF_XDP socket on one queue of one interface (bound to the shard
/// thread that made it).
///
/// Dropping it closes the socket (which also takes it out of the
/// program's `XSKMAP`); frames still held keep its memory mapped. The
/// kernel frees the queue asynchronously: binding the same queue again
/// fails with `ResourceBusy` for a few tens of milliseconds (measured
/// ~25 ms on a veth), so a rebind after a reload should retry briefly.
#[derive(Debug)]
pub struct XskSocket {
    // Dropped in this order: the close is queued before the rings are
    // unmapped (the kernel never writes through our mappings; see ring.rs).
    fd: Option<OwnedFd>,
    rings: Rings,
    shared: Rc<Shared>,
    queue: u32,
    frames: Cell<u64>,
    fill_starved: Cell<u64>,
    _shard: crate::ShardBound,
}

impl XskSocket {
    /// AF_XDP socket on `queue` of interface `ifindex`, with its own UMEM:
    /// every frame handed to the fill ring at start (as many as it holds;
    /// the rest wait on the free list). Bind flags: `XDP_COPY` or
    /// `XDP_ZEROCOPY`, plus `XDP_USE_NEED_WAKEUP`.
    pub fn bind(ifindex: u32, queue: u32, mode: BindMode, cfg: &UmemConfig) -> io::Result<XskSocket> {
        let (umem, mut free) = Umem::new(cfg.frames, cfg.frame_size)?;
        let fd: OwnedFd = socket2::Socket::new(socket2::Domain::from(libc::AF_XDP), socket2::Type::RAW, None)
            .map_err(|e| context(e, "AF_XDP socket"))?
            .into();
        let rings = umem.attach(fd.as_fd(), cfg.ring_size).map_err(|e| umem_error(e, cfg))?;
        // Before bind, so a zero-copy driver finds frames when it starts.
        rings.refill(&mut free);
        let flags = match mode {
            BindMode::Copy => libc::XDP_COPY,
            BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
        } | libc::XDP_USE_NEED_WAKEUP;
        ring::bind(fd.as_fd(), ifindex, queue, flags).map_err(|e| bind_error(e, ifindex, queue, mode))?;
        Ok(XskSocket {
            fd: Some(fd),
            rings,
            shared: Rc::new(Shared { umem, free: RefCell::new(free) }),
            queue,
            frames: Cell::new(0),
            fill_starved: Cell::new(0),
            _shard: crate::ShardBound::default(),
        })
    }

    /// The socket's descriptor (for the program's `XSKMAP`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => unreachable!("the fd is only taken by drop"),
        }
    }

    /// The queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Appends up to `max` received frames without waiting; returns how
    /// many. First gives the fill ring every frame dropped since the last
    /// call (one index store for all), and kicks the kernel when the fill
    /// ring says it needs a wake-up.
    pub fn try_recv(&self, out: &mut Vec<XskFrame>, max: usize) -> usize {
        if self.shared.free.borrow().is_empty() && self.rings.fill_outstanding() == 0 {
            self.fill_starved.set(self.fill_starved.get() + 1);
        }
        let produced = self.give_back();
        let mut n = 0;
        self.rings.receive(max, |chunk| {
            out.push(XskFrame::new(&self.shared, chunk));
            n += 1;
        });
        if produced > 0 || n == 0 {
            self.wake_if_asked();
        }
        self.frames.set(self.frames.get() + n as u64);
        n
    }

    /// Hands the free list to the fill ring.
    fn give_back(&self) -> usize {
        let mut free = self.shared.free.borrow_mut();
        if free.is_empty() {
            return 0;
        }
        self.rings.refill(&mut free)
    }

    /// Copy mode never asks; a zero-copy driver sets the flag when it
    /// stopped for want of frames or work, and needs a syscall to resume.
    fn wake_if_asked(&self) {
        if self.rings.fill_needs_wakeup() {
            // An error here is the socket's, and surfaces in `readable`.
            let _ = ring::wake(self.fd());
        }
    }

    /// Waits until the RX ring has a frame (a poll on the socket through
    /// the shard's io_uring; returns at once if one is there). Gives the
    /// kernel the frames dropped since the last `try_recv` first: if the
    /// service had held them all, nothing could arrive otherwise.
    pub async fn readable(&self) -> io::Result<()> {
        loop {
            if self.rings.rx_ready() {
                return Ok(());
            }
            if self.give_back() > 0 {
                self.wake_if_asked();
            }
            let ready = shard::ops::poll_ready(self.fd().as_raw_fd(), libc::POLLIN).await?;
            if ready & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 && !self.rings.rx_ready() {
                return Err(io::Error::other(format!("AF_XDP socket on queue {} failed", self.queue)));
            }
        }
    }

    /// The socket's counters: ours, and the kernel's `XDP_STATISTICS`.
    pub fn stats(&self) -> io::Result<XskStats> {
        let k = ring::statistics(self.fd())?;
        Ok(XskStats {
            frames: self.frames.get(),
            fill_starved: self.fill_starved.get(),
            rx_dropped: k.rx_dropped,
            rx_ring_full: k.rx_ring_full,
            rx_fill_ring_empty: k.rx_fill_ring_empty_descs,
            rx_invalid_descs: k.rx_invalid_descs,
        })
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            // Through the ring: closing an XDP socket waits for an RCU grace
            // period, which the shard should not block on.
            shard::ops::close_later(fd);
        }
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Names the usual reason the UMEM cannot be registered.
fn umem_error(e: io::Error, cfg: &UmemConfig) -> io::Error {
    let size = u64::from(cfg.frames) * u64::from(cfg.frame_size);
    let why = match e.raw_os_error() {
        Some(libc::ENOBUFS) => ": over RLIMIT_MEMLOCK (UMEM pages are charged to it without CAP_IPC_LOCK)",
        _ => "",
    };
    context(e, &format!("AF_XDP UMEM of {} KiB{why}", size / 1024))
}

/// Names the usual reasons a bind fails.
fn bind_error(e: io::Error, ifindex: u32, queue: u32, mode: BindMode) -> io::Error {
    let why = match (e.raw_os_error(), mode) {
        (Some(libc::EOPNOTSUPP), BindMode::ZeroCopy) => "the driver does not support AF_XDP zero-copy",
        (Some(libc::EINVAL), _) => "no such queue on the interface, or an invalid setup",
        (Some(libc::EBUSY), _) => {
            "another AF_XDP socket is bound to this queue, or was closed in the last ~50 ms \
             (the kernel frees the queue asynchronously)"
        }
        (Some(libc::ENODEV), _) => "no such interface",
        _ => "",
    };
    let sep = if why.is_empty() { "" } else { ": " };
    let msg = format!("AF_XDP bind to ifindex {ifindex} queue {queue} ({mode:?}){sep}{why}: {e}");
    io::Error::new(e.kind(), msg)
}

/// A received packet in a UMEM frame. Dropping it returns the frame to its
/// socket's free list (and keeps the UMEM mapped until then).
pub struct XskFrame {
    shared: Rc<Shared>,
    chunk: Option<Chunk>,
    view: Range<usize>,
}

impl XskFrame {
    fn new(shared: &Rc<Shared>, chunk: Chunk) -> XskFrame {
        let view = 0..chunk.packet_len();
        XskFrame { shared: Rc::clone(shared), chunk: Some(chunk), view }
    }

    /// Narrows the view to `range` of the current view (e.g. from the
    /// whole frame to the UDP payload). Out-of-range bounds are clamped to
    /// the view, so this never panics.
    pub fn narrow(&mut self, range: Range<usize>) {
        self.view = sub_range(&self.view, range);
    }

    /// Bytes in the current view.
    pub fn len(&self) -> usize {
        self.view.len()
    }

    /// The view is empty.
    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }
}

/// `range` (relative to `view`) as an absolute range, clamped into `view`.
fn sub_range(view: &Range<usize>, range: Range<usize>) -> Range<usize> {
    let end = range.end.min(view.len());
    let start = range.start.min(end);
    view.start + start..view.start + end
}

impl AsRef<[u8]> for XskFrame {
    fn as_ref(&self) -> &[u8] {
        match &self.chunk {
            Some(c) => self.shared.umem.bytes(c).get(self.view.clone()).unwrap_or_default(),
            None => &[],
        }
    }
}

impl std::fmt::Debug for XskFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = self.chunk.as_ref().map(Chunk::addr);
        f.debug_struct("XskFrame").field("addr", &addr).field("view", &self.view).finish()
    }
}

impl Drop for XskFrame {
    fn drop(&mut self) {
        if let Some(chunk) = self.chunk.take() {
            self.shared.free.borrow_mut().push(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_stays_inside_the_view() {
        let view = 256..356;
        assert_eq!(sub_range(&view, 42..100), 298..356);
        assert_eq!(sub_range(&view, 10..20), 266..276);
        assert_eq!(sub_range(&view, 90..500), 346..356, "end clamped");
        assert_eq!(sub_range(&view, 500..600), 356..356, "past the end: empty at the end");
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = sub_range(&view, 50..10);
        assert_eq!(backwards, 266..266, "reversed: empty");
        assert_eq!(sub_range(&(0..0), 0..10), 0..0);
    }

    #[test]
    fn the_default_fits_four_queues_in_8_mib_of_locked_memory() {
        let c = UmemConfig::default();
        let shard_rings = 136 << 10;
        assert!(4 * (u64::from(c.frames) * u64::from(c.frame_size) + shard_rings) <= 6 << 20);
        assert!(c.ring_size >= c.frames && c.ring_size.is_power_of_two());
    }

    #[test]
    fn a_bad_config_fails_before_any_socket_work() {
        let cfg = UmemConfig { frame_size: 3000, ..UmemConfig::default() };
        let err = XskSocket::bind(1, 0, BindMode::Copy, &cfg).expect_err("not a power of two");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
