//! `loadgen udp`: datagrams from many source ports (one connected socket
//! each), unpaced or at a fixed rate; with `--echo` each socket waits for
//! its datagram to come back (one outstanding), checks it, and counts a
//! missing reply as lost. Datagrams of 8 bytes or more carry a sequence
//! number, so a late echo of an earlier datagram is not taken for the
//! reply to the current one.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstack::udp::UdpSocket;
use shard::time::timeout_at;

use super::args::{duration_flag, UdpArgs};
use super::report::{Summary, Tally};
use super::{drive, share, summary, Pacer, Window};

#[derive(Debug)]
struct UdpConfig {
    target: std::net::SocketAddr,
    sockets: usize,
    size: usize,
    echo: bool,
    socket_rate: Option<f64>,
    total: Option<u64>,
    timeout: Duration,
}

/// `loadgen udp`.
pub fn run(a: &UdpArgs) -> anyhow::Result<Summary> {
    if a.sockets == 0 || a.size == 0 || a.size > 65507 {
        anyhow::bail!(
            "--sockets {} --size {}: need at least one socket and 1..=65507 bytes",
            a.sockets,
            a.size
        );
    }
    if let Some(r) = a.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        anyhow::bail!("--rate {r}: must be a positive number");
    }
    let cfg = Arc::new(UdpConfig {
        target: a.common.target,
        sockets: a.sockets,
        size: a.size,
        echo: a.echo,
        socket_rate: a.rate.map(|r| r / a.sockets as f64),
        total: a.requests,
        timeout: duration_flag("timeout", &a.common.timeout)?,
    });
    let limit = a.common.limit(a.requests.is_some())?;
    let out = drive(&a.common.runtime, "datagrams", limit, a.sockets, move |tally, c, w| {
        sender(tally, cfg.clone(), c, w)
    })?;
    let mut s = summary("udp", "datagrams", a.common.target, a.sockets, out);
    s.extra.push(("echo", a.echo.into()));
    Ok(s)
}

/// The datagram numbered `seq`: the number in its first 8 bytes (when it
/// has room), then a fixed pattern.
fn datagram(buf: &mut Vec<u8>, size: usize, seq: u64) {
    buf.clear();
    buf.extend((0..size).map(|i| (i % 251) as u8));
    if size >= 8 {
        buf[..8].copy_from_slice(&seq.to_be_bytes());
    }
}

async fn sender(tally: Rc<Tally>, cfg: Arc<UdpConfig>, c: usize, w: Window) {
    let socket = match UdpSocket::connected(cfg.target) {
        Ok(s) => s,
        Err(e) => return tally.error(format!("udp socket to {}: {e}", cfg.target)),
    };
    let quota = cfg.total.map(|t| share(t, cfg.sockets, c));
    let mut pacer = Pacer::new(cfg.socket_rate, w.start);
    let (mut tx, mut rx) = (Vec::with_capacity(cfg.size), Vec::with_capacity(cfg.size + 1));
    let mut done = 0u64;
    while quota.is_none_or(|q| done < q) {
        let due = pacer.due().await;
        if due >= w.deadline || w.over() {
            return;
        }
        datagram(&mut tx, cfg.size, done);
        done += 1;
        let (r, b) = socket.send_to(tx, cfg.target).await;
        tx = b;
        match r {
            Ok(n) => tally.bytes_out.set(tally.bytes_out.get() + n as u64),
            Err(e) => {
                tally.error(format!("send to {}: {e}", cfg.target));
                continue;
            }
        }
        if !cfg.echo {
            tally.ok_unmeasured(1);
            continue;
        }
        match echo(&socket, &mut rx, &tx, (Instant::now() + cfg.timeout).min(w.deadline)).await {
            Ok(()) => {
                tally.bytes_in.set(tally.bytes_in.get() + tx.len() as u64);
                tally.ok(due.elapsed());
            }
            Err(_) if w.over() => return,
            Err(e) => tally.error(e),
        }
    }
}

/// Waits for `sent` to come back, skipping late echoes of earlier
/// datagrams; anything else is an error.
async fn echo(socket: &UdpSocket, rx: &mut Vec<u8>, sent: &[u8], limit: Instant) -> Result<(), String> {
    loop {
        let mut buf = std::mem::take(rx);
        if buf.capacity() <= sent.len() {
            buf = Vec::with_capacity(sent.len() + 1);
        }
        buf.clear();
        let Ok((r, b)) = timeout_at(limit, socket.recv_from(buf)).await else {
            return Err("datagram lost (no echo before the timeout)".into());
        };
        *rx = b;
        let n = r.map_err(|e| format!("receive: {e}"))?.0;
        if rx[..n] == *sent {
            return Ok(());
        }
        let late = n == sent.len() && n >= 8 && rx[8..n] == sent[8..] && rx[..8] < sent[..8];
        if !late {
            return Err(format!("echo of {n} bytes differs from the {} sent", sent.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_their_sequence_number() {
        let mut a = Vec::new();
        datagram(&mut a, 64, 7);
        assert_eq!(a.len(), 64);
        assert_eq!(&a[..8], &7u64.to_be_bytes());
        let mut b = Vec::new();
        datagram(&mut b, 64, 8);
        assert_eq!(a[8..], b[8..]);
        assert!(a[..8] < b[..8], "an earlier datagram sorts first");
        datagram(&mut b, 3, 9);
        assert_eq!(b, [0, 1, 2]);
    }
}
