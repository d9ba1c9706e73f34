//! Descriptors the kernel hands back are owned from their completion on:
//! an accept that completes after (or while) its operation is dropped
//! closes the connection it made instead of leaking it.
//!
//! This file is its own test process on purpose: it counts the process's
//! open descriptors, which other tests running in parallel would disturb.

use std::future::Future;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Whether the server side of `client` was closed: EOF within a bound. A
/// connection whose accepted descriptor leaked stays open and times out.
fn closed_by_server(client: &mut TcpStream) -> bool {
    client.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut byte = [0u8; 1];
    matches!(client.read(&mut byte), Ok(0))
}

/// Lets the shard loop turn for a while, so completions arrive in their
/// slots (one turn per sleep).
async fn turns(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        shard::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_until_no_ops_in_flight() {
    let deadline = Instant::now() + Duration::from_secs(5);
    while shard::stats().ops_in_flight > 0 {
        assert!(Instant::now() < deadline, "operations still in flight: {:?}", shard::stats());
        shard::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A multishot accept with connections accepted and queued in its slot,
/// dropped (as `Incoming` is when a drain stops accepting): every queued
/// connection is closed, and the process's descriptor count comes back to
/// where it was.
async fn dropped_multishot_accept_closes_its_queue(listener: &TcpListener) {
    let addr = listener.local_addr().expect("addr");
    let before = open_fds();
    let op = shard::ops::accept_multi(listener.as_raw_fd());
    turns(5).await;
    let mut clients: Vec<TcpStream> =
        (0..CLIENTS).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    turns(50).await;
    drop(op);
    wait_until_no_ops_in_flight().await;
    turns(5).await;
    let closed = clients.iter_mut().map(closed_by_server).filter(|&c| c).count();
    assert_eq!(closed, CLIENTS, "every connection the dropped accept took was closed");
    assert_eq!(open_fds(), before + CLIENTS, "only the clients' own descriptors are left");
}

/// A single accept whose completion arrived but was never polled, then
/// dropped: the connection is closed.
async fn dropped_accept_closes_its_connection(listener: &TcpListener) {
    let addr = listener.local_addr().expect("addr");
    let before = open_fds();
    let mut accept = Box::pin(shard::ops::accept(listener.as_raw_fd()));
    std::future::poll_fn(|cx| {
        assert!(accept.as_mut().poll(cx).is_pending(), "nobody connected yet");
        Poll::Ready(())
    })
    .await;
    let mut client = TcpStream::connect(addr).expect("connect");
    turns(50).await;
    drop(accept);
    wait_until_no_ops_in_flight().await;
    turns(5).await;
    assert!(closed_by_server(&mut client), "the connection the dropped accept took was closed");
    assert_eq!(open_fds(), before + 1, "only the client's own descriptor is left");
}

#[test]
fn accepted_descriptors_never_leak() {
    shard::Builder::new()
        .shards(1)
        .pin(false)
        .build()
        .expect("plan")
        .run(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            dropped_multishot_accept_closes_its_queue(&listener).await;
            dropped_accept_closes_its_connection(&listener).await;
        })
        .expect("run");
}
