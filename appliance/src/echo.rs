//! A TCP echo service on every shard: the bundled upstream for demos, tests
//! and the runtime benchmark.
//!
//! Each shard accepts on its own `SO_REUSEPORT` listener with one multishot
//! accept, and receives with multishot receives into a shared per-shard
//! provided-buffer ring, so an idle connection holds no buffer. A received
//! buffer is sent back as is (no copy) and returns to the ring when the
//! send completes.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use shard::future::{select, Either};
use shard::ops::{self, Slice};
use shard::reactor::{BufRing, ProvidedBuf};

/// Binds this shard's listener on `addr` (port 0: a free port).
pub fn bind(addr: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
    let fd = netstack::listener::tcp_reuseport(addr, 4096)?;
    let local = netstack::listener::local_addr(&fd)?;
    Ok((fd, local))
}

/// Serves connections on `listener` until the runtime stops.
pub async fn serve(listener: OwnedFd, buffers: u16, buffer_size: usize) -> io::Result<()> {
    let group = BufRing::new(buffers, buffer_size)?;
    let mut accepts = ops::accept_multi(listener.as_raw_fd());
    loop {
        let next = match select(shard::stopping(), accepts.next()).await {
            Either::Left(()) => return Ok(()),
            Either::Right(next) => next,
        };
        let Some(c) = next else {
            // The kernel ended the multishot accept: arm a new one.
            accepts = ops::accept_multi(listener.as_raw_fd());
            continue;
        };
        match c.io_result() {
            Ok(fd) => {
                // SAFETY-free: a successful accept returns a fresh descriptor we own.
                let fd = owned(fd as RawFd);
                shard::spawn_local_named("echo-conn", connection(fd, group.clone())).detach();
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                tracing::warn!("accept: {e}; backing off");
                shard::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => tracing::debug!("accept: {e}"),
        }
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    #[allow(unsafe_code)]
    // SAFETY: `fd` was just returned by accept and is owned by nobody else.
    unsafe {
        OwnedFd::from_raw_fd(fd)
    }
}

async fn connection(fd: OwnedFd, group: BufRing) {
    let raw = fd.as_raw_fd();
    let _ = netstack::listener::set_nodelay(raw);
    loop {
        let mut rx = ops::recv_multi(raw, &group);
        while let Some(c) = rx.next().await {
            if c.result == 0 {
                return;
            }
            if c.result == -libc::ENOBUFS {
                // Every buffer of this shard is out being echoed: let the
                // sends finish and return some, then re-arm.
                shard::yield_now().await;
                break;
            }
            if c.result < 0 {
                return;
            }
            let Some(buf) = c.buf else { return };
            if send_all(raw, buf).await.is_err() {
                return;
            }
        }
    }
}

async fn send_all(fd: RawFd, buf: ProvidedBuf) -> io::Result<()> {
    let len = buf.len();
    let mut slice = Slice::new(buf, 0, len);
    loop {
        let (res, back) = ops::send(fd, slice).await;
        let sent = res?;
        if sent == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let begin = back.begin() + sent;
        if begin >= len {
            return Ok(());
        }
        slice = Slice::new(back.into_inner(), begin, len);
    }
}
