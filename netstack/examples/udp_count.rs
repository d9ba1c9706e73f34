//! A bare receive loop, the reference `make compare` holds the aggregator
//! against: one thread, blocking `recv` on one UDP socket with the default
//! receive buffer, counting newline-terminated lines and nothing else (the
//! last line of a datagram may lack its `\n`).
//!
//! `cargo run --release -p netstack --example udp_count -- 127.0.0.1:0 [idle-ms] [rcvbuf]`
//! prints `udp_count listening on ADDR`, then, once nothing has arrived
//! for `idle-ms` (default 1000) after the first datagram, `lines N
//! datagrams D` and exits. `rcvbuf` sets SO_RCVBUF in bytes (the kernel
//! caps it at `net.core.rmem_max` and doubles it), so the loop can be given
//! the receive buffer the aggregator asks for.

use std::net::UdpSocket;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let idle: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rcvbuf: Option<usize> = args.next().and_then(|a| a.parse().ok());
    let socket = UdpSocket::bind(&addr)?;
    if let Some(size) = rcvbuf {
        socket2::SockRef::from(&socket).set_recv_buffer_size(size)?;
    }
    println!("udp_count listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65536];
    let (mut lines, mut datagrams) = (0u64, 0u64);
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                datagrams += 1;
                let data = &buf[..n];
                lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
                lines += u64::from(!data.is_empty() && data[n - 1] != b'\n');
                // Wait without limit for the first datagram, then end on idle.
                socket.set_read_timeout(Some(Duration::from_millis(idle)))?;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break
            }
            Err(e) => return Err(e),
        }
    }
    println!("lines {lines} datagrams {datagrams}");
    Ok(())
}
