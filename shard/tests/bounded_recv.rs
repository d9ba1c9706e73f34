//! A bounded multishot receive (`ops::recv_multi_bounded`): the reactor
//! stops it once its owner leaves `hold` completions untaken, and the
//! kernel ends it after `bytes` where it can. Either way no byte is lost:
//! what it took comes out in order, and a new receive takes the rest.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use shard::ops;
use shard::reactor::{BufRing, Completion};

mod common;
use common::pair;

fn more(c: &Completion) -> bool {
    io_uring::cqueue::more(c.flags)
}

#[test]
fn the_reactor_stops_a_receive_whose_owner_holds_its_limit() {
    let (mut peer, ours) = pair();
    // Ten one-byte segments, far enough apart that each is a completion.
    let writer = std::thread::spawn(move || {
        for i in 0..10u8 {
            peer.write_all(&[b'a' + i]).expect("write");
            std::thread::sleep(Duration::from_millis(15));
        }
        peer
    });
    let (held, hold_stops, got) = shard::run_single(move || async move {
        let group = BufRing::new(16, 4096).expect("group");
        let mut op = ops::recv_multi_bounded(ours.as_raw_fd(), &group, 2, 1 << 20);
        // The owner looks away while every segment arrives.
        shard::time::sleep(Duration::from_millis(400)).await;
        let held = group.in_use();
        let mut got = Vec::new();
        let mut last = None;
        while let Some(c) = op.next().await {
            match &c.buf {
                Some(b) => got.extend_from_slice(b),
                None => last = Some(c.result),
            }
        }
        assert_eq!(last, Some(-libc::ECANCELED), "ended by the reactor's cancel");
        assert!(op.stopped_at_limit(), "and it says why");
        // A new receive takes what stayed in the socket.
        let mut rest = ops::recv_multi(ours.as_raw_fd(), &group);
        while got.len() < 10 {
            let c = rest.next().await.expect("more data");
            got.extend_from_slice(c.buf.as_deref().expect("data"));
        }
        (held, shard::stats().reactor.hold_stops, got)
    })
    .expect("runtime");
    let _peer = writer.join().expect("writer");
    assert_eq!(held, 2, "two completions waited, then the receive was stopped");
    assert_eq!(hold_stops, 1);
    assert_eq!(got, b"abcdefghij", "every byte once, in order");
}

#[test]
fn the_kernel_ends_a_receive_after_its_byte_limit() {
    if !shard::reactor::probe::recv_byte_limit() {
        eprintln!("skipped: this kernel ({}) has no multishot byte limit (6.17)", shard::probe().kernel);
        return;
    }
    let (mut peer, ours) = pair();
    peer.write_all(&[7u8; 3000]).expect("write");
    let (completions, held, rest) = shard::run_single(move || async move {
        let group = BufRing::new(16, 512).expect("group");
        let mut op = ops::recv_multi_bounded(ours.as_raw_fd(), &group, 100, 1000);
        let (mut completions, mut bufs) = (Vec::new(), Vec::new());
        while let Some(c) = op.next().await {
            completions.push((c.result, more(&c)));
            bufs.push(c.buf);
        }
        let held = group.in_use();
        drop(bufs);
        let mut rest = 0;
        let mut again = ops::recv_multi(ours.as_raw_fd(), &group);
        while rest < 3000 - 1024 {
            let c = again.next().await.expect("the rest");
            rest += c.result.max(0) as usize;
        }
        (completions, held, rest)
    })
    .expect("runtime");
    // 512 + 512 crosses 1000: the second completion is the final one.
    assert_eq!(completions, vec![(512, true), (512, false)]);
    assert_eq!(held, 2);
    assert_eq!(rest, 3000 - 1024, "the rest stayed in the socket for the next receive");
}
