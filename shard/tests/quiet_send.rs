//! Quiet sends (`ops::send_quiet`): a send that never waits and posts no
//! completion when it sends everything. The reactor settles it after the
//! enter that submitted it; a short send is a failure whose result is the
//! count that went out, and hands its buffer back. No byte is lost or sent
//! twice either way.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use shard::ops;
use shard::reactor::{BufRing, ProvidedBuf};

mod common;
use common::pair;

fn supported() -> bool {
    let ok = shard::reactor::probe::quiet_send();
    if !ok {
        eprintln!("skipped: this kernel ({}) does not report a short send's count", shard::probe().kernel);
    }
    ok
}

/// Receives one buffer's worth from `fd` into `group`.
async fn receive(fd: &OwnedFd, group: &BufRing) -> ProvidedBuf {
    ops::recv_select(fd.as_raw_fd(), group).await.expect("recv").expect("data")
}

#[test]
fn a_quiet_send_that_sends_everything_posts_no_completion() {
    if !supported() {
        return;
    }
    let (mut source, from) = pair();
    let (mut sink, to) = pair();
    source.write_all(b"quiet, please").expect("write");
    let (completions, out_after_turn, outcome) = shard::run_single(move || async move {
        let group = BufRing::new(4, 4096).expect("group");
        let buf = receive(&from, &group).await;
        let before = shard::stats().reactor.completions;
        let mut send = ops::send_quiet(to.as_raw_fd(), buf);
        // A park and a wake (the timer's), without looking at the send.
        shard::time::sleep(Duration::from_millis(5)).await;
        let completions = shard::stats().reactor.completions - before;
        let out = group.in_use();
        let (res, back) = send.settled().await;
        (completions, out, (res.expect("sent"), back.is_some()))
    })
    .expect("runtime");
    assert_eq!(completions, 0, "a send that took everything posts nothing");
    assert_eq!(out_after_turn, 0, "its buffer went back to the group with the enter");
    assert_eq!(outcome, (13, false));
    let mut got = [0u8; 13];
    sink.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"quiet, please");
}

/// The owner waits for the outcome with nothing else going on: the shard
/// must settle the send instead of sleeping until its next timer.
#[test]
fn waiting_for_a_quiet_send_does_not_sleep_past_it() {
    if !supported() {
        return;
    }
    let (mut source, from) = pair();
    let (_sink, to) = pair();
    source.write_all(b"x").expect("write");
    // Parking at once when idle (as the appliance's shards do): no idle
    // poll may settle the send by chance.
    let rt = shard::Builder::new().shards(1).pin(false).idle_poll(Duration::ZERO).build().expect("runtime");
    let waited = rt
        .run(move || async move {
            let group = BufRing::new(4, 4096).expect("group");
            let buf = receive(&from, &group).await;
            let start = std::time::Instant::now();
            let mut send = ops::send_quiet(to.as_raw_fd(), buf);
            let outcome = shard::time::timeout(Duration::from_secs(5), send.settled()).await;
            assert!(matches!(outcome, Ok((Ok(1), None))), "{outcome:?}");
            start.elapsed()
        })
        .expect("runtime");
    assert!(waited < Duration::from_secs(4), "the shard slept until the timeout: {waited:?}");
}

/// Quiet sends into a reader that reads nothing, until one is short: the
/// short one says how much went out and hands its buffer back, and the
/// reader gets exactly the bytes reported sent, in order.
#[test]
fn a_short_quiet_send_reports_what_went_out() {
    if !supported() {
        return;
    }
    let (mut source, from) = pair();
    let (mut sink, to) = pair();
    socket2::SockRef::from(&to).set_send_buffer_size(16 << 10).expect("sndbuf");
    let pattern: Vec<u8> = (0..(8usize << 20)).map(|i| (i % 251) as u8).collect();
    let expected = pattern.clone();
    let writer = std::thread::spawn(move || {
        // Ends when the shard closes its end.
        let _ = source.write_all(&pattern);
    });
    let (reported, short) = shard::run_single(move || async move {
        let group = BufRing::new(8, 64 << 10).expect("group");
        let mut sent = 0usize;
        loop {
            let buf = receive(&from, &group).await;
            let len = buf.len();
            let mut send = ops::send_quiet(to.as_raw_fd(), buf);
            let (res, back) = send.settled().await;
            match res {
                Ok(n) if n == len => {
                    assert!(back.is_none(), "a complete send keeps nothing");
                    sent += n;
                }
                Ok(n) => {
                    assert_eq!(back.map(|b| b.len()), Some(len), "a short send hands its buffer back");
                    return (sent + n, n);
                }
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                    assert!(back.is_some(), "a failed send hands its buffer back");
                    return (sent, 0);
                }
            }
            assert!(sent < 8 << 20, "the reader never filled up");
        }
    })
    .expect("runtime");
    let _ = short;
    let mut got = vec![0u8; reported];
    sink.read_exact(&mut got).expect("read what was reported sent");
    assert!(got == expected[..reported], "the reader got the source's bytes in order");
    sink.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut more = [0u8; 1];
    assert!(matches!(sink.read(&mut more), Ok(0) | Err(_)), "nothing arrives beyond what was reported sent");
    drop(sink);
    writer.join().expect("writer");
}

/// A quiet send dropped before it was settled still goes out, and its
/// buffer still goes back to the group.
#[test]
fn a_dropped_quiet_send_still_goes_out_and_returns_its_buffer() {
    if !supported() {
        return;
    }
    let (mut source, from) = pair();
    let (mut sink, to) = pair();
    source.write_all(b"fire and forget").expect("write");
    let out = shard::run_single(move || async move {
        let group = BufRing::new(4, 4096).expect("group");
        let buf = receive(&from, &group).await;
        drop(ops::send_quiet(to.as_raw_fd(), buf));
        shard::time::sleep(Duration::from_millis(5)).await;
        group.in_use()
    })
    .expect("runtime");
    assert_eq!(out, 0);
    let mut got = [0u8; 15];
    sink.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"fire and forget");
}

/// On kernels that cannot report a short send's count with its failure the
/// quiet send posts a completion every time; its owner sees the same
/// outcomes (exercised here on any kernel).
#[test]
fn without_the_short_send_report_a_quiet_send_completes_with_the_same_outcomes() {
    let (mut source, from) = pair();
    let (mut sink, to) = pair();
    source.write_all(b"the old way").expect("write");
    let (completions, outcome) = shard::run_single(move || async move {
        let group = BufRing::new(4, 4096).expect("group");
        let buf = receive(&from, &group).await;
        let before = shard::stats().reactor.completions;
        let mut send = ops::send_quiet_on(to.as_raw_fd(), buf, false);
        let (res, back) = send.settled().await;
        let completions = shard::stats().reactor.completions - before;
        (completions, (res.expect("sent"), back.is_some(), group.in_use()))
    })
    .expect("runtime");
    assert_eq!(completions, 1, "the send completes like any other");
    assert_eq!(outcome, (11, false, 0), "all sent: no buffer handed back, and it is back in its group");
    let mut got = [0u8; 11];
    sink.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"the old way");
}
