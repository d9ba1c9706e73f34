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

use super::{ShardState, STATE};

/// UDP counters of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions open now.
    pub sessions_active: u64,
    /// Sessions closed by the idle timeout.
    pub sessions_expired: u64,
    /// Datagrams client -> upstream.
    pub datagrams_up: u64,
    /// Datagrams upstream -> client.
    pub datagrams_down: u64,
    /// Datagrams dropped: no eligible upstream, a send failed, or a
    /// datagram was cut by a receive buffer.
    pub dropped: u64,
}

thread_local! {
    static UDP_STATS: RefCell<UdpStats> = RefCell::new(UdpStats::default());
}

fn count(f: impl FnOnce(&mut UdpStats)) {
    UDP_STATS.with(|s| f(&mut s.borrow_mut()));
}

/// This shard's UDP counters.
pub fn snapshot() -> UdpStats {
    UDP_STATS.with(|s| s.borrow().clone())
}

struct Session {
    upstream: usize,
    socket: Rc<UdpSocket>,
    last: Rc<Cell<Instant>>,
}

/// Serves UDP sessions on this shard's socket until the runtime stops.
pub async fn serve(listener: OwnedFd) -> io::Result<()> {
    let state =
        STATE.with(|s| s.borrow().clone()).ok_or_else(|| io::Error::other("forward state missing"))?;
    let replies = Rc::new(UdpSocket::from_fd(listener.try_clone()?)?);
    let mut backend = KernelUdp::new(UdpSocket::from_fd(listener)?, 1024, 2048)?;
    let sessions: Rc<RefCell<HashMap<SocketAddr, Session>>> = Rc::default();
    shard::spawn_local_named("udp-expiry", expire(sessions.clone(), state.cfg.idle_timeout)).detach();
    let group = BufRing::new(1024, 2048)?;
    let mut burst: Vec<Received<netstack::udp::Datagram>> = Vec::with_capacity(64);
    loop {
        let got = match select(shard::stopping(), backend.recv_burst(&mut burst, 64)).await {
            Either::Left(()) => return Ok(()),
            Either::Right(r) => r,
        };
        if let Err(e) = got {
            tracing::warn!("udp receive: {e}");
            shard::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for d in burst.drain(..) {
            let Some(client) = d.source else { continue };
            if d.truncated {
                count(|s| s.dropped += 1);
                continue;
            }
            let Some((socket, last)) = session(&state, &sessions, &replies, &group, client) else {
                count(|s| s.dropped += 1);
                continue;
            };
            last.set(Instant::now());
            let payload = d.payload().to_vec();
            drop(d);
            let (r, _) = shard::ops::send(socket.raw_fd(), payload).await;
            count(|s| if r.is_ok() { s.datagrams_up += 1 } else { s.dropped += 1 });
        }
    }
}

/// The client's session, created (upstream picked, socket connected, reply
/// task started) on its first datagram.
fn session(
    state: &Rc<ShardState>,
    sessions: &Rc<RefCell<HashMap<SocketAddr, Session>>>,
    replies: &Rc<UdpSocket>,
    group: &BufRing,
    client: SocketAddr,
) -> Option<(Rc<UdpSocket>, Rc<Cell<Instant>>)> {
    if let Some(s) = sessions.borrow().get(&client) {
        return Some((s.socket.clone(), s.last.clone()));
    }
    let i = state.pick(Some(client), &[])?;
    let upstream = state.cfg.upstreams[i].addr;
    let socket = match UdpSocket::connected(upstream) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            tracing::debug!(%upstream, "udp session socket: {e}");
            state.release(i);
            return None;
        }
    };
    let last = Rc::new(Cell::new(Instant::now()));
    count(|s| {
        s.sessions_created += 1;
        s.sessions_active += 1;
    });
    let session = Session { upstream: i, socket: socket.clone(), last: last.clone() };
    sessions.borrow_mut().insert(client, session);
    let (replies, group, sessions, sock, last2) =
        (replies.clone(), group.clone(), sessions.clone(), socket.clone(), last.clone());
    shard::spawn_local_named("udp-replies", async move {
        relay_replies(&sock, &replies, &group, client, &last2).await;
        // The session was expired (its socket closed) or failed: forget it.
        sessions.borrow_mut().remove(&client);
    })
    .detach();
    Some((socket, last))
}

/// Sends every reply from the upstream back to the client.
async fn relay_replies(
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
                count(|s| s.dropped += 1);
                continue;
            }
            Err(_) => return,
        };
        if d.truncated() {
            count(|s| s.dropped += 1);
            continue;
        }
        last.set(Instant::now());
        let (r, _) = replies.send_to(d.payload().to_vec(), client).await;
        count(|s| if r.is_ok() { s.datagrams_down += 1 } else { s.dropped += 1 });
    }
}

/// Ends sessions idle for longer than `idle`, once a second (or sooner for
/// short timeouts).
async fn expire(sessions: Rc<RefCell<HashMap<SocketAddr, Session>>>, idle: Duration) {
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
            let Some(s) = sessions.borrow_mut().remove(&client) else { continue };
            STATE.with(|st| {
                if let Some(state) = st.borrow().as_ref() {
                    state.release(s.upstream);
                }
            });
            // Closing the session's socket ends its reply task.
            let _ = shard::ops::cancel_fd(s.socket.raw_fd()).await;
            count(|c| {
                c.sessions_active -= 1;
                c.sessions_expired += 1;
            });
        }
    }
}
