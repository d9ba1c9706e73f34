//! Running a configuration: block signals before any thread starts, plan
//! the runtime, bind every service's listeners (one per shard in one
//! `SO_REUSEPORT` group, resolving port 0 once) and the admin endpoint,
//! start every service on every shard, and turn signals into a drain
//! (SIGTERM/SIGINT), an immediate exit (a second one, or SIGQUIT) or a
//! reload (SIGHUP, see [`reload`]).

pub mod admin;
pub mod change;
pub mod fds;
pub mod reload;
pub mod resolve;
pub mod startup;
pub mod state;
pub mod upgrade;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::app::state::{App, ConfigSource};
use crate::config::{AppConfig, Service};
use crate::services::{Listen, ServiceId};

/// A service with its listeners: `groups[g][k]`, one group per address it
/// listens on (aggregate: UDP then TCP), one socket per member `k` of its
/// shard group.
struct Bound {
    service: Service,
    /// The shards it runs on.
    members: shard::Group,
    groups: Vec<Vec<OwnedFd>>,
    /// Connections per shard at most, from the descriptor budget (for the
    /// services without a limit of their own).
    conn_limit: usize,
}

/// Where a service listens, for the startup lines and `/status`.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The service's name.
    pub service: String,
    /// Its kind (`forward`, ...).
    pub kind: &'static str,
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    /// The shards serving it.
    pub members: shard::Group,
}

/// Runs every service of `cfg` on `rt` (planned and checked by
/// [`AppConfig::preflight`]) until a signal drains them. `source` is what
/// SIGHUP reads again.
pub fn run(mut cfg: AppConfig, rt: shard::Runtime, source: ConfigSource) -> anyhow::Result<()> {
    let signals = ops::signals::Signals::block().context("blocking signals")?;
    upgrade::remember_command_line();
    let shards = rt.shards();
    let budget = crate::app::fds::Budget::new(&cfg, shards, crate::app::fds::nofile());
    let warnings = budget.apply(&mut cfg);
    crate::app::startup::report(rt.plan(), &cfg, &budget, &warnings);
    // Taking over (--upgrade) or claiming the upgrade socket comes first:
    // a second instance fails here, naming the socket, before any bind.
    let (mut inherited, role) = match (&cfg.runtime.upgrade_socket, cfg.runtime.upgrade) {
        (Some(p), true) => (Some(upgrade::take_over(p)?), None),
        (Some(p), false) => (None, Some(upgrade::Role::Serve(upgrade::claim(p)?))),
        (None, _) => (None, Some(upgrade::Role::Off)),
    };
    let offer = state::Offer::new(cfg.runtime.upgrade_socket.is_some());
    let mut bound = Vec::new();
    let mut listening = Vec::new();
    for service in &cfg.services {
        let conn_limit = budget.per_shard(bound.len(), service.members(shards).len());
        let b = bind_service(service, &cfg, rt.plan(), conn_limit, &mut listening, inherited.as_mut())?;
        bound.push(b);
    }
    for (b, l) in bound.iter().flat_map(|b| b.groups.iter()).zip(&listening) {
        offer.add(format!("{} {:?} {}", l.kind, l.service, l.proto), b).context("keeping listener copies")?;
    }
    for b in &bound {
        for fd in b.service.prepared_sockets() {
            let what = format!("{} {:?} unix", b.service.kind(), b.service.name());
            offer.add(what, std::slice::from_ref(&fd)).context("keeping listener copies")?;
        }
    }
    let admin = match cfg.admin {
        Some(addr) => Some(bind_admin(addr, inherited.as_mut())?),
        None => None,
    };
    if let Some((fd, _)) = &admin {
        offer.add("admin".into(), std::slice::from_ref(fd)).context("keeping listener copies")?;
    }
    let role = match (role, inherited) {
        (Some(role), _) => role,
        (None, Some(mut inherited)) => {
            inherited.release_unused();
            let path = cfg.runtime.upgrade_socket.clone().context("upgrade socket")?;
            upgrade::Role::Finish(inherited, path)
        }
        (None, None) => upgrade::Role::Off,
    };
    let upgrade_path = cfg.runtime.upgrade_socket.clone();
    let from = match &role {
        upgrade::Role::Finish(inherited, _) => Some(inherited.from),
        _ => None,
    };
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    let app = App::new(cfg, source, rt.plan(), listening, admin_addr, offer, from);
    let handle = rt.handle();
    let hup = reload::watch_signals(signals, handle.clone(), app.clone())?;
    upgrade::spawn(role, app.clone(), handle.clone())?;
    let dns = resolve::spawn(app.clone(), handle.clone())?;
    let main_app = app.clone();
    let fds = Fds { admin: admin.map(|(fd, _)| fd), hup, dns };
    let result = rt.run_with_handle(handle, move || main(main_app, bound, fds));
    if let Some(path) = upgrade_path.filter(|_| !app.offer.handed_over()) {
        // Ours to the end: no successor listens there.
        let _ = std::fs::remove_file(path);
    }
    result.context("runtime")??;
    let failure = app.failure().take();
    match failure {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(()),
    }
}

/// Shard 0's main task: start the services everywhere, serve the admin
/// endpoint and reloads until every service has drained.
/// What shard 0's main task serves besides the services: the admin
/// listener and the wake-ups of the signal and DNS threads.
struct Fds {
    admin: Option<OwnedFd>,
    hup: OwnedFd,
    dns: OwnedFd,
}

async fn main(app: Arc<App>, bound: Vec<Bound>, fds: Fds) -> anyhow::Result<()> {
    let Fds { admin, hup, dns } = fds;
    for l in &app.listening {
        // Aggregate listens on two protocols: say which.
        let proto = if l.kind == "aggregate" { format!("{} ", l.proto) } else { String::new() };
        let (kind, addr, name, n) = (l.kind, l.addr, &l.service, l.members.len());
        let on = if n == shard::shard_count() {
            format!("across {n} shards")
        } else {
            let list: Vec<String> = l.members.members().iter().map(usize::to_string).collect();
            format!("on shards {} of {}", list.join(","), shard::shard_count())
        };
        println!("{kind} listening on {proto}{addr} {on} (service {name})");
    }
    if let Some(addr) = app.admin_addr {
        println!("admin listening on {addr} (http)");
    }
    let (done_tx, done_rx) = shard::sync::oneshot::channel::<()>();
    let admin_task = admin.map(|fd| {
        let app = app.clone();
        // After an upgrade the successor serves the admin endpoint (on the
        // same socket): this process stops accepting there first, while
        // its shards still answer, then drains.
        let handed_over = app.offer.admin_stop_signal();
        let done = async move {
            let handed_over = async {
                match &handed_over {
                    Ok(fd) if crate::app::change::woken(fd).await => {}
                    _ => std::future::pending::<()>().await,
                }
            };
            let _ = shard::future::select(done_rx, std::pin::pin!(handed_over)).await;
        };
        shard::spawn_local_named("admin", async move {
            crate::app::admin::serve(fd, app.clone(), done).await;
            app.offer.admin_closed();
        })
    });
    shard::spawn_local_named("reload", reload::serve(hup, app.clone())).detach();
    shard::spawn_local_named("dns", resolve::serve(dns, app.clone())).detach();
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

/// What one shard needs to start one service: its id, settings, sockets
/// and connection limit.
type Starting = (ServiceId, Service, Vec<OwnedFd>, usize);

/// Starts every service on every shard and waits for them all to end.
async fn run_services(app: &Arc<App>, bound: Vec<Bound>) -> anyhow::Result<()> {
    let shards = shard::shard_count();
    let mut per_shard: Vec<Vec<Starting>> = (0..shards).map(|_| Vec::new()).collect();
    for (i, b) in bound.into_iter().enumerate() {
        // The service's position: a reload keeps it (see `reload::reloadable`).
        let id = ServiceId(i as u64);
        let mut mine: Vec<Vec<OwnedFd>> = (0..b.members.len()).map(|_| Vec::new()).collect();
        for group in b.groups {
            for (k, fd) in group.into_iter().enumerate() {
                mine[k].push(fd);
            }
        }
        for (k, fds) in mine.into_iter().enumerate() {
            per_shard[b.members.member(k)].push((id, b.service.clone(), fds, b.conn_limit));
        }
    }
    let mut waits = Vec::new();
    for (shard, services) in per_shard.into_iter().enumerate() {
        let app = app.clone();
        waits.push(shard::submit_to(shard, move || async move {
            let tasks: Vec<_> = services
                .into_iter()
                .map(|(id, service, fds, conn_limit)| {
                    let name = service.name().to_string();
                    let task = shard::spawn_local_named("service", start(id, service, fds, conn_limit));
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

/// One service on this shard, with its sockets in `listens()` order and
/// its share of the descriptor budget (forward's is in its `max_conns`).
async fn start(id: ServiceId, service: Service, fds: Vec<OwnedFd>, conn_limit: usize) -> Result<(), String> {
    let r = service.serve(id, fds, conn_limit).await;
    id.uninstall();
    r.map_err(|e| e.to_string())
}

/// Binds `service`'s listeners, one socket per member of its shard group,
/// and has it prepare what else it needs before the shards start.
fn bind_service(
    service: &Service,
    cfg: &AppConfig,
    plan: &shard::placement::Plan,
    conn_limit: usize,
    listening: &mut Vec<Listening>,
    mut inherited: Option<&mut upgrade::Inherited>,
) -> anyhow::Result<Bound> {
    let members = service.members(plan.shards.len());
    // Socket k of a group is member k's (bound in order), so a CPU program
    // maps member k's CPU to index k.
    let steer_to = (cfg.runtime.steering == Some(crate::config::Steering::Cpu)).then(|| {
        let cpus = crate::config::RuntimeArgs::shard_cpus(plan);
        members.members().iter().map(|&m| cpus[m]).collect::<Vec<u32>>()
    });
    let (mut groups, mut addrs) = (Vec::new(), Vec::new());
    for listen in service.listens() {
        let (fds, addr) =
            bind(service, listen, members.len(), steer_to.as_deref(), inherited.as_deref_mut())?;
        let proto = if listen.udp { "udp" } else { "tcp" };
        let (service_name, kind) = (service.name().into(), service.kind());
        listening.push(Listening { service: service_name, kind, proto, addr, members: members.clone() });
        groups.push(fds);
        addrs.push(addr);
    }
    let mut inherit = |path: &std::path::Path| inherited.as_deref_mut().and_then(|i| i.take_unix(path));
    let prepared = service
        .prepare(&addrs, &mut inherit)
        .map_err(|e| anyhow::anyhow!("{} {:?}: {e}", service.kind(), service.name()))?;
    let service = prepared.unwrap_or_else(|| service.clone());
    Ok(Bound { service, members, groups, conn_limit })
}

/// Binds one listener per shard for one of `service`'s addresses; with
/// `steer_to` (the CPU of each listener's shard), attaches the program
/// that sends each connection or datagram to the shard on the CPU that
/// received it (CPUs without one of these shards fall back to the hash).
fn bind(
    service: &Service,
    listen: Listen,
    shards: usize,
    steer_to: Option<&[u32]>,
    inherited: Option<&mut upgrade::Inherited>,
) -> anyhow::Result<(Vec<OwnedFd>, SocketAddr)> {
    let opts = netstack::steer::ListenOptions { recv_buffer: listen.recv_buffer, ..Default::default() };
    let Listen { addr: listen, udp, by_client, .. } = listen;
    let what = || format!("{} {:?}: listen {listen}: cannot bind", service.kind(), service.name());
    let taken = inherited.and_then(|i| i.take(listen, udp));
    let was_taken = taken.is_some();
    let listeners = match taken {
        Some(fds) => grow(fds, shards, udp, &opts).with_context(what)?,
        None => {
            // Our group is ours: a second process on the same port would
            // join it and take part of the traffic.
            netstack::steer::ensure_free(listen, udp).with_context(what)?;
            let bound = if udp {
                netstack::steer::bind_udp_group(listen, shards, &opts)
            } else {
                netstack::steer::bind_group(listen, shards, &opts)
            };
            bound.with_context(what)?
        }
    };
    if was_taken && by_client.is_none() && steer_to.is_none() {
        // An inherited group may carry the old process's program: back
        // to the hash unless one is attached below.
        netstack::steer::detach_steering(&listeners[0]).with_context(what)?;
    }
    if let Some((v4, v6)) = by_client {
        // Checked by `AppConfig::preflight`: a group steered by client is
        // not also steered by CPU.
        netstack::steer::attach_client_steering(&listeners[0], shards, v4, v6).with_context(|| {
            format!("{} {:?}: listen {listen}: cannot attach client steering", service.kind(), service.name())
        })?;
    } else if let Some(cpus) = steer_to {
        netstack::steer::attach_cpu_steering(&listeners[0], cpus).with_context(|| {
            format!("{} {:?}: listen {listen}: cannot attach CPU steering", service.kind(), service.name())
        })?;
    }
    let addr = netstack::steer::local_addr(&listeners[0]).with_context(what)?;
    Ok((listeners, addr))
}

/// An inherited group made `shards` strong: more members join it when
/// this process runs more shards than the old one. It cannot shrink:
/// closing a member resets what waits in its backlog.
fn grow(
    mut fds: Vec<OwnedFd>,
    shards: usize,
    udp: bool,
    opts: &netstack::steer::ListenOptions,
) -> anyhow::Result<Vec<OwnedFd>> {
    if fds.len() > shards {
        anyhow::bail!(
            "the running process has {} sockets here and this one would use {shards}: an upgrade \
             cannot take fewer shards without resetting connections queued on the others \
             (upgrade with at least {} shards, or restart)",
            fds.len(),
            fds.len()
        );
    }
    let first = fds.first().context("an empty inherited group")?;
    let addr = netstack::steer::local_addr(first)?;
    for fd in &fds {
        if let Some(size) = opts.recv_buffer {
            socket2::SockRef::from(fd).set_recv_buffer_size(size)?;
        }
        // An earlier binary may not have set it on its listeners.
        if !udp && opts.nodelay {
            netstack::steer::set_listener_nodelay(fd)?;
        }
    }
    // Same port, same user, SO_REUSEPORT: these join the inherited group,
    // after its members (so socket i is still group index i).
    let more = shards - fds.len();
    if more > 0 {
        let joined = if udp {
            netstack::steer::bind_udp_group(addr, more, opts)?
        } else {
            netstack::steer::bind_group(addr, more, opts)?
        };
        fds.extend(joined);
    }
    Ok(fds)
}

/// The admin listener (one socket, served by shard 0), inherited on an
/// upgrade when the address is the same.
fn bind_admin(
    addr: SocketAddr,
    inherited: Option<&mut upgrade::Inherited>,
) -> anyhow::Result<(OwnedFd, SocketAddr)> {
    let opts = netstack::steer::ListenOptions::default();
    let mut fds = match inherited.and_then(|i| i.take(addr, false)) {
        Some(fds) => grow(fds, 1, false, &opts).with_context(|| format!("--admin {addr}"))?,
        None => {
            netstack::steer::ensure_free(addr, false)
                .with_context(|| format!("--admin {addr}: cannot listen"))?;
            netstack::steer::bind_group(addr, 1, &opts)
                .with_context(|| format!("--admin {addr}: cannot listen"))?
        }
    };
    let fd = fds.pop().context("admin listener")?;
    let local = netstack::steer::local_addr(&fd).with_context(|| format!("--admin {addr}"))?;
    Ok((fd, local))
}

#[cfg(test)]
mod tests {
    use super::grow;

    /// Listeners taken over from a process that did not set TCP_NODELAY
    /// on them get it, so what they accept from now on has it.
    #[test]
    fn inherited_listeners_get_nodelay() {
        let opts = netstack::steer::ListenOptions { nodelay: false, ..Default::default() };
        let addr = "127.0.0.1:0".parse().expect("addr");
        let old = netstack::steer::bind_group(addr, 1, &opts).expect("bind");
        assert!(!socket2::SockRef::from(&old[0]).tcp_nodelay().expect("nodelay"));
        let taken = grow(old, 2, false, &netstack::steer::ListenOptions::default()).expect("grow");
        assert_eq!(taken.len(), 2);
        for fd in &taken {
            assert!(
                socket2::SockRef::from(fd).tcp_nodelay().expect("nodelay"),
                "every member, inherited or new"
            );
        }
    }
}
