//! Binary upgrades that refuse no connection (HAProxy's `-x` with
//! `expose-fd listeners`, nginx's `USR2`, Cloudflare's ecdysis).
//!
//! A process started with `upgrade_socket` (`--upgrade-socket`) listens
//! there (a Unix `SOCK_SEQPACKET` socket, mode `0600`). A new process
//! started with `--upgrade` and the same socket:
//!
//! 1. connects and says hello;
//! 2. receives every listening socket of the running process (each
//!    service's `SO_REUSEPORT` group and the admin listener) over
//!    `SCM_RIGHTS` ([`netstack::fdpass`]). The sockets, and the
//!    connections waiting in their backlogs, are now open in both
//!    processes: both accept;
//! 3. binds its configuration, taking an inherited group wherever it
//!    listens on the same address and protocol (joining more members to
//!    it when it runs more shards), binding fresh sockets elsewhere;
//! 4. once every shard serves, tells systemd its pid (`MAINPID=`, when run
//!    by systemd) and tells the old process it is ready;
//! 5. the old process withdraws its copies of the sockets, stops accepting
//!    (the connections its accept had already taken are served), answers
//!    "draining", and drains its established connections for its grace
//!    period, as on SIGTERM. The new process then listens on the upgrade
//!    socket itself, ready for the next upgrade.
//!
//! Anything that fails before step 5 (the new configuration is invalid, a
//! socket cannot be bound, the new process dies or is not ready within
//! [`READY_TIMEOUT`]) leaves the old process serving as before; a new
//! process whose upgrade fails after it started serving drains and exits
//! with an error. Every step waits on the peer for a bounded time.
//!
//! Limits: established connections stay with the process that accepted
//! them (as in HAProxy and Envoy); a group can grow (more shards) but not
//! shrink (closing a member would reset what waits in its backlog); a
//! listener on port 0 is never inherited (its port is a new one each time).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use netstack::fdpass;
use serde::{Deserialize, Serialize};
use socket2::{SockRef, Socket, Type};

use crate::app::state::App;

/// How long the old process waits for the new one to be serving, and the
/// new one waits to be serving before it gives up its upgrade.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long any other step waits on the peer.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol's version: both processes must speak the same one.
const VERSION: u32 = 1;

/// One message of the hand-off.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
enum Msg {
    /// New to old: take me over.
    Hello { version: u32, pid: u32 },
    /// Old to new: the groups that follow (what each is, how many sockets).
    Offer { pid: u32, groups: Vec<(String, usize)> },
    /// Old to new: sockets of group `group`, attached.
    Sockets { group: usize },
    /// Either way: no upgrade, and why.
    Refused { reason: String },
    /// New to old: every shard serves.
    Ready,
    /// Old to new: stopped accepting, draining; the upgrade socket is free.
    Draining,
}

fn send(conn: &Socket, msg: &Msg, fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(msg).context("encoding")?;
    fdpass::send(conn, &bytes, fds).context("sending")
}

fn recv(conn: &Socket) -> anyhow::Result<(Msg, Vec<OwnedFd>)> {
    let (bytes, fds) = fdpass::recv(conn)?.context("the other process closed the connection")?;
    let msg = serde_json::from_slice(&bytes).context("a message that is not the upgrade protocol")?;
    Ok((msg, fds))
}

/// Listens on `path` for a successor, replacing a stale socket file a
/// crashed process left; an appliance still serving there is an error.
pub fn claim(path: &Path) -> anyhow::Result<Socket> {
    match fdpass::connect(path, STEP_TIMEOUT) {
        Ok(_) => bail!(
            "upgrade socket {}: another appliance serves upgrades there; start this one with \
             --upgrade to take over from it, or give it another upgrade_socket",
            path.display()
        ),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            // Absent, or a file no process listens on any more.
            let _ = std::fs::remove_file(path);
        }
        Err(e) => return Err(e).with_context(|| format!("upgrade socket {}", path.display())),
    }
    fdpass::listen(path).with_context(|| format!("upgrade socket {}: cannot listen", path.display()))
}

/// What a new process took from the one it upgrades.
#[derive(Debug)]
pub struct Inherited {
    conn: Socket,
    /// The old process.
    pub from: u32,
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    what: String,
    udp: bool,
    addr: Local,
    fds: Vec<OwnedFd>,
}

/// Where an inherited socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Ip(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Local::Ip(a) => a.fmt(f),
            Local::Unix(p) => p.display().fmt(f),
        }
    }
}

/// Where `fd` is bound.
fn local_of(fd: &OwnedFd) -> std::io::Result<Local> {
    let addr = SockRef::from(fd).local_addr()?;
    match (addr.as_socket(), addr.as_pathname()) {
        (Some(ip), _) => Ok(Local::Ip(ip)),
        (None, Some(path)) => Ok(Local::Unix(path.to_path_buf())),
        _ => {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "neither an IP nor a Unix path socket"))
        }
    }
}

/// Connects to the process serving `path` and takes its listening sockets.
pub fn take_over(path: &Path) -> anyhow::Result<Inherited> {
    let conn = fdpass::connect(path, STEP_TIMEOUT)
        .with_context(|| format!("--upgrade: no appliance serves upgrades at {}", path.display()))?;
    send(&conn, &Msg::Hello { version: VERSION, pid: std::process::id() }, &[])?;
    let (from, offered) = match recv(&conn).context("--upgrade: waiting for the running process")?.0 {
        Msg::Offer { pid, groups } => (pid, groups),
        Msg::Refused { reason } => bail!("--upgrade: the running process refused: {reason}"),
        other => bail!("--upgrade: unexpected {other:?}"),
    };
    let mut fds: Vec<Vec<OwnedFd>> = offered.iter().map(|_| Vec::new()).collect();
    let total: usize = offered.iter().map(|(_, n)| n).sum();
    let mut received = 0;
    while received < total {
        let (msg, got) = recv(&conn).context("--upgrade: receiving sockets")?;
        let Msg::Sockets { group } = msg else { bail!("--upgrade: unexpected {msg:?}") };
        let slot = fds.get_mut(group).with_context(|| format!("--upgrade: no group {group}"))?;
        received += got.len();
        slot.extend(got);
    }
    let mut groups = Vec::new();
    for ((what, count), fds) in offered.into_iter().zip(fds) {
        let Some(first) = fds.first() else { continue };
        if fds.len() != count {
            bail!("--upgrade: {what}: {} sockets instead of {count}", fds.len());
        }
        let addr = local_of(first).with_context(|| format!("--upgrade: {what}"))?;
        let udp = SockRef::from(first).r#type().with_context(|| format!("--upgrade: {what}"))? == Type::DGRAM;
        groups.push(Group { what, udp, addr, fds });
    }
    tracing::info!("upgrade: took {} listening groups from process {from}", groups.len());
    Ok(Inherited { conn, from, groups })
}

impl Inherited {
    /// The inherited group listening on `addr` (`udp` or TCP), if any; port
    /// 0 never matches (each start picks a new port).
    pub fn take(&mut self, addr: std::net::SocketAddr, udp: bool) -> Option<Vec<OwnedFd>> {
        if addr.port() == 0 {
            return None;
        }
        let i = self.groups.iter().position(|g| g.udp == udp && g.addr == Local::Ip(addr))?;
        Some(self.groups.remove(i).fds)
    }

    /// The inherited Unix socket bound at `path`, if any.
    pub fn take_unix(&mut self, path: &Path) -> Option<OwnedFd> {
        let i = self.groups.iter().position(|g| g.addr == Local::Unix(path.to_path_buf()))?;
        self.groups.remove(i).fds.into_iter().next()
    }

    /// Closes the groups no listener of this configuration took (their
    /// sockets close for good when the old process drains).
    pub fn release_unused(&mut self) {
        for g in self.groups.drain(..) {
            tracing::info!(
                "upgrade: {} ({}) is not in this configuration: it closes when process {} drains",
                g.what,
                g.addr,
                self.from
            );
        }
    }
}

/// The executable and arguments this process was started with, taken at
/// start: after a package replaced the binary, `/proc/self/exe` names the
/// deleted old file, while the path names the new one.
static STARTED_AS: std::sync::OnceLock<(PathBuf, Vec<std::ffi::OsString>)> = std::sync::OnceLock::new();

/// Records how this process was started, for [`start_successor`].
pub fn remember_command_line() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = STARTED_AS.set((exe, std::env::args_os().skip(1).collect()));
    }
}

/// SIGUSR2: starts the binary at this process's path with its arguments
/// and `--upgrade` (nginx's USR2), which takes over through the upgrade
/// socket. Its output goes where this process's goes; if it exits without
/// taking over, that is logged and this process serves on.
pub fn start_successor(app: &App) {
    if app.config().runtime.upgrade_socket.is_none() {
        tracing::error!(
            "SIGUSR2: no upgrade socket (upgrade_socket in [runtime], --upgrade-socket): no upgrade"
        );
        return;
    }
    if app.offer.handed_over() || app.offer.groups().is_none() {
        tracing::error!("SIGUSR2: this process is draining: no upgrade");
        return;
    }
    let Some((exe, args)) = STARTED_AS.get() else {
        tracing::error!("SIGUSR2: the executable's path is unknown: no upgrade");
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args);
    if !args.iter().any(|a| a == "--upgrade") {
        cmd.arg("--upgrade");
    }
    match cmd.stdin(std::process::Stdio::null()).spawn() {
        Ok(mut child) => {
            let pid = child.id();
            tracing::info!("SIGUSR2: started {} as process {pid} to take over", exe.display());
            let _ = std::thread::Builder::new().name("successor".into()).spawn(move || {
                // Reaps it if it fails; after a take-over this process exits first.
                if let Ok(status) = child.wait() {
                    tracing::warn!("upgrade: process {pid} exited ({status}) without taking over");
                }
            });
        }
        Err(e) => tracing::error!("SIGUSR2: cannot start {}: {e}: no upgrade", exe.display()),
    }
}

/// How a process takes part in upgrades once it serves.
#[derive(Debug)]
pub enum Role {
    /// No upgrade socket.
    Off,
    /// Serves upgrades on this socket.
    Serve(Socket),
    /// Finishes taking over (then serves upgrades on `path`).
    Finish(Inherited, PathBuf),
}

/// Starts the thread that, once every shard serves, tells systemd, finishes
/// an upgrade in progress and serves the next ones.
pub fn spawn(role: Role, app: Arc<App>, handle: shard::RuntimeHandle) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("lifecycle".into())
        .spawn(move || {
            if !wait_ready(&app, &handle) {
                return;
            }
            let listener = match role {
                Role::Off => {
                    notify("READY=1");
                    return;
                }
                Role::Serve(listener) => {
                    notify("READY=1");
                    listener
                }
                Role::Finish(inherited, path) => match finish(inherited, &path) {
                    Ok(listener) => listener,
                    Err(e) => {
                        let e = format!("{e:#}");
                        tracing::error!("upgrade failed after this process started serving: {e}; draining");
                        *app.failure() = Some(e);
                        handle.stop();
                        return;
                    }
                },
            };
            serve(listener, &app, &handle);
        })
        .context("starting the lifecycle thread")?;
    Ok(())
}

fn notify(state: &str) {
    if let Err(e) = ops::systemd::notify(state) {
        tracing::warn!("systemd notification {state:?}: {e}");
    }
}

/// Whether every shard serves within [`READY_TIMEOUT`] (false: stopping,
/// or never ready).
fn wait_ready(app: &App, handle: &shard::RuntimeHandle) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !app.all_serving() {
        if handle.is_stopping() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Step 4 and the end of step 5 on the new process's side.
fn finish(inherited: Inherited, path: &Path) -> anyhow::Result<Socket> {
    let Inherited { conn, from, .. } = inherited;
    // Before the old process may exit, so systemd follows this one.
    notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    send(&conn, &Msg::Ready, &[]).with_context(|| format!("process {from} gave up on this upgrade"))?;
    match recv(&conn).with_context(|| format!("process {from} did not confirm"))?.0 {
        Msg::Draining => {}
        other => bail!("process {from}: unexpected {other:?}"),
    }
    tracing::info!("upgrade: process {from} is draining; this process serves");
    let _ = std::fs::remove_file(path);
    fdpass::listen(path).with_context(|| format!("upgrade socket {}: cannot listen", path.display()))
}

/// Serves upgrade requests, one at a time, until one succeeds: then this
/// process drains.
fn serve(listener: Socket, app: &App, handle: &shard::RuntimeHandle) {
    loop {
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("upgrade socket: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match hand_over(&conn, app) {
            Ok(pid) => {
                app.offer.hand_over();
                crate::services::aggregate::unix::handed_over();
                // Admin requests go to the successor from here on (this
                // process's answers would come from draining shards).
                app.offer.close_admin(Duration::from_secs(5));
                app.offer.withdraw();
                tracing::info!(
                    "upgrade: process {pid} serves now; draining (up to {:?})",
                    app.config().grace
                );
                handle.stop();
                // Free the socket path before the successor binds it.
                drop(listener);
                if let Err(e) = send(&conn, &Msg::Draining, &[]) {
                    tracing::warn!("upgrade: telling process {pid}: {e:#}");
                }
                return;
            }
            Err(e) => tracing::warn!("upgrade refused or failed: {e:#}; this process keeps serving"),
        }
    }
}

/// Steps 1, 2 and the wait of 4 on the old process's side: the
/// successor's pid once it is ready.
fn hand_over(conn: &Socket, app: &App) -> anyhow::Result<u32> {
    fdpass::bound_in_time(conn, STEP_TIMEOUT)?;
    let pid = match recv(conn)?.0 {
        Msg::Hello { version: VERSION, pid } => pid,
        Msg::Hello { version, pid } => {
            let reason = format!("protocol version {version}, this process speaks {VERSION}");
            let _ = send(conn, &Msg::Refused { reason: reason.clone() }, &[]);
            bail!("process {pid}: {reason}");
        }
        other => bail!("unexpected {other:?}"),
    };
    {
        let groups = app.offer.groups();
        let Some(groups) = groups.as_ref() else {
            let reason = "this process is draining".to_string();
            let _ = send(conn, &Msg::Refused { reason: reason.clone() }, &[]);
            bail!("process {pid}: {reason}");
        };
        let offer = groups.iter().map(|(what, fds)| (what.clone(), fds.len())).collect();
        send(conn, &Msg::Offer { pid: std::process::id(), groups: offer }, &[])?;
        for (i, (_, fds)) in groups.iter().enumerate() {
            for chunk in fds.chunks(fdpass::MAX_FDS) {
                let borrowed: Vec<BorrowedFd<'_>> = chunk.iter().map(AsFd::as_fd).collect();
                send(conn, &Msg::Sockets { group: i }, &borrowed)?;
            }
        }
    }
    tracing::info!("upgrade: process {pid} took the listening sockets; waiting for it to serve");
    conn.set_read_timeout(Some(READY_TIMEOUT))?;
    match recv(conn).with_context(|| format!("process {pid} never said it was ready"))?.0 {
        Msg::Ready => Ok(pid),
        other => bail!("process {pid}: unexpected {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::state::Offer;

    fn group(udp: bool, addr: &str) -> Group {
        let fd = std::os::unix::net::UnixDatagram::unbound().expect("socket");
        Group {
            what: "g".into(),
            udp,
            addr: Local::Ip(addr.parse().expect("addr")),
            fds: vec![OwnedFd::from(fd)],
        }
    }

    #[test]
    fn groups_match_by_address_and_protocol_never_on_port_zero() {
        let (conn, _) = Socket::pair(socket2::Domain::UNIX, Type::SEQPACKET, None).expect("pair");
        let groups =
            vec![group(false, "127.0.0.1:80"), group(true, "127.0.0.1:80"), group(false, "127.0.0.1:0")];
        let mut inherited = Inherited { conn, from: 1, groups };
        assert!(inherited.take("127.0.0.1:0".parse().expect("addr"), false).is_none());
        assert!(inherited.take("127.0.0.1:81".parse().expect("addr"), false).is_none());
        assert!(inherited.take("127.0.0.1:80".parse().expect("addr"), true).is_some());
        assert!(inherited.take("127.0.0.1:80".parse().expect("addr"), true).is_none(), "taken once");
        assert!(inherited.take("127.0.0.1:80".parse().expect("addr"), false).is_some());
        inherited.release_unused();
        assert!(inherited.groups.is_empty());
    }

    #[test]
    fn a_withdrawn_offer_keeps_nothing() {
        let offer = Offer::new(true);
        let fd = OwnedFd::from(std::os::unix::net::UnixDatagram::unbound().expect("socket"));
        offer.add("g".into(), std::slice::from_ref(&fd)).expect("add");
        assert_eq!(offer.groups().as_ref().map(Vec::len), Some(1));
        offer.withdraw();
        assert!(offer.groups().is_none());
        let off = Offer::new(false);
        off.add("g".into(), std::slice::from_ref(&fd)).expect("add");
        assert!(off.groups().is_none(), "no upgrade socket: no copies");
    }
}
