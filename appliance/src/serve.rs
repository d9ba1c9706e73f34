//! Running a configuration: block signals before any thread starts, plan
//! the runtime, bind every service's listeners (one per shard in one
//! `SO_REUSEPORT` group, resolving port 0 once) and the admin endpoint,
//! start every service on every shard, and turn signals into a drain
//! (SIGTERM/SIGINT), an immediate exit (a second one, or SIGQUIT) or a
//! reload (SIGHUP, see [`crate::reload`]).

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::admin::App;
use crate::config::{AppConfig, Service};
use crate::{echo, forward, reload};

/// A service with its listeners, one per shard.
struct Bound {
    service: Service,
    listeners: Vec<OwnedFd>,
}

/// Runs every service of `cfg` until a signal drains them. `path` is the
/// config file SIGHUP re-reads (none: reloads are refused).
pub fn run(cfg: AppConfig, path: Option<PathBuf>) -> anyhow::Result<()> {
    let signals = ops::signals::Signals::block().context("blocking signals")?;
    let rt = cfg.runtime.builder()?.grace(cfg.grace).build()?;
    let shards = rt.shards();
    crate::startup::report(rt.plan(), &cfg);
    let mut bound = Vec::new();
    let mut listening = Vec::new();
    for service in &cfg.services {
        let (listeners, addr) = bind(service, shards)?;
        listening.push((service.name().to_string(), service.kind(), addr));
        bound.push(Bound { service: service.clone(), listeners });
    }
    let admin = match cfg.admin {
        Some(addr) => Some(bind_admin(addr)?),
        None => None,
    };
    let app = App::new(cfg, path, rt.plan(), listening, admin.as_ref().map(|(_, a)| *a));
    let handle = rt.handle();
    let hup = reload::watch_signals(signals, handle.clone(), app.clone())?;
    let result = rt.run_with_handle(handle, move || main(app, bound, admin.map(|(fd, _)| fd), hup));
    result.context("runtime")?
}

/// Shard 0's main task: start the services everywhere, serve the admin
/// endpoint and reloads until every service has drained.
async fn main(app: Arc<App>, bound: Vec<Bound>, admin: Option<OwnedFd>, hup: OwnedFd) -> anyhow::Result<()> {
    for (name, kind, addr) in &app.listening {
        println!("{kind} listening on {addr} across {} shards (service {name})", shard::shard_count());
    }
    if let Some(addr) = app.admin_addr {
        println!("admin listening on {addr} (http)");
    }
    let (done_tx, done_rx) = shard::sync::oneshot::channel::<()>();
    let admin_task = admin.map(|fd| {
        let app = app.clone();
        shard::spawn_local_named("admin", async move { crate::admin::serve(fd, app, done_rx).await })
    });
    shard::spawn_local_named("reload", reload::serve(hup, app.clone())).detach();
    let grace = app.config().grace;
    let services = std::pin::pin!(run_services(&app, bound));
    let result = match shard::future::select(services, grace_over(grace)).await {
        shard::future::Either::Left(r) => r,
        shard::future::Either::Right(()) => {
            tracing::warn!("grace period over: closing the connections left");
            Ok(())
        }
    };
    let _ = done_tx.send(());
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    result
}

/// Completes a little before the runtime's grace deadline once stopping,
/// so the main task ends (exit 0) before the runtime cancels what is left.
async fn grace_over(grace: Duration) {
    shard::stopping().await;
    let margin = (grace / 10).min(Duration::from_millis(100));
    shard::time::sleep(grace.saturating_sub(margin)).await;
}

/// Connections a service has open on this shard, so that it can wait for
/// them to finish when draining.
#[derive(Debug, Clone, Default)]
pub struct Drain(Rc<Cell<usize>>);

/// One open connection of a [`Drain`].
#[derive(Debug)]
pub struct DrainGuard(Rc<Cell<usize>>);

impl Drain {
    /// Counts a connection until the guard is dropped.
    pub fn enter(&self) -> DrainGuard {
        self.0.set(self.0.get() + 1);
        DrainGuard(self.0.clone())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.get()
    }

    /// Waits until every connection has finished (checked every 20 ms: this
    /// only runs while draining).
    pub async fn finished(&self) {
        while self.0.get() > 0 {
            shard::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Starts every service on every shard and waits for them all to end.
async fn run_services(app: &Arc<App>, bound: Vec<Bound>) -> anyhow::Result<()> {
    let shards = shard::shard_count();
    let mut per_shard: Vec<Vec<(Service, OwnedFd)>> = (0..shards).map(|_| Vec::new()).collect();
    for b in bound {
        for (shard, fd) in b.listeners.into_iter().enumerate() {
            per_shard[shard].push((b.service.clone(), fd));
        }
    }
    let mut waits = Vec::new();
    for (shard, services) in per_shard.into_iter().enumerate() {
        let app = app.clone();
        waits.push(shard::submit_to(shard, move || async move {
            let tasks: Vec<_> = services
                .into_iter()
                .map(|(service, fd)| {
                    let name = service.name().to_string();
                    let task = shard::spawn_local_named("service", start(service, fd));
                    async move { task.await.map_err(|e| e.to_string()).and_then(|r| r).map_err(|e| (name, e)) }
                })
                .collect();
            app.shard_serving();
            shard::future::join_all(tasks).await
        }));
    }
    for (shard, r) in shard::future::join_all(waits).await.into_iter().enumerate() {
        let results = r.with_context(|| format!("shard {shard}"))?;
        for r in results {
            if let Err((name, e)) = r {
                anyhow::bail!("shard {shard}: {name}: {e}");
            }
        }
    }
    Ok(())
}

/// One service on this shard.
async fn start(service: Service, fd: OwnedFd) -> Result<(), String> {
    let r = match service {
        Service::Echo(o) => echo::serve(fd, o.buffers, o.buffer_size).await,
        Service::Forward(cfg) => forward::serve(fd, cfg).await,
    };
    r.map_err(|e| e.to_string())
}

/// Binds one listener per shard for `service`; returns them and the address.
fn bind(service: &Service, shards: usize) -> anyhow::Result<(Vec<OwnedFd>, SocketAddr)> {
    let (listen, udp) = service.listen();
    let opts = netstack::steer::ListenOptions::default();
    let bound = if udp {
        netstack::steer::bind_udp_group(listen, shards, &opts)
    } else {
        netstack::steer::bind_group(listen, shards, &opts)
    };
    let what = || format!("{} {:?}: listen {listen}: cannot bind", service.kind(), service.name());
    let listeners = bound.with_context(what)?;
    let addr = netstack::steer::local_addr(&listeners[0]).with_context(what)?;
    Ok((listeners, addr))
}

/// The admin listener (one socket, served by shard 0).
fn bind_admin(addr: SocketAddr) -> anyhow::Result<(OwnedFd, SocketAddr)> {
    let opts = netstack::steer::ListenOptions::default();
    let mut fds = netstack::steer::bind_group(addr, 1, &opts)
        .with_context(|| format!("--admin {addr}: cannot listen"))?;
    let fd = fds.pop().context("admin listener")?;
    let local = netstack::steer::local_addr(&fd).with_context(|| format!("--admin {addr}"))?;
    Ok((fd, local))
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
                ops::warn_limited!("accept: {e}; backing off");
                shard::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
