//! Per-shard buffer pools in fixed size classes (2 KiB, 16 KiB, 64 KiB).
//!
//! Each class is one anonymous mapping cut into equal buffers, so a buffer
//! never moves and the whole class can be registered with the shard's
//! io_uring as one fixed buffer: zero-copy sends from a registered buffer
//! skip pinning its pages on every send.
//!
//! Registered memory counts against `RLIMIT_MEMLOCK` (8 MiB on the
//! machines we test on, and often no more in containers). The pools of all
//! shards share one process-wide budget: classes are registered smallest
//! first while they fit, the rest stay unregistered (still usable, just
//! without the fixed-buffer path), and [`PoolReport`] says which is which
//! for the startup report. Starting never fails over it.
//!
//! Exhaustion is backpressure: [`BufPool::alloc`] waits for a buffer to come
//! back, [`BufPool::try_alloc`] returns `None`; both are counted. A buffer
//! can travel to another shard as a [`SendBuf`] and goes home over the mesh
//! when dropped there.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shard::ops::{IoBuf, IoBufMut};
use shard::sync::waiters::WaiterSet;

/// Buffer size classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeClass {
    /// 2 KiB: datagrams, small messages.
    Small,
    /// 16 KiB: TCP relay chunks.
    Medium,
    /// 64 KiB: bulk transfers.
    Large,
}

impl SizeClass {
    /// Every class, smallest first.
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];

    /// Bytes per buffer.
    pub const fn size(self) -> usize {
        match self {
            SizeClass::Small => 2 << 10,
            SizeClass::Medium => 16 << 10,
            SizeClass::Large => 64 << 10,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The smallest class that holds `len` bytes, if any.
    pub fn for_len(len: usize) -> Option<SizeClass> {
        SizeClass::ALL.into_iter().find(|c| c.size() >= len)
    }
}

/// Registered bytes of every pool in the process (they share one limit).
static REGISTERED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// How many buffers of each class a pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Buffers per class, in [`SizeClass::ALL`] order.
    pub counts: [usize; 3],
    /// Try to register the classes with the shard's ring.
    pub register: bool,
}

impl Default for PoolConfig {
    /// 1024 x 2 KiB + 128 x 16 KiB + 32 x 64 KiB = 6 MiB per shard.
    fn default() -> Self {
        PoolConfig { counts: [1024, 128, 32], register: true }
    }
}

struct Class {
    size: usize,
    count: usize,
    base: *mut u8,
    free: RefCell<Vec<u32>>,
    waiters: WaiterSet,
    registered: Cell<Option<u16>>,
    exhausted: Cell<u64>,
    waits: Cell<u64>,
}

struct Inner {
    classes: [Class; 3],
    home: Home,
    /// Buffers out as `SendBuf` on other shards: the mappings must outlive them.
    abroad: Cell<usize>,
    registration: RefCell<String>,
}

/// One shard's pool; cheap to clone (shared handle).
#[derive(Clone)]
pub struct BufPool {
    inner: Rc<Inner>,
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool").field("report", &self.report()).finish()
    }
}

/// A class's state, for the startup report and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassReport {
    /// The class.
    pub class: SizeClass,
    /// Buffers in the class.
    pub count: usize,
    /// Buffers handed out now.
    pub in_use: usize,
    /// Registered with the ring as fixed buffer number `Some(i)`.
    pub registered: Option<u16>,
    /// `try_alloc` calls that found the class empty.
    pub exhausted: u64,
    /// `alloc` calls that had to wait.
    pub waits: u64,
}

/// The pool's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    /// Per class, smallest first.
    pub classes: Vec<ClassReport>,
    /// What registration did, in words (for the startup report).
    pub registration: String,
}

impl BufPool {
    /// Maps the classes on the current shard and registers what fits in
    /// the memlock budget.
    pub fn new(cfg: PoolConfig) -> io::Result<BufPool> {
        let mut classes = Vec::with_capacity(3);
        for (class, &count) in SizeClass::ALL.iter().zip(cfg.counts.iter()) {
            let count = count.clamp(1, u32::MAX as usize);
            let base = shard::mem::map_anonymous(class.size() * count)?;
            classes.push(Class {
                size: class.size(),
                count,
                base,
                free: RefCell::new((0..count as u32).rev().collect()),
                waiters: WaiterSet::default(),
                registered: Cell::new(None),
                exhausted: Cell::new(0),
                waits: Cell::new(0),
            });
        }
        let classes: [Class; 3] = match classes.try_into() {
            Ok(c) => c,
            Err(_) => unreachable!("exactly three classes were built"),
        };
        let inner =
            Inner { classes, home: Home::current(), abroad: Cell::new(0), registration: RefCell::default() };
        let pool = BufPool { inner: Rc::new(inner) };
        let note = if cfg.register { pool.register() } else { "registration disabled".to_string() };
        // Part of the startup report: where registered buffers did not fit,
        // the operator learns it here (and the fix: raise RLIMIT_MEMLOCK).
        if note.contains("unregistered") {
            tracing::warn!(
                shard = shard::shard_id(),
                "buffer pool: {note}; raise RLIMIT_MEMLOCK (ulimit -l, LimitMEMLOCK=) to register all"
            );
        } else {
            tracing::info!(shard = shard::shard_id(), "buffer pool: {note}");
        }
        *pool.inner.registration.borrow_mut() = note;
        Ok(pool)
    }

    /// Registers classes, smallest first, while the process-wide memlock
    /// budget allows; returns what happened, for the startup report.
    fn register(&self) -> String {
        let budget = memlock_limit();
        let mut regions = Vec::new();
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        for (i, c) in self.inner.classes.iter().enumerate() {
            let bytes = c.size * c.count;
            let reserved = REGISTERED_BYTES.fetch_add(bytes, Ordering::SeqCst) + bytes;
            if reserved <= budget {
                regions.push((c.base, bytes));
                chosen.push(i);
            } else {
                REGISTERED_BYTES.fetch_sub(bytes, Ordering::SeqCst);
                skipped.push(SizeClass::ALL[i].size() >> 10);
            }
        }
        if regions.is_empty() {
            return format!(
                "no class fits the RLIMIT_MEMLOCK budget of {} KiB: all unregistered",
                budget >> 10
            );
        }
        // SAFETY: every region is a mapping owned by this pool; the pool's Drop leaves mappings in place (leaks them) when registered, so they outlive the ring that pins them.
        match unsafe { shard::ops::register_buffers(&regions) } {
            Ok(()) => {
                for (slot, &i) in chosen.iter().enumerate() {
                    self.inner.classes[i].registered.set(Some(slot as u16));
                }
                let kib: Vec<String> =
                    chosen.iter().map(|&i| format!("{}", SizeClass::ALL[i].size() >> 10)).collect();
                let mut note = format!("registered classes {} KiB", kib.join(", "));
                if !skipped.is_empty() {
                    let s: Vec<String> = skipped.iter().map(|k| k.to_string()).collect();
                    note.push_str(&format!(
                        "; {} KiB unregistered (RLIMIT_MEMLOCK {} KiB)",
                        s.join(", "),
                        budget >> 10
                    ));
                }
                note
            }
            Err(e) => {
                for &(_, bytes) in &regions {
                    REGISTERED_BYTES.fetch_sub(bytes, Ordering::SeqCst);
                }
                format!("registration failed ({e}): all unregistered")
            }
        }
    }

    /// A buffer of `class`, or `None` (counted) when the class is empty.
    pub fn try_alloc(&self, class: SizeClass) -> Option<PoolBuf> {
        let c = &self.inner.classes[class.index()];
        match c.free.borrow_mut().pop() {
            Some(idx) => Some(PoolBuf { pool: self.inner.clone(), class, idx, len: 0 }),
            None => {
                c.exhausted.set(c.exhausted.get() + 1);
                None
            }
        }
    }

    /// A buffer of `class`, waiting for one to be returned if the class is
    /// empty (backpressure; counted).
    pub async fn alloc(&self, class: SizeClass) -> PoolBuf {
        if let Some(b) = self.try_alloc_quiet(class) {
            return b;
        }
        let c = &self.inner.classes[class.index()];
        c.waits.set(c.waits.get() + 1);
        let mut key = None;
        std::future::poll_fn(|cx| match self.try_alloc_quiet(class) {
            Some(b) => {
                if let Some(k) = key.take() {
                    c.waiters.remove(k);
                }
                std::task::Poll::Ready(b)
            }
            None => {
                key = Some(c.waiters.register(key, cx.waker()));
                std::task::Poll::Pending
            }
        })
        .await
    }

    fn try_alloc_quiet(&self, class: SizeClass) -> Option<PoolBuf> {
        let idx = self.inner.classes[class.index()].free.borrow_mut().pop()?;
        Some(PoolBuf { pool: self.inner.clone(), class, idx, len: 0 })
    }

    /// The pool's state.
    pub fn report(&self) -> PoolReport {
        let classes = SizeClass::ALL
            .iter()
            .zip(self.inner.classes.iter())
            .map(|(&class, c)| ClassReport {
                class,
                count: c.count,
                in_use: c.count - c.free.borrow().len(),
                registered: c.registered.get(),
                exhausted: c.exhausted.get(),
                waits: c.waits.get(),
            })
            .collect();
        PoolReport { classes, registration: self.inner.registration.borrow().clone() }
    }
}

impl Inner {
    fn give_back(&self, class: SizeClass, idx: u32) {
        let c = &self.classes[class.index()];
        c.free.borrow_mut().push(idx);
        c.waiters.wake_all();
    }

    fn ptr(&self, class: SizeClass, idx: u32) -> *mut u8 {
        let c = &self.classes[class.index()];
        // SAFETY: idx < count (only indices from the free list exist), so the offset stays inside the class's mapping.
        unsafe { c.base.add(idx as usize * c.size) }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let registered: usize =
            self.classes.iter().filter(|c| c.registered.get().is_some()).map(|c| c.size * c.count).sum();
        if registered > 0 {
            // No operation can be using a fixed buffer (each holds a PoolBuf,
            // which holds us). Unregister so the pages are unpinned and the
            // budget can go back; off a shard the ring is gone already.
            let unregistered = !shard::on_shard() || shard::ops::unregister_buffers().is_ok();
            if !unregistered {
                // The ring still pins the pages: keep them mapped, and keep
                // the budget spent, as long as the ring lives.
                return;
            }
            REGISTERED_BYTES.fetch_sub(registered, Ordering::SeqCst);
        }
        if self.abroad.get() > 0 {
            // Buffers on other shards still point into the mappings.
            return;
        }
        for c in &self.classes {
            // SAFETY: unregistered (or never registered), no buffer abroad (checked above), and every local PoolBuf holds an Rc, so none is alive either.
            unsafe { shard::mem::unmap(c.base, c.size * c.count) };
        }
    }
}

/// A buffer from a [`BufPool`]; back to its class when dropped.
pub struct PoolBuf {
    pool: Rc<Inner>,
    class: SizeClass,
    idx: u32,
    len: usize,
}

impl fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuf").field("class", &self.class).field("len", &self.len).finish()
    }
}

impl PoolBuf {
    /// The buffer's class.
    pub fn class(&self) -> SizeClass {
        self.class
    }

    /// Bytes of valid data.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.class.size()
    }

    /// Sets the valid length to `len` (at most the capacity), e.g. after
    /// writing into the buffer through `DerefMut` after `set_len`, or to empty it with 0.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    /// Appends as much of `data` as fits; returns how much was copied.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity() - self.len);
        let dst = self.pool.ptr(self.class, self.idx).wrapping_add(self.len);
        // SAFETY: the destination range len..len+n lies inside this buffer (n fits the capacity left), which only this PoolBuf can reach.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, n) };
        self.len += n;
        n
    }

    /// The ring's fixed-buffer index, when the class is registered.
    pub fn fixed_index(&self) -> Option<u16> {
        self.pool.classes[self.class.index()].registered.get()
    }

    /// A `Send` handle for moving the buffer to another shard.
    pub fn into_send(self) -> SendBuf {
        self.pool.abroad.set(self.pool.abroad.get() + 1);
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; the Rc is moved out exactly once and leaked into the SendBuf's raw pointer.
        let pool = unsafe { std::ptr::read(&this.pool) };
        SendBuf {
            pool: Rc::into_raw(pool) as usize,
            home: this.pool.home,
            class: this.class,
            idx: this.idx,
            len: this.len,
            ptr: this.pool.ptr(this.class, this.idx) as usize,
        }
    }
}

impl Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes from the buffer's start are initialised and only this PoolBuf reaches the buffer.
        unsafe { std::slice::from_raw_parts(self.pool.ptr(self.class, self.idx), self.len) }
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in Deref, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pool.ptr(self.class, self.idx), self.len) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        self.pool.give_back(self.class, self.idx);
    }
}

// SAFETY: the buffer lies in a mapping that does not move and outlives the
// PoolBuf; `len` bytes of it are initialised.
unsafe impl IoBuf for PoolBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.pool.ptr(self.class, self.idx)
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: the whole class size is writable and owned by this PoolBuf.
unsafe impl IoBufMut for PoolBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.pool.ptr(self.class, self.idx)
    }
    fn bytes_total(&mut self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, n: usize) {
        self.len = self.len.max(n.min(self.capacity()));
    }
}

/// A pool buffer travelling between shards. Read it anywhere; when dropped
/// on another shard it is sent home over the mesh and returned there.
pub struct SendBuf {
    /// `Rc<Inner>` turned into a raw pointer: only dereferenced on `home`.
    pool: usize,
    home: Home,
    class: SizeClass,
    idx: u32,
    len: usize,
    ptr: usize,
}

// SAFETY: the only shard-local part is the pool pointer, which is
// dereferenced (turned back into an Rc) only on the thread that made the
// pool (`into_local` compares thread identities); the buffer bytes belong
// to this handle alone.
unsafe impl Send for SendBuf {}

/// Where a pool lives: its shard, its runtime and its thread. The thread
/// is what makes turning the pool pointer back into an `Rc` sound; the
/// runtime says whether the mesh can carry a buffer there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Home {
    shard: usize,
    runtime: u64,
    thread: std::thread::ThreadId,
}

impl Home {
    fn current() -> Home {
        Home { shard: shard::shard_id(), runtime: shard::runtime_id(), thread: std::thread::current().id() }
    }

    /// Whether this thread is the pool's own.
    fn is_here(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// Whether this thread is a shard of the pool's runtime, so that
    /// `submit_to(self.shard)` reaches the pool's thread.
    fn reachable(&self) -> bool {
        shard::on_shard() && shard::runtime_id() == self.runtime
    }
}

impl fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBuf")
            .field("home", &self.home)
            .field("class", &self.class)
            .field("len", &self.len)
            .finish()
    }
}

impl SendBuf {
    /// The shard the buffer belongs to.
    pub fn home(&self) -> usize {
        self.home.shard
    }

    /// The data.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer's mapping outlives every SendBuf (the pool leaks its mappings while buffers are abroad) and `len` bytes of it are initialised and owned by this handle.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// On the pool's own thread: a `PoolBuf` again. Anywhere else
    /// (another shard, or shard 0 of another runtime in this process), the
    /// handle back.
    pub fn into_local(self) -> Result<PoolBuf, SendBuf> {
        if !self.home.is_here() {
            return Err(self);
        }
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: this is the pool's own thread (checked above by thread identity), the one that owns the Rc; the pointer came from Rc::into_raw in into_send and is turned back exactly once (`this` is never dropped).
        let pool = unsafe { Rc::from_raw(this.pool as *const Inner) };
        pool.abroad.set(pool.abroad.get() - 1);
        Ok(PoolBuf { pool, class: this.class, idx: this.idx, len: this.len })
    }
}

impl Deref for SendBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for SendBuf {
    fn drop(&mut self) {
        let moved = SendBuf { ..*self };
        self.pool = 0;
        if moved.pool == 0 {
            return;
        }
        match moved.into_local() {
            Ok(local) => drop(local),
            Err(foreign) => {
                if foreign.home.reachable() {
                    let home = foreign.home.shard;
                    shard::spawn_local(shard::submit_to(home, move || async move { drop(foreign) })).detach();
                } else {
                    // Off the pool's runtime (it is gone, or this is
                    // another one): nowhere to return it. The pool leaks its
                    // mappings while buffers are abroad, so the bytes stay
                    // valid; the buffer is lost to the pool.
                    std::mem::forget(foreign);
                }
            }
        }
    }
}

/// The process's RLIMIT_MEMLOCK soft limit in bytes.
fn memlock_limit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes a valid rlimit into `lim`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return 0;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        usize::MAX
    } else {
        lim.rlim_cur as usize
    }
}
