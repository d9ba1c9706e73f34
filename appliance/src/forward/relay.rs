//! Relaying bytes between a client and its upstream, both directions at
//! once, until both halves are closed.
//!
//! - Each direction receives into a buffer the kernel picks from the
//!   shard's group when data arrives and sends that same buffer on: no
//!   copy, no buffer held while idle, and at most one buffer per direction
//!   (a slow reader throttles the writer: we stop receiving until the send
//!   completed, so TCP flow control pushes back). Memory per connection is
//!   therefore at most two group buffers, and nothing while idle.
//! - Half-close: end of stream one way becomes a FIN the other way, and the
//!   other direction keeps flowing.
//! - A reset one way becomes a reset the other way (SO_LINGER 0 on close).
//! - Idle timeout: no byte in either direction for the period closes both.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use netstack::tcp::TcpStream;
use shard::reactor::BufRing;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed cleanly.
    Closed,
    /// One side reset; the other was reset too.
    Reset,
    /// Nothing moved for the idle timeout.
    Idle,
    /// An I/O error other than a reset.
    Error,
}

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
}

/// One direction's outcome.
enum Half {
    Eof(u64),
    Failed(u64, Ended),
}

/// Relays until both directions are done (or one fails).
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    group: &BufRing,
    idle: Duration,
) -> (Ended, Moved) {
    let activity = Cell::new(Instant::now());
    let mut up = pin!(pump(client, upstream, group, &activity, idle));
    let mut down = pin!(pump(upstream, client, group, &activity, idle));
    let (mut up_done, mut down_done): (Option<Half>, Option<Half>) = (None, None);
    std::future::poll_fn(|cx| {
        if up_done.is_none() {
            if let Poll::Ready(h) = up.as_mut().poll(cx) {
                up_done = Some(h);
            }
        }
        if down_done.is_none() {
            if let Poll::Ready(h) = down.as_mut().poll(cx) {
                down_done = Some(h);
            }
        }
        let failed = matches!(up_done, Some(Half::Failed(..))) || matches!(down_done, Some(Half::Failed(..)));
        if failed || (up_done.is_some() && down_done.is_some()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let bytes = |h: &Option<Half>| match h {
        Some(Half::Eof(n)) | Some(Half::Failed(n, _)) => *n,
        None => 0,
    };
    let moved = Moved { up: bytes(&up_done), down: bytes(&down_done) };
    let ended = match (&up_done, &down_done) {
        (Some(Half::Failed(_, e)), _) | (_, Some(Half::Failed(_, e))) => *e,
        _ => Ended::Closed,
    };
    if ended == Ended::Reset {
        let _ = client.set_reset_on_close();
        let _ = upstream.set_reset_on_close();
    }
    (ended, moved)
}

/// Moves `from` -> `to` until end of stream (then half-closes `to`).
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    group: &BufRing,
    activity: &Cell<Instant>,
    idle: Duration,
) -> Half {
    let mut moved = 0u64;
    loop {
        let received = match recv_unless_idle(from, group, activity, idle).await {
            Ok(r) => r,
            Err(ended) => return Half::Failed(moved, ended),
        };
        let Some(buf) = received else {
            let _ = to.shutdown_write().await;
            return Half::Eof(moved);
        };
        activity.set(Instant::now());
        let n = buf.len() as u64;
        if let (Err(e), _) = to.send_all(buf).await {
            return Half::Failed(moved, classify(&e));
        }
        moved += n;
        activity.set(Instant::now());
    }
}

/// Waits for data, giving up once neither direction moved for `idle`.
async fn recv_unless_idle(
    from: &TcpStream,
    group: &BufRing,
    activity: &Cell<Instant>,
    idle: Duration,
) -> Result<Option<shard::reactor::ProvidedBuf>, Ended> {
    let mut recv = pin!(from.recv_provided(group));
    loop {
        let deadline = activity.get() + idle;
        match shard::time::timeout_at(deadline, recv.as_mut()).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => return Err(classify(&e)),
            // The other direction may have moved meanwhile: only a quiet
            // connection is idle.
            Err(_) if activity.get() + idle <= Instant::now() => return Err(Ended::Idle),
            Err(_) => continue,
        }
    }
}

fn classify(e: &io::Error) -> Ended {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => Ended::Reset,
        _ => Ended::Error,
    }
}
