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
use std::os::fd::OwnedFd;
use std::sync::Arc;

use netstack::tcp::{TcpListener, TcpStream};
use shard::reactor::BufRing;

use super::{Descriptors, Listen, Local, Service, ServiceId};

/// The echo service's settings (validated from `crate::config::EchoOptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConfig {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Receive buffers per shard.
    pub buffers: u16,
    /// Bytes per receive buffer.
    pub buffer_size: usize,
    /// The shards it runs on (`None`: every shard).
    pub group: Option<shard::Group>,
}

impl Service for EchoConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn group(&self) -> Option<&shard::Group> {
        self.group.as_ref()
    }

    fn kind(&self) -> &'static str {
        "echo"
    }

    fn listens(&self) -> Vec<Listen> {
        vec![Listen { addr: self.listen, udp: false, recv_buffer: None, by_client: None }]
    }

    fn descriptors(&self) -> Descriptors {
        Descriptors { per_conn: 1, ..Descriptors::default() }
    }

    fn serve(
        self: Arc<Self>,
        _: ServiceId,
        sockets: Vec<OwnedFd>,
        conn_limit: usize,
    ) -> Local<'static, io::Result<()>> {
        Box::pin(async move {
            let listener = sockets.into_iter().next().ok_or_else(|| io::Error::other("listener missing"))?;
            serve(listener, self.buffers, self.buffer_size, conn_limit).await
        })
    }

    fn restart_needed(&self, new: &dyn Service) -> Option<String> {
        let new = new.as_any().downcast_ref::<EchoConfig>()?;
        ((self.buffers, self.buffer_size) != (new.buffers, new.buffer_size))
            .then(|| "buffers or buffer_size".to_string())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

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
    let mut rx = conn.recv_stream(&group);
    // Each received buffer is sent back as is and returns to the ring
    // when the send completes; EOF or an error ends the connection.
    while let Ok(Some(buf)) = rx.next().await {
        if conn.send_all(buf).await.0.is_err() {
            return;
        }
    }
}
