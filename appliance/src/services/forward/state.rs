//! One shard's view of a forward service: its pool (configuration,
//! balancer, health and per-upstream limits, replaced as a whole on reload),
//! its share of `--max-conns`, its counters and its relay buffers.
//!
//! A reload (SIGHUP) swaps the pool while connections are open. State that
//! belongs to an upstream (health, open connections, limit slots, counters)
//! moves to the new pool when the upstream is still in it (matched by
//! address), so nothing is reset and no slot leaks: a connection remembers
//! the upstream by [`UpstreamRef`] and settles with whatever pool is current
//! when it ends.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use shard::future::{select, Either};
use shard::reactor::BufRing;

use super::stats::{ForwardStats, UpstreamStats};
use super::ForwardConfig;
use crate::services::ServiceId;
use cores::pool::balance::Balancer;
use cores::pool::check;
use cores::pool::clients::{ClientPolicy, ClientTable, Verdict};
use cores::pool::health::{self, Health, Transition};
use cores::pool::limits::{ConnLimit, UpstreamLimits};
use cores::pool::upstream::AdminState;

/// The upstream a connection uses, valid across reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamRef {
    pub(crate) index: usize,
    pub(crate) addr: SocketAddr,
    generation: u64,
}

/// Everything that a reload replaces.
struct Pool {
    cfg: Rc<ForwardConfig>,
    generation: u64,
    balancer: Balancer,
    health: Vec<Health>,
    limits: UpstreamLimits,
    /// With SNI routes: which upstream is in which pool, `[pool][i]`.
    members: Option<Vec<Vec<bool>>>,
}

/// One shard's view of one forward service.
pub(crate) struct ShardState {
    /// The service this is a shard of (its slot on every shard).
    id: ServiceId,
    /// The shards the service runs on; limits are split between them and
    /// health checks planned over them.
    members: shard::Group,
    pool: RefCell<Pool>,
    conns: RefCell<ConnLimit>,
    stats: RefCell<ForwardStats>,
    /// Per-client limits: this shard's table (every connection of a client
    /// reaches this one shard; the group is steered by client address).
    clients: RefCell<Option<ClientTable>>,
    pub(crate) buffers: super::relay::RelayBuffers,
}

impl ShardState {
    pub(crate) fn new(id: ServiceId, cfg: &ForwardConfig) -> io::Result<Rc<ShardState>> {
        let members = members_of(cfg);
        let (me, n) = (position(&members), members.len());
        let cfg = Rc::new(cfg.clone());
        let health_cfg = cfg.health.unwrap_or(cfg.passive);
        let pool = Pool {
            balancer: Balancer::from_specs(cfg.policy, &cfg.upstreams, seed(me)),
            health: cfg.upstreams.iter().map(|_| Health::new(health_cfg)).collect(),
            limits: UpstreamLimits::new(cfg.upstreams.iter().map(|u| u.max_conns), n, me),
            members: cfg.sni.as_ref().map(|s| super::sni::members(s, &cfg.upstreams, &cfg.names)),
            generation: 0,
            cfg: cfg.clone(),
        };
        let stats = ForwardStats {
            upstreams: vec![UpstreamStats::default(); cfg.upstreams.len()],
            ..Default::default()
        };
        Ok(Rc::new(ShardState {
            id,
            members,
            conns: RefCell::new(ConnLimit::for_shard(Some(cfg.max_conns), n, me)),
            buffers: super::relay::RelayBuffers::new(BufRing::new(cfg.buffers, cfg.buffer_size)?),
            pool: RefCell::new(pool),
            stats: RefCell::new(stats),
            clients: RefCell::new(cfg.clients.map(|p| ClientTable::new(share_of(p, n)))),
        }))
    }

    /// The current configuration.
    pub(crate) fn cfg(&self) -> Rc<ForwardConfig> {
        self.pool.borrow().cfg.clone()
    }

    /// Updates this shard's listener counters.
    pub(crate) fn count(&self, f: impl FnOnce(&mut ForwardStats)) {
        f(&mut self.stats.borrow_mut());
    }

    /// Updates this shard's UDP counters.
    pub(crate) fn count_udp(&self, f: impl FnOnce(&mut super::stats::UdpStats)) {
        f(&mut self.stats.borrow_mut().udp);
    }

    /// Updates the counters of an upstream still in the pool.
    pub(crate) fn count_upstream(&self, u: &UpstreamRef, f: impl FnOnce(&mut UpstreamStats)) {
        if let Some(i) = self.resolve(u) {
            if let Some(s) = self.stats.borrow_mut().upstreams.get_mut(i) {
                f(s);
            }
        }
    }

    /// A copy of the counters, with `up` from this shard's health view.
    pub(crate) fn snapshot(&self) -> ForwardStats {
        let mut s = self.stats.borrow().clone();
        let pool = self.pool.borrow();
        let now = Instant::now();
        for (u, h) in s.upstreams.iter_mut().zip(&pool.health) {
            u.up = u64::from(h.is_eligible(now));
        }
        s.active = u64::from(self.conns.borrow().active);
        let group = &self.buffers.group;
        s.relay_buffers_free = group.entries().saturating_sub(group.in_use()) as u64;
        s.relay_buffers_exhausted = group.exhausted();
        s.clients = self.clients.borrow().as_ref().map_or(0, |t| t.clients() as u64);
        s
    }

    /// Takes one of this shard's `--max-conns` slots.
    pub(crate) fn try_admit(&self) -> bool {
        self.conns.borrow_mut().try_acquire()
    }

    /// Returns a `--max-conns` slot.
    pub(crate) fn leave(&self) {
        self.conns.borrow_mut().release();
    }

    /// Whether per-client limits are on.
    pub(crate) fn limits_clients(&self) -> bool {
        self.clients.borrow().is_some()
    }

    /// Admits a new connection from `peer` under the per-client limits
    /// (always, without them), counting a refusal by its reason.
    pub(crate) fn admit_client(&self, peer: Option<SocketAddr>) -> bool {
        let mut clients = self.clients.borrow_mut();
        let (Some(table), Some(peer)) = (clients.as_mut(), peer) else { return true };
        let verdict = table.admit(peer.ip(), Instant::now());
        self.count(|s| match verdict {
            Verdict::Admit => {}
            Verdict::OverConns => s.refused_client_conns += 1,
            Verdict::OverRate => s.refused_client_rate += 1,
            Verdict::TableFull => s.refused_client_table += 1,
        });
        verdict == Verdict::Admit
    }

    /// An admitted connection from `peer` ended.
    pub(crate) fn leave_client(&self, peer: Option<SocketAddr>) {
        if let (Some(table), Some(peer)) = (self.clients.borrow_mut().as_mut(), peer) {
            table.release(peer.ip());
        }
    }

    /// Where `u` is in the current pool, if it still is.
    fn resolve(&self, u: &UpstreamRef) -> Option<usize> {
        let pool = self.pool.borrow();
        if u.generation == pool.generation {
            return Some(u.index);
        }
        pool.cfg.upstreams.iter().position(|s| s.addr == u.addr)
    }

    /// Picks an eligible upstream of pool `pool` (0: the default, the only
    /// one without SNI routes) not in `tried` and reserves a slot on it.
    pub(crate) fn pick(
        &self,
        client: Option<SocketAddr>,
        tried: &[SocketAddr],
        pool_no: usize,
    ) -> Option<UpstreamRef> {
        let now = Instant::now();
        let mut guard = self.pool.borrow_mut();
        let pool = &mut *guard;
        let (cfg, health, limits) = (&pool.cfg, &pool.health, &pool.limits);
        let member = pool.members.as_ref().and_then(|m| m.get(pool_no));
        let eligible = |i: usize| {
            let u = &cfg.upstreams[i];
            member.is_none_or(|m| m.get(i).copied().unwrap_or(false))
                && u.state == AdminState::Ready
                && !tried.contains(&u.addr)
                && health[i].is_eligible(now)
                && limits.has_room(i)
        };
        let i = pool.balancer.pick(client, eligible)?;
        if !pool.limits.try_acquire(i) {
            drop(guard);
            self.stats.borrow_mut().upstreams[i].refused_over_limit += 1;
            return None;
        }
        pool.balancer.on_open(i);
        Some(UpstreamRef { index: i, addr: pool.cfg.upstreams[i].addr, generation: pool.generation })
    }

    /// Gives back the slot `pick` reserved.
    pub(crate) fn release(&self, u: &UpstreamRef) {
        let Some(i) = self.resolve(u) else { return };
        let mut pool = self.pool.borrow_mut();
        pool.limits.release(i);
        pool.balancer.on_close(i);
    }

    /// Records a connect result; a passive ejection is this shard's alone.
    pub(crate) fn connect_result(&self, u: &UpstreamRef, ok: bool) {
        let Some(i) = self.resolve(u) else { return };
        let t = self.pool.borrow_mut().health[i].on_connect_result(ok, Instant::now());
        if let Some(t) = t {
            tracing::warn!(upstream = %u.addr, "{t}");
            self.stats.borrow_mut().upstreams[i].transitions += 1;
        }
    }

    /// Applies a health transition found by the shard checking upstream `i`.
    fn apply(&self, generation: u64, i: usize, t: &Transition, local: bool) {
        let mut pool = self.pool.borrow_mut();
        if pool.generation != generation {
            return;
        }
        if !local {
            pool.health[i].apply(t);
        }
        if let Some(s) = self.stats.borrow_mut().upstreams.get_mut(i) {
            s.transitions += 1;
        }
    }

    /// Replaces the pool with `cfg`'s, keeping the state of the upstreams
    /// that stay (matched by address), and restarts health checks.
    pub(crate) fn reload(self: &Rc<Self>, cfg: &ForwardConfig) {
        // Whether limits are on, and their prefixes, are restart-only (the
        // listening group's steering depends on them): only the limits change.
        if let (Some(table), Some(policy)) = (self.clients.borrow_mut().as_mut(), cfg.clients) {
            table.set_policy(share_of(policy, self.members.len()));
        }
        let (me, n) = (position(&self.members), self.members.len());
        let cfg = Rc::new(cfg.clone());
        let old = self.pool.borrow();
        let health_cfg = cfg.health.unwrap_or(cfg.passive);
        let mut balancer = Balancer::from_specs(cfg.policy, &cfg.upstreams, seed(me));
        let mut limits = UpstreamLimits::new(cfg.upstreams.iter().map(|u| u.max_conns), n, me);
        let mut health = Vec::with_capacity(cfg.upstreams.len());
        let mut stats = Vec::with_capacity(cfg.upstreams.len());
        for (j, spec) in cfg.upstreams.iter().enumerate() {
            match old.cfg.upstreams.iter().position(|s| s.addr == spec.addr) {
                Some(i) => {
                    let open = old.limits.get(i).map_or(0, |l| l.active);
                    limits.set_active(j, open);
                    for _ in 0..old.balancer.active(i) {
                        balancer.on_open(j);
                    }
                    health.push(old.health[i].clone());
                    stats.push(self.stats.borrow().upstreams.get(i).cloned().unwrap_or_default());
                }
                None => {
                    health.push(Health::new(health_cfg));
                    stats.push(UpstreamStats::default());
                }
            }
        }
        let generation = old.generation + 1;
        drop(old);
        let active = self.conns.borrow().active;
        *self.conns.borrow_mut() = ConnLimit { active, ..ConnLimit::for_shard(Some(cfg.max_conns), n, me) };
        self.stats.borrow_mut().upstreams = stats;
        let members = cfg.sni.as_ref().map(|s| super::sni::members(s, &cfg.upstreams, &cfg.names));
        *self.pool.borrow_mut() = Pool { cfg, generation, balancer, health, limits, members };
        self.start_health_checks();
    }

    /// Starts the checks of the upstreams this shard is responsible for;
    /// they end when the runtime stops or the pool is reloaded.
    pub(crate) fn start_health_checks(self: &Rc<Self>) {
        let (cfg, generation) = {
            let pool = self.pool.borrow();
            (pool.cfg.clone(), pool.generation)
        };
        let Some(hc) = cfg.health else { return };
        let plan = health::check_plan(cfg.upstreams.len(), self.members.len());
        let mine = plan.get(position(&self.members)).cloned().unwrap_or_default();
        let count = mine.len();
        let exchange = Rc::new(cfg.exchange.clone());
        for (position, i) in mine.into_iter().enumerate() {
            if cfg.upstreams[i].state == AdminState::Maint {
                continue;
            }
            let (state, addr, name) = (self.clone(), cfg.upstreams[i].addr, cfg.name.clone());
            let exchange = exchange.clone();
            let offset = health::check_offset(position, count, hc.interval);
            shard::spawn_local_named("health-check", async move {
                shard::time::sleep(offset).await;
                let mut ticks = shard::time::interval(hc.interval);
                loop {
                    if let Either::Left(()) = select(shard::stopping(), ticks.tick()).await {
                        return;
                    }
                    if state.pool.borrow().generation != generation {
                        return;
                    }
                    // A check that failed on our side (no descriptor, say)
                    // says nothing about the upstream.
                    let Some(ok) = check_once(addr, hc.timeout, &exchange).await else { continue };
                    let t = {
                        let mut pool = state.pool.borrow_mut();
                        if pool.generation != generation {
                            return;
                        }
                        pool.health[i].on_check(ok, Instant::now())
                    };
                    if let Some(t) = t {
                        tracing::info!(service = %name, upstream = %addr, "health: {t}");
                        broadcast_transition(state.id, state.members.clone(), generation, i, t).await;
                    }
                }
            })
            .detach();
        }
    }
}

/// One active check: connect, then the exchange (if any), all within
/// `timeout`. Reads at most the expectation's window, whatever the
/// upstream sends. `None`: the check could not be made for a reason on our
/// side (out of descriptors, say), which says nothing about the upstream.
async fn check_once(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
    exchange: &check::Exchange,
) -> Option<bool> {
    let started = std::time::Instant::now();
    let conn = match shard::time::timeout(timeout, netstack::tcp::TcpStream::connect(addr)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) if super::is_local(&e) => {
            ops::warn_limited!(upstream = %addr, "health check: {e} (on our side: the check is skipped)");
            return None;
        }
        Ok(Err(_)) | Err(_) => return Some(false),
    };
    let check = async {
        if exchange.is_connect_only() {
            return true;
        }
        if !exchange.send.is_empty() && conn.send_all(exchange.send.clone()).await.0.is_err() {
            return false;
        }
        let Some(expect) = &exchange.expect else { return true };
        let mut received = Vec::with_capacity(expect.window());
        loop {
            match expect.matches(&received) {
                check::Match::Yes => return true,
                check::Match::No => return false,
                check::Match::NeedMore => {}
            }
            let (n, back) = conn.recv(received).await;
            received = back;
            if !matches!(n, Ok(n) if n > 0) {
                return false;
            }
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    Some(shard::time::timeout(left, check).await.unwrap_or(false))
}

/// The shards the service `cfg` runs on.
/// This shard's share of the client table's bound (the limits themselves
/// are per client, exact: each client is one shard's).
fn share_of(policy: ClientPolicy, shards: usize) -> ClientPolicy {
    ClientPolicy { max_clients: policy.max_clients.div_ceil(shards.max(1)), ..policy }
}

pub(crate) fn members_of(cfg: &ForwardConfig) -> shard::Group {
    cfg.group.clone().unwrap_or_else(|| shard::Group::all(shard::shard_count()))
}

/// This shard's position in `members` (0 off the group: never the case
/// for a shard that serves it).
fn position(members: &shard::Group) -> usize {
    members.index_of(shard::shard_id()).unwrap_or(0)
}

/// Per-shard seed for the random policies and starting positions.
fn seed(shard: usize) -> u64 {
    0x9e37_79b9_7f4a_7c15 ^ shard as u64
}

/// Tells every shard about a health change found by this one.
async fn broadcast_transition(
    id: ServiceId,
    members: shard::Group,
    generation: u64,
    i: usize,
    t: Transition,
) {
    let me = shard::shard_id();
    let results = members
        .invoke(move || async move {
            if let Some(state) = super::instance(id) {
                state.apply(generation, i, &t, shard::shard_id() == me);
            }
        })
        .await;
    for (shard, r) in results.into_iter().enumerate() {
        if let Err(e) = r {
            tracing::warn!(shard, "health broadcast: {e}");
        }
    }
}
