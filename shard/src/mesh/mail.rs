//! "Who has mail for me": the park/wake handshake between shards.
//!
//! Rings carry the items; the mailbox only says *which* rings have some. A
//! receiver on a 64+ core box thus finds its work with N/64 word loads instead
//! of polling N rings, and it can go to sleep without racing a sender that is
//! publishing at that very moment.
//!
//! There is one [`Mailbox`] per receiving shard, shared by all its senders. It
//! holds one bit per sender shard, one more ([`Mailbox::foreign`]) for threads
//! outside the runtime that feed the receiver through some other queue, and a
//! `parked` flag.
//!
//! # Protocol
//!
//! ```text
//! sender (after Producer::publish on its ring to the receiver):
//!     if mailbox.notify(me) { deliver one wake-up to the receiver }
//!
//! receiver loop:
//!     mailbox.take(|sender| drain the ring from `sender`)
//!     ...run tasks...
//!     if mailbox.prepare_park() {
//!         sleep until a wake-up (or a timer, or I/O)
//!         mailbox.unparked()
//!     }
//! ```
//!
//! **Invariant: a receiver never sleeps while a published item's `notify` has
//! returned false.** A `notify` returning true hands the duty to the caller,
//! who must deliver the wake-up. Exactly one notifier wins each park.
//!
//! Why it holds: the sender does `set bit; fence(SeqCst); load parked`, and the
//! receiver does `set parked = true; fence(SeqCst); load bits`. SeqCst fences
//! are totally ordered. If the sender's fence comes first, the receiver's load
//! sees the bit (or a later value, i.e. the receiver already took it) and does
//! not sleep. If the receiver's fence comes first, the sender sees
//! `parked == true` or something written later: another notifier's `false`
//! (that notifier wakes the receiver) or the receiver's own `false` (it is
//! awake). Seeing `true`, the sender swaps in `false`, so exactly one caller
//! learns it must wake the receiver.
//!
//! # Requirements on the caller
//!
//! - The wake-up must be *sticky* (eventfd counter, futex word, io_uring
//!   `msg_ring`): one sent before the receiver actually blocks must still end
//!   the sleep, because `notify` may run between `prepare_park` and the block.
//! - Spurious wake-ups must be harmless: a notifier can claim a park that the
//!   receiver abandoned a moment later because it found mail.
//! - `take` clears bits. A receiver that leaves items in a ring (e.g. a drain
//!   budget ran out) must remember that ring itself, or re-flag it with
//!   `notify(sender)`, which returns false because the receiver is not parked.
//!   Otherwise `prepare_park` would let it sleep on those items.

use core::fmt;

use super::sync::{fence, AtomicBool, AtomicU64, Ordering};

const BITS: usize = u64::BITS as usize;

/// Per-receiver bitmap of senders with unread mail, plus the parked flag.
pub struct Mailbox {
    /// Bit `s % 64` of word `s / 64` is set when sender `s` has published
    /// since the receiver last looked. Plain words, not padded: senders to
    /// the same receiver contend on them anyway, and the receiver wants them
    /// in as few lines as possible.
    words: Box<[AtomicU64]>,
    parked: AtomicBool,
    n_shards: usize,
}

impl Mailbox {
    /// A mailbox for a receiver with `n_shards` potential shard senders
    /// (indices `0..n_shards`) plus the foreign slot `n_shards`.
    pub fn new(n_shards: usize) -> Self {
        let n_words = (n_shards + 1).div_ceil(BITS);
        Self {
            words: (0..n_words).map(|_| AtomicU64::new(0)).collect(),
            parked: AtomicBool::new(false),
            n_shards,
        }
    }

    /// Number of shard senders this mailbox was built for.
    pub fn n_shards(&self) -> usize {
        self.n_shards
    }

    /// The sender index reserved for threads outside the runtime.
    pub fn foreign(&self) -> usize {
        self.n_shards
    }

    /// Flags mail from `sender`; call after publishing to the receiver.
    ///
    /// Returns true iff the receiver was parked and this call is the one that
    /// must now wake it. Returning false is a promise that the receiver will
    /// look at `sender`'s ring before it next sleeps.
    ///
    /// # Panics
    /// If `sender > n_shards`.
    #[inline]
    pub fn notify(&self, sender: usize) -> bool {
        assert!(sender <= self.n_shards, "sender {sender} out of range");
        // Release: the receiver's Acquire in `take` then sees the ring's
        // published tail; with Relaxed it could see the bit, find the ring
        // "empty" and clear the bit, losing the item.
        self.words[sender / BITS].fetch_or(1 << (sender % BITS), Ordering::Release);
        // StoreLoad barrier, the heart of the handshake (see the module docs).
        // Release/Acquire alone allows store buffering: our load of `parked`
        // may miss the receiver's `true` while its load of the bitmap misses
        // our bit, so it sleeps and we don't wake it. SeqCst on the two
        // accesses would be enough on paper, but loom models only fences
        // precisely. On x86 the RMW above already drained the store buffer,
        // so the fence costs little.
        fence(Ordering::SeqCst);
        // Load first so a busy receiver's line is only shared, not bounced
        // by every notifier's RMW. The swap is the tie-break: of several
        // notifiers that saw `true`, exactly one gets it back. No ordering
        // needed: no data travels with the flag, and the wake-up mechanism
        // synchronises on its own.
        self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Relaxed)
    }

    /// Clears the bitmap and calls `f(sender)` for every sender that had
    /// flagged mail, lowest index first. Each set bit is reported exactly once.
    pub fn take(&self, mut f: impl FnMut(usize)) {
        for (i, word) in self.words.iter().enumerate() {
            // A plain load first keeps idle words out of exclusive state. A
            // stale zero is fine: `prepare_park` re-checks behind a fence.
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            // Acquire: pairs with `notify`, so the senders' publishes are
            // visible to the ring drains `f` is about to do.
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                f(i * BITS + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    /// Announces that the receiver is about to sleep. Returns true if it may
    /// (nothing was flagged after the announcement); false if mail arrived,
    /// in which case the announcement is withdrawn and the receiver should
    /// `take` again.
    ///
    /// After true, any `notify` whose bit this call did not see finds the
    /// receiver parked, and exactly one `notify` returns true for this park.
    pub fn prepare_park(&self) -> bool {
        self.set_parked(true);
        // Pairs with the fence in `notify`; see there and the module docs.
        fence(Ordering::SeqCst);
        if self.any_bit() {
            // A notifier may have claimed this park already; its wake-up will
            // then be spurious, which callers tolerate.
            self.set_parked(false);
            return false;
        }
        true
    }

    /// Clears the parked flag after the receiver woke up. Needed when the
    /// wake-up did not come from a notifier (timer, I/O); harmless otherwise.
    /// A notifier racing with this may still claim the park: its wake-up is
    /// then spurious.
    pub fn unparked(&self) {
        self.set_parked(false);
    }

    /// Whether some sender has flagged mail. A hint for polling loops; only
    /// `prepare_park` gives the no-lost-wake-up guarantee.
    pub fn has_mail(&self) -> bool {
        self.any_bit()
    }

    /// Every write to `parked` is a swap, not a store. The C++ model gives
    /// both the same meaning here, but loom 0.7 may order a plain store
    /// *before* a notifier's earlier swap in the modification order
    /// (tokio-rs/loom#254) and then reports a lost wake-up that cannot
    /// happen. With only RMWs on the flag, loom's order matches the real one.
    /// `prepare_park` and `unparked` are off the hot path, so the cost of
    /// the RMW is irrelevant.
    fn set_parked(&self, parked: bool) {
        self.parked.swap(parked, Ordering::Relaxed);
    }

    fn any_bit(&self) -> bool {
        self.words.iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox").field("n_shards", &self.n_shards).finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::ring::{ring, Consumer, Producer};
    use super::*;
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread;
    use std::time::Duration;

    fn taken(mb: &Mailbox) -> Vec<usize> {
        let mut v = Vec::new();
        mb.take(|s| v.push(s));
        v
    }

    #[test]
    fn take_reports_each_flagged_sender_once_across_words() {
        let mb = Mailbox::new(130);
        assert_eq!(mb.foreign(), 130);
        assert!(!mb.has_mail());
        for s in [129, 0, 63, 64, 130, 63] {
            assert!(!mb.notify(s), "nobody is parked");
        }
        assert!(mb.has_mail());
        assert_eq!(taken(&mb), [0, 63, 64, 129, 130]);
        assert!(!mb.has_mail());
        assert!(taken(&mb).is_empty());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn rejects_unknown_senders() {
        Mailbox::new(3).notify(4);
    }

    #[test]
    fn exactly_one_notifier_wins_a_park() {
        let mb = Mailbox::new(4);
        assert!(mb.prepare_park());
        assert!(mb.notify(2));
        assert!(!mb.notify(3), "the park was already claimed");
        mb.unparked();
        assert_eq!(taken(&mb), [2, 3]);
        assert!(mb.prepare_park(), "a new park can be claimed again");
        assert!(mb.notify(4));
    }

    #[test]
    fn mail_withdraws_the_park() {
        let mb = Mailbox::new(1);
        assert!(!mb.notify(0));
        assert!(!mb.prepare_park());
        assert!(!mb.notify(1), "the receiver is awake, no wake-up needed");
        assert_eq!(taken(&mb), [0, 1]);
    }

    #[test]
    fn unparked_receiver_needs_no_wake_up() {
        let mb = Mailbox::new(1);
        assert!(mb.prepare_park());
        mb.unparked(); // e.g. a timer fired
        assert!(!mb.notify(0));
        assert_eq!(taken(&mb), [0]);
    }

    /// A sticky wake-up, like an eventfd. The timeout turns a lost wake-up
    /// into a test failure instead of a hang.
    #[derive(Default)]
    struct Doorbell {
        rung: Mutex<bool>,
        cv: Condvar,
    }

    impl Doorbell {
        fn ring(&self) {
            *self.rung.lock().unwrap() = true;
            self.cv.notify_one();
        }

        fn sleep(&self) {
            let rung = self.rung.lock().unwrap();
            let (mut rung, t) = self.cv.wait_timeout_while(rung, Duration::from_secs(10), |r| !*r).unwrap();
            assert!(!t.timed_out(), "lost wake-up: asleep with mail pending");
            *rung = false;
        }
    }

    fn send(me: usize, mut tx: Producer<u64>, mb: &Mailbox, bell: &Doorbell, n: u64) {
        let mut next = 0;
        while next < n {
            // Vary the batch size so the receiver parks at many points.
            let batch = 1 + (next % 7) as usize;
            let mut full = false;
            while next < n && tx.staged() < batch {
                if tx.push(next).is_err() {
                    full = true;
                    break;
                }
                next += 1;
            }
            if tx.publish() > 0 && mb.notify(me) {
                bell.ring();
            }
            if full {
                thread::yield_now();
            }
        }
    }

    fn receive(mut rxs: Vec<Consumer<u64>>, mb: &Mailbox, bell: &Doorbell, n: u64) {
        let mut next = vec![0; rxs.len()];
        let mut parks = 0;
        loop {
            mb.take(|s| {
                rxs[s].drain(usize::MAX, |v| {
                    assert_eq!(v, next[s]);
                    next[s] += 1;
                });
            });
            if next.iter().all(|&k| k == n) {
                break;
            }
            if mb.prepare_park() {
                parks += 1;
                bell.sleep();
                mb.unparked();
            }
        }
        assert!(parks > 0, "the test never exercised parking");
    }

    /// Real threads, real sleeps: two senders stream into one receiver that
    /// only looks at flagged rings and parks whenever the bitmap is empty.
    #[test]
    fn no_lost_wake_ups_under_load() {
        // Miri is ~1000x slower; a few hundred items still cross every edge.
        const N: u64 = if cfg!(miri) { 300 } else { 50_000 };
        let mb = Arc::new(Mailbox::new(2));
        let bell = Doorbell::default();
        let (tx0, rx0) = ring(8);
        let (tx1, rx1) = ring(8);
        thread::scope(|s| {
            s.spawn(|| send(0, tx0, &mb, &bell, N));
            s.spawn(|| send(1, tx1, &mb, &bell, N));
            receive(vec![rx0, rx1], &mb, &bell, N);
        });
    }
}
