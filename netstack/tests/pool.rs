//! Buffer pools: size classes, exhaustion as backpressure, registration
//! within the memlock budget, buffers returning home from other shards.
//!
//! This file is its own test process on purpose: it lowers
//! RLIMIT_MEMLOCK, and the registration budget is process-wide.

use std::io::Read;
use std::time::Duration;

use netstack::buf::{BufPool, PoolConfig, SizeClass};

/// Tests that register buffers share the process's budget: one at a time.
static REGISTRATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn runtime(n: usize) -> shard::Runtime {
    shard::Builder::new().shards(n).pin(false).build().expect("plan")
}

/// The memlock soft limit this process runs with: 3 MiB, so only some of
/// what the pools ask for can be registered (as on a small container).
fn limit_memlock() {
    let lim = libc::rlimit { rlim_cur: 3 << 20, rlim_max: libc::RLIM_INFINITY };
    let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit writes a valid rlimit struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur)
    };
    let lim = libc::rlimit { rlim_cur: lim.rlim_cur.min(cur.rlim_cur), rlim_max: cur.rlim_max };
    #[allow(unsafe_code)]
    // SAFETY: setrlimit reads a valid rlimit struct.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim)
    };
}

#[test]
fn pools_register_what_fits_and_serve_the_rest_unregistered() {
    let _one_at_a_time = REGISTRATION.lock().unwrap_or_else(|p| p.into_inner());
    limit_memlock();
    let both = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reports = runtime(2)
        .run(move || async move {
            shard::invoke_on_all(move || {
                let both = both.clone();
                async move {
                    // 1 MiB + 1 MiB + 1 MiB per shard against 3 MiB for the
                    // process: whichever shard registers first gets it all,
                    // the other nothing, and both work.
                    let pool =
                        BufPool::new(PoolConfig { counts: [512, 64, 16], register: true }).expect("pool");
                    let mut b = pool.alloc(SizeClass::Large).await;
                    assert_eq!(
                        b.extend_from_slice(&[1u8; 70_000]),
                        64 << 10,
                        "a buffer never grows past its class"
                    );
                    drop(b);
                    // Both pools must be alive at once (a dropped pool gives
                    // its budget back).
                    both.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    while both.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                        shard::time::sleep(Duration::from_millis(1)).await;
                    }
                    (shard::shard_id(), pool.report())
                }
            })
            .await
        })
        .expect("run");
    let registered: Vec<usize> = reports
        .iter()
        .map(|r| r.as_ref().expect("shard").1.classes.iter().filter(|c| c.registered.is_some()).count())
        .collect();
    assert_eq!(registered.iter().sum::<usize>(), 3, "3 MiB of 6 requested: {reports:?}");
    for r in &reports {
        let (_, report) = r.as_ref().expect("shard");
        assert!(!report.registration.is_empty());
        if report.classes.iter().any(|c| c.registered.is_none()) {
            assert!(report.registration.contains("unregistered"), "{}", report.registration);
        }
    }
}

#[test]
fn exhaustion_is_counted_backpressure() {
    runtime(1)
        .run(|| async {
            let pool = BufPool::new(PoolConfig { counts: [2, 1, 1], register: false }).expect("pool");
            let a = pool.try_alloc(SizeClass::Small).expect("first");
            let b = pool.try_alloc(SizeClass::Small).expect("second");
            assert!(pool.try_alloc(SizeClass::Small).is_none(), "class empty");
            assert_eq!(pool.report().classes[0].exhausted, 1);
            // A waiter gets the next buffer returned.
            let p = pool.clone();
            let waiter = shard::spawn_local(async move { p.alloc(SizeClass::Small).await.capacity() });
            shard::time::sleep(Duration::from_millis(5)).await;
            assert!(!waiter.is_finished(), "waits while the class is empty");
            drop(a);
            assert_eq!(waiter.await.expect("task"), 2048);
            assert_eq!(pool.report().classes[0].waits, 1);
            drop(b);
            assert_eq!(pool.report().classes[0].in_use, 0);
        })
        .expect("run");
}

#[test]
fn buffers_dropped_on_another_shard_go_home() {
    runtime(2)
        .run(|| async {
            let pool = BufPool::new(PoolConfig { counts: [4, 1, 1], register: false }).expect("pool");
            let mut b = pool.try_alloc(SizeClass::Small).expect("buffer");
            b.extend_from_slice(b"travels");
            let travelling = b.into_send();
            let seen = shard::submit_to(1, move || async move {
                let s = String::from_utf8_lossy(&travelling).into_owned();
                drop(travelling);
                s
            })
            .await
            .expect("shard 1");
            assert_eq!(seen, "travels");
            for _ in 0..200 {
                if pool.report().classes[0].in_use == 0 {
                    break;
                }
                shard::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(pool.report().classes[0].in_use, 0, "the buffer came home");
        })
        .expect("run");
}

/// Shard 0 of a second runtime in the same process is not the buffer's
/// home: it must not rebuild the pool's `Rc` there (that was allowed when
/// the check compared shard numbers). The buffer comes back to its own
/// runtime, where it turns local again.
#[test]
fn a_buffer_on_shard_0_of_another_runtime_is_not_home() {
    use netstack::buf::SendBuf;
    use std::sync::mpsc;
    let (to_b, at_b) = mpsc::channel::<SendBuf>();
    let (back_to_a, at_a) = mpsc::channel::<(bool, SendBuf)>();
    let b = std::thread::spawn(move || {
        runtime(1)
            .run(move || async move {
                let buf = at_b.recv_timeout(Duration::from_secs(10)).expect("a buffer from runtime A");
                assert_eq!(buf.home(), 0, "both runtimes have a shard 0");
                match buf.into_local() {
                    Ok(local) => {
                        // The old check's outcome: an Rc of A's pool on B's
                        // thread. Leak it rather than touch it again.
                        std::mem::forget(local);
                    }
                    Err(buf) => back_to_a.send((true, buf)).expect("send back"),
                }
            })
            .expect("runtime B")
    });
    runtime(1)
        .run(move || async move {
            let pool = BufPool::new(PoolConfig { counts: [4, 1, 1], register: false }).expect("pool");
            let mut buf = pool.try_alloc(SizeClass::Small).expect("buffer");
            buf.extend_from_slice(b"abroad");
            to_b.send(buf.into_send()).expect("send to B");
            let (refused, buf) = at_a.recv_timeout(Duration::from_secs(10)).expect("into_local on B refused");
            assert!(refused);
            let local = buf.into_local().expect("home again on A's own thread");
            assert_eq!(&local[..], b"abroad");
            drop(local);
            assert_eq!(pool.report().classes[0].in_use, 0, "back in its pool");
        })
        .expect("runtime A");
    b.join().expect("runtime B thread");
}

#[test]
fn zero_copy_send_from_a_registered_buffer() {
    let _one_at_a_time = REGISTRATION.lock().unwrap_or_else(|p| p.into_inner());
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = sink.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = sink.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    runtime(1)
        .run(move || async move {
            let pool = BufPool::new(PoolConfig { counts: [1, 1, 1], register: true }).expect("pool");
            let mut b = pool.alloc(SizeClass::Medium).await;
            b.extend_from_slice(&[0x5a; 16 << 10]);
            // Connect first: the reader thread waits for one connection
            // whatever happens next.
            let conn = netstack::tcp::TcpStream::connect(addr).await.expect("connect");
            let Some(index) = b.fixed_index() else {
                // Another test in this process may have used the budget.
                eprintln!("skipped: the medium class could not be registered here");
                return;
            };
            let r = shard::time::timeout(
                Duration::from_secs(5),
                shard::ops::send_zc_fixed(conn.raw_fd(), b, index),
            )
            .await;
            let (n, _) = r.expect("send_zc_fixed completes");
            assert_eq!(n.expect("send_zc_fixed"), 16 << 10);
        })
        .expect("run");
    let got = reader.join().expect("reader");
    assert!(got.is_empty() || (got.len() == 16 << 10 && got.iter().all(|&x| x == 0x5a)));
}

/// A pool gives its registration budget back when it is dropped, so a
/// restarted runtime (or the next test) can register again.
#[test]
fn dropped_pools_return_their_registration_budget() {
    let _one_at_a_time = REGISTRATION.lock().unwrap_or_else(|p| p.into_inner());
    limit_memlock();
    for round in 0..3 {
        let registered = runtime(1)
            .run(|| async {
                let pool = BufPool::new(PoolConfig { counts: [512, 64, 16], register: true }).expect("pool");
                pool.report().classes.iter().filter(|c| c.registered.is_some()).count()
            })
            .expect("run");
        assert_eq!(registered, 3, "round {round}: 3 MiB fits the 3 MiB budget again");
    }
}
