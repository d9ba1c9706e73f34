//! UDP forwarding (`--udp`): per-client sessions.
//!
//! The kernel's `SO_REUSEPORT` hash sends every datagram of one client
//! (4-tuple) to the same shard, so the shard that saw a client's first
//! datagram owns its session for its whole life: no session table is
//! shared. A session is an upstream picked by the shard's balancer and a
//! socket connected to it; datagrams from the client go out on that socket,
//! replies come back on it and are sent to the client from the listening
//! address. A session ends after `--idle-timeout` without a datagram either
//! way. Client datagrams arrive through the burst-oriented datagram
//! backend, so a kernel-bypass backend can replace the socket.
//!
//! Sessions are a table keyed by outside input, so they are bounded: a
//! session takes one of the shard's `max_conns` slots (and one descriptor);
//! a new client beyond it has its datagrams dropped and counted
//! (`sessions_refused`) until a session ends. Any UDP datagram (up to
//! 65,507 bytes) is relayed whole in both directions: the receive buffers
//! are the shard's (two rings of 256), not the sessions', so an idle
//! session holds none, and only the pages a datagram fills become resident.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use netstack::backend::{DatagramBackend, KernelUdp, Received};
use netstack::udp::UdpSocket;
use shard::future::{select, Either};
use shard::reactor::BufRing;

use super::state::{ShardState, UpstreamRef};

struct Session {
    upstream: UpstreamRef,
    socket: Rc<UdpSocket>,
    last: Rc<Cell<Instant>>,
}

/// The largest UDP payload (over IPv4): every datagram is relayed whole.
const MAX_DATAGRAM: usize = 65_507;
/// Receive buffers per direction and shard.
const BUFFERS: u16 = 256;

type Sessions = Rc<RefCell<HashMap<SocketAddr, Session>>>;

/// Serves UDP sessions on this shard's socket until the runtime stops.
pub(crate) async fn serve(listener: OwnedFd, state: Rc<ShardState>) -> io::Result<()> {
    let size = MAX_DATAGRAM + shard::ops::RecvMsgOut::PAYLOAD_OFFSET;
    let replies = Rc::new(UdpSocket::from_fd(listener.try_clone()?)?);
    let mut backend = KernelUdp::new(UdpSocket::from_fd(listener)?, BUFFERS, size)?;
    let sessions: Sessions = Rc::default();
    shard::spawn_local_named("udp-expiry", expire(sessions.clone(), state.clone())).detach();
    let group = BufRing::new(BUFFERS, size)?;
    let mut burst: Vec<Received<netstack::udp::Datagram>> = Vec::with_capacity(64);
    loop {
        let got = match select(shard::stopping(), backend.recv_burst(&mut burst, 64)).await {
            Either::Left(()) => return Ok(()),
            Either::Right(r) => r,
        };
        if let Err(e) = got {
            ops::warn_limited!("udp receive: {e}");
            shard::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for d in burst.drain(..) {
            let Some(client) = d.source else { continue };
            if d.truncated {
                state.count_udp(|s| s.dropped += 1);
                continue;
            }
            let Some((socket, last)) = session(&state, &sessions, &replies, &group, client) else {
                state.count_udp(|s| s.dropped += 1);
                continue;
            };
            last.set(Instant::now());
            let payload = d.payload().to_vec();
            drop(d);
            let (r, _) = shard::ops::send(socket.raw_fd(), payload).await;
            state.count_udp(|s| if r.is_ok() { s.datagrams_up += 1 } else { s.dropped += 1 });
        }
    }
}

/// The client's session, created (a slot taken, upstream picked, socket
/// connected, reply task started) on its first datagram.
fn session(
    state: &Rc<ShardState>,
    sessions: &Sessions,
    replies: &Rc<UdpSocket>,
    group: &BufRing,
    client: SocketAddr,
) -> Option<(Rc<UdpSocket>, Rc<Cell<Instant>>)> {
    if let Some(s) = sessions.borrow().get(&client) {
        return Some((s.socket.clone(), s.last.clone()));
    }
    if !state.try_admit() {
        state.count_udp(|s| s.sessions_refused += 1);
        return None;
    }
    let Some(upstream) = state.pick(Some(client), &[], 0) else {
        state.leave();
        return None;
    };
    let socket = match UdpSocket::connected(upstream.addr) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            tracing::debug!(upstream = %upstream.addr, "udp session socket: {e}");
            state.release(&upstream);
            state.leave();
            return None;
        }
    };
    let last = Rc::new(Cell::new(Instant::now()));
    state.count(|s| {
        s.udp.sessions_created += 1;
        s.udp.sessions_active += 1;
    });
    let session = Session { upstream, socket: socket.clone(), last: last.clone() };
    sessions.borrow_mut().insert(client, session);
    let (replies, group, sessions, sock, last2, state) =
        (replies.clone(), group.clone(), sessions.clone(), socket.clone(), last.clone(), state.clone());
    shard::spawn_local_named("udp-replies", async move {
        relay_replies(&state, &sock, &replies, &group, client, &last2).await;
        // The session failed, or was expired (already ended then).
        end(&state, &sessions, client, false);
    })
    .detach();
    Some((socket, last))
}

/// Ends `client`'s session if it is still open: its slot, its upstream
/// and its counters, once.
fn end(state: &ShardState, sessions: &Sessions, client: SocketAddr, expired: bool) -> Option<Session> {
    let s = sessions.borrow_mut().remove(&client)?;
    state.release(&s.upstream);
    state.leave();
    state.count(|c| {
        c.udp.sessions_active -= 1;
        if expired {
            c.udp.sessions_expired += 1;
        }
    });
    Some(s)
}

/// Sends every reply from the upstream back to the client.
async fn relay_replies(
    state: &ShardState,
    upstream: &UdpSocket,
    replies: &UdpSocket,
    group: &BufRing,
    client: SocketAddr,
    last: &Cell<Instant>,
) {
    let mut stream = upstream.recv_stream(group);
    loop {
        // Datagrams have no connection to finish: a draining shard ends
        // its sessions at once.
        let next = match select(shard::stopping(), stream.next()).await {
            Either::Left(()) => return,
            Either::Right(next) => next,
        };
        let d = match next {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                // The upstream port is closed right now (ICMP): drop, go on.
                state.count_udp(|s| s.dropped += 1);
                continue;
            }
            Err(_) => return,
        };
        if d.truncated() {
            state.count_udp(|s| s.dropped += 1);
            continue;
        }
        last.set(Instant::now());
        let (r, _) = replies.send_to(d.payload().to_vec(), client).await;
        state.count_udp(|s| if r.is_ok() { s.datagrams_down += 1 } else { s.dropped += 1 });
    }
}

/// Ends sessions idle for longer than `idle`, once a second (or sooner for
/// short timeouts).
async fn expire(sessions: Sessions, state: Rc<ShardState>) {
    let idle = state.cfg().idle_timeout;
    let mut ticks = shard::time::interval(idle.min(Duration::from_secs(1)).max(Duration::from_millis(10)));
    loop {
        if let Either::Left(()) = select(shard::stopping(), ticks.tick()).await {
            return;
        }
        let now = Instant::now();
        let expired: Vec<SocketAddr> = sessions
            .borrow()
            .iter()
            .filter(|(_, s)| now.duration_since(s.last.get()) >= idle)
            .map(|(c, _)| *c)
            .collect();
        for client in expired {
            let Some(s) = end(&state, &sessions, client, true) else { continue };
            // Cancelling the session's receive ends its reply task, which
            // drops the socket.
            let _ = shard::ops::cancel_fd(s.socket.raw_fd()).await;
        }
    }
}
