//! Relaying bytes between a client and its upstream, both directions at
//! once, until both halves are closed.
//!
//! - Each direction receives with a multishot receive into buffers the
//!   kernel picks from the shard's group as data arrives (armed once, not
//!   once per read), and sends each buffer on with a send that never
//!   waits: no copy, no buffer held while idle. The sends go out through
//!   the ring, all of a loop turn's in the one `io_uring_enter` that ends
//!   it: a direct `send(2)` per buffer measured 0.89x the requests/s at
//!   saturation, since on loopback each wakes its reader, which then
//!   preempts the shard in the middle of its turn.
//! - With a multishot receive that send is quiet (`TcpStream::send_quiet`):
//!   where the kernel reports a short send's count with its failure, it
//!   posts no completion when it sends everything, and the reactor settles
//!   it after the enter that submitted it. The relay does not wait for it but goes back to
//!   receiving, watching it for a failure, so a message costs one
//!   completion and one loop turn per direction instead of two. When the
//!   receive has ended (after a buffer's worth of bytes) the relay waits
//!   for the send before arming the next one, so a reader that turns out
//!   slow finds one buffer taken, as before.
//! - The receive is bounded (`TcpStream::recv_bounded`): the reactor stops
//!   it once [`HOLD`] buffers wait for the relay, and on Linux 6.17+ each
//!   arming ends by itself after one buffer's worth of bytes, so a peer
//!   that floods fills one buffer per arming, as a single-shot receive
//!   would. Older kernels receive single-shot.
//! - A slow reader throttles the writer: a send that cannot go at once
//!   stops the receive first, so TCP flow control pushes back. The group
//!   is shared by the shard's connections, so what is left of that buffer
//!   and of those the receive had taken is copied to the heap and the
//!   group buffers go back before waiting: slow readers (a hundred stalled
//!   downloads, say) cannot hold the group and stall every other
//!   connection of the shard. The copies a shard holds are capped at the
//!   size of the group (buffers x buffer size); past that a stalled send
//!   keeps its group buffers (backpressure as before).
//! - So a direction holds no buffer while idle; while data flows, the one
//!   being sent plus at most [`HOLD`] waiting (and what one kernel pass
//!   adds before the stop lands); while it waits on a slow reader, a heap
//!   copy of at most that many buffers and no group buffer, as far as the
//!   shard's copy budget goes. Per shard at most twice the group.
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

use netstack::tcp::{RecvStream, TcpStream};
use shard::reactor::{BufRing, ProvidedBuf, QuietOutcome, QuietSend};

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

/// Buffers a direction's receive may have waiting for the relay before the
/// reactor stops it (`TcpStream::recv_bounded`). The relay takes each one
/// as soon as it arrives (its send of the one before was settled by the
/// enter that submitted it), so only a burst within a turn or two reaches
/// this.
const HOLD: usize = 4;

/// Moves `from` -> `to` until end of stream (then half-closes `to`).
///
/// Each buffer goes out with one send that never waits. With a multishot
/// receive (whose wait may be given up) that send is quiet: it posts no
/// completion when it sends everything (where the kernel allows), so the
/// relay does not wait for it but goes back to receiving, watching it for
/// a failure; the next buffer goes out once it is settled. A send that finds the reader's socket full takes the slow
/// path ([`settle`]).
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    buffers: &RelayBuffers,
    activity: &Cell<Duration>,
    moved: &Cell<u64>,
    waited: &Cell<u64>,
) -> Half {
    let mut rx = from.recv_bounded(&buffers.group, HOLD);
    let quiet = rx.is_multishot();
    let mut sending: Option<QuietSend> = None;
    let stats = Counts { moved, waited };
    loop {
        let next = match sending.as_mut() {
            // With the receive ended, nothing can arrive before the send
            // settles: wait for that before arming the next one, so a
            // reader that turns out slow finds one buffer taken, not two.
            Some(s) if !rx.is_armed() => Watched::Settled(s.settled().await),
            Some(s) => watch(s, &mut rx).await,
            None => Watched::Next(rx.next().await),
        };
        let next = match next {
            Watched::Settled(outcome) => {
                let len = sending.take().map_or(0, |s| s.len());
                if let Err(e) = settle(outcome, len, None, &mut rx, to, buffers, stats).await {
                    return Half::Failed(e);
                }
                continue;
            }
            Watched::Next(next) => next,
        };
        let buf = match next {
            Ok(Some(buf)) => buf,
            Ok(None) => {
                if let Some(mut s) = sending.take() {
                    let outcome = s.settled().await;
                    if let Err(e) = settle(outcome, s.len(), None, &mut rx, to, buffers, stats).await {
                        return Half::Failed(e);
                    }
                }
                let _ = to.shutdown_write().await;
                return Half::Eof;
            }
            Err(e) => return Half::Failed(classify(&e)),
        };
        activity.set(shard::time::coarse_now());
        // Bytes go out in order: the send before this one is settled first.
        let buf = match sending.take() {
            Some(mut s) => {
                match settle(s.settled().await, s.len(), Some(buf), &mut rx, to, buffers, stats).await {
                    Ok(Some(buf)) => buf,
                    Ok(None) => continue,
                    Err(e) => return Half::Failed(e),
                }
            }
            None => buf,
        };
        if quiet {
            sending = Some(to.send_quiet(buf));
            continue;
        }
        let len = buf.len();
        let (res, buf) = to.try_send(buf).await;
        if let Err(e) = settle((res, Some(buf)), len, None, &mut rx, to, buffers, stats).await {
            return Half::Failed(e);
        }
        activity.set(shard::time::coarse_now());
    }
}

/// A relay direction's byte and slow-reader counts.
#[derive(Clone, Copy)]
struct Counts<'a> {
    moved: &'a Cell<u64>,
    waited: &'a Cell<u64>,
}

/// What came first while a quiet send was in flight.
enum Watched {
    /// The send was settled (it failed, or it is done and the relay was
    /// polled anyway).
    Settled(QuietOutcome),
    /// The receive's next buffer, end or error.
    Next(io::Result<Option<ProvidedBuf>>),
}

/// Waits for the next buffer, watching `sending` for a failure (without
/// asking to be woken when it succeeds). Gives up the receive's wait when
/// the send comes first: only for a multishot receive, which loses nothing
/// by that.
async fn watch(sending: &mut QuietSend, rx: &mut RecvStream<'_>) -> Watched {
    let mut next = pin!(rx.next());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(outcome) = sending.poll_outcome(cx, false) {
            return Poll::Ready(Watched::Settled(outcome));
        }
        next.as_mut().poll(cx).map(Watched::Next)
    })
    .await
}

/// Handles a send's outcome: `len` bytes were handed to it, and `then` is
/// the buffer to send after it. All sent: counts it and hands `then` back.
/// A reader without room: stops receiving before waiting for it, so this
/// direction holds no group buffer (as far as the copy budget goes) while
/// it waits, then sends the rest, `then` and what the receive had taken,
/// in order (`Ok(None)`).
async fn settle(
    outcome: QuietOutcome,
    len: usize,
    then: Option<ProvidedBuf>,
    rx: &mut RecvStream<'_>,
    to: &TcpStream,
    buffers: &RelayBuffers,
    counts: Counts<'_>,
) -> Result<Option<ProvidedBuf>, Ended> {
    let (res, buf) = outcome;
    let sent = match res {
        Ok(sent) if sent >= len => {
            counts.moved.set(counts.moved.get() + len as u64);
            return Ok(then);
        }
        Ok(sent) => sent,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(classify(&e)),
    };
    // A send short of its length always hands its buffer back.
    let Some(buf) = buf else { return Err(Ended::Error) };
    counts.waited.set(counts.waited.get() + 1);
    let held: Vec<ProvidedBuf> = then.into_iter().chain(rx.stop().await).collect();
    let n = buf.len() as u64 + held.iter().map(|b| b.len() as u64).sum::<u64>();
    send_slowly(to, buf, sent, held, buffers).await.map_err(|e| classify(&e))?;
    counts.moved.set(counts.moved.get() + n);
    Ok(None)
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

    fn budget(&self) -> usize {
        self.group.entries() * self.group.buf_size()
    }
}

/// A slow-reader copy: bytes taken out of group buffers, counted against
/// the shard's copy budget until dropped (also when the relay is dropped
/// mid-send).
struct Copy<'a> {
    buffers: &'a RelayBuffers,
    bytes: Vec<u8>,
    /// Bytes counted against the budget (also while a send holds them).
    counted: usize,
}

impl Copy<'_> {
    /// Appends `b` if it fits the budget.
    fn append(&mut self, b: &[u8]) -> bool {
        let copied = &self.buffers.copied;
        if copied.get() + b.len() > self.buffers.budget() {
            return false;
        }
        copied.set(copied.get() + b.len());
        self.counted += b.len();
        self.bytes.extend_from_slice(b);
        true
    }

    /// Sends and empties the copy.
    async fn flush(&mut self, to: &TcpStream) -> io::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let res = to.send_all(std::mem::take(&mut self.bytes)).await.0;
        self.release();
        res
    }

    fn release(&mut self) {
        let copied = &self.buffers.copied;
        copied.set(copied.get().saturating_sub(std::mem::take(&mut self.counted)));
    }
}

impl Drop for Copy<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Sends `first[from..]` and then `held`, in order, to a reader that had
/// no room: what fits the shard's copy budget is copied out and its group
/// buffer given back before waiting; the rest waits holding its buffer
/// (backpressure: the group is then spoken for by copies).
async fn send_slowly(
    to: &TcpStream,
    first: ProvidedBuf,
    from: usize,
    held: Vec<ProvidedBuf>,
    buffers: &RelayBuffers,
) -> io::Result<()> {
    let mut copy = Copy { buffers, bytes: Vec::new(), counted: 0 };
    for (buf, from) in std::iter::once((first, from)).chain(held.into_iter().map(|b| (b, 0))) {
        if copy.append(&buf[from..]) {
            continue;
        }
        copy.flush(to).await?;
        let end = buf.len();
        to.send_all(shard::ops::Slice::new(buf, from, end)).await.0?;
    }
    copy.flush(to).await
}

fn classify(e: &io::Error) -> Ended {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => Ended::Reset,
        _ => Ended::Error,
    }
}
