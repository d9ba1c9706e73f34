//! The default backend: a kernel UDP socket.

use std::io;

use shard::reactor::BufRing;

use super::{DatagramBackend, Outgoing, Received};
use crate::udp::{Datagram, DatagramReceiver, UdpSocket};

/// Datagrams through a kernel UDP socket: multishot `recvmsg` into a
/// provided-buffer ring on receive, `sendmsg` per datagram on transmit
/// (all of a burst's sends go to the kernel in the same loop turn).
#[derive(Debug)]
pub struct KernelUdp {
    // Dropped in this order: the receive is cancelled before the socket's
    // close is queued.
    rx: DatagramReceiver,
    socket: UdpSocket,
}

impl KernelUdp {
    /// Receives on `socket` with buffers from a new group of `buffers`
    /// buffers of `buffer_size` bytes on this shard.
    pub fn new(socket: UdpSocket, buffers: u16, buffer_size: usize) -> io::Result<KernelUdp> {
        let group = BufRing::new(buffers, buffer_size)?;
        Ok(KernelUdp { rx: DatagramReceiver::new(&group), socket })
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr()
    }

    /// Times the receive found every buffer in use.
    pub fn starved(&self) -> u64 {
        self.rx.starved()
    }
}

impl DatagramBackend for KernelUdp {
    type Buf = Datagram;

    async fn recv_burst(&mut self, out: &mut Vec<Received<Datagram>>, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let first = self.rx.next(&self.socket).await?;
        out.push(received(first));
        let mut n = 1;
        while n < max {
            match self.rx.try_next(&self.socket)? {
                Some(d) => out.push(received(d)),
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }

    async fn send_burst(&mut self, burst: &mut Vec<Outgoing>) -> io::Result<usize> {
        send_each(&self.socket, burst).await
    }
}

fn received(d: Datagram) -> Received<Datagram> {
    Received { source: d.source(), truncated: d.truncated(), buf: d }
}

/// Sends every datagram of the burst concurrently (one loop turn submits
/// them all), in order of submission.
async fn send_each(socket: &UdpSocket, burst: &mut Vec<Outgoing>) -> io::Result<usize> {
    let sends: Vec<_> = burst.drain(..).map(|o| socket.send_to(o.payload, o.dest)).collect();
    let mut sent = 0;
    for (res, _) in shard::future::join_all(sends).await {
        match res {
            Ok(_) => sent += 1,
            Err(e) if is_per_datagram(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Errors that concern one datagram, not the socket.
fn is_per_datagram(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EMSGSIZE | libc::ENOBUFS)
    )
}
