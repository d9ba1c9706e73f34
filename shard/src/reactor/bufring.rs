//! Provided-buffer rings: a group of equal-sized buffers the kernel picks
//! from when a receive completes, so an idle connection holds no buffer.
//!
//! The ring of descriptors and the buffers themselves are owned here. A
//! buffer the kernel filled comes back as a [`ProvidedBuf`]; dropping it puts
//! the buffer back on the ring. Everything is shard-local (`Rc`).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::context;

/// A registered group of receive buffers.
#[derive(Clone)]
pub struct BufRing {
    inner: Rc<Inner>,
}

struct Inner {
    bgid: u16,
    entries: u16,
    buf_size: usize,
    /// Page-aligned descriptor ring, `entries` long, mmap'd.
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    /// Buffer memory: `entries * buf_size` bytes. Only reached through raw
    /// pointers, because the kernel writes into buffers that are on the ring.
    bufs: *mut u8,
    bufs_len: usize,
    /// Our copy of the ring tail (the kernel only reads the shared one).
    tail: Cell<u16>,
    /// Buffers currently handed out to the application.
    out: Cell<usize>,
    registered: Cell<bool>,
    /// Tasks waiting for a buffer to come back (the group ran dry).
    waiters: crate::sync::waiters::WaiterSet,
    /// Times a receive found the group empty ([`BufRing::available`] calls).
    exhausted: Cell<u64>,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.inner.bgid)
            .field("entries", &self.inner.entries)
            .field("buf_size", &self.inner.buf_size)
            .field("out", &self.inner.out.get())
            .finish()
    }
}

impl BufRing {
    /// Creates and registers a buffer group on the current shard's ring.
    /// `entries` is rounded up to a power of two (at most 32768).
    pub fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        let entries = entries.clamp(1, 1 << 15).next_power_of_two();
        if buf_size == 0 || buf_size > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer size out of range"));
        }
        let bgid = context::with(|c| c.reactor.alloc_bgid());
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let ring = crate::mem::map_anonymous(ring_bytes)?.cast::<BufRingEntry>();
        let bufs_len = usize::from(entries) * buf_size;
        let bufs = match crate::mem::map_anonymous(bufs_len) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: just mapped, not yet registered or shared.
                unsafe { crate::mem::unmap(ring.cast(), ring_bytes) };
                return Err(e);
            }
        };
        let inner = Inner {
            bgid,
            entries,
            buf_size,
            ring,
            ring_bytes,
            bufs,
            bufs_len,
            tail: Cell::new(0),
            out: Cell::new(0),
            registered: Cell::new(false),
            waiters: Default::default(),
            exhausted: Cell::new(0),
        };
        for bid in 0..entries {
            inner.put(bid, false);
        }
        inner.publish();
        context::with(|c| {
            // SAFETY: `ring` is a page-aligned mapping of `entries` descriptors that lives as long as `Inner`, whose Drop unregisters the group before unmapping it.
            unsafe { c.reactor.register_buf_ring(ring as u64, entries, bgid) }
        })?;
        inner.registered.set(true);
        Ok(BufRing { inner: Rc::new(inner) })
    }

    /// The buffer group id to put in receive operations.
    pub fn bgid(&self) -> u16 {
        self.inner.bgid
    }

    /// Size of each buffer in bytes.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Number of buffers in the group.
    pub fn entries(&self) -> usize {
        usize::from(self.inner.entries)
    }

    /// Buffers currently held by the application (not on the ring).
    pub fn in_use(&self) -> usize {
        self.inner.out.get()
    }

    /// Times a receive found the group empty and had to wait for a buffer.
    pub fn exhausted(&self) -> u64 {
        self.inner.exhausted.get()
    }

    /// Waits until at least one buffer is back on the ring (after a receive
    /// failed with `ENOBUFS`), without spinning.
    pub async fn available(&self) {
        self.inner.exhausted.set(self.inner.exhausted.get() + 1);
        let mut key = None;
        std::future::poll_fn(|cx| {
            if self.inner.out.get() < usize::from(self.inner.entries) {
                if let Some(k) = key.take() {
                    self.inner.waiters.remove(k);
                }
                return std::task::Poll::Ready(());
            }
            key = Some(self.inner.waiters.register(key, cx.waker()));
            std::task::Poll::Pending
        })
        .await
    }

    /// Takes ownership of buffer `bid` that a completion reported filled
    /// with `len` bytes. Neither is trusted past the group's bounds: an id
    /// outside the group gives `None`, a length is clamped to the buffer.
    pub(crate) fn take(&self, bid: u16, len: usize) -> Option<ProvidedBuf> {
        if bid >= self.inner.entries {
            return None;
        }
        self.inner.out.set(self.inner.out.get() + 1);
        Some(ProvidedBuf { ring: self.inner.clone(), bid, len: len.min(self.inner.buf_size) })
    }
}

impl Inner {
    /// Writes buffer `bid` into the next descriptor slot; visible to the
    /// kernel after `publish`.
    fn put(&self, bid: u16, publish: bool) {
        let tail = self.tail.get();
        let idx = usize::from(tail & (self.entries - 1));
        // In the mapping: idx < entries.
        let slot = self.ring.wrapping_add(idx);
        // SAFETY: `slot` is a descriptor inside the live mapping (idx < entries); the kernel never writes descriptors beyond our tail, so this one is ours until we advance the tail.
        let entry = unsafe { &mut *slot };
        // Inside `bufs`: bid < entries.
        let addr = self.bufs.wrapping_add(usize::from(bid) * self.buf_size);
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail.set(tail.wrapping_add(1));
        if publish {
            self.publish();
        }
    }

    fn publish(&self) {
        // SAFETY: `ring` is the base of a live, initialised descriptor ring, which is what `BufRingEntry::tail` requires.
        let tail = unsafe { BufRingEntry::tail(self.ring) } as *const AtomicU16;
        // SAFETY: the tail field is a properly aligned u16 shared with the kernel; an atomic release store orders the descriptor writes above before the kernel can observe the new tail.
        unsafe { (*tail).store(self.tail.get(), Ordering::Release) };
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.registered.get() {
            let _ = context::try_with(|c| c.reactor.unregister_buf_ring(self.bgid));
        }
        // SAFETY: the group is unregistered (or its ring is gone), and every ProvidedBuf holds an Rc to us, so no buffer is in use.
        unsafe { crate::mem::unmap(self.bufs, self.bufs_len) };
        // SAFETY: as above: nothing, kernel or ours, reads the descriptors any more.
        unsafe { crate::mem::unmap(self.ring.cast(), self.ring_bytes) };
    }
}

/// A received buffer, owned by the application until dropped, when it goes
/// back to its ring for the kernel to fill again.
pub struct ProvidedBuf {
    ring: Rc<Inner>,
    bid: u16,
    len: usize,
}

impl ProvidedBuf {
    /// Number of valid bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes were received (end of stream).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's id within its group.
    pub fn bid(&self) -> u16 {
        self.bid
    }
}

impl Deref for ProvidedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let start = self.ring.bufs.wrapping_add(usize::from(self.bid) * self.ring.buf_size);
        // SAFETY: the buffer is off the ring (the kernel handed it to us and will not write it until we put it back in Drop), `start` and `len` lie inside the mapping (bid < entries, len <= buf_size, both checked in `take`), and the kernel initialised `len` bytes of it.
        unsafe { std::slice::from_raw_parts(start, self.len) }
    }
}

impl fmt::Debug for ProvidedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvidedBuf").field("bid", &self.bid).field("len", &self.len).finish()
    }
}

impl Drop for ProvidedBuf {
    fn drop(&mut self) {
        self.ring.out.set(self.ring.out.get() - 1);
        self.ring.put(self.bid, true);
        if !self.ring.waiters.is_empty() {
            self.ring.waiters.wake_all();
        }
    }
}
