//! Loom model checks for the mesh ring and the park/wake mailbox.
//!
//! Run with (release: loom explores thousands of interleavings):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p shard --test loom_mesh`
//! (`make test-loom`).
//!
//! A lost wake-up shows up as a loom "deadlock" (the receiver blocks on its
//! doorbell with every other thread finished); a slot accessed without the
//! right happens-before shows up as a loom data-race panic on the ring's
//! `UnsafeCell`s. The `broken_*` tests run the same harness on deliberately
//! wrong mailboxes to prove the harness can fail.
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shard::mesh::mail::Mailbox;
use shard::mesh::ring::{ring, Consumer, Producer};

/// Runs `f` under loom with a default preemption bound of 3 (overridable via
/// `LOOM_MAX_PREEMPTIONS`), which keeps the whole file to ~10 s on 2 cores, and
/// prints how many executions were explored (visible with `--nocapture`).
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    println!("{name}: {} executions", runs.load(Ordering::Relaxed));
}

#[test]
fn ring_delivers_two_batches_in_order_through_a_full_ring() {
    model("ring_two_batches", || {
        // Capacity 2 with 3 items: the third push must wait for the consumer
        // to release, so slot reuse (the head Acquire/Release pair) is checked.
        let (mut tx, mut rx) = ring::<u32>(2);
        let producer = thread::spawn(move || {
            tx.push(1).unwrap();
            tx.push(2).unwrap();
            tx.publish();
            while tx.push(3).is_err() {
                thread::yield_now();
            }
            tx.publish();
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            if rx.drain(usize::MAX, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, [1, 2, 3]);
        producer.join().unwrap();
    });
}

/// Counts drops in the model, to check the drop paths race-free and exact.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn ring_halves_dropping_concurrently_drop_each_item_once() {
    model("ring_drops", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = ring::<Counted>(2);
        let d = Arc::clone(&drops);
        let producer = thread::spawn(move || {
            assert!(tx.push(Counted(Arc::clone(&d))).is_ok());
            tx.publish();
            assert!(tx.push(Counted(d)).is_ok()); // staged, never published
        });
        drop(rx.pop());
        drop(rx);
        producer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

/// A sticky wake-up, like an eventfd: one rung before the sleeper blocks
/// still ends its sleep.
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
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            rung = self.cv.wait(rung).unwrap();
        }
        *rung = false;
    }
}

/// The mailbox operations the harness drives, so the broken variants below
/// can run through the exact same sender and receiver code.
trait Mail: Send + Sync + 'static {
    fn notify(&self, sender: usize) -> bool;
    fn take(&self, f: &mut dyn FnMut(usize));
    fn prepare_park(&self) -> bool;
    fn unparked(&self);
}

impl Mail for Mailbox {
    fn notify(&self, sender: usize) -> bool {
        Mailbox::notify(self, sender)
    }
    fn take(&self, f: &mut dyn FnMut(usize)) {
        Mailbox::take(self, f)
    }
    fn prepare_park(&self) -> bool {
        Mailbox::prepare_park(self)
    }
    fn unparked(&self) {
        Mailbox::unparked(self)
    }
}

/// One receiving shard: its mailbox, its doorbell, and the ring from each
/// sender.
struct Receiver<M> {
    mail: Arc<M>,
    bell: Arc<Doorbell>,
    rings: Vec<Consumer<u32>>,
}

impl<M: Mail> Receiver<M> {
    /// The shard's idle loop, reduced to the mesh: drain only flagged rings,
    /// park only when `prepare_park` allows. Returns once `want` items came.
    fn run(mut self, want: usize) -> Vec<u32> {
        let mut got = Vec::new();
        loop {
            let rings = &mut self.rings;
            self.mail.take(&mut |sender| {
                rings[sender].drain(usize::MAX, |v| got.push(v));
            });
            if got.len() == want {
                return got;
            }
            if self.mail.prepare_park() {
                self.bell.sleep();
                self.mail.unparked();
            }
        }
    }
}

/// The sending side of one shard towards one receiver.
struct Sender<M> {
    me: usize,
    mail: Arc<M>,
    bell: Arc<Doorbell>,
    ring: Producer<u32>,
}

impl<M: Mail> Sender<M> {
    fn stage(&mut self, items: &[u32]) {
        for &v in items {
            self.ring.push(v).unwrap();
        }
    }

    /// Publish, then flag; a true `notify` obliges us to ring.
    fn flush(&mut self) {
        self.ring.publish();
        if self.mail.notify(self.me) {
            self.bell.ring();
        }
    }
}

/// Wires `n_senders` senders to one receiver.
fn pair<M: Mail>(mail: M, n_senders: usize) -> (Vec<Sender<M>>, Receiver<M>) {
    let mail = Arc::new(mail);
    let bell = Arc::new(Doorbell::default());
    let (senders, rings) = (0..n_senders)
        .map(|me| {
            let (ring, rx) = ring(4);
            let sender = Sender { me, mail: Arc::clone(&mail), bell: Arc::clone(&bell), ring };
            (sender, rx)
        })
        .unzip();
    (senders, Receiver { mail, bell, rings })
}

/// One sender, two batches, against a receiver that parks between them.
fn park_wake<M: Mail>(name: &str, new_mail: fn() -> M) {
    model(name, move || {
        let (mut senders, receiver) = pair(new_mail(), 1);
        let receiver = thread::spawn(move || receiver.run(3));
        let tx = &mut senders[0];
        tx.stage(&[1, 2]);
        tx.flush();
        tx.stage(&[3]);
        tx.flush();
        assert_eq!(receiver.join().unwrap(), [1, 2, 3]);
    });
}

#[test]
fn park_wake_never_loses_a_wake_up() {
    park_wake("park_wake", || Mailbox::new(1));
}

#[test]
fn one_flush_wakes_two_parked_receivers() {
    model("two_receivers", || {
        let (mut to_a, a) = pair(Mailbox::new(1), 1);
        let (mut to_b, b) = pair(Mailbox::new(1), 1);
        let a = thread::spawn(move || a.run(1));
        let b = thread::spawn(move || b.run(1));
        // One batch to each receiver: publish both rings, then notify both.
        to_a[0].stage(&[10]);
        to_b[0].stage(&[20]);
        to_a[0].flush();
        to_b[0].flush();
        assert_eq!(a.join().unwrap(), [10]);
        assert_eq!(b.join().unwrap(), [20]);
    });
}

#[test]
fn two_senders_racing_to_wake_one_receiver() {
    model("two_senders", || {
        let (senders, receiver) = pair(Mailbox::new(2), 2);
        let receiver = thread::spawn(move || receiver.run(2));
        let handles: Vec<_> = senders
            .into_iter()
            .map(|mut tx| {
                thread::spawn(move || {
                    let v = tx.me as u32;
                    tx.stage(&[v]);
                    tx.flush();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut got = receiver.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
    });
}

/// One shard's end-of-turn flush towards several receivers, as the mesh
/// does it: publish every touched ring, then wake each receiver that
/// parked. Receivers may belong to other shard groups than the sender; a
/// group is only a set of shards, and the flush must not care.
/// `own_group_only` is the bug brpc shipped in `bthread_flush` across tag
/// groups: work published to another group's parked worker is never
/// signalled.
fn flush_across_groups<M: Mail>(
    sender_group: usize,
    targets: &mut [(usize, Sender<M>)],
    own_group_only: bool,
) {
    for (_, tx) in targets.iter_mut() {
        tx.ring.publish();
    }
    for (group, tx) in targets.iter_mut() {
        let must_ring = tx.mail.notify(tx.me);
        if must_ring && (!own_group_only || *group == sender_group) {
            tx.bell.ring();
        }
    }
}

/// A shard of group 0 flushes one batch to a shard of its own group and one
/// to a shard of group 1, both of which may be parked.
fn cross_group_flush(name: &str, own_group_only: bool) {
    model(name, move || {
        let (mut to_same, same) = pair(Mailbox::new(1), 1);
        let (mut to_other, other) = pair(Mailbox::new(1), 1);
        let same = thread::spawn(move || same.run(1));
        let other = thread::spawn(move || other.run(1));
        let mut targets = vec![(0, to_same.remove(0)), (1, to_other.remove(0))];
        targets[0].1.stage(&[10]);
        targets[1].1.stage(&[20]);
        flush_across_groups(0, &mut targets, own_group_only);
        assert_eq!(same.join().unwrap(), [10]);
        assert_eq!(other.join().unwrap(), [20]);
    });
}

#[test]
fn a_flush_wakes_parked_shards_of_another_group() {
    cross_group_flush("cross_group", false);
}

/// Single-word mailbox with a pluggable bug, for the `broken_*` tests.
/// Like the real one, it writes `parked` only with RMWs, so what loom
/// reports is the bug and not loom's store-vs-RMW ordering quirk.
struct BrokenMailbox {
    bits: AtomicU64,
    parked: AtomicBool,
    bug: Bug,
}

#[derive(Clone, Copy)]
enum Bug {
    /// Looks at `parked` before setting the bit: the receiver can check the
    /// bitmap in between and go to sleep on mail nobody will wake it for.
    CheckParkedFirst,
    /// Right order, but Release/Acquire only, no SeqCst fences: store
    /// buffering lets both sides read stale values.
    NoFence,
}

impl BrokenMailbox {
    fn new(bug: Bug) -> Self {
        Self { bits: AtomicU64::new(0), parked: AtomicBool::new(false), bug }
    }
}

impl Mail for BrokenMailbox {
    fn notify(&self, sender: usize) -> bool {
        // Load first, as the real one does. (Swapping unconditionally would
        // make the two sides' RMWs on `parked` synchronise with each other
        // and hide the missing fence, at the price of bouncing the line on
        // every notify.)
        let claim = || self.parked.load(Ordering::Acquire) && self.parked.swap(false, Ordering::AcqRel);
        match self.bug {
            Bug::CheckParkedFirst => {
                let woke = claim();
                self.bits.fetch_or(1 << sender, Ordering::SeqCst);
                woke
            }
            Bug::NoFence => {
                self.bits.fetch_or(1 << sender, Ordering::AcqRel);
                claim()
            }
        }
    }

    fn take(&self, f: &mut dyn FnMut(usize)) {
        let mut bits = self.bits.swap(0, Ordering::Acquire);
        while bits != 0 {
            f(bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }

    fn prepare_park(&self) -> bool {
        self.parked.swap(true, Ordering::AcqRel);
        if let Bug::CheckParkedFirst = self.bug {
            fence(Ordering::SeqCst);
        }
        if self.bits.load(Ordering::Acquire) != 0 {
            self.parked.swap(false, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn unparked(&self) {
        self.parked.swap(false, Ordering::AcqRel);
    }
}

// A loom failure unwinds through loom's own objects, which panic again in
// their destructors and abort the process, so `#[should_panic]` cannot catch
// it. Each broken variant therefore runs as an ignored test in a child
// process, and the visible test asserts that the child died of a loom
// deadlock report.

const CHILD: &str = "MESH_LOOM_BROKEN_CHILD";

fn expect_loom_deadlock(child_test: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([child_test, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("spawn child test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{child_test} passed: the model cannot see this bug");
    assert!(stderr.contains("deadlock"), "{child_test} failed, but not with a loom deadlock:\n{stderr}");
}

#[test]
fn broken_check_parked_before_setting_the_bit_is_caught() {
    expect_loom_deadlock("child_check_parked_first");
}

#[test]
fn broken_handshake_without_seqcst_fences_is_caught() {
    expect_loom_deadlock("child_no_fence");
}

#[test]
#[ignore = "run in a child process by the broken_* tests; aborts on purpose"]
fn child_check_parked_first() {
    if std::env::var_os(CHILD).is_some() {
        park_wake("check_parked_first", || BrokenMailbox::new(Bug::CheckParkedFirst));
    }
}

#[test]
#[ignore = "run in a child process by the broken_* tests; aborts on purpose"]
fn child_no_fence() {
    if std::env::var_os(CHILD).is_some() {
        park_wake("no_fence", || BrokenMailbox::new(Bug::NoFence));
    }
}

#[test]
fn broken_flush_that_wakes_only_its_own_group_is_caught() {
    expect_loom_deadlock("child_own_group_only");
}

#[test]
#[ignore = "run in a child process by the broken_* tests; aborts on purpose"]
fn child_own_group_only() {
    if std::env::var_os(CHILD).is_some() {
        cross_group_flush("own_group_only", true);
    }
}
