//! Memory shared with the kernel by an AF_XDP socket: the UMEM (the frames
//! packets are written into) and the fill and RX rings (which pass frame
//! addresses between user space and the kernel), plus the socket options
//! that set them up. All of the crate's AF_XDP `unsafe` code is here; the
//! safe API it offers cannot be misused into a data race with the kernel.
//!
//! # Ownership of frames
//!
//! A UMEM frame ("chunk") is at any time either in the kernel's hands (put
//! on the fill ring, not yet come back on the RX ring) or in user space's.
//! User space's frames are [`Chunk`] values: created once per frame when the
//! UMEM is made, re-created when the RX ring hands a frame back, consumed
//! when the fill ring takes one. `Chunk` is neither `Clone` nor
//! constructible outside this module, so safe code can read a frame's bytes
//! ([`Umem::bytes`]) only while the kernel cannot write them.
//!
//! # Ring protocol (Documentation/networking/af_xdp.rst)
//!
//! Each ring is a power-of-two array of descriptors with a free-running
//! `u32` producer and consumer index; `producer - consumer` (wrapping) is
//! the number of filled entries. One side only ever writes the producer,
//! the other the consumer. A consumer loads the producer with `Acquire`
//! (the descriptors it covers were written before the producer's `Release`
//! store) and publishes its consumer with `Release` (its reads of those
//! descriptors happen before the producer may reuse the slots); a producer
//! does the mirror image. Both sides cache the other's index and reload it
//! only when the cached value does not cover what they want.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libc::{xdp_desc, xdp_mmap_offsets, xdp_ring_offset};

/// The kernel reserves this much in front of every received packet in a
/// frame (`XDP_PACKET_HEADROOM`), so a frame of `frame_size` bytes holds
/// packets of up to `frame_size - 256` bytes.
pub const PACKET_HEADROOM: u32 = 256;

/// Smallest frame the kernel accepts (`XDP_UMEM_MIN_CHUNK_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 2048;

/// `XDP_RING_NEED_WAKEUP` in a ring's flags word.
const NEED_WAKEUP: u32 = libc::XDP_RING_NEED_WAKEUP;

/// Tells UMEMs apart, so a [`Chunk`] of one is never read from another.
static NEXT_UMEM_ID: AtomicU64 = AtomicU64::new(1);

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

/// The system's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// A memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Private anonymous memory, faulted in now (`MAP_POPULATE`) so the
    /// kernel's pinning at registration does not fault page by page, and
    /// left out of forked children (`MADV_DONTFORK`): with its pages pinned,
    /// a fork would have to copy them all for the child (best effort).
    fn anonymous(len: usize) -> io::Result<Mapping> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: a new anonymous mapping chosen by the kernel aliases no Rust memory.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        let map = Mapping::checked(ptr, len)?;
        // SAFETY: advice on our own new mapping; it changes what a child inherits, not our memory.
        unsafe { libc::madvise(map.ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) };
        Ok(map)
    }

    /// A ring of socket `fd`, at the page offset that names it.
    fn socket_ring(fd: BorrowedFd<'_>, len: usize, pgoff: u64) -> io::Result<Mapping> {
        let off = libc::off_t::try_from(pgoff).map_err(|_| invalid("ring page offset out of range"))?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: a new shared mapping of the socket's ring chosen by the kernel aliases no Rust memory.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), off) };
        Mapping::checked(ptr, len)
    }

    fn checked(ptr: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        match NonNull::new(ptr.cast::<u8>()) {
            Some(ptr) => Ok(Mapping { ptr, len }),
            None => Err(io::Error::other("mmap returned a null mapping")),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping we made; whatever pointed into it (rings, chunk bytes) borrows or sits beside this Mapping and is gone with it. The kernel may still hold the socket: it pins UMEM pages and references ring pages, writing them through its own mappings, so removing ours cannot make it write into our memory.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// What a ring carries: plain integers, for which whatever bits the other
/// side wrote are a valid value (fill: `u64` addresses; RX: `xdp_desc`).
trait Desc: Copy {}
impl Desc for u64 {}
impl Desc for xdp_desc {}

/// One ring's shared words and descriptor array, wherever they live: a
/// kernel ring mapping, or (in tests) plain memory laid out the same way.
#[derive(Debug)]
struct RawRing<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
}

impl<T: Desc> RawRing<T> {
    /// The ring of `size` entries that `off` places inside `map`, after
    /// checking that every part of it lies inside the mapping, aligned.
    ///
    /// # Safety
    /// The returned ring points into `map`: it must not be used after `map`
    /// is unmapped, and at most one producer and one consumer may use the
    /// memory (the kernel being one of them).
    unsafe fn in_mapping(map: &Mapping, off: &xdp_ring_offset, size: u32) -> io::Result<RawRing<T>> {
        if !size.is_power_of_two() {
            return Err(invalid("ring size must be a power of two"));
        }
        let descs_len =
            (size as usize).checked_mul(size_of::<T>()).ok_or_else(|| invalid("ring too large"))?;
        let word = |at: u64| field(map, at, size_of::<AtomicU32>(), align_of::<AtomicU32>());
        let descs = field(map, off.desc, descs_len, align_of::<T>())?;
        Ok(RawRing {
            producer: word(off.producer)?.cast(),
            consumer: word(off.consumer)?.cast(),
            flags: word(off.flags)?.cast(),
            descs: descs.cast(),
            mask: size - 1,
        })
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: checked in bounds and aligned by `in_mapping`, whose caller keeps the memory mapped.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    /// The slot of free-running index `idx`.
    fn slot(&self, idx: u32) -> *mut T {
        let i = (idx & self.mask) as usize;
        // SAFETY: i < size, and `in_mapping` checked the array of `size` entries lies in the mapping.
        unsafe { self.descs.as_ptr().add(i) }
    }
}

/// The address of `len` bytes at offset `at` of `map`, if they fit and `at`
/// is `align`-aligned (the mapping itself is page-aligned).
fn field(map: &Mapping, at: u64, len: usize, align: usize) -> io::Result<NonNull<u8>> {
    let at = usize::try_from(at).map_err(|_| invalid("ring offset out of range"))?;
    let fits = at.checked_add(len).is_some_and(|end| end <= map.len);
    if !fits || at % align != 0 {
        return Err(io::Error::other("the kernel's ring offsets do not fit the ring mapping"));
    }
    // SAFETY: at + len <= map.len, so the result stays inside the mapping.
    Ok(unsafe { map.ptr.add(at) })
}

/// The consuming side of a ring (user space's end of RX).
#[derive(Debug)]
struct ConsumerRing<T> {
    raw: RawRing<T>,
    cached_prod: Cell<u32>,
    cached_cons: Cell<u32>,
}

impl<T: Desc> ConsumerRing<T> {
    fn new(raw: RawRing<T>) -> ConsumerRing<T> {
        let cons = raw.consumer().load(Ordering::Relaxed);
        let prod = raw.producer().load(Ordering::Acquire);
        ConsumerRing { raw, cached_prod: Cell::new(prod), cached_cons: Cell::new(cons) }
    }

    /// Filled entries, reloading the producer. Never more than the ring's
    /// size, whatever the other side wrote.
    fn available(&self) -> u32 {
        let prod = self.raw.producer().load(Ordering::Acquire);
        self.cached_prod.set(prod);
        prod.wrapping_sub(self.cached_cons.get()).min(self.raw.size())
    }

    /// Takes up to `max` entries, handing each to `f`, then gives their
    /// slots back to the producer with one store. Returns how many.
    fn consume(&self, max: u32, mut f: impl FnMut(T)) -> u32 {
        let cons = self.cached_cons.get();
        let mut n = self.cached_prod.get().wrapping_sub(cons).min(self.raw.size());
        if n < max {
            n = self.available();
        }
        let n = n.min(max);
        for i in 0..n {
            // SAFETY: the slot is in bounds, and the producer's Release store (loaded with Acquire above) published it; it is not rewritten until our consumer store below; any bits are a valid `T` (`Desc`).
            f(unsafe { self.raw.slot(cons.wrapping_add(i)).read() });
        }
        if n > 0 {
            self.cached_cons.set(cons.wrapping_add(n));
            self.raw.consumer().store(cons.wrapping_add(n), Ordering::Release);
        }
        n
    }
}

/// The producing side of a ring (user space's end of the fill ring).
#[derive(Debug)]
struct ProducerRing<T> {
    raw: RawRing<T>,
    cached_prod: Cell<u32>,
    cached_cons: Cell<u32>,
}

impl<T: Desc> ProducerRing<T> {
    fn new(raw: RawRing<T>) -> ProducerRing<T> {
        let prod = raw.producer().load(Ordering::Relaxed);
        let cons = raw.consumer().load(Ordering::Acquire);
        ProducerRing { raw, cached_prod: Cell::new(prod), cached_cons: Cell::new(cons) }
    }

    /// Free slots, reloading the consumer only when the cached one leaves
    /// fewer than `want`.
    fn free(&self, want: u32) -> u32 {
        let prod = self.cached_prod.get();
        let size = self.raw.size();
        let free = size.saturating_sub(prod.wrapping_sub(self.cached_cons.get()));
        if free >= want {
            return free;
        }
        let cons = self.raw.consumer().load(Ordering::Acquire);
        self.cached_cons.set(cons);
        size.saturating_sub(prod.wrapping_sub(cons))
    }

    /// Entries produced and not yet consumed, reloading the consumer.
    fn outstanding(&self) -> u32 {
        let cons = self.raw.consumer().load(Ordering::Acquire);
        self.cached_cons.set(cons);
        self.cached_prod.get().wrapping_sub(cons)
    }

    /// Writes entries from `next` while there is room and it yields, then
    /// publishes them with one store. Returns how many.
    fn produce(&self, max: u32, mut next: impl FnMut() -> Option<T>) -> u32 {
        let prod = self.cached_prod.get();
        let room = self.free(max).min(max);
        let mut n = 0;
        while n < room {
            let Some(item) = next() else { break };
            // SAFETY: the slot is in bounds and free: the consumer's Release store (loaded with Acquire in `free`) says it is done with it, and it reads it only after our store below.
            unsafe { self.raw.slot(prod.wrapping_add(n)).write(item) };
            n += 1;
        }
        if n > 0 {
            self.cached_prod.set(prod.wrapping_add(n));
            self.raw.producer().store(prod.wrapping_add(n), Ordering::Release);
        }
        n
    }

    /// The consumer asked to be woken (`XDP_RING_NEED_WAKEUP`).
    fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// A UMEM frame owned by user space (see the module docs): the packet at
/// `addr` (which includes the kernel's headroom) of `len` bytes.
#[derive(Debug)]
pub struct Chunk {
    addr: u64,
    len: u32,
    umem: u64,
}

impl Chunk {
    /// The packet's length in bytes.
    pub fn packet_len(&self) -> usize {
        self.len as usize
    }

    /// The packet's address in the UMEM (for logs).
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

/// The frames of one socket: one page-aligned anonymous mapping cut into
/// `frames` chunks of `frame_size` bytes (aligned mode).
#[derive(Debug)]
pub struct Umem {
    map: Mapping,
    frame_size: u32,
    id: u64,
}

impl Umem {
    /// Maps `frames * frame_size` bytes; returns the UMEM and a [`Chunk`]
    /// for each of its frames (the only time they are made).
    /// `frame_size` must be a power of two from 2048 to the page size.
    pub fn new(frames: u32, frame_size: u32) -> io::Result<(Umem, Vec<Chunk>)> {
        if !frame_size.is_power_of_two() || frame_size < MIN_FRAME_SIZE || frame_size as usize > page_size() {
            return Err(invalid("AF_XDP frame size must be a power of two from 2048 to the page size"));
        }
        if frames == 0 {
            return Err(invalid("an AF_XDP UMEM needs at least one frame"));
        }
        let len =
            (frames as usize).checked_mul(frame_size as usize).ok_or_else(|| invalid("UMEM too large"))?;
        let id = NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed);
        let umem = Umem { map: Mapping::anonymous(len)?, frame_size, id };
        let chunks =
            (0..u64::from(frames)).map(|i| Chunk { addr: i * u64::from(frame_size), len: 0, umem: id });
        Ok((umem, chunks.collect()))
    }

    /// The bytes of a frame's packet. Empty for a chunk of another UMEM.
    /// The slice borrows the chunk too: the frame cannot go back to the
    /// kernel while it is read.
    pub fn bytes<'a>(&'a self, chunk: &'a Chunk) -> &'a [u8] {
        if chunk.umem != self.id {
            return &[];
        }
        // Chunks are only made in range (`new`, `Rings::chunk_of`); the clamp costs nothing.
        let start = (chunk.addr as usize).min(self.map.len);
        let len = (chunk.len as usize).min(self.map.len - start);
        // SAFETY: start <= map.len: the result stays inside the mapping (or one past its end).
        let ptr = unsafe { self.map.ptr.as_ptr().add(start) };
        // SAFETY: start + len <= map.len; the chunk proves user space owns the frame, so the kernel does not write it while the slice (borrowing the chunk too) lives.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Registers this memory as the UMEM of socket `fd` and sets up its fill
    /// ring, completion ring (required by bind, never used: we do not
    /// transmit) and RX ring, each of `ring_size` entries.
    pub fn attach(&self, fd: BorrowedFd<'_>, ring_size: u32) -> io::Result<Rings> {
        if !ring_size.is_power_of_two() {
            return Err(invalid("AF_XDP ring size must be a power of two"));
        }
        let reg = libc::xdp_umem_reg {
            addr: self.map.ptr.as_ptr() as u64,
            len: self.map.len as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        set_opt(fd, libc::XDP_UMEM_REG, &reg)?;
        set_opt(fd, libc::XDP_UMEM_FILL_RING, &ring_size)?;
        set_opt(fd, libc::XDP_UMEM_COMPLETION_RING, &ring_size)?;
        set_opt(fd, libc::XDP_RX_RING, &ring_size)?;
        let off: xdp_mmap_offsets = get_opt(fd, libc::XDP_MMAP_OFFSETS)?;
        let fill_len = ring_len::<u64>(&off.fr, ring_size)?;
        let rx_len = ring_len::<xdp_desc>(&off.rx, ring_size)?;
        let fill = Mapping::socket_ring(fd, fill_len, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let rx = Mapping::socket_ring(fd, rx_len, libc::XDP_PGOFF_RX_RING as u64)?;
        Rings::over(fill, &off.fr, rx, &off.rx, ring_size, self)
    }
}

/// Bytes to map for a ring of `size` entries of `T` laid out as `off` says.
fn ring_len<T>(off: &xdp_ring_offset, size: u32) -> io::Result<usize> {
    let descs = (size as usize).checked_mul(size_of::<T>());
    let at = usize::try_from(off.desc).ok();
    at.zip(descs).and_then(|(a, d)| a.checked_add(d)).ok_or_else(|| invalid("ring too large"))
}

/// A socket's fill and RX rings, tied to the UMEM they carry frames of.
#[derive(Debug)]
pub struct Rings {
    fill: ProducerRing<u64>,
    rx: ConsumerRing<xdp_desc>,
    umem: u64,
    umem_len: u64,
    frame_size: u32,
    // The rings above point into these: declared after them, dropped after them.
    _fill_map: Mapping,
    _rx_map: Mapping,
}

impl Rings {
    fn over(
        fill_map: Mapping,
        fill_off: &xdp_ring_offset,
        rx_map: Mapping,
        rx_off: &xdp_ring_offset,
        size: u32,
        umem: &Umem,
    ) -> io::Result<Rings> {
        // SAFETY: each ring points into the mapping stored beside it in `Rings`, which outlives it; user space is the fill ring's only producer and the RX ring's only consumer.
        let fill = ProducerRing::new(unsafe { RawRing::in_mapping(&fill_map, fill_off, size) }?);
        // SAFETY: as above.
        let rx = ConsumerRing::new(unsafe { RawRing::in_mapping(&rx_map, rx_off, size) }?);
        Ok(Rings {
            fill,
            rx,
            umem: umem.id,
            umem_len: umem.map.len as u64,
            frame_size: umem.frame_size,
            _fill_map: fill_map,
            _rx_map: rx_map,
        })
    }

    /// Gives the kernel as many of `free`'s frames (taken from its end) as
    /// the fill ring has room for, with one index store. Returns how many.
    pub fn refill(&self, free: &mut Vec<Chunk>) -> usize {
        let base_mask = !(u64::from(self.frame_size) - 1);
        let want = u32::try_from(free.len()).unwrap_or(u32::MAX);
        let next = || loop {
            let c = free.pop()?;
            if c.umem == self.umem {
                return Some(c.addr & base_mask);
            }
        };
        self.fill.produce(want, next) as usize
    }

    /// Frames on the fill ring the kernel has not taken yet.
    pub fn fill_outstanding(&self) -> u32 {
        self.fill.outstanding()
    }

    /// The kernel asked to be woken to take frames from the fill ring
    /// (drivers in zero-copy mode; copy mode never asks).
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// The RX ring has at least one packet.
    pub fn rx_ready(&self) -> bool {
        self.rx.available() > 0
    }

    /// Takes up to `max` received packets, handing each frame to `f`.
    /// Returns how many descriptors were consumed.
    pub fn receive(&self, max: usize, mut f: impl FnMut(Chunk)) -> usize {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        self.rx.consume(max, |d| {
            if let Some(c) = self.chunk_of(d) {
                f(c)
            }
        }) as usize
    }

    /// The frame a descriptor names, its length clamped to the frame; none
    /// if the address is outside the UMEM (never from a correct kernel).
    fn chunk_of(&self, d: xdp_desc) -> Option<Chunk> {
        let frame = u64::from(self.frame_size);
        let base = d.addr & !(frame - 1);
        if base >= self.umem_len {
            return None;
        }
        let len = u64::from(d.len).min(frame - (d.addr - base)) as u32;
        Some(Chunk { addr: d.addr, len, umem: self.umem })
    }
}

/// `setsockopt(SOL_XDP, opt)` with a plain value. Private: `XDP_UMEM_REG`
/// with an arbitrary address would let the kernel write anywhere.
fn set_opt<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int, val: &T) -> io::Result<()> {
    let len = size_of::<T>() as libc::socklen_t;
    let ptr = (val as *const T).cast();
    // SAFETY: `ptr` is valid for reads of `len` bytes for the call; the kernel only reads it.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, ptr, len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(SOL_XDP, opt)` into a plain struct `T` of the kernel's ABI;
/// fails if the kernel wrote a different size (an older layout).
fn get_opt<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<T> {
    let mut val = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    let ptr = val.as_mut_ptr().cast();
    // SAFETY: `ptr` is valid for writes of `len` bytes; the kernel writes at most `len`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, ptr, &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<T>() {
        return Err(io::Error::other("unexpected AF_XDP option size (kernel too old?)"));
    }
    // SAFETY: zero-initialised, then fully written by the kernel; T is a plain C struct of integers.
    Ok(unsafe { val.assume_init() })
}

/// The socket's drop counters (`XDP_STATISTICS`).
pub fn statistics(fd: BorrowedFd<'_>) -> io::Result<libc::xdp_statistics> {
    get_opt(fd, libc::XDP_STATISTICS)
}

/// Binds socket `fd` (with its UMEM attached) to `queue` of `ifindex`.
/// `flags` are `XDP_COPY`, `XDP_ZEROCOPY`, `XDP_USE_NEED_WAKEUP`;
/// `XDP_SHARED_UMEM` is refused (each socket owns its UMEM).
pub fn bind(fd: BorrowedFd<'_>, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
    if flags & libc::XDP_SHARED_UMEM != 0 {
        return Err(invalid("shared UMEM is not supported"));
    }
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    let len = size_of::<libc::sockaddr_xdp>() as libc::socklen_t;
    let ptr = (&addr as *const libc::sockaddr_xdp).cast();
    // SAFETY: `ptr` points at a sockaddr_xdp of `len` bytes, valid for the call.
    let r = unsafe { libc::bind(fd.as_raw_fd(), ptr, len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to look at the fill ring again (a zero-byte
/// non-blocking `recvfrom`, as af_xdp.rst prescribes for RX wake-ups).
pub fn wake(fd: BorrowedFd<'_>) -> io::Result<()> {
    let null = std::ptr::null_mut();
    // SAFETY: a zero-length receive with null buffer and address writes no memory.
    let r = unsafe { libc::recvfrom(fd.as_raw_fd(), null, 0, libc::MSG_DONTWAIT, null.cast(), null.cast()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Nothing to do or the driver is busy: the wake-up happened or will.
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)) {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ring memory laid out as the kernel lays a ring mapping out.
    const OFF: xdp_ring_offset = xdp_ring_offset { producer: 0, consumer: 64, flags: 128, desc: 256 };

    fn ring_memory() -> Mapping {
        Mapping::anonymous(page_size()).expect("mmap")
    }

    /// The two ends of one ring over `map`, the "kernel" end and ours.
    fn ends<T: Desc>(map: &Mapping, size: u32) -> (ProducerRing<T>, ConsumerRing<T>) {
        // SAFETY: the test keeps `map` alive past both ends; one producer, one consumer.
        let p = ProducerRing::new(unsafe { RawRing::in_mapping(map, &OFF, size) }.expect("ring"));
        // SAFETY: as above.
        let c = ConsumerRing::new(unsafe { RawRing::in_mapping(map, &OFF, size) }.expect("ring"));
        (p, c)
    }

    fn word(map: &Mapping, at: u64) -> &AtomicU32 {
        let p = field(map, at, 4, 4).expect("word").cast::<AtomicU32>();
        // SAFETY: in bounds and aligned; the mapping outlives the borrow.
        unsafe { p.as_ref() }
    }

    fn drain<T: Desc>(c: &ConsumerRing<T>, max: u32) -> Vec<T> {
        let mut got = Vec::new();
        c.consume(max, |x| got.push(x));
        got
    }

    fn produce_all<T: Desc>(p: &ProducerRing<T>, items: &[T]) -> u32 {
        let mut it = items.iter().copied();
        p.produce(u32::MAX, || it.next())
    }

    #[test]
    fn fills_to_capacity_then_empties() {
        let map = ring_memory();
        let (p, c) = ends::<u64>(&map, 4);
        assert_eq!((p.free(4), c.available()), (4, 0));
        assert_eq!(produce_all(&p, &[1, 2, 3, 4, 5, 6]), 4, "only as many as fit");
        assert_eq!((p.free(1), p.outstanding()), (0, 4));
        assert_eq!(drain(&c, 3), [1, 2, 3]);
        assert_eq!(p.free(1), 3, "the consumer's release is seen");
        assert_eq!(produce_all(&p, &[7]), 1);
        assert_eq!(drain(&c, 10), [4, 7]);
        assert_eq!((c.available(), p.outstanding(), p.free(4)), (0, 0, 4));
        assert_eq!(drain(&c, 10), Vec::<u64>::new());
    }

    #[test]
    fn indices_wrap_around_u32() {
        let map = ring_memory();
        word(&map, OFF.producer).store(u32::MAX - 2, Ordering::Relaxed);
        word(&map, OFF.consumer).store(u32::MAX - 2, Ordering::Relaxed);
        let (p, c) = ends::<u64>(&map, 8);
        let mut expect = Vec::new();
        for round in 0..5u64 {
            let batch: Vec<u64> = (0..6).map(|i| round * 10 + i).collect();
            assert_eq!(produce_all(&p, &batch), 6);
            expect.extend_from_slice(&batch);
            assert_eq!(drain(&c, 6), batch);
        }
        assert!(word(&map, OFF.producer).load(Ordering::Relaxed) < 100, "wrapped");
        assert_eq!(c.available(), 0);
    }

    #[test]
    fn a_bogus_producer_index_is_clamped_to_the_ring() {
        let map = ring_memory();
        let (_, c) = ends::<u64>(&map, 4);
        word(&map, OFF.producer).store(1000, Ordering::Release);
        assert_eq!(c.available(), 4);
        assert_eq!(drain(&c, u32::MAX).len(), 4);
    }

    #[test]
    fn need_wakeup_flag_is_read() {
        let map = ring_memory();
        let (p, _) = ends::<u64>(&map, 4);
        assert!(!p.needs_wakeup());
        word(&map, OFF.flags).store(NEED_WAKEUP, Ordering::Relaxed);
        assert!(p.needs_wakeup());
    }

    #[test]
    fn offsets_outside_the_mapping_are_refused() {
        let map = ring_memory();
        let bad = xdp_ring_offset { desc: map.len as u64 - 8, ..OFF };
        // SAFETY: the ring is refused, never used.
        assert!(unsafe { RawRing::<u64>::in_mapping(&map, &bad, 4) }.is_err());
        let misaligned = xdp_ring_offset { consumer: 2, ..OFF };
        // SAFETY: as above.
        assert!(unsafe { RawRing::<u64>::in_mapping(&map, &misaligned, 4) }.is_err());
        // SAFETY: as above.
        assert!(unsafe { RawRing::<u64>::in_mapping(&map, &OFF, 3) }.is_err());
    }

    #[test]
    fn umem_config_is_checked() {
        assert!(Umem::new(4, 1000).is_err());
        assert!(Umem::new(4, 1024).is_err());
        assert!(Umem::new(0, 2048).is_err());
        let (umem, chunks) = Umem::new(4, 2048).expect("umem");
        let addrs: Vec<u64> = chunks.iter().map(Chunk::addr).collect();
        assert_eq!(addrs, [0, 2048, 4096, 6144]);
        assert_eq!(umem.map.len, 8192);
    }

    /// A UMEM, rings over plain memory, and the "kernel" ends of those rings.
    struct Fake {
        umem: Umem,
        free: Vec<Chunk>,
        rings: Rings,
        kernel_fill: ConsumerRing<u64>,
        kernel_rx: ProducerRing<xdp_desc>,
    }

    fn fake(frames: u32, size: u32) -> Fake {
        let (umem, free) = Umem::new(frames, 2048).expect("umem");
        let (fill, rx) = (ring_memory(), ring_memory());
        // SAFETY: the mappings move into `rings`, which the Fake keeps alive beside these ends.
        let kernel_fill = ConsumerRing::new(unsafe { RawRing::in_mapping(&fill, &OFF, size) }.expect("ring"));
        // SAFETY: as above.
        let kernel_rx = ProducerRing::new(unsafe { RawRing::in_mapping(&rx, &OFF, size) }.expect("ring"));
        let rings = Rings::over(fill, &OFF, rx, &OFF, size, &umem).expect("rings");
        Fake { umem, free, rings, kernel_fill, kernel_rx }
    }

    impl Fake {
        /// What the kernel does with one packet: take a fill frame, write
        /// the packet after the headroom, post its descriptor.
        fn deliver(&self, packet: &[u8]) -> bool {
            let mut base = None;
            self.kernel_fill.consume(1, |a| base = Some(a));
            let Some(base) = base else { return false };
            let addr = base + u64::from(PACKET_HEADROOM);
            assert!(addr as usize + packet.len() <= self.umem.map.len);
            // SAFETY: in bounds (checked above); the frame is the kernel's, no Chunk of it exists.
            let dst = unsafe { self.umem.map.ptr.as_ptr().add(addr as usize) };
            // SAFETY: `dst` is valid for `packet.len()` bytes and does not overlap `packet`.
            unsafe { std::ptr::copy_nonoverlapping(packet.as_ptr(), dst, packet.len()) };
            let desc = xdp_desc { addr, len: packet.len() as u32, options: 0 };
            self.kernel_rx.produce(1, || Some(desc)) == 1
        }
    }

    #[test]
    fn frames_cycle_through_fill_and_rx() {
        let mut f = fake(8, 4);
        assert_eq!(f.rings.refill(&mut f.free), 4, "the fill ring holds 4");
        assert_eq!((f.free.len(), f.rings.fill_outstanding()), (4, 4));
        assert!(f.deliver(b"hello") && f.deliver(b"world!"));
        assert!(f.rings.rx_ready());
        let mut got = Vec::new();
        assert_eq!(f.rings.receive(16, |c| got.push(c)), 2);
        let bytes: Vec<&[u8]> = got.iter().map(|c| f.umem.bytes(c)).collect();
        assert_eq!(bytes, [&b"hello"[..], &b"world!"[..]]);
        assert_eq!(got[0].addr() % 2048, u64::from(PACKET_HEADROOM));
        assert_eq!(f.rings.fill_outstanding(), 2);
        // Returned frames go back as their chunk base.
        let mut back = got;
        assert_eq!(f.rings.refill(&mut back), 2);
        let mut bases = Vec::new();
        f.kernel_fill.consume(16, |a| bases.push(a));
        assert!(bases.iter().all(|a| a % 2048 == 0), "{bases:?}");
        assert_eq!(bases.len(), 4);
    }

    #[test]
    fn holding_every_frame_starves_the_kernel_without_harm() {
        let mut f = fake(4, 4);
        f.rings.refill(&mut f.free);
        for i in 0..4u8 {
            assert!(f.deliver(&[i; 10]));
        }
        assert!(!f.deliver(b"no frame left"), "fill ring empty");
        let mut held = Vec::new();
        f.rings.receive(16, |c| held.push(c));
        assert_eq!((held.len(), f.rings.fill_outstanding()), (4, 0));
        assert_eq!(f.rings.refill(&mut Vec::new()), 0);
    }

    #[test]
    fn descriptors_are_checked_against_the_umem() {
        let f = fake(2, 4);
        let other = fake(2, 4);
        let post = |addr, len| f.kernel_rx.produce(1, || Some(xdp_desc { addr, len, options: 0 }));
        post(4096, 10); // past the UMEM: dropped
        post(2048 + 256, 4000); // longer than its frame: clamped
        let mut got = Vec::new();
        assert_eq!(f.rings.receive(16, |c| got.push(c)), 2);
        assert_eq!(got.len(), 1);
        assert_eq!(f.umem.bytes(&got[0]).len(), 2048 - 256);
        assert!(other.umem.bytes(&got[0]).is_empty(), "a chunk of another UMEM reads nothing");
        let mut foreign = got;
        assert_eq!(other.rings.refill(&mut foreign), 0, "nor is it given to another fill ring");
    }
}
