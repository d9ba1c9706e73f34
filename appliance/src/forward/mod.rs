//! `forward`: an L4 TCP load balancer (the job of HAProxy `mode tcp`).
//!
//! Each shard accepts on its own `SO_REUSEPORT` listener and serves every
//! connection it accepted end to end: pick an upstream with its own
//! balancer view (no shared locks), connect with a timeout (trying other
//! upstreams on failure), optionally announce the client with a PROXY
//! header, then relay both directions until both halves are closed.
//!
//! Shared-nothing throughout: the global `--max-conns` and per-upstream
//! limits are split between shards; each upstream is health-checked by
//! exactly one shard, which broadcasts state changes to all; passive
//! ejection (consecutive failed connects) is each shard's own view.
//!
//! The decisions are sans-IO and tested without sockets: `balance` and
//! `maglev` (policies), `health` (rise/fall, ejection), `limits`, `upstream`
//! (the `--upstream` syntax); this file and `relay` do the I/O.

pub mod balance;
pub mod health;
pub mod limits;
pub mod maglev;
pub mod proxy_header;
pub mod relay;
pub mod stats;
pub mod udp;
pub mod upstream;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstack::tcp::{TcpListener, TcpStream};
use shard::future::{select, Either};
use shard::reactor::BufRing;

use balance::{Balancer, Policy};
use health::{Health, HealthConfig, Transition};
use limits::{ConnLimit, UpstreamLimits};
use relay::Ended;
use upstream::UpstreamSpec;

/// A validated forward configuration, shared read-only by all shards.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The pool.
    pub upstreams: Vec<UpstreamSpec>,
    /// How to pick an upstream.
    pub policy: Policy,
    /// Connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Close after this long without traffic.
    pub idle_timeout: Duration,
    /// Connections at most, across all shards.
    pub max_conns: u32,
    /// Other upstreams to try after a failed connect.
    pub retries: u32,
    /// PROXY header to send upstream.
    pub proxy_protocol: Option<proxy_header::Version>,
    /// Read a PROXY header from clients.
    pub accept_proxy: bool,
    /// Active checks (None: disabled) and passive ejection.
    pub health: Option<HealthConfig>,
    /// Passive ejection settings when active checks are off.
    pub passive: HealthConfig,
    /// Relay buffers per shard.
    pub buffers: u16,
    /// Relay buffer size.
    pub buffer_size: usize,
    /// Forward UDP datagrams (sessions per client) instead of TCP.
    pub udp: bool,
}

/// One shard's view of the service.
pub(crate) struct ShardState {
    pub(crate) cfg: Arc<ForwardConfig>,
    balancer: RefCell<Balancer>,
    health: RefCell<Vec<Health>>,
    limits: RefCell<UpstreamLimits>,
    conns: RefCell<ConnLimit>,
    group: BufRing,
}

thread_local! {
    /// The forward service of this shard, for health broadcasts to find.
    pub(crate) static STATE: RefCell<Option<Rc<ShardState>>> = const { RefCell::new(None) };
}

impl ShardState {
    fn new(cfg: Arc<ForwardConfig>) -> io::Result<Rc<ShardState>> {
        let (me, n) = (shard::shard_id(), shard::shard_count());
        let seed = 0x9e37_79b9_7f4a_7c15 ^ me as u64;
        let health_cfg = cfg.health.unwrap_or(cfg.passive);
        let state = ShardState {
            balancer: RefCell::new(Balancer::from_specs(cfg.policy, &cfg.upstreams, seed)),
            health: RefCell::new(cfg.upstreams.iter().map(|_| Health::new(health_cfg)).collect()),
            limits: RefCell::new(UpstreamLimits::new(cfg.upstreams.iter().map(|u| u.max_conns), n, me)),
            conns: RefCell::new(ConnLimit::for_shard(Some(cfg.max_conns), n, me)),
            group: BufRing::new(cfg.buffers, cfg.buffer_size)?,
            cfg,
        };
        stats::with(|s| s.upstreams = vec![Default::default(); state.cfg.upstreams.len()]);
        Ok(Rc::new(state))
    }

    /// Picks an eligible upstream not in `tried` and reserves a slot on it.
    pub(crate) fn pick(&self, client: Option<SocketAddr>, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let health = self.health.borrow();
        let limits = self.limits.borrow();
        let eligible = |i: usize| !tried.contains(&i) && health[i].is_eligible(now) && limits.has_room(i);
        let i = self.balancer.borrow_mut().pick(client, eligible)?;
        drop((health, limits));
        if !self.limits.borrow_mut().try_acquire(i) {
            stats::upstream(i, |u| u.refused_over_limit += 1);
            return None;
        }
        self.balancer.borrow_mut().on_open(i);
        Some(i)
    }

    pub(crate) fn release(&self, i: usize) {
        self.limits.borrow_mut().release(i);
        self.balancer.borrow_mut().on_close(i);
    }

    /// Records a connect result; a passive ejection is this shard's alone.
    fn connect_result(&self, i: usize, ok: bool) {
        if let Some(t) = self.health.borrow_mut()[i].on_connect_result(ok, Instant::now()) {
            tracing::warn!(upstream = %self.cfg.upstreams[i].name, "{t}");
            stats::upstream(i, |u| u.transitions += 1);
        }
    }
}

/// Serves the forward service on this shard's `listener` until the runtime
/// stops; connections then get the runtime's grace period to finish.
pub async fn serve(listener: OwnedFd, cfg: Arc<ForwardConfig>) -> io::Result<()> {
    let state = ShardState::new(cfg)?;
    STATE.with(|s| *s.borrow_mut() = Some(state.clone()));
    start_health_checks(&state);
    if state.cfg.udp {
        return udp::serve(listener).await;
    }
    let listener = TcpListener::from_fd(listener)?;
    crate::serve::accept_until_stopped(&listener, |conn| {
        stats::with(|s| s.accepted += 1);
        if !state.conns.borrow_mut().try_acquire() {
            stats::with(|s| s.refused_over_limit += 1);
            let _ = conn.set_reset_on_close();
            return;
        }
        let state = state.clone();
        shard::spawn_local_named("forward-conn", async move {
            stats::with(|s| s.active += 1);
            handle(&state, conn).await;
            stats::with(|s| s.active -= 1);
            state.conns.borrow_mut().release();
        })
        .detach();
    })
    .await;
    Ok(())
}

/// One client connection, end to end.
async fn handle(state: &ShardState, client: TcpStream) {
    let _ = client.set_nodelay(true);
    let (peer, early) = if state.cfg.accept_proxy {
        match proxy_header::read_inbound(&client).await {
            Ok(inbound) => (inbound.client.or_else(|| client.peer_addr().ok()), inbound.rest),
            Err(e) => {
                stats::with(|s| s.bad_proxy_headers += 1);
                tracing::debug!("inbound PROXY header: {e}");
                return;
            }
        }
    } else {
        (client.peer_addr().ok(), Vec::new())
    };
    let Some((i, upstream)) = connect(state, peer).await else {
        stats::with(|s| s.refused_no_upstream += 1);
        let _ = client.set_reset_on_close();
        return;
    };
    let mut preamble = Vec::new();
    if let (Some(version), Some(peer)) = (state.cfg.proxy_protocol, peer) {
        let local = client.local_addr().unwrap_or(state.cfg.listen);
        preamble = proxy_header::encode(version, peer, local);
    }
    preamble.extend_from_slice(&early);
    let (ended, moved) = if preamble.is_empty() || upstream.send_all(preamble).await.0.is_ok() {
        relay::relay(&client, &upstream, &state.group, state.cfg.idle_timeout).await
    } else {
        (Ended::Error, relay::Moved::default())
    };
    stats::upstream(i, |u| {
        u.active -= 1;
        u.bytes_up += moved.up;
        u.bytes_down += moved.down;
    });
    match ended {
        Ended::Closed => {}
        Ended::Idle => stats::with(|s| s.idle_closed += 1),
        Ended::Reset | Ended::Error => stats::with(|s| s.resets += 1),
    }
    state.release(i);
}

/// Connects to an upstream, trying up to `retries` others after failures.
async fn connect(state: &ShardState, client: Option<SocketAddr>) -> Option<(usize, TcpStream)> {
    let mut tried = Vec::new();
    for attempt in 0..=state.cfg.retries {
        let i = state.pick(client, &tried)?;
        tried.push(i);
        if attempt > 0 {
            stats::with(|s| s.retries += 1);
        }
        let addr = state.cfg.upstreams[i].addr;
        let started = Instant::now();
        match TcpStream::connect_timeout(addr, state.cfg.connect_timeout).await {
            Ok(conn) => {
                let _ = conn.set_nodelay(true);
                let bucket = stats::bucket(started.elapsed());
                stats::upstream(i, |u| {
                    u.active += 1;
                    u.total += 1;
                    u.connect_time[bucket] += 1;
                });
                state.connect_result(i, true);
                return Some((i, conn));
            }
            Err(e) => {
                tracing::debug!(upstream = %state.cfg.upstreams[i].name, "connect: {e}");
                stats::upstream(i, |u| u.connect_errors += 1);
                state.connect_result(i, false);
                state.release(i);
            }
        }
    }
    None
}

/// Starts the checks of the upstreams this shard is responsible for.
fn start_health_checks(state: &Rc<ShardState>) {
    let Some(cfg) = state.cfg.health else { return };
    let plan = health::check_plan(state.cfg.upstreams.len(), shard::shard_count());
    let mine = plan.get(shard::shard_id()).cloned().unwrap_or_default();
    let count = mine.len();
    for (position, i) in mine.into_iter().enumerate() {
        let state = state.clone();
        let offset = health::check_offset(position, count, cfg.interval);
        shard::spawn_local_named("health-check", async move {
            shard::time::sleep(offset).await;
            let mut ticks = shard::time::interval(cfg.interval);
            loop {
                if let Either::Left(()) = select(shard::stopping(), ticks.tick()).await {
                    return;
                }
                let addr = state.cfg.upstreams[i].addr;
                let ok = TcpStream::connect_timeout(addr, cfg.timeout).await.is_ok();
                let transition = state.health.borrow_mut()[i].on_check(ok, Instant::now());
                if let Some(t) = transition {
                    tracing::info!(upstream = %state.cfg.upstreams[i].name, "health: {t}");
                    broadcast_transition(i, t).await;
                }
            }
        })
        .detach();
    }
}

/// Tells every other shard about a health change found by this one.
async fn broadcast_transition(i: usize, t: Transition) {
    let me = shard::shard_id();
    let results = shard::invoke_on_all(move || async move {
        STATE.with(|s| {
            if let Some(state) = s.borrow().as_ref() {
                if shard::shard_id() != me {
                    state.health.borrow_mut()[i].apply(&t);
                }
                stats::upstream(i, |u| u.transitions += 1);
            }
        })
    })
    .await;
    for (shard, r) in results.into_iter().enumerate() {
        if let Err(e) = r {
            tracing::warn!(shard, "health broadcast: {e}");
        }
    }
}

/// Every shard's counters, merged (upstream `up` reflects shard views).
pub async fn gather_stats() -> Result<stats::ForwardStats, shard::SubmitError> {
    shard::map_reduce(
        || async {
            let mut s = stats::snapshot();
            let now = Instant::now();
            STATE.with(|st| {
                if let Some(state) = st.borrow().as_ref() {
                    for (i, h) in state.health.borrow().iter().enumerate() {
                        if let Some(u) = s.upstreams.get_mut(i) {
                            u.up = u64::from(h.is_eligible(now));
                        }
                    }
                }
            });
            s
        },
        stats::ForwardStats::default(),
        |mut acc, s| {
            acc.merge(&s);
            acc
        },
    )
    .await
}
