//! What every service's `main` shares: block signals before any thread
//! starts, plan the runtime, bind one listener per shard in one
//! `SO_REUSEPORT` group (resolving port 0 once), print where it listens,
//! run the service on every shard, and turn signals into a drain.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use anyhow::Context as _;

/// What the listening sockets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP listeners.
    Tcp,
    /// UDP sockets.
    Udp,
}

/// Runs `service(listener)` on every shard until a signal drains it.
pub fn on_every_shard<S, Fut>(
    builder: shard::Builder,
    listen: SocketAddr,
    transport: Transport,
    name: &'static str,
    service: S,
) -> anyhow::Result<()>
where
    S: Fn(OwnedFd) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let signals = ops::signals::Signals::block().context("blocking signals")?;
    let rt = builder.build()?;
    for w in &rt.plan().warnings {
        tracing::warn!("{w}");
    }
    let shards = rt.shards();
    let opts = netstack::steer::ListenOptions::default();
    let bound = match transport {
        Transport::Tcp => netstack::steer::bind_group(listen, shards, &opts),
        Transport::Udp => netstack::steer::bind_udp_group(listen, shards, &opts),
    };
    let listeners = bound.with_context(|| format!("--listen {listen}: cannot bind"))?;
    let addr = netstack::steer::local_addr(&listeners[0]).with_context(|| format!("--listen {listen}"))?;
    let handle = rt.handle();
    watch_signals(signals, handle.clone())?;
    let result = rt.run_with_handle(handle, move || async move {
        println!("{name} listening on {addr} across {shards} shards");
        let mut waits = Vec::new();
        for (shard, fd) in listeners.into_iter().enumerate() {
            let service = service.clone();
            waits.push(shard::submit_to(shard, move || async move {
                service(fd).await.map_err(|e| e.to_string())
            }));
        }
        for (shard, r) in shard::future::join_all(waits).await.into_iter().enumerate() {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("shard {shard}: {name}: {e}"),
                Err(e) => anyhow::bail!("shard {shard}: {e}"),
            }
        }
        Ok(())
    });
    result.context("runtime")?
}

/// Accepts on `listener` until the runtime is asked to stop, handing each
/// connection to `on_conn`. Running out of descriptors backs off briefly
/// instead of spinning; per-connection accept errors are skipped.
pub async fn accept_until_stopped(
    listener: &netstack::tcp::TcpListener,
    mut on_conn: impl FnMut(netstack::tcp::TcpStream),
) {
    use shard::future::{select, Either};
    let mut incoming = listener.incoming();
    loop {
        match select(shard::stopping(), incoming.next()).await {
            Either::Left(()) => return,
            Either::Right(Ok(conn)) => on_conn(conn),
            Either::Right(Err(e)) => {
                tracing::warn!("accept: {e}; backing off");
                shard::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Starts a thread that turns signals into runtime actions: the first
/// SIGINT/SIGTERM drains, a second one (or SIGQUIT) exits at once.
pub fn watch_signals(signals: ops::signals::Signals, handle: shard::RuntimeHandle) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                match signals.wait() {
                    ops::signals::Signal::Hangup => tracing::info!("SIGHUP: nothing to reload"),
                    ops::signals::Signal::Quit => std::process::exit(130),
                    _ if stopping => std::process::exit(130),
                    _ => {
                        tracing::info!("stopping (signal again to exit at once)");
                        stopping = true;
                        handle.stop();
                    }
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
