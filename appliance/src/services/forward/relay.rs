//! Relaying bytes between a client and its upstream, both directions at
//! once, until both halves are closed.
//!
//! - Each direction receives into a buffer the kernel picks from the
//!   shard's group when data arrives and sends that same buffer on: no
//!   copy, no buffer held while idle, at most one per direction.
//! - A slow reader throttles the writer: we stop receiving until the send
//!   completed, so TCP flow control pushes back. The group is shared by
//!   the shard's connections, so a send that cannot go at once gives its
//!   group buffer back and waits with a heap copy of what is left: slow
//!   readers (a hundred stalled downloads, say) cannot hold the group and
//!   stall every other connection of the shard. The copies a shard holds
//!   are capped at the size of the group (buffers x buffer size); past
//!   that a stalled send keeps its group buffer (backpressure as before).
//!   So memory per connection is at most one buffer size per direction,
//!   nothing while idle, and per shard at most twice the group.
//! - Half-close: end of stream one way becomes a FIN the other way, and the
//!   other direction keeps flowing.
//! - A reset one way becomes a reset the other way (SO_LINGER 0 on close).
//! - Idle timeout: no byte in either direction for the period closes both.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use netstack::tcp::TcpStream;
use shard::reactor::{BufRing, ProvidedBuf};

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
    /// Sends that found the reader's socket full and waited (with their
    /// bytes copied out of the group buffer).
    pub waited: u64,
}

/// One direction's outcome.
enum Half {
    Eof,
    Failed(Ended),
}

/// Relays until both directions are done (or one fails, or nothing moved
/// either way for `idle`).
pub(crate) async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    buffers: &RelayBuffers,
    idle: Duration,
) -> (Ended, Moved) {
    let activity = Cell::new(shard::time::coarse_now());
    let (up_bytes, down_bytes, waited) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let mut up = pin!(pump(client, upstream, buffers, &activity, &up_bytes, &waited));
    let mut down = pin!(pump(upstream, client, buffers, &activity, &down_bytes, &waited));
    let mut watchdog = pin!(watchdog(&activity, idle));
    let (mut up_done, mut down_done): (Option<Half>, Option<Half>) = (None, None);
    let mut idled = false;
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
            return Poll::Ready(());
        }
        if watchdog.as_mut().poll(cx).is_ready() {
            idled = true;
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
    let moved = Moved { up: up_bytes.get(), down: down_bytes.get(), waited: waited.get() };
    let ended = match (&up_done, &down_done) {
        (Some(Half::Failed(e)), _) | (_, Some(Half::Failed(e))) => *e,
        _ if idled => Ended::Idle,
        _ => Ended::Closed,
    };
    if ended == Ended::Reset {
        let _ = client.set_reset_on_close();
        let _ = upstream.set_reset_on_close();
    }
    (ended, moved)
}

/// Completes once nothing moved either way for `idle`. One timer per
/// connection, re-armed only when it fires, instead of one per receive;
/// activity is stamped with the coarse clock (tick resolution is plenty for
/// timeouts in seconds).
async fn watchdog(activity: &Cell<Duration>, idle: Duration) {
    loop {
        let quiet = shard::time::coarse_now().saturating_sub(activity.get());
        if quiet >= idle {
            return;
        }
        shard::time::sleep(idle - quiet).await;
    }
}

/// Moves `from` -> `to` until end of stream (then half-closes `to`).
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    buffers: &RelayBuffers,
    activity: &Cell<Duration>,
    moved: &Cell<u64>,
    waited: &Cell<u64>,
) -> Half {
    loop {
        let buf = match from.recv_provided(&buffers.group).await {
            Ok(Some(buf)) => buf,
            Ok(None) => {
                let _ = to.shutdown_write().await;
                return Half::Eof;
            }
            Err(e) => return Half::Failed(classify(&e)),
        };
        activity.set(shard::time::coarse_now());
        let n = buf.len() as u64;
        if let Err(e) = forward(to, buf, buffers, waited).await {
            return Half::Failed(classify(&e));
        }
        moved.set(moved.get() + n);
        activity.set(shard::time::coarse_now());
    }
}

/// One forward service's relay buffers on one shard: the group receives
/// land in, and the bytes of slow-reader copies its connections hold now,
/// bounded by the group's size (per service: each has its own group).
pub(crate) struct RelayBuffers {
    pub(crate) group: BufRing,
    copied: Cell<usize>,
}

impl RelayBuffers {
    pub(crate) fn new(group: BufRing) -> RelayBuffers {
        RelayBuffers { group, copied: Cell::new(0) }
    }

    /// Takes `n` bytes of the copy budget, if they fit.
    fn take(&self, n: usize) -> Option<Copied<'_>> {
        let budget = self.group.entries() * self.group.buf_size();
        if self.copied.get() + n > budget {
            return None;
        }
        self.copied.set(self.copied.get() + n);
        Some(Copied(&self.copied, n))
    }
}

/// A slow-reader copy's share of the budget, given back when dropped (also
/// when the relay is dropped mid-send).
struct Copied<'a>(&'a Cell<usize>, usize);

impl Drop for Copied<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(self.1));
    }
}

/// Sends all of `buf` to `to`. Usually the socket has room and the one
/// send that never waits is all it takes; otherwise the rest is copied out
/// and the group buffer goes back before waiting for the reader (counted
/// in `waited`), unless the shard's copies already hold as much as the
/// group: then the send waits with the group buffer.
async fn forward(
    to: &TcpStream,
    buf: ProvidedBuf,
    buffers: &RelayBuffers,
    waited: &Cell<u64>,
) -> io::Result<()> {
    let (res, buf) = to.try_send(buf).await;
    let sent = match res {
        Ok(n) if n == buf.len() => return Ok(()),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    waited.set(waited.get() + 1);
    let rest = buf.len() - sent;
    let Some(_share) = buffers.take(rest) else {
        return send_from(to, buf, sent).await;
    };
    let copy = buf[sent..].to_vec();
    drop(buf);
    to.send_all(copy).await.0
}

/// Sends `buf[from..]`, holding the group buffer until it is out.
async fn send_from(to: &TcpStream, buf: ProvidedBuf, from: usize) -> io::Result<()> {
    let end = buf.len();
    to.send_all(shard::ops::Slice::new(buf, from, end)).await.0
}

fn classify(e: &io::Error) -> Ended {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => Ended::Reset,
        _ => Ended::Error,
    }
}
