//! Bounded single-producer/single-consumer ring: the data path between two
//! shards.
//!
//! The mesh holds one ring per ordered pair of shards, i.e. thousands on a
//! 64+ core box, so a ring must be small (three 128-byte blocks plus its slots)
//! and free when idle (nobody touches a shared line unless there is work).
//!
//! Both sides work in batches. The producer *stages* pushes and makes the whole
//! batch visible with one Release store ([`Producer::publish`]); the consumer
//! pops lazily and returns the whole batch of slots with one Release store
//! ([`Consumer::release`]). Each side also keeps a private copy of the other
//! side's index and reads the shared one only when its copy claims full/empty,
//! so a batch costs one cache-line transfer per direction, not one per item.
//!
//! Positions are free-running `usize` counters masked on access; the wrapping
//! difference `tail - head` is the occupancy, so no slot is sacrificed to tell
//! a full ring from an empty one. With counters `released <= popped <= published
//! <= pushed`, the slots partition into:
//!
//! | positions                  | slot contents               | owner    |
//! |----------------------------|-----------------------------|----------|
//! | `released .. popped`       | moved out, not yet released | consumer |
//! | `popped .. published`      | initialised, visible        | consumer |
//! | `published .. pushed`      | initialised, staged         | producer |
//! | `pushed .. released + cap` | uninitialised, free         | producer |
//!
//! Every `unsafe` block below is an access that this table permits.
#![allow(unsafe_code)]

use core::fmt;
use core::mem::MaybeUninit;

use super::sync::{Arc, AtomicBool, AtomicUsize, CachePadded, Ordering, UnsafeCell};

type Slot<T> = UnsafeCell<MaybeUninit<T>>;

/// State shared by the two halves.
struct Shared<T> {
    /// `released`: written by the consumer only, read by the producer when its
    /// cached copy says the ring is full.
    head: CachePadded<AtomicUsize>,
    /// `published`: written by the producer only, read by the consumer when its
    /// cached copy says the ring is empty.
    tail: CachePadded<AtomicUsize>,
    /// Read-only after construction, so it may share a block with the flags.
    slots: Box<[Slot<T>]>,
    producer_alive: AtomicBool,
    consumer_alive: AtomicBool,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone, and the final `Arc` decrement orders this
        // after everything they did. The consumer released all it popped when
        // it dropped and the producer dropped what it staged, so exactly
        // `released .. published` is still initialised.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        let mask = self.slots.len() - 1;
        let mut pos = head;
        while pos != tail {
            self.slots[pos & mask].with_mut(|p| {
                // SAFETY: the cell hands out a valid pointer to its slot, and we are the only owner left.
                let slot = unsafe { &mut *p };
                // SAFETY: `pos` lies in `released .. published`, whose slots hold initialised items nobody has moved out.
                unsafe { slot.assume_init_drop() }
            });
            pos = pos.wrapping_add(1);
        }
    }
}

/// Creates a ring holding at least `capacity` items (rounded up to a power of
/// two, minimum 2) and returns its two halves.
///
/// # Panics
/// If the rounded capacity overflows `usize`.
pub fn ring<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(2).checked_next_power_of_two().expect("ring capacity overflows usize");
    let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        producer_alive: AtomicBool::new(true),
        consumer_alive: AtomicBool::new(true),
    });
    let mask = capacity - 1;
    let producer = Producer { shared: Arc::clone(&shared), mask, pushed: 0, published: 0, head_cache: 0 };
    let consumer = Consumer { shared, mask, popped: 0, released: 0, tail_cache: 0 };
    (producer, consumer)
}

/// Writing half of a [`ring`]. Owned by exactly one thread at a time.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    mask: usize,
    /// Next position to write, staged items included.
    pushed: usize,
    /// Last value stored to `shared.tail`.
    published: usize,
    /// Some past value of `shared.head`; never ahead of the real one, so a
    /// "not full" verdict based on it is always right.
    head_cache: usize,
}

// SAFETY: the producer is the only writer of `shared.tail` and of the slots in
// `published .. released+cap`, and it needs `&mut self` to do either; moving it
// to another thread moves that role wholesale, and the Release/Acquire pairs on
// `head`/`tail` order its slot accesses against the consumer's wherever either
// half lives. Items it drops or hands over may end up on another thread, hence
// `T: Send`. It stays `!Sync` (through `Shared`'s `UnsafeCell`s) and `!Clone`.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// Stages `v` in the next free slot. The consumer cannot see it until
    /// [`publish`](Self::publish).
    ///
    /// Returns `Err(v)` when the ring is full, counting staged items and items
    /// the consumer popped but has not released yet.
    #[inline]
    pub fn push(&mut self, v: T) -> Result<(), T> {
        if self.pushed.wrapping_sub(self.head_cache) == self.capacity() {
            // Acquire: pairs with the consumer's Release in `release`, so its
            // reads of the slots we are about to reuse happen before our writes.
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            if self.pushed.wrapping_sub(self.head_cache) == self.capacity() {
                return Err(v);
            }
        }
        self.shared.slots[self.pushed & self.mask].with_mut(|p| {
            // SAFETY: `pushed - head_cache < capacity` and `head_cache <= released`, so `pushed` lies in the free region the producer owns, and the consumer's last read of this slot happened before the Acquire load that produced `head_cache`.
            unsafe { p.write(MaybeUninit::new(v)) }
        });
        self.pushed = self.pushed.wrapping_add(1);
        Ok(())
    }

    /// Makes every staged item visible to the consumer with one Release store;
    /// returns how many were published. Publishing nothing touches nothing.
    #[inline]
    pub fn publish(&mut self) -> usize {
        let n = self.staged();
        if n != 0 {
            // Release: the slot writes in `push` become visible to whoever
            // Acquire-loads this value (or a later one).
            self.shared.tail.store(self.pushed, Ordering::Release);
            self.published = self.pushed;
        }
        n
    }

    /// Items pushed but not yet published.
    #[inline]
    pub fn staged(&self) -> usize {
        self.pushed.wrapping_sub(self.published)
    }

    /// How many more items `push` will accept. A lower bound (the consumer may
    /// have released more since we last looked); the shared index is read only
    /// when the cached one says the ring is full, so `0` is always current.
    #[inline]
    pub fn free(&mut self) -> usize {
        let mut used = self.pushed.wrapping_sub(self.head_cache);
        if used == self.capacity() {
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            used = self.pushed.wrapping_sub(self.head_cache);
        }
        self.capacity() - used
    }

    /// Number of slots (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// False once the [`Consumer`] has been dropped: anything pushed from then
    /// on is only ever dropped, never received.
    pub fn is_consumer_alive(&self) -> bool {
        self.shared.consumer_alive.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Staged items were never visible, so they are still ours to drop;
        // leaving them to `Shared` would hide them behind the published tail.
        let mut pos = self.published;
        while pos != self.pushed {
            self.shared.slots[pos & self.mask].with_mut(|p| {
                // SAFETY: the cell hands out a valid pointer to its slot; slots in `published .. pushed` are invisible to the consumer, so the access is exclusive.
                let slot = unsafe { &mut *p };
                // SAFETY: `pos` lies in `published .. pushed`: initialised and owned by us.
                unsafe { slot.assume_init_drop() }
            });
            pos = pos.wrapping_add(1);
        }
        self.shared.producer_alive.store(false, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("pushed", &self.pushed)
            .field("published", &self.published)
            .field("head_cache", &self.head_cache)
            .finish()
    }
}

/// Reading half of a [`ring`]. Owned by exactly one thread at a time.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    mask: usize,
    /// Next position to read.
    popped: usize,
    /// Last value stored to `shared.head`.
    released: usize,
    /// Some past value of `shared.tail`; never ahead of the real one, so a
    /// "not empty" verdict based on it is always right.
    tail_cache: usize,
}

// SAFETY: the consumer is the only writer of `shared.head`, the only reader of
// the slots in `popped .. published`, and needs `&mut self` for either; moving
// it moves that role wholesale, and the Release/Acquire pairs on `head`/`tail`
// order its slot accesses against the producer's wherever either half lives.
// Items it receives were produced on another thread, hence `T: Send`. It stays
// `!Sync` (through `Shared`'s `UnsafeCell`s) and `!Clone`.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// Takes the next published item. Its slot stays reserved until
    /// [`release`](Self::release), so a consumer that pops without releasing
    /// eventually makes the producer see a full ring.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.popped == self.tail_cache {
            self.refresh_tail();
            if self.popped == self.tail_cache {
                return None;
            }
        }
        // SAFETY: `popped != tail_cache` was just established.
        Some(unsafe { self.take_visible() })
    }

    /// Hands every popped slot back to the producer with one Release store.
    #[inline]
    pub fn release(&mut self) {
        if self.released != self.popped {
            // Release: our reads (moves out) of those slots happen before the
            // producer's Acquire load that lets it overwrite them.
            self.shared.head.store(self.popped, Ordering::Release);
            self.released = self.popped;
        }
    }

    /// Pops up to `max` items into `f`, then releases once. Returns how many
    /// were taken. Reads the shared tail at most once.
    ///
    /// If `f` panics, the items already taken stay taken and the rest stay
    /// in the ring; dropping the consumer releases the slots.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        if self.tail_cache.wrapping_sub(self.popped) < max {
            self.refresh_tail();
        }
        let n = self.tail_cache.wrapping_sub(self.popped).min(max);
        for _ in 0..n {
            // SAFETY: fewer than `tail_cache - popped` items taken so far.
            f(unsafe { self.take_visible() });
        }
        self.release();
        n
    }

    /// Published items not yet popped. Always reads the shared tail.
    pub fn len_visible(&mut self) -> usize {
        self.refresh_tail();
        self.tail_cache.wrapping_sub(self.popped)
    }

    /// True when no published item is waiting. Reads the shared tail only if
    /// the cached one says empty.
    #[inline]
    pub fn is_empty(&mut self) -> bool {
        if self.popped != self.tail_cache {
            return false;
        }
        self.refresh_tail();
        self.popped == self.tail_cache
    }

    /// Number of slots (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// False once the [`Producer`] has been dropped. Everything it published
    /// before that is still delivered, so drain after seeing `false`.
    pub fn is_producer_alive(&self) -> bool {
        self.shared.producer_alive.load(Ordering::Acquire)
    }

    #[inline]
    fn refresh_tail(&mut self) {
        // Acquire: pairs with `publish`, making the slot writes visible.
        self.tail_cache = self.shared.tail.load(Ordering::Acquire);
    }

    /// Moves the item at `popped` out and advances past it.
    ///
    /// # Safety
    /// `popped != tail_cache`, i.e. a published item is waiting.
    #[inline]
    unsafe fn take_visible(&mut self) -> T {
        debug_assert_ne!(self.popped, self.tail_cache);
        let v = self.shared.slots[self.popped & self.mask].with(|p| {
            // SAFETY: the cell hands out a valid pointer to its slot, which the producer does not touch until we release it.
            let slot = unsafe { &*p };
            // SAFETY: `popped .. tail_cache` lies in `popped .. published`: initialised, and its writes were made visible by the Acquire load that produced `tail_cache`. Advancing `popped` right after keeps us from reading the moved-out value twice.
            unsafe { slot.assume_init_read() }
        });
        self.popped = self.popped.wrapping_add(1);
        v
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // `Shared` drops `released .. published`; popped items are gone
        // already, so publish how far we got or they would be dropped twice.
        self.release();
        self.shared.consumer_alive.store(false, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("popped", &self.popped)
            .field("released", &self.released)
            .field("tail_cache", &self.tail_cache)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering::Relaxed};
    use std::sync::Arc as StdArc;
    use std::thread;

    /// An item that counts its drops, to catch leaks and double drops.
    #[derive(Debug)]
    struct Probe {
        id: u64,
        drops: StdArc<StdAtomicUsize>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Relaxed);
        }
    }

    fn probes() -> (StdArc<StdAtomicUsize>, impl FnMut(u64) -> Probe) {
        let drops = StdArc::new(StdAtomicUsize::new(0));
        let d = StdArc::clone(&drops);
        (drops, move |id| Probe { id, drops: StdArc::clone(&d) })
    }

    // Compile-time shape checks: Send, but neither Sync nor Clone. The
    // "not" checks work by making a method name ambiguous exactly when the
    // unwanted trait is implemented.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
    trait AmbiguousIfClone<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    impl<T: Clone> AmbiguousIfClone<u8> for T {}
    const _: fn() = || {
        fn is_send<T: Send>() {}
        is_send::<Producer<Vec<u8>>>();
        is_send::<Consumer<Vec<u8>>>();
        <Producer<u8> as AmbiguousIfSync<_>>::check();
        <Consumer<u8> as AmbiguousIfSync<_>>::check();
        <Producer<u8> as AmbiguousIfClone<_>>::check();
        <Consumer<u8> as AmbiguousIfClone<_>>::check();
    };

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        for (asked, got) in [(0, 2), (1, 2), (2, 2), (3, 4), (5, 8), (1024, 1024), (1025, 2048)] {
            let (tx, rx) = ring::<u8>(asked);
            assert_eq!((tx.capacity(), rx.capacity()), (got, got), "asked {asked}");
        }
    }

    #[test]
    fn fifo_across_many_wraparounds() {
        let (mut tx, mut rx) = ring(4);
        let mut next_out = 0;
        for lap in 0..100 {
            for i in 0..3 {
                tx.push(lap * 3 + i).unwrap();
            }
            assert_eq!(tx.publish(), 3);
            while let Some(v) = rx.pop() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
            rx.release();
        }
        assert_eq!(next_out, 300);
    }

    #[test]
    fn staged_items_are_invisible_until_published() {
        let (mut tx, mut rx) = ring(8);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert_eq!(tx.staged(), 2);
        assert!(rx.is_empty());
        assert_eq!(rx.len_visible(), 0);
        assert_eq!(rx.pop(), None);
        assert_eq!(tx.publish(), 2);
        assert_eq!(tx.staged(), 0);
        assert_eq!(tx.publish(), 0);
        tx.push(3).unwrap();
        assert_eq!(rx.len_visible(), 2);
        assert_eq!(rx.pop(), Some(1));
        assert_eq!(rx.pop(), Some(2));
        assert_eq!(rx.pop(), None);
        tx.publish();
        assert_eq!(rx.pop(), Some(3));
    }

    #[test]
    fn full_counts_staged_and_unreleased_slots() {
        let (mut tx, mut rx) = ring(2);
        assert_eq!(tx.free(), 2);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        // Full with nothing published yet: staged items hold their slots.
        assert_eq!(tx.push(3), Err(3));
        assert_eq!(tx.free(), 0);
        tx.publish();
        assert_eq!(rx.pop(), Some(1));
        // Popped but not released: the slot is still reserved.
        assert_eq!(tx.push(3), Err(3));
        assert_eq!(tx.free(), 0);
        rx.release();
        assert_eq!(tx.free(), 1);
        tx.push(3).unwrap();
        assert_eq!(tx.push(4), Err(4));
        tx.publish();
        assert_eq!(rx.drain(usize::MAX, drop), 2);
        assert!(rx.is_empty());
        assert_eq!(tx.free(), 2);
    }

    #[test]
    fn drain_respects_max_and_releases_once() {
        let (mut tx, mut rx) = ring(8);
        for i in 0..6 {
            tx.push(i).unwrap();
        }
        tx.publish();
        let mut got = Vec::new();
        assert_eq!(rx.drain(4, |v| got.push(v)), 4);
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(tx.free(), 2, "cached head is still good enough");
        for i in 6..8 {
            tx.push(i).unwrap();
        }
        assert_eq!(tx.free(), 4, "refreshed once the cache said full");
        assert_eq!(rx.drain(0, |_| unreachable!()), 0);
        tx.publish();
        assert_eq!(rx.drain(usize::MAX, |v| got.push(v)), 4);
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn zero_sized_items_are_counted() {
        let (mut tx, mut rx) = ring(2);
        tx.push(()).unwrap();
        tx.push(()).unwrap();
        assert_eq!(tx.push(()), Err(()));
        tx.publish();
        assert_eq!(rx.drain(usize::MAX, |()| ()), 2);
    }

    #[test]
    fn liveness_flags_follow_drops() {
        let (tx, rx) = ring::<u8>(2);
        assert!(tx.is_consumer_alive() && rx.is_producer_alive());
        drop(rx);
        assert!(!tx.is_consumer_alive());
        let (tx, rx) = ring::<u8>(2);
        drop(tx);
        assert!(!rx.is_producer_alive());
    }

    /// Published items still in the ring (some popped, some not), plus staged
    /// items, for each drop order: every item is dropped exactly once.
    #[test]
    fn drops_every_item_exactly_once() {
        for consumer_first in [false, true] {
            let (drops, mut probe) = probes();
            let (mut tx, mut rx) = ring(8);
            for id in 0..5 {
                tx.push(probe(id)).unwrap();
            }
            tx.publish();
            for id in 5..7 {
                tx.push(probe(id)).unwrap();
            }
            let first = rx.pop().unwrap();
            assert_eq!(first.id, 0);
            drop(first);
            let _ = rx.pop().unwrap(); // popped, never explicitly released
            assert_eq!(drops.load(Relaxed), 2);
            if consumer_first {
                drop(rx);
                assert_eq!(drops.load(Relaxed), 2, "producer still owns the ring");
                drop(tx);
            } else {
                drop(tx);
                assert_eq!(drops.load(Relaxed), 4, "staged items go with the producer");
                drop(rx);
            }
            assert_eq!(drops.load(Relaxed), 7);
        }
    }

    #[test]
    fn rejected_push_hands_the_item_back() {
        let (drops, mut probe) = probes();
        let (mut tx, rx) = ring(2);
        tx.push(probe(0)).unwrap();
        tx.push(probe(1)).unwrap();
        let back = tx.push(probe(2)).unwrap_err();
        assert_eq!(back.id, 2);
        assert_eq!(drops.load(Relaxed), 0);
        drop((back, tx, rx));
        assert_eq!(drops.load(Relaxed), 3);
    }

    /// The consumer quits halfway while the producer keeps going; the producer
    /// notices, stops, and nothing leaks on either side.
    #[test]
    fn consumer_dropping_midstream_leaks_nothing() {
        let (drops, mut probe) = probes();
        let (mut tx, mut rx) = ring(16);
        let created = thread::scope(|s| {
            s.spawn(move || {
                let mut seen = 0;
                while seen < 100 {
                    seen += rx.drain(7, drop);
                    thread::yield_now();
                }
            });
            let mut created = 0;
            while tx.is_consumer_alive() {
                let p = probe(created);
                created += 1;
                if tx.push(p).is_err() || created % 5 == 0 {
                    tx.publish();
                    thread::yield_now();
                }
            }
            tx.push(probe(created)).unwrap_or_else(drop);
            drop(tx);
            created + 1
        });
        assert_eq!(drops.load(Relaxed) as u64, created);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Publish,
        Pop(usize),
        Release,
        Drain(usize),
        Free,
        LenVisible,
        IsEmpty,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..12usize).prop_map(Op::Push),
            2 => Just(Op::Publish),
            2 => (0..6usize).prop_map(Op::Pop),
            1 => Just(Op::Release),
            2 => (0..12usize).prop_map(Op::Drain),
            1 => Just(Op::Free),
            1 => Just(Op::LenVisible),
            1 => Just(Op::IsEmpty),
        ]
    }

    /// What the ring should hold: ids staged, ids visible, and how many slots
    /// are popped but not yet released.
    #[derive(Default)]
    struct Model {
        cap: usize,
        next: u64,
        staged: VecDeque<u64>,
        visible: VecDeque<u64>,
        unreleased: usize,
    }

    impl Model {
        fn used(&self) -> usize {
            self.staged.len() + self.visible.len() + self.unreleased
        }

        fn pop(&mut self, got: Option<Probe>) {
            let want = self.visible.pop_front();
            assert_eq!(got.as_ref().map(|p| p.id), want);
            self.unreleased += usize::from(want.is_some());
        }
    }

    fn step(
        op: &Op,
        m: &mut Model,
        tx: &mut Producer<Probe>,
        rx: &mut Consumer<Probe>,
        probe: &mut impl FnMut(u64) -> Probe,
    ) {
        match *op {
            Op::Push(k) => {
                for _ in 0..k {
                    let id = m.next;
                    m.next += 1;
                    match tx.push(probe(id)) {
                        Ok(()) => m.staged.push_back(id),
                        Err(back) => {
                            assert_eq!(m.used(), m.cap, "rejected while not full");
                            assert_eq!(back.id, id);
                        }
                    }
                }
            }
            Op::Publish => {
                assert_eq!(tx.publish(), m.staged.len());
                m.visible.extend(m.staged.drain(..));
            }
            Op::Pop(k) => {
                for _ in 0..k {
                    m.pop(rx.pop());
                }
            }
            Op::Release => {
                rx.release();
                m.unreleased = 0;
            }
            Op::Drain(k) => {
                let want = k.min(m.visible.len());
                let mut got = Vec::new();
                assert_eq!(rx.drain(k, |p| got.push(p)), want);
                let want: Vec<u64> = m.visible.drain(..want).collect();
                assert_eq!(got.iter().map(|p| p.id).collect::<Vec<_>>(), want);
                m.unreleased = 0;
            }
            Op::Free => {
                let (free, exact) = (tx.free(), m.cap - m.used());
                assert!(free <= exact && (free == 0) == (exact == 0));
            }
            Op::LenVisible => assert_eq!(rx.len_visible(), m.visible.len()),
            Op::IsEmpty => assert_eq!(rx.is_empty(), m.visible.is_empty()),
        }
        assert_eq!(tx.staged(), m.staged.len());
    }

    proptest! {
        /// Single-threaded runs against a `VecDeque` model: FIFO, nothing lost
        /// or duplicated, full/empty exactly when the model says so, and every
        /// item dropped exactly once whichever half goes first.
        #[test]
        fn behaves_like_a_bounded_queue(
            asked in 0..40usize,
            ops in prop::collection::vec(op(), 0..200),
            consumer_first: bool,
        ) {
            let (drops, mut probe) = probes();
            let (mut tx, mut rx) = ring(asked);
            let mut m = Model { cap: tx.capacity(), ..Model::default() };
            prop_assert!(m.cap.is_power_of_two() && m.cap >= asked.max(2));
            for op in &ops {
                step(op, &mut m, &mut tx, &mut rx, &mut probe);
            }
            if consumer_first {
                drop(rx);
                drop(tx);
            } else {
                drop(tx);
                drop(rx);
            }
            prop_assert_eq!(drops.load(Relaxed) as u64, m.next);
        }
    }

    /// Pushes `0..n` in batches of `push_batches` (cycled), publishing after
    /// each batch.
    fn produce(mut tx: Producer<u64>, n: u64, push_batches: &[usize]) {
        let mut next = 0;
        for &batch in push_batches.iter().cycle() {
            if next == n {
                break;
            }
            let mut k = 0;
            while k < batch && next < n {
                if tx.push(next).is_ok() {
                    next += 1;
                    k += 1;
                } else {
                    // Full, possibly with our own staged items: hand them over.
                    tx.publish();
                    thread::yield_now();
                }
            }
            tx.publish();
        }
    }

    /// Receives until `n` items arrived, alternating drain and pop+release as
    /// `pull_batches` says, and checks the sequence is exactly `0..n`.
    fn consume(mut rx: Consumer<u64>, n: u64, pull_batches: &[(bool, usize)]) {
        let mut expect = 0;
        for &(by_pop, batch) in pull_batches.iter().cycle() {
            if expect == n {
                break;
            }
            let got = if by_pop {
                let mut got = 0;
                while got < batch {
                    let Some(v) = rx.pop() else { break };
                    assert_eq!(v, expect);
                    expect += 1;
                    got += 1;
                }
                rx.release();
                got
            } else {
                rx.drain(batch, |v| {
                    assert_eq!(v, expect);
                    expect += 1;
                })
            };
            if got == 0 {
                thread::yield_now();
            }
        }
        assert!(rx.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Two real threads, arbitrary capacities and batch sizes on both sides:
        /// the consumer sees exactly `0..n`, in order.
        #[test]
        fn two_threads_deliver_in_order(
            asked in 1..64usize,
            push_batches in prop::collection::vec(1..40usize, 1..8),
            pull_batches in prop::collection::vec((any::<bool>(), 1..40usize), 1..8),
        ) {
            const N: u64 = if cfg!(miri) { 200 } else { 20_000 };
            let (tx, rx) = ring(asked);
            thread::scope(|s| {
                s.spawn(|| produce(tx, N, &push_batches));
                consume(rx, N, &pull_batches);
            });
        }
    }
}
