//! A TCP echo service on every shard: the bundled upstream for demos, tests
//! and the runtime benchmark.
//!
//! Each shard accepts on its own `SO_REUSEPORT` listener with one multishot
//! accept, and receives with multishot receives into a shared per-shard
//! provided-buffer ring, so an idle connection holds no buffer. A received
//! buffer is sent back as is (no copy) and returns to the ring when the
//! send completes.

use std::io;
use std::os::fd::OwnedFd;

use netstack::tcp::{TcpListener, TcpStream};
use shard::reactor::BufRing;

/// Serves connections on `listener` until the runtime stops and the
/// connections have finished; at most `max_conns` at once (more are reset
/// at once).
pub async fn serve(listener: OwnedFd, buffers: u16, buffer_size: usize, max_conns: usize) -> io::Result<()> {
    let listener = TcpListener::from_fd(listener)?;
    let group = BufRing::new(buffers, buffer_size)?;
    let drain = crate::services::accept::Drain::default();
    crate::services::accept::accept_until_stopped(listener, |conn| {
        if drain.open() >= max_conns {
            ops::warn_limited!(
                "echo: {max_conns} connections open on this shard (the descriptor budget): refused"
            );
            let _ = conn.set_reset_on_close();
            return;
        }
        let (group, open) = (group.clone(), drain.enter());
        shard::spawn_local_named("echo-conn", async move {
            connection(conn, group).await;
            drop(open);
        })
        .detach();
    })
    .await;
    drain.finished().await;
    Ok(())
}

async fn connection(conn: TcpStream, group: BufRing) {
    let _ = conn.set_nodelay(true);
    let mut rx = conn.recv_stream(&group);
    // Each received buffer is sent back as is and returns to the ring
    // when the send completes; EOF or an error ends the connection.
    while let Ok(Some(buf)) = rx.next().await {
        if conn.send_all(buf).await.0.is_err() {
            return;
        }
    }
}
