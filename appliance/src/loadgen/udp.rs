//! `loadgen udp`: datagrams from many source ports (one connected socket
//! each), unpaced or at a fixed rate; with `--echo` each socket waits for
//! its datagram to come back (one outstanding), checks it, and counts a
//! missing reply as lost.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstack::udp::UdpSocket;
use shard::time::timeout_at;

use super::args::{duration_flag, UdpArgs};
use super::report::{Summary, Tally};
use super::{drive, mine, run_all, share, summary, Pacer, Window};

#[derive(Debug)]
struct UdpConfig {
    target: std::net::SocketAddr,
    sockets: usize,
    payload: &'static [u8],
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
    let payload: &'static [u8] = Box::leak((0..a.size).map(|i| (i % 251) as u8).collect::<Box<[u8]>>());
    let cfg = Arc::new(UdpConfig {
        target: a.common.target,
        sockets: a.sockets,
        payload,
        echo: a.echo,
        socket_rate: a.rate.map(|r| r / a.sockets as f64),
        total: a.requests,
        timeout: duration_flag("timeout", &a.common.timeout)?,
    });
    let limit = a.common.limit(a.requests.is_some())?;
    let out = drive(&a.common.runtime, "datagrams", limit, move |tally, w| {
        let cfg = cfg.clone();
        async move {
            run_all(&tally.clone(), mine(cfg.sockets), |c| sender(tally.clone(), cfg.clone(), c, w)).await
        }
    })?;
    let mut s = summary("udp", "datagrams", a.common.target, a.sockets, out);
    s.extra.push(("echo", a.echo.into()));
    Ok(s)
}

async fn sender(tally: Rc<Tally>, cfg: Arc<UdpConfig>, c: usize, w: Window) {
    let socket = match UdpSocket::connected(cfg.target) {
        Ok(s) => s,
        Err(e) => return tally.error(format!("udp socket to {}: {e}", cfg.target)),
    };
    let quota = cfg.total.map(|t| share(t, cfg.sockets, c));
    let mut pacer = Pacer::new(cfg.socket_rate, w.start);
    let mut rx = Vec::with_capacity(cfg.payload.len() + 1);
    let mut done = 0u64;
    while quota.is_none_or(|q| done < q) {
        let due = pacer.due().await;
        if due >= w.deadline || w.over() {
            return;
        }
        match socket.send_to(cfg.payload, cfg.target).await.0 {
            Ok(n) => tally.bytes_out.set(tally.bytes_out.get() + n as u64),
            Err(e) => {
                tally.error(format!("send to {}: {e}", cfg.target));
                done += 1;
                continue;
            }
        }
        done += 1;
        if !cfg.echo {
            tally.ok_unmeasured(1);
            continue;
        }
        match echo(&socket, &mut rx, cfg.payload, (Instant::now() + cfg.timeout).min(w.deadline)).await {
            Ok(()) => {
                tally.bytes_in.set(tally.bytes_in.get() + cfg.payload.len() as u64);
                tally.ok(due.elapsed());
            }
            Err(_) if w.over() => return,
            Err(e) => tally.error(e),
        }
    }
}

/// Waits for the datagram to come back, checking it.
async fn echo(socket: &UdpSocket, rx: &mut Vec<u8>, payload: &[u8], limit: Instant) -> Result<(), String> {
    let mut buf = std::mem::take(rx);
    if buf.capacity() <= payload.len() {
        buf = Vec::with_capacity(payload.len() + 1);
    }
    buf.clear();
    match timeout_at(limit, socket.recv_from(buf)).await {
        Ok((Ok((n, _)), b)) => {
            *rx = b;
            if rx[..n] != *payload {
                return Err(format!("echo of {n} bytes differs from the {} sent", payload.len()));
            }
            Ok(())
        }
        Ok((Err(e), b)) => {
            *rx = b;
            Err(format!("receive: {e}"))
        }
        Err(_) => Err("datagram lost (no echo before the timeout)".into()),
    }
}
